"""The one training loop that both stages share.

AdamW with warm-up + cosine (torch's LambdaLR), gradient clipping, gradient accumulation,
optional EMA weights (torch.optim.swa_utils.AveragedModel), checkpoints that resume exactly,
and a JSONL metrics log. A trainer supplies `micro_step(step, micro)` (the loss of one
micro-batch and its metrics) and the model directory's sections; the loop does the rest.

With EMA on, the model directory holds the EMA weights (what sampling should use) and the
training state holds the raw weights, so a resumed run continues from exactly where it was.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from phenaki_cli.errors import UserError
from phenaki_cli.train.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class LoopSettings:
    steps: int = 2000
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    accumulate: int = 1  # micro-batches per optimizer step (same global batch with less memory)
    ema_decay: float = 0.0  # 0: no EMA; e.g. 0.999
    save_every: int = 250
    seed: int = 0

    def validate(self) -> None:
        if self.steps < 1 or self.accumulate < 1 or self.save_every < 1:
            raise UserError("--steps, --accumulate and --save-every must be at least 1")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema must lie in [0, 1), got {self.ema_decay}")


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def fit(out: Path, model: nn.Module, settings: LoopSettings, resuming: bool,
        micro_step: Callable[[int, int], tuple[torch.Tensor | None, dict]],
        sections: Callable[[nn.Module], dict[str, tuple[Any, nn.Module | None]]],
        extra: dict | None = None, extra_state: dict | None = None,
        write_files: Callable[[Path], None] | None = None,
        on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Run optimizer steps up to `settings.steps`. `micro_step` returns (loss, metrics), or
    (None, metrics) for a micro-batch with nothing to learn from (e.g. all files unreadable)."""
    settings.validate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.99),
                                  weight_decay=settings.weight_decay)
    schedule = cosine_with_warmup(settings.warmup_steps, settings.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True) \
        if settings.ema_decay else None
    start_step, log = 0, []
    if resuming:
        start_step, log, state = load_checkpoint(out, optimizer, scheduler, schedule)
        if "model" in state:  # raw weights when the directory holds EMA weights
            model.load_state_dict(state["model"])
        if ema is not None:
            if "ema" not in state:
                raise UserError(f"{out}: this run was trained without EMA; resume it without --ema")
            ema.load_state_dict(state["ema"])

    def save(step: int) -> None:
        state = dict(extra_state or {})
        if ema is not None:
            state.update(model=model.state_dict(), ema=ema.state_dict())
        save_checkpoint(out, sections(ema.module if ema is not None else model), optimizer, scheduler, step, log,
                        settings, extra=extra, extra_state=state, write_files=write_files)

    started = time.perf_counter()
    for step in range(start_step + 1, settings.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        micro_metrics = []
        learned = False
        for micro in range(settings.accumulate):
            loss, metrics = micro_step(step, micro)
            micro_metrics.append(metrics)
            if loss is not None:
                (loss / settings.accumulate).backward()
                learned = True
        metrics = _mean_metrics(micro_metrics)
        if learned:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
        scheduler.step()
        row = {"step": step, **metrics, "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        log.append(row)
        if step % settings.save_every == 0 or step == settings.steps:
            save(step)
        if on_step is not None:
            on_step(step, row)
    return log[-1] if log else {}


def _mean_metrics(rows: list[dict]) -> dict:
    """Average float metrics over micro-batches; other values are taken from the last one."""
    merged = dict(rows[-1])
    for key, value in merged.items():
        values = [r[key] for r in rows if key in r]
        if isinstance(value, float) and all(isinstance(v, float) for v in values):
            merged[key] = sum(values) / len(values)
    return merged
