"""MaskGIT training on pre-encoded token grids.

Clips are encoded once by the frozen tokenizer (`encode_examples`), so a training step runs
only the transformer: that is what makes training affordable. Batches are drawn by step
number from a seeded generator, and masks from a generator seeded by the step, so a resumed
run sees exactly the batches and masks the uninterrupted run would have seen.

The output folder is a complete model directory at every checkpoint (tokenizer, transformer,
text encoder, sampling defaults), so `phenaki story --model DIR` can play it while it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from phenaki_cli.config import SamplingConfig, TransformerConfig, from_dict
from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import load_weights, read_config
from phenaki_cli.pipeline import TEXT_ENCODER_DIR, check_compatible
from phenaki_cli.text import TextEncoder, pad_embeddings
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.train.checkpoint import check_new_run, is_training_folder
from phenaki_cli.train.loop import LoopSettings, fit
from phenaki_cli.transformer import MaskGIT
from phenaki_cli.transformer.masking import masked_token_loss
from phenaki_cli.video_io import frames_to_tensor

EXAMPLES_FORMAT = "phenaki-token-examples-v1"


@dataclass
class TokenExamples:
    tokens: np.ndarray  # (N, T, h, w) int16 token grids of whole windows
    prompts: list[str]
    prefix_steps: np.ndarray  # (N,) time steps at the start that are given (never masked)

    def __len__(self) -> int:
        return len(self.prompts)

    def save(self, path: str | Path) -> None:
        from phenaki_cli.files import atomic_path
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, tokens=self.tokens, prompts=np.array(self.prompts), prefix_steps=self.prefix_steps,
                                format=EXAMPLES_FORMAT)

    @classmethod
    def load(cls, path: str | Path) -> "TokenExamples":
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data.get("format", "")) != EXAMPLES_FORMAT:
                    raise UserError(f"{path}: not a phenaki token-examples file")
                return cls(data["tokens"], [str(p) for p in data["prompts"]], data["prefix_steps"])
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path}: not a readable token-examples file ({e})") from None


@torch.inference_mode()
def encode_examples(tokenizer: CViViT, clips, batch_size: int = 32,
                    on_batch: Callable[[int], None] | None = None) -> TokenExamples:
    """Encode (frames, prompt, prime_frames) clips of one length into token examples."""
    tokens, prompts, prefix = [], [], []
    batch = []

    def flush() -> None:
        video = torch.stack([frames_to_tensor(frames) for frames, _, _ in batch])
        tokens.append(tokenizer.encode(video).to(torch.int16).numpy())
        for _, prompt, prime in batch:
            prompts.append(prompt)
            prefix.append(tokenizer.config.time_steps(prime) if prime else 0)
        if on_batch is not None:
            on_batch(len(batch))
        batch.clear()

    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return TokenExamples(np.concatenate(tokens), prompts, np.array(prefix, dtype=np.int64))


def shapes_clips(count: int, frames: int, size: int, prime_frames: int, split: str = "train",
                 continuation_share: float = 0.5, start: int = 0):
    from phenaki_cli.data.shapes_sampler import sample_clip
    for i in range(start, start + count):
        clip = sample_clip(split, i, frames, size=size, prime_frames=prime_frames,
                           continuation_share=continuation_share)
        yield clip.frames, clip.caption, clip.prime_frames


@dataclass
class TransformerTrainSettings(LoopSettings):
    steps: int = 5000
    warmup_steps: int = 200
    weight_decay: float = 0.01
    batch_size: int = 16
    text_drop: float = 0.1  # share of samples trained without text (classifier-free guidance)
    image_share: float = 0.2  # share of steps that train first-frame tokens only (images), as in the paper
    crop_share: float = 0.25  # share of steps on shorter windows (the first frames only), as stories make them


def train_transformer(out: str | Path, tokenizer_dir: str | Path | None, text_encoder: TextEncoder | None,
                      examples: TokenExamples, config: TransformerConfig | None, settings: TransformerTrainSettings,
                      sampling: SamplingConfig | None = None, fps: float = 8.0, resume: bool = False,
                      on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume training) a MaskGIT on token examples; returns the last logged metrics.

    A resumed run takes its tokenizer, text encoder and configs from `out` (the arguments may be None)."""
    from phenaki_cli.modeldir import load_tokenizer

    out = Path(out)
    torch.manual_seed(settings.seed)
    resuming = resume and is_training_folder(out)
    if resuming:
        saved = read_config(out)
        config = from_dict(TransformerConfig, saved["transformer"], f"{out}/config.json [transformer]")
        sampling = from_dict(SamplingConfig, saved.get("sampling", {}), f"{out}/config.json [sampling]")
        tokenizer, _ = load_tokenizer(out)
        text_encoder = TextEncoder.load(out / TEXT_ENCODER_DIR)
    else:
        check_new_run(out)
        tokenizer, _ = load_tokenizer(tokenizer_dir)
    sampling = sampling or SamplingConfig()
    check_compatible(tokenizer.config, config, sampling, text_encoder.dim, str(out))
    if examples.tokens.shape[1] > config.max_time_steps or examples.tokens.shape[2:] != (config.grid_size,) * 2:
        raise UserError(f"token examples are {'×'.join(map(str, examples.tokens.shape[1:]))} grids; the transformer "
                        f"takes up to {config.max_time_steps}×{config.grid_size}×{config.grid_size}")
    if int(examples.tokens.max()) >= tokenizer.config.codebook_size:
        raise UserError(f"token examples hold ids up to {int(examples.tokens.max())}, past the tokenizer's "
                        f"codebook of {tokenizer.config.codebook_size}: they were made by another tokenizer")

    model = MaskGIT(config).train()
    if resuming:
        load_weights(model, out / "transformer.safetensors")
    embeddings = {prompt: text_encoder.embed(prompt) for prompt in dict.fromkeys(examples.prompts)}

    def micro_step(step: int, micro: int):
        rng = np.random.default_rng([settings.seed, step, micro])
        index = rng.integers(0, len(examples), settings.batch_size)
        tokens = torch.from_numpy(examples.tokens[index].astype(np.int64))
        prefix = torch.from_numpy(examples.prefix_steps[index])
        image_step = bool(rng.random() < settings.image_share)
        if image_step:  # images: the first frame's tokens alone, nothing given
            tokens, prefix = tokens[:, :1], torch.zeros_like(prefix)
        elif rng.random() < settings.crop_share:
            # the causal tokenizer makes the first T' steps of a clip's tokens exactly the tokens of its first frames
            tokens = tokens[:, : int(rng.integers(int(prefix.max()) + 1, tokens.shape[1] + 1))]
        text, text_mask = pad_embeddings([embeddings[examples.prompts[i]] for i in index])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        loss, stats = masked_token_loss(model, tokens, text, text_mask, prefix, settings.text_drop, generator)
        return loss, {"loss": loss.item(), "accuracy": stats["accuracy"], "image_step": image_step}

    return fit(out, model, settings, resuming, micro_step,
               sections=lambda weights: {"tokenizer": (tokenizer.config, tokenizer), "transformer": (config, weights),
                                         "sampling": (sampling, None)},
               extra={"fps": fps, "text_encoder": TEXT_ENCODER_DIR},
               write_files=lambda folder: text_encoder.save(folder / TEXT_ENCODER_DIR), on_step=on_step)
