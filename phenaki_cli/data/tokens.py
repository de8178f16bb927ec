"""Pre-tokenized training data: token grids + text embeddings in shards (`phenaki data encode`).

Transformer training never runs the tokenizer or T5: clips are encoded once into shards and
training reads token grids and embeddings from memory. That is how training scales.

    SHARDS/index.json          what made the shards: tokenizer config + fingerprint, text
                               encoder fingerprint, frames, fps, kind (video | image), counts
    SHARDS/text_encoder/       the T5 whose embeddings the shards hold (the model directory
                               that training writes carries it on)
    SHARDS/shard-000000.npz    tokens (N, T, h, w) int16, prefix_steps (N,), prompt_index (N,),
                               prompts (U,), embeddings (U, L, d) fp16, lengths (U,)

Each shard stores the embedding of each distinct prompt once (Shapes World repeats prompts).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from phenaki_cli.data.datasets import SkippedFiles
from phenaki_cli.errors import UserError
from phenaki_cli.files import atomic_path

SHARD_FORMAT = "phenaki-token-shard-v1"
INDEX_FORMAT = "phenaki-token-shards-v1"
INDEX_FILE = "index.json"
TEXT_ENCODER_DIR = "text_encoder"


def fingerprint(tensors: Iterable[torch.Tensor], extra: dict | None = None) -> str:
    """A short hash of weights (and a config), so data made by one model is not used with another."""
    digest = hashlib.sha256(json.dumps(extra or {}, sort_keys=True).encode())
    for tensor in tensors:
        digest.update(tensor.detach().to(torch.float16).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides the tokens (encoder, codebook, encoding config): a decoder fine-tuned with
    its encoder frozen keeps the fingerprint, so shards stay usable."""
    from phenaki_cli.config import encoding_config, to_dict
    return fingerprint(tokenizer.token_parameters().values(), encoding_config(to_dict(tokenizer.config)))


def text_encoder_fingerprint(encoder) -> str:
    # the input embedding table and the sizes identify a T5 without hashing all of its weights
    # (the whole config would not do: saving adds bookkeeping fields to it)
    config = encoder.model.config
    sizes = {k: getattr(config, k, None) for k in ("d_model", "num_layers", "num_heads", "d_ff", "vocab_size")}
    return fingerprint([encoder.model.get_input_embeddings().weight], sizes)


@dataclass
class TokenExamples:
    """Token grids of training windows with their prompts and, when encoded, text embeddings."""

    tokens: np.ndarray  # (N, T, h, w) int16
    prompts: list[str]
    prefix_steps: np.ndarray  # (N,) time steps at the start that are given (never masked)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # prompt → (L, d) fp16

    def __len__(self) -> int:
        return len(self.prompts)

    def save(self, path: str | Path) -> None:
        table = list(dict.fromkeys(self.prompts))
        where = {p: i for i, p in enumerate(table)}
        lengths = np.array([len(self.embeddings[p]) if p in self.embeddings else 0 for p in table], dtype=np.int64)
        dim = next((e.shape[1] for e in self.embeddings.values()), 0)
        padded = np.zeros((len(table), int(lengths.max(initial=0)), dim), dtype=np.float16)
        for i, p in enumerate(table):
            if lengths[i]:
                padded[i, :lengths[i]] = self.embeddings[p]
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, format=SHARD_FORMAT, tokens=self.tokens, prefix_steps=self.prefix_steps,
                     prompt_index=np.array([where[p] for p in self.prompts], dtype=np.int64),
                     prompts=np.array(table, dtype=str), embeddings=padded, lengths=lengths)

    @classmethod
    def load(cls, path: str | Path) -> "TokenExamples":
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data.get("format", "")) != SHARD_FORMAT:
                    raise UserError(f"{path}: not a phenaki token shard")
                # each data[...] reads the array anew: read each once (a view per prompt would keep
                # a whole copy alive per prompt)
                table = [str(p) for p in data["prompts"]]
                padded, lengths = data["embeddings"], data["lengths"]
                embeddings = {p: padded[i, :n].copy() for i, (p, n) in enumerate(zip(table, lengths)) if n}
                return cls(data["tokens"], [table[i] for i in data["prompt_index"]], data["prefix_steps"],
                           embeddings)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path}: not a readable token shard ({e})") from None

    @classmethod
    def concatenate(cls, parts: list["TokenExamples"]) -> "TokenExamples":
        embeddings = {}
        for part in parts:
            embeddings.update(part.embeddings)
        return cls(np.concatenate([p.tokens for p in parts]), [q for p in parts for q in p.prompts],
                   np.concatenate([p.prefix_steps for p in parts]), embeddings)


@torch.inference_mode()
def encode_examples(tokenizer, clips: Iterable, text_encoder=None, batch_size: int = 32,
                    on_batch: Callable[[int], None] | None = None, device: torch.device | None = None) -> TokenExamples:
    """Encode (frames, prompt, prime_frames) clips of one length into token examples (with the
    prompts' embeddings when a text encoder is given)."""
    from phenaki_cli.video_io import frames_to_tensor

    tokens, prompts, prefix, batch = [], [], [], []
    embeddings: dict[str, np.ndarray] = {}

    def flush() -> None:
        video = torch.stack([frames_to_tensor(frames) for frames, _, _ in batch])
        if device is not None:
            video = video.to(device)
        tokens.append(tokenizer.encode(video).cpu().to(torch.int16).numpy())
        for _, prompt, prime in batch:
            prompts.append(prompt)
            prefix.append(tokenizer.config.time_steps(prime) if prime else 0)
            if text_encoder is not None and prompt not in embeddings:
                embeddings[prompt] = text_encoder.embed(prompt).to(torch.float16).cpu().numpy()
        if on_batch is not None:
            on_batch(len(batch))
        batch.clear()

    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not tokens:
        raise UserError("no readable clips to encode")
    return TokenExamples(np.concatenate(tokens), prompts, np.array(prefix, dtype=np.int64), embeddings)


@dataclass
class ShardIndex:
    kind: str  # "video" (windows of `frames`) or "image" (first-frame tokens only)
    frames: int
    fps: float
    prime_frames: int
    tokenizer: dict  # its config
    tokenizer_fingerprint: str
    text_encoder_fingerprint: str
    text_dim: int
    shards: list[dict]  # {"file", "examples"}
    skipped: int = 0  # unreadable or too-short files, left out
    source: str = ""
    skipped_files: list[str] = field(default_factory=list)  # why, for the first few of them

    @property
    def examples(self) -> int:
        return sum(s["examples"] for s in self.shards)

    def to_json(self) -> str:
        from dataclasses import asdict
        return json.dumps({"format": INDEX_FORMAT, **asdict(self)}, indent=2) + "\n"


def is_shard_folder(path: str | Path) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def read_index(folder: str | Path) -> ShardIndex:
    path = Path(folder) / INDEX_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read the shard index ({e})") from None
    if not isinstance(data, dict) or data.pop("format", None) != INDEX_FORMAT:
        raise UserError(f"{path}: not a phenaki token-shard index")
    try:
        return ShardIndex(**data)
    except TypeError as e:
        raise UserError(f"{path}: unexpected shard index fields ({e})") from None


def load_shards(folder: str | Path) -> tuple[ShardIndex, TokenExamples]:
    """Every shard of a folder, in memory (token grids are small: 1.4 KB for 11×8×8)."""
    index = read_index(folder)
    if not index.shards:
        raise UserError(f"{folder}: the shard index lists no shards")
    return index, TokenExamples.concatenate([TokenExamples.load(Path(folder) / s["file"]) for s in index.shards])


def write_shards(out: str | Path, clips: Iterable, tokenizer, text_encoder, kind: str, frames: int, fps: float,
                 prime_frames: int, shard_size: int = 4096, source: str = "",
                 skipped: SkippedFiles | None = None, on_batch: Callable[[int], None] | None = None,
                 device: torch.device | None = None) -> ShardIndex:
    """Encode clips into a shard folder, atomically (a folder appears only when complete)."""
    from itertools import islice

    from phenaki_cli.config import to_dict

    clips = iter(clips)
    with atomic_path(out, directory=True) as tmp:
        shards = []
        while chunk := list(islice(clips, shard_size)):
            examples = encode_examples(tokenizer, chunk, text_encoder, on_batch=on_batch, device=device)
            name = f"shard-{len(shards):06d}.npz"
            examples.save(tmp / name)
            shards.append({"file": name, "examples": len(examples)})
        if not shards:
            first = next(iter(skipped.files.values()), "") if skipped else ""
            raise UserError(f"{source or out}: no readable clips to encode" + (f" (first: {first})" if first else ""))
        text_encoder.save(tmp / TEXT_ENCODER_DIR)
        index = ShardIndex(kind, frames, fps, prime_frames, to_dict(tokenizer.config),
                           tokenizer_fingerprint(tokenizer), text_encoder_fingerprint(text_encoder),
                           text_encoder.dim, shards, len(skipped or ()), source,
                           list((skipped.files if skipped else {}).values())[:20])
        (tmp / INDEX_FILE).write_text(index.to_json())
    return index


def embed_shards(folder: str | Path, out: str | Path, text_encoder) -> ShardIndex:
    """A copy of a shard folder whose prompts are embedded by `text_encoder` (the token grids are the
    same): a new text encoder costs seconds of T5, not the minutes of encoding video again."""
    from dataclasses import replace

    index = read_index(folder)
    with atomic_path(out, directory=True) as tmp:
        for shard in index.shards:
            examples = TokenExamples.load(Path(folder) / shard["file"])
            examples.embeddings = {p: text_encoder.embed(p).to(torch.float16).cpu().numpy()
                                   for p in dict.fromkeys(examples.prompts)}
            examples.save(tmp / shard["file"])
        text_encoder.save(tmp / TEXT_ENCODER_DIR)
        index = replace(index, text_encoder_fingerprint=text_encoder_fingerprint(text_encoder),
                        text_dim=text_encoder.dim)
        (tmp / INDEX_FILE).write_text(index.to_json())
    return index
