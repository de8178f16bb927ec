"""Tokenizer training: a single-process loop with checkpoints that resume exactly.

The output directory is a training folder (see train/checkpoint.py). Clips are addressed by sample number (step · batch + j),
so a resumed run reads exactly the clips the uninterrupted run would have read.
"""

from __future__ import annotations

import math
import time
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
from phenaki_cli.train.checkpoint import check_new_run, is_training_folder, load_checkpoint, save_checkpoint
from phenaki_cli.video_io import frames_to_tensor


@dataclass
class TrainSettings:
    steps: int = 2000
    batch_size: int = 8
    frames: int = 17
    fps: float = 8.0
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    save_every: int = 250
    seed: int = 0
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


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train_tokenizer(data: str, out: str | Path, config: TokenizerConfig, settings: TrainSettings,
                    resume: bool = False, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume training) a C-ViViT; returns the last logged metrics."""
    out = Path(out)
    torch.manual_seed(settings.seed)
    start_step, log = 0, []
    resuming = resume and is_training_folder(out)
    if resuming:
        config = from_dict(TokenizerConfig, read_config(out)["tokenizer"], f"{out}/config.json [tokenizer]")
    model = CViViT(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.99),
                                  weight_decay=settings.weight_decay)
    schedule = cosine_with_warmup(settings.warmup_steps, settings.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if resuming:
        load_weights(model, out / "tokenizer.safetensors")
        start_step, log, _ = load_checkpoint(out, optimizer, scheduler, schedule)
    else:
        check_new_run(out)

    source = clip_source(data, settings.frames, config.image_size, settings.fps, settings.seed)
    batches = [[step * settings.batch_size + j for j in range(settings.batch_size)]
               for step in range(start_step, settings.steps)]
    loader = torch.utils.data.DataLoader(source, batch_sampler=batches, collate_fn=collate_videos,
                                         num_workers=settings.workers)

    def save(step: int) -> None:
        save_checkpoint(out, {"tokenizer": (config, model)}, optimizer, scheduler, step, log, settings,
                        extra_state={"data": data})

    step, started = start_step, time.perf_counter()
    for video in loader:
        step += 1
        if video is None:
            continue
        result = model(video)
        mse = F.mse_loss(result.reconstruction, video)
        loss = mse + result.vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        row = {"step": step, "loss": loss.item(), "mse": mse.item(), "vq": result.vq_loss.item(),
               "psnr": float(10 * np.log10(1 / max(mse.item(), 1e-10))), "perplexity": result.perplexity.item(),
               "codes_used": result.used_fraction.item(), "lr": scheduler.get_last_lr()[0],
               "seconds": time.perf_counter() - started, "skipped_files": len(source.skipped)}
        log.append(row)
        if step % settings.save_every == 0 or step == settings.steps:
            save(step)
        if on_step is not None:
            on_step(step, row)
    return log[-1] if log else {}
