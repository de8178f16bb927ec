"""The one training loop that both stages share.

AdamW with warm-up + cosine (torch's LambdaLR), gradient clipping, gradient accumulation,
optional EMA weights (torch.optim.swa_utils.AveragedModel), bf16/fp16 autocast, DDP or FSDP
under torchrun (train/distributed.py), checkpoints that resume exactly and keep the last k,
previews, a JSONL metrics log and optionally TensorBoard.

A trainer supplies an `Objective` (it holds the model; `objective(batch)` returns the loss
and a dict of float metrics) and `load_batch(step, part)`: the micro-batch `part` of
optimizer step `step`, already on the device, or None when it has nothing to learn from
(e.g. all its files were unreadable). The loop does the rest.

With EMA on, the model directory holds the EMA weights (what sampling should use) and the
training state holds the raw weights, so a resumed run continues from exactly where it was.
Weights the objective holds beside the model (a discriminator) go to the training state only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from phenaki_cli.errors import UserError
from phenaki_cli.runtime import (AUTO, PRECISIONS, interrupted, interrupts_at_safe_points, precision_scope,
                                 raise_if_interrupted, resolve_precision)
from phenaki_cli.train.checkpoint import PREVIEWS_DIR, load_checkpoint, save_checkpoint
from phenaki_cli.train.distributed import STRATEGIES, Distributed, no_sync, wrap


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
    keep_last: int = 1  # checkpoints kept in checkpoints/step-N (1: only the latest, at the top level)
    preview_every: int = 0  # steps between preview videos (0: none); made at a checkpoint
    # auto | fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler, CUDA only); auto: the device's
    # fastest (runtime.machine_precision): bf16 on CPUs with bf16 matrix instructions and on GPUs
    precision: str = AUTO
    strategy: str = "ddp"  # ddp | fsdp, when torchrun starts several processes
    tensorboard: str = ""  # a folder for TensorBoard event files ("" = none)
    seed: int = 0
    # minutes of the training process's CPU time at which to save a checkpoint (kept beside the
    # latest with --keep-last), stopping at the last: equal-compute points of a learning curve
    cpu_minutes: tuple[float, ...] = ()
    until_step: int = 0  # stop after this step (0: at --steps); the schedule still runs to --steps

    # What makes a run the run it is, with the option that sets each. A resumed run must keep
    # them (`check_same_run`): another --steps would bend the schedule, another --batch-size or
    # --seed would read other batches, another --keep-last would delete kept checkpoints.
    RUN_FIELDS: ClassVar[dict[str, str]] = {
        "steps": "--steps", "lr": "--lr", "warmup_steps": "warm-up steps", "weight_decay": "weight decay",
        "grad_clip": "gradient clipping", "accumulate": "--accumulate", "ema_decay": "--ema",
        "keep_last": "--keep-last", "seed": "--seed"}

    def validate(self) -> None:
        if self.steps < 1 or self.accumulate < 1 or self.save_every < 1 or self.keep_last < 1:
            raise UserError("--steps, --accumulate, --save-every and --keep-last must be at least 1")
        if getattr(self, "batch_size", 1) < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.until_step < 0:
            raise UserError(f"--until-step must be at least 0, got {self.until_step}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema must lie in [0, 1), got {self.ema_decay}")
        if self.precision not in (AUTO, *PRECISIONS):
            raise UserError(f"--precision {self.precision!r}: choose one of {', '.join((AUTO, *PRECISIONS))}")
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if any(not math.isfinite(m) or m <= 0 for m in self.cpu_minutes) or list(self.cpu_minutes) != sorted(
                set(self.cpu_minutes)):
            raise UserError(f"--cpu-minutes must be increasing positive minutes, got {list(self.cpu_minutes)}")
        if self.strategy == "fsdp" and self.ema_decay:
            raise UserError("--ema is not supported with --strategy fsdp (the EMA copy would not be sharded)")

    def check_same_run(self, saved: dict, out: Path) -> None:
        """Refuse to resume the run saved in `out` (its `saved` settings) with other run settings. A
        setting the run did not save is newer than the run, which therefore trained with its default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.default is not dataclasses.MISSING}
        for field, flag in self.RUN_FIELDS.items():
            was = saved.get(field, defaults.get(field))
            if (field in saved or field in defaults) and was != getattr(self, field):
                show = (lambda v: f"{flag}{v}") if flag.endswith("=") else (lambda v: f"{flag} {v}")
                raise UserError(f"{show(getattr(self, field))}: {out} was started with {show(was)}, and a "
                                f"resumed run keeps its settings (to change them, start a new run with --init-from "
                                f"{out})")


class Objective(nn.Module):
    """What a trainer optimizes: `loss(batch)` → (loss, float metrics named in `metric_names`).

    The model is a submodule, so DDP / FSDP wrap the objective and see the model's parameters.
    A None batch (nothing readable) gives a zero loss that still touches every parameter, so a
    process with nothing to learn can join the other processes' gradient all-reduce."""

    metric_names: tuple[str, ...] = ("loss",)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def loss(self, batch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def forward(self, batch) -> tuple[torch.Tensor, dict]:
        if batch is None:
            return sum(p.sum() for p in self.parameters()) * 0.0, {}
        return self.loss(batch)


def cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _tensorboard(folder: str):
    if not folder:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
    return SummaryWriter(folder)


def fit(out: Path, model: nn.Module, objective: Objective, settings: LoopSettings, resuming: bool,
        load_batch: Callable[[int, int], Any],
        sections: Callable[[dict[str, torch.Tensor]], dict[str, tuple[Any, nn.Module | dict | None]]],
        where: Distributed | None = None, extra: dict | None = None, extra_state: dict | None = None,
        write_files: Callable[[Path], None] | None = None,
        preview: Callable[[dict[str, torch.Tensor], Path, int], None] | None = None,
        extra_metrics: Callable[[], dict] | None = None, on_step: Callable[[int, dict], None] | None = None,
        check_resume: Callable[[dict], None] | None = None,
        nothing_learned: str = "no training step had data to learn from") -> dict:
    """Run optimizer steps up to `settings.steps`; returns the last logged metrics.

    `objective` holds `model` as a submodule; `sections(weights)` names the model directory's
    parts given the model's state dict; `preview(weights, folder, step)` writes preview files
    from the model's (full, CPU) state dict; `extra_metrics()` adds to each
    logged row (e.g. a count of unreadable files); `check_resume(state)` may refuse a resume given
    the saved training state (its "settings" are the settings the run was started with), or
    restore what the trainer keeps in it (`extra_state`, a dict or a function giving one at each
    checkpoint). A run that reaches a checkpoint without one step that had data stops with the
    error `nothing_learned`, writing nothing. Ctrl-C raises TrainingInterrupted."""
    settings.validate()
    where = where or Distributed()
    precision = resolve_precision(where.device, settings.precision)
    precision_scope(where.device, precision)  # a precision this device cannot run is refused before any work
    model.to(where.device)
    wrapped = wrap(objective, where, settings.strategy)
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=settings.lr, betas=(0.9, 0.99),
                                  weight_decay=settings.weight_decay)
    schedule = cosine_with_warmup(settings.warmup_steps, settings.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True) \
        if settings.ema_decay else None
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    start_step, log = 0, []
    if resuming:
        start_step, log, state = load_checkpoint(out)
        if check_resume is not None:
            check_resume(state)
        settings.check_same_run(state["settings"], out)
        if "model" in state:  # raw weights when the directory holds EMA weights
            model.load_state_dict(state["model"])
        own = _objective_weights(objective, state, out)
        if isinstance(next(iter(state["optimizer"]["state"]), 0), int):  # written by optimizer.state_dict()
            optimizer.load_state_dict(state["optimizer"])
        else:  # parameter names: any strategy, any number of processes
            set_state_dict(wrapped, optimizer, model_state_dict=own, optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True, strict=False))
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "ema" not in state:
                raise UserError(f"{out}: this run was trained without EMA; resume it without --ema")
            ema.load_state_dict(state["ema"])
    board = _tensorboard(settings.tensorboard) if where.is_main else None

    # the last step taken and saved, and whether any step had data to learn from
    done = {"step": start_step, "saved": start_step if resuming else None, "learned": resuming}

    def save(step: int) -> None:
        if not done["learned"]:  # not one optimizer step: a model written now would be untrained
            raise UserError(nothing_learned)
        # collective under FSDP: every process takes part, the main one writes
        weights, optimizer_state = get_state_dict(wrapped, optimizer, options=full)
        if not where.is_main:
            where.barrier()
            return
        # the objective's own weights (e.g. a discriminator) live in the training state only
        own = {k: v for k, v in weights.items() if not k.startswith("model.")}
        weights = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
        state = dict((extra_state() if callable(extra_state) else extra_state) or {}, optimizer=optimizer_state, scheduler=scheduler.state_dict(), objective=own)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if ema is not None:
            state.update(model=weights, ema=ema.state_dict())
            weights = ema.module.state_dict()
        make_preview = preview is not None and settings.preview_every and (
            step % settings.preview_every == 0 or step == settings.steps)

        def files(folder: Path) -> None:
            if write_files is not None:
                write_files(folder)
            if make_preview:
                (folder / PREVIEWS_DIR).mkdir(exist_ok=True)
                preview(weights, folder / PREVIEWS_DIR, step)

        # a Ctrl-C during the write waits for it (then names this checkpoint): one that arrived
        # while the renames held it back would otherwise land after them, before the mark below
        with interrupts_at_safe_points():
            save_checkpoint(out, sections(weights), state, step, log, settings, extra=extra, write_files=files,
                            keep_last=settings.keep_last, marked=_mark_steps(log, settings.cpu_minutes))
            done["saved"] = step
        if not where.active:  # several processes leave together at the step's end instead
            raise_if_interrupted()
        where.barrier()

    parts = where.parts(settings.accumulate)
    started = time.perf_counter()
    # the training process's own CPU time, over all its resumed runs: what learning curves are
    # drawn against, since other work on a shared machine stretches wall time but not this
    cpu_before = (log[-1].get("cpu_seconds", 0.0) if log else 0.0) - time.process_time()
    first_step = start_step + 1
    if settings.cpu_minutes and _cpu_budget_spent(log, settings, where):  # resumed, its CPU time used already
        first_step = settings.steps + 1
    last_step = min(settings.steps, settings.until_step or settings.steps)
    # several processes stop together, at the end of a step (runtime.interrupts_at_safe_points)
    safe_points = interrupts_at_safe_points() if where.active else contextlib.nullcontext()
    try:
        with safe_points:
            for step in range(first_step, last_step + 1):
                optimizer.zero_grad(set_to_none=True)
                micro_metrics = []
                learned = False
                for micro, part in enumerate(parts):
                    batch = load_batch(step, part)
                    if batch is None and not where.active:
                        micro_metrics.append({})
                        continue
                    last = micro == len(parts) - 1
                    with no_sync(wrapped, last), precision_scope(where.device, precision):
                        # a process with nothing to learn still joins the gradient all-reduce, with zeros
                        loss, metrics = wrapped(batch)
                    micro_metrics.append(metrics)
                    if batch is not None:
                        learned = True
                    scaled = loss / settings.accumulate
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                metrics = where.mean(_mean_metrics(micro_metrics), objective.metric_names)
                if where.agree(learned):
                    done["learned"] = True
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(wrapped.parameters(), settings.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    if ema is not None:
                        ema.update_parameters(model)
                with warnings.catch_warnings():
                    # a step with nothing to learn (every file unreadable) still advances the schedule
                    warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
                    scheduler.step()
                row = {"step": step, **metrics, **(extra_metrics() if extra_metrics else {}),
                       "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started,
                       "cpu_seconds": cpu_before + time.process_time()}
                log.append(row)
                passed = stop = False
                if settings.cpu_minutes:  # a mark passed at this step: a checkpoint; the last one ends the run
                    before = log[-2]["cpu_seconds"] if len(log) > 1 else 0.0
                    passed = where.agree(_passes_mark(before, row["cpu_seconds"], settings.cpu_minutes))
                    stop = _cpu_budget_spent(log, settings, where)
                if board is not None:
                    for key, value in row.items():
                        if isinstance(value, (int, float)) and key != "step":
                            board.add_scalar(f"train/{key}", value, step)
                done["step"] = step
                if step % settings.save_every == 0 or step == last_step or passed or stop:
                    save(step)
                if on_step is not None and where.is_main:
                    on_step(step, row)
                # one process's Ctrl-C stops them all here (each sees its own signal too)
                if where.agree(interrupted()) if where.active else interrupted():
                    raise KeyboardInterrupt
                if stop:
                    break
    except KeyboardInterrupt:
        raise TrainingInterrupted(done["step"], done["saved"]) from None
    if board is not None:
        board.close()
    return log[-1] if log else {}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training: the last step taken, and the step whose checkpoint
    the output folder holds (None: none yet)."""

    def __init__(self, step: int, saved: int | None):
        super().__init__(step, saved)
        self.step, self.saved = step, saved


def _passes_mark(before: float, spent: float, minutes: tuple[float, ...]) -> bool:
    """Did CPU time going from `before` to `spent` seconds pass one of the marks (minutes)?"""
    return any(before < 60 * m <= spent for m in minutes)


def _mark_steps(log: list[dict], minutes: tuple[float, ...]) -> frozenset[int]:
    """The steps at which the run's CPU time passed one of its --cpu-minutes marks."""
    steps, before = set(), 0.0
    for row in log:
        spent = row.get("cpu_seconds", before)
        if _passes_mark(before, spent, minutes):
            steps.add(row["step"])
        before = spent
    return frozenset(steps)


def _cpu_budget_spent(log: list[dict], settings: LoopSettings, where: Distributed) -> bool:
    """Has the run used the CPU time of its last --cpu-minutes mark? (Processes agree: each counts
    its own.)"""
    return where.agree(bool(log) and log[-1].get("cpu_seconds", 0.0) >= 60 * settings.cpu_minutes[-1])


def _objective_weights(objective: Objective, state: dict, out: Path) -> dict:
    """The saved weights of the objective beside its model (a discriminator, say), checked
    against this run's objective by name."""
    saved = state.get("objective", {})
    expected = {k for k in objective.state_dict() if not k.startswith("model.")}
    if set(saved) != expected:
        raise UserError(f"{out}: the checkpoint's training-only weights ({', '.join(sorted(saved)[:3]) or 'none'}) "
                        f"do not match this run's ({', '.join(sorted(expected)[:3]) or 'none'})")
    return saved


def _mean_metrics(rows: list[dict]) -> dict:
    """Average float metrics over micro-batches; other values are taken from the last one."""
    rows = [r for r in rows if r] or [{}]
    merged = dict(rows[-1])
    for key, value in merged.items():
        values = [r[key] for r in rows if key in r]
        if isinstance(value, float) and all(isinstance(v, float) for v in values):
            merged[key] = sum(values) / len(values)
    return merged
