"""Text conditioning: a frozen T5 encoder (transformers) and its sentencepiece tokenizer.

A text encoder is a directory `transformers` can load (`config.json`, `model.safetensors`,
`tokenizer.json` or `spiece.model`) or a hub id for users who have the weights cached.
The shipped model carries its own small T5 in `text_encoder/` inside the model directory:
a sentencepiece word vocabulary trained on Shapes World captions and a T5 config sized
for CPU (`build_text_encoder`), whose weights `phenaki data text-encoder` trains on captions
alone so that each word's state tells its clause (`train/text_encoder.py`). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from phenaki_cli.errors import UserError

SETTINGS_FILE = "phenaki_text.json"


class TextEncoder:
    """Prompt → (embeddings (L, d), all valid). Frozen; embeddings are cached per prompt."""

    def __init__(self, tokenizer, model, source: str, lowercase: bool = False, max_length: int = 77):
        self.tokenizer, self.model, self.source, self.max_length = tokenizer, model.eval(), source, max_length
        self.lowercase = lowercase  # a closed-world vocabulary is lower-case; real T5 keeps case
        self.model.requires_grad_(False)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @classmethod
    def load(cls, source: str | os.PathLike) -> "TextEncoder":
        """A local directory or a hub id (only from the local cache if there is no network)."""
        from safetensors import SafetensorError
        from transformers import AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        source = str(source)
        looks_local = source.startswith((".", "/", "~")) or Path(source).exists()
        if looks_local and not Path(source).expanduser().is_dir():
            raise UserError(f"{source}: text encoder directory not found")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

        def load(**options):
            return (AutoTokenizer.from_pretrained(source, **options),
                    T5EncoderModel.from_pretrained(source, dtype=torch.float32, **options))
        try:
            if looks_local:
                tokenizer, model = load()
            else:  # a hub id: the local cache first; the network only when it is there
                try:
                    tokenizer, model = load(local_files_only=True)
                except OSError:
                    if not _hub_reachable():
                        raise UserError(f"{source}: not a folder here and not in the Hugging Face cache, and the "
                                        f"hub cannot be reached (offline); download it where there is a network "
                                        f"(`hf download {source}`) or give its folder") from None
                    tokenizer, model = load()
        except (OSError, ValueError, ImportError, SafetensorError) as e:  # a corrupt weights file too
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{source}: cannot load a T5 text encoder ({first})") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        settings = Path(source) / SETTINGS_FILE
        lowercase = settings.is_file() and json.loads(settings.read_text()).get("lowercase", False)
        return cls(tokenizer, model, source, lowercase=lowercase)

    def save(self, folder: str | os.PathLike) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.tokenizer.save_pretrained(str(folder))
        self.model.save_pretrained(str(folder))
        (Path(folder) / SETTINGS_FILE).write_text(json.dumps({"lowercase": self.lowercase}) + "\n")

    def clear_cache(self) -> None:
        """Forget the cached embeddings (after the weights changed)."""
        self._cache.clear()

    def normalize(self, prompt: str) -> str:
        prompt = " ".join(prompt.split())
        return prompt.lower() if self.lowercase else prompt

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` that the vocabulary does not cover (they would become <unk>)."""
        unk = self.tokenizer.unk_token_id
        if unk is None:
            return []
        words = self.normalize(prompt).split()
        return [w for w in words if unk in self.tokenizer(w, add_special_tokens=False).input_ids]

    def token_count(self, prompt: str) -> int:
        """How many tokens `prompt` is (with the end-of-sequence token), before truncation to max_length."""
        return len(self.tokenizer(self.normalize(prompt)).input_ids)

    @torch.inference_mode()
    def embed(self, prompt: str) -> torch.Tensor:
        """One prompt → (L, d) float32 hidden states (L includes the end-of-sequence token)."""
        prompt = self.normalize(prompt)
        if prompt not in self._cache:
            ids = self.tokenizer(prompt, return_tensors="pt", truncation=True, max_length=self.max_length).input_ids
            self._cache[prompt] = self.model(input_ids=ids).last_hidden_state[0].float()
        return self._cache[prompt]

    def embed_batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → padded embeddings (b, L, d) and a padding mask (b, L), True where valid."""
        return pad_embeddings([self.embed(p) for p in prompts])


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached now? (huggingface_hub would otherwise retry for a minute.)"""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def pad_embeddings(embeddings: list[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(length or 0, *(e.shape[0] for e in embeddings))
    dim = embeddings[0].shape[1]
    out = embeddings[0].new_zeros(len(embeddings), length, dim)
    mask = torch.zeros(len(embeddings), length, dtype=torch.bool)
    for i, e in enumerate(embeddings):
        out[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = True
    return out, mask


def build_text_encoder(captions: list[str], d_model: int = 128, layers: int = 2, heads: int = 4,
                       seed: int = 0) -> TextEncoder:
    """A small T5 for a closed world: a sentencepiece word vocabulary trained on `captions`
    (lower-cased) and a T5 encoder with frozen random-init weights.

    Random weights keep every word distinct, but the states carry almost nothing of the word's
    context, so a transformer reads them as a bag of words (which verb is whose is lost);
    `train.text_encoder.train_clause_reading` teaches it that. (A pretrained T5 would also
    generalise to paraphrases; this one knows exactly the words of its world and reports any other.)
    """
    import io

    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    buffer = io.BytesIO()
    words = {w for c in captions for w in c.lower().split()}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([c.lower() for c in captions]), model_writer=buffer, model_type="word",
        vocab_size=len(words) + 3, hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2)
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=2 * d_model,
                      num_layers=layers, num_heads=heads, dropout_rate=0.0, feed_forward_proj="relu",
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return TextEncoder(tokenizer, T5EncoderModel(config), "built", lowercase=True)
