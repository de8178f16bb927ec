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
from phenaki_cli.train.loop import LoopSettings, fit
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


def collate_videos(items) -> torch.Tensor | None:
    videos = [frames_to_tensor(frames) for frames, _ in (i for i in items if i is not None)]
    return torch.stack(videos) if videos else None


def train_tokenizer(data: str, out: str | Path, config: TokenizerConfig, settings: TrainSettings,
                    resume: bool = False, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume training) a C-ViViT; returns the last logged metrics."""
    out = Path(out)
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
    loader = None

    def batches(first: int):
        micro_batches = range(first, settings.steps * settings.accumulate)
        return iter(torch.utils.data.DataLoader(
            source, batch_sampler=[[m * settings.batch_size + j for j in range(settings.batch_size)]
                                   for m in micro_batches], collate_fn=collate_videos, num_workers=settings.workers))

    def micro_step(step: int, micro: int):
        nonlocal loader
        if loader is None:  # the first micro-batch of this run (of a resumed one too)
            loader = batches((step - 1) * settings.accumulate + micro)
        video = next(loader)
        if video is None:
            return None, {"skipped_files": len(source.skipped)}
        result = model(video)
        mse = F.mse_loss(result.reconstruction, video)
        loss = mse + result.vq_loss
        return loss, {"loss": loss.item(), "mse": mse.item(), "vq": result.vq_loss.item(),
                      "psnr": float(10 * np.log10(1 / max(mse.item(), 1e-10))),
                      "perplexity": result.perplexity.item(), "codes_used": result.used_fraction.item(),
                      "skipped_files": len(source.skipped)}

    return fit(out, model, settings, resuming, micro_step,
               sections=lambda weights: {"tokenizer": (config, weights)}, extra_state={"data": data},
               on_step=on_step)
