"""Training checkpoints shared by every trainer.

A training folder is a model directory (config.json + *.safetensors) plus `train_state.pt`
(step, optimizer, scheduler, RNG, settings) and `metrics.jsonl`, all replaced in one atomic
rename, so an interrupted run never leaves a half-written checkpoint. With `keep_last` k > 1,
`checkpoints/step-NNNNNN/` holds the last k checkpoints as complete training folders (hard
links, so they cost no copy); it always holds those of the --cpu-minutes marks, whatever k
is. `previews/` collects the preview videos of the whole run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from phenaki_cli.errors import UserError
from phenaki_cli.modeldir import save_model_dir

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
PREVIEWS_DIR = "previews"


def is_training_folder(out: Path) -> bool:
    return (out / STATE_FILE).is_file()


def check_new_run(out: Path) -> None:
    if out.exists():
        raise UserError(f"{out}: already exists (pass --resume to continue training, or choose another folder)")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _carry_history(old: Path, new: Path, step: int, keep_last: int, marked: frozenset[int]) -> None:
    """Into the new folder: the run's previews, the last `keep_last` checkpoints (this one included),
    and every checkpoint of a `marked` step (the --cpu-minutes marks: a learning curve's points are
    never pruned, whatever --keep-last says)."""
    if (old / PREVIEWS_DIR).is_dir():
        shutil.copytree(old / PREVIEWS_DIR, new / PREVIEWS_DIR, copy_function=_link_or_copy, dirs_exist_ok=True)
    kept = sorted((old / CHECKPOINTS_DIR).glob("step-*")) if (old / CHECKPOINTS_DIR).is_dir() else []
    others = [s for s in kept if s.name != f"step-{step:06d}"]
    recent = others[len(others) - (keep_last - 1):] if keep_last > 1 else []
    carried = [s for s in others if s in recent or int(s.name.removeprefix("step-")) in marked]
    this_one = keep_last > 1 or step in marked
    if not (carried or this_one):
        return
    history = new / CHECKPOINTS_DIR
    history.mkdir()
    for snapshot in carried:
        shutil.copytree(snapshot, history / snapshot.name, copy_function=_link_or_copy)
    if this_one:
        shutil.copytree(new, history / f"step-{step:06d}", copy_function=_link_or_copy,
                        ignore=lambda folder, names: [n for n in names if Path(folder) == new
                                                      and n in (CHECKPOINTS_DIR, PREVIEWS_DIR)])


def save_checkpoint(out: Path, sections: dict[str, tuple[Any, nn.Module | dict | None]], state: dict, step: int,
                    log: list[dict], settings, extra: dict | None = None,
                    write_files: Callable[[Path], None] | None = None, keep_last: int = 1,
                    marked: frozenset[int] = frozenset()) -> None:
    """`state`: what resuming needs beyond the weights (optimizer, scheduler, EMA, ...); `marked`: steps
    whose checkpoints are kept for good."""
    def files(folder: Path) -> None:
        torch.save({"step": step, "torch_rng": torch.get_rng_state(), "settings": asdict(settings), **state},
                   folder / STATE_FILE)
        (folder / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in log))
        if write_files is not None:
            write_files(folder)
        _carry_history(out, folder, step, keep_last, marked)

    if out.exists() and not is_training_folder(out):
        raise UserError(f"{out}: exists and is not a training folder; refusing to replace it")
    save_model_dir(out, sections, extra=extra, write_files=files)


def read_state(out: Path) -> dict:
    """The training state of a checkpoint: tensors and plain values only.

    Read with `weights_only=True`, so a run folder made by someone else cannot run code when it
    is resumed (a full unpickle would call whatever the file names)."""
    try:
        state = torch.load(out / STATE_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise UserError(f"{out / STATE_FILE}: holds objects other than tensors and plain values; refusing to "
                        "load it (unpickling them could run code)") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UserError(f"{out / STATE_FILE}: cannot read the training state ({e})") from None
    if not isinstance(state, dict) or not {"step", "torch_rng", "settings"} <= state.keys():
        raise UserError(f"{out / STATE_FILE}: not a phenaki training state")
    return state


def load_checkpoint(out: Path) -> tuple[int, list[dict], dict]:
    """Read a checkpoint's state and restore the RNG; returns (step, metrics log up to it, the saved state)."""
    state = read_state(out)
    torch.set_rng_state(state["torch_rng"])
    step = state["step"]
    log = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines() if line.strip()]
    return step, [row for row in log if row["step"] <= step], state
