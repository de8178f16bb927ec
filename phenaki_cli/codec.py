"""Video ⇄ tokens with a model's tokenizer: what `phenaki tokenize` and `reconstruct` do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phenaki_cli.config import valid_frame_count
from phenaki_cli.errors import UserError
from phenaki_cli.files import atomic_path
from phenaki_cli.runtime import precision_scope
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.video_io import frames_to_tensor, read_video, tensor_to_frames

TOKENS_FORMAT = "phenaki-tokens-v1"


@dataclass
class Tokens:
    grid: np.ndarray  # (T, h, w) int
    fps: float
    frames: int  # frames the grid decodes to: 1 + t·(T - 1)
    source_frames: int  # frames in the source before trimming to 1 + t·n
    config_hash: str


def load_clip(path: str | Path, tokenizer: CViViT, fps: float | None = None) -> tuple[np.ndarray, float, int]:
    """Read a video at the tokenizer's size, trimmed to the largest valid 1 + t·n frame count.

    Returns (frames, fps, frame count before trimming)."""
    video = read_video(path, fps=fps, size=tokenizer.config.image_size)
    keep = valid_frame_count(len(video.frames), tokenizer.config.temporal_patch_size)
    return video.frames[:keep], video.fps, len(video.frames)


@torch.inference_mode()
def encode_frames(tokenizer: CViViT, frames: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """`precision` bf16 is about 1.6× as fast on CPUs with native bf16; a few tokens then differ
    from fp32 where two codes are near-ties (README: Speed)."""
    with precision_scope(torch.device("cpu"), precision):
        return tokenizer.encode(frames_to_tensor(frames)[None])[0].numpy()


@torch.inference_mode()
def decode_grid(tokenizer: CViViT, grid: np.ndarray, precision: str = "fp32") -> np.ndarray:
    with precision_scope(torch.device("cpu"), precision):
        video = tokenizer.decode(torch.from_numpy(grid.astype(np.int64))[None])[0]
    return tensor_to_frames(video.float())


def save_tokens(path: str | Path, tokens: Tokens) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, tokens=tokens.grid.astype(np.int32), fps=tokens.fps, frames=tokens.frames,
                            source_frames=tokens.source_frames, config_hash=tokens.config_hash,
                            format=TOKENS_FORMAT)


def load_tokens(path: str | Path, expected_hash: str) -> Tokens:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data.get("format", "")) != TOKENS_FORMAT:
                raise UserError(f"{path}: not a phenaki tokens file")
            tokens = Tokens(data["tokens"], float(data["fps"]), int(data["frames"]), int(data["source_frames"]),
                            str(data["config_hash"]))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not a readable tokens file ({e})") from None
    if tokens.config_hash != expected_hash:
        raise UserError(f"{path}: tokens were made by another tokenizer (config {tokens.config_hash}, "
                        f"this model {expected_hash})")
    return tokens
