"""Training checkpoints shared by every trainer.

A training folder is a model directory (config.json + *.safetensors) plus `train_state.pt`
(step, optimizer, scheduler, RNG, settings) and `metrics.jsonl`, all replaced in one atomic
rename, so an interrupted run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import save_model_dir

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


def is_training_folder(out: Path) -> bool:
    return (out / STATE_FILE).is_file()


def check_new_run(out: Path) -> None:
    if out.exists():
        raise UserError(f"{out}: already exists (pass --resume to continue training, or choose another folder)")


def save_checkpoint(out: Path, sections: dict[str, tuple[Any, nn.Module | None]], optimizer, scheduler, step: int,
                    log: list[dict], settings, extra: dict | None = None, extra_state: dict | None = None,
                    write_files: Callable[[Path], None] | None = None) -> None:
    def files(folder: Path) -> None:
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "settings": asdict(settings), **(extra_state or {})},
                   folder / STATE_FILE)
        (folder / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in log))
        if write_files is not None:
            write_files(folder)

    if out.exists() and not is_training_folder(out):
        raise UserError(f"{out}: exists and is not a training folder; refusing to replace it")
    save_model_dir(out, sections, extra=extra, write_files=files)


def load_checkpoint(out: Path, optimizer, scheduler, schedule: Callable[[int], float]) -> tuple[int, list[dict], dict]:
    """Restore optimizer, scheduler and RNG; returns (step, metrics log up to it, the saved state)."""
    state = torch.load(out / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    step = state["step"]
    # the schedule follows this run's --steps (a resumed run may be extended), not the saved lr
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * schedule(step)
    log = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines() if line.strip()]
    return step, [row for row in log if row["step"] <= step], state
