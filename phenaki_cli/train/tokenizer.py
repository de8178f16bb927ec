"""Tokenizer training on the shared loop (train/loop.py).

Clips are addressed by sample number (micro-batch index · batch + j), so a resumed run reads
exactly the clips the uninterrupted run would have read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from phenaki_cli.config import TokenizerConfig, from_dict
from phenaki_cli.data.datasets import VideoClips
from phenaki_cli.modeldir import load_weights, read_config
from phenaki_cli.tokenizer import CViViT
from phenaki_cli.train.checkpoint import check_new_run, is_training_folder
from phenaki_cli.train.distributed import Distributed
from phenaki_cli.train.loop import LoopSettings, Objective, fit
from phenaki_cli.video_io import frames_to_tensor


@dataclass
class TrainSettings(LoopSettings):
    grad_clip: float = 10.0  # the paper's C-ViViT setting
    batch_size: int = 8
    frames: int = 17
    fps: float = 8.0
    workers: int = 0


class ShapesClips:
    """Shapes World training clips by sample number (same interface as VideoClips)."""

    def __init__(self, frames: int, size: int):
        self.frames, self.size, self.skipped = frames, size, {}

    def __getitem__(self, sample: int):
        from phenaki_cli.data.shapes_sampler import sample_clip
        clip = sample_clip("train", sample, self.frames, size=self.size)
        return clip.frames, clip.caption


def clip_source(data: str, frames: int, size: int, fps: float, seed: int):
    return ShapesClips(frames, size) if data == "shapes" else VideoClips(data, frames, size, fps, seed)


def collate_videos(items) -> tuple[torch.Tensor | None, int]:
    """A batch of the readable clips, and how many were unreadable (counted here: DataLoader
    workers are other processes, so the dataset's own `skipped` is not seen by the trainer)."""
    videos = [frames_to_tensor(frames) for frames, _ in (i for i in items if i is not None)]
    return (torch.stack(videos) if videos else None), sum(i is None for i in items)


class TokenizerObjective(Objective):
    """L2 reconstruction + VQ (codebook and commitment) losses."""

    metric_names = ("loss", "mse", "vq", "psnr", "perplexity", "codes_used")

    def loss(self, video: torch.Tensor):
        result = self.model(video)
        mse = F.mse_loss(result.reconstruction.float(), video)
        loss = mse + result.vq_loss
        return loss, {"loss": loss.item(), "mse": mse.item(), "vq": result.vq_loss.item(),
                      "psnr": float(10 * np.log10(1 / max(mse.item(), 1e-10))),
                      "perplexity": result.perplexity.item(), "codes_used": result.used_fraction.item()}


def write_reconstruction_preview(model: CViViT, frames: np.ndarray, path: Path, fps: float) -> None:
    """Source | reconstruction side by side, one mp4 per preview (`model` in eval mode)."""
    from phenaki_cli.codec import decode_grid, encode_frames
    from phenaki_cli.video_io import write_video

    reconstruction = decode_grid(model, encode_frames(model, frames))
    write_video(path, np.concatenate([frames, reconstruction], axis=2), fps)


def train_tokenizer(data: str, out: str | Path, config: TokenizerConfig, settings: TrainSettings,
                    resume: bool = False, on_step: Callable[[int, dict], None] | None = None,
                    where: Distributed | None = None) -> dict:
    """Train (or resume training) a C-ViViT; returns the last logged metrics."""
    out = Path(out)
    where = where or Distributed()
    torch.manual_seed(settings.seed)
    resuming = resume and is_training_folder(out)
    if resuming:
        config = from_dict(TokenizerConfig, read_config(out)["tokenizer"], f"{out}/config.json [tokenizer]")
    else:
        check_new_run(out)
    model = CViViT(config).train()
    if resuming:
        load_weights(model, out / "tokenizer.safetensors")
    source = clip_source(data, settings.frames, config.image_size, settings.fps, settings.seed)
    parts = where.parts(settings.accumulate)
    loader, skipped = None, 0

    def batches(first_step: int):
        # global micro-batch g = (step - 1)·parts + part reads samples g·batch … g·batch + batch − 1
        total = settings.accumulate * where.world
        order = [[((step - 1) * total + part) * settings.batch_size + j for j in range(settings.batch_size)]
                 for step in range(first_step, settings.steps + 1) for part in parts]
        return iter(torch.utils.data.DataLoader(source, batch_sampler=order, collate_fn=collate_videos,
                                                num_workers=settings.workers))

    def load_batch(step: int, part: int):
        nonlocal loader, skipped
        if loader is None:  # the first micro-batch of this run (of a resumed one too)
            loader = batches(step)
        video, unreadable = next(loader)
        skipped += unreadable
        return None if video is None else video.to(where.device)

    def preview(weights: dict, folder: Path, step: int) -> None:
        sample = next((s for s in map(source.__getitem__, range(8)) if s is not None), None)  # each read once
        if sample is not None:  # on the CPU, from the saved weights: works for any device and strategy
            snapshot = CViViT(config).eval()
            snapshot.load_state_dict(weights)
            write_reconstruction_preview(snapshot, sample[0], folder / f"step-{step:06d}.mp4", settings.fps)

    return fit(out, model, TokenizerObjective(model), settings, resuming, load_batch,
               sections=lambda weights: {"tokenizer": (config, weights)}, where=where,
               extra_state={"data": data}, preview=preview,
               extra_metrics=lambda: {"skipped_files": skipped}, on_step=on_step)
