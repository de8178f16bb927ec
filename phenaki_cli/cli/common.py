"""What the commands share: consoles, the shared options, and the small helpers that print or check.

Imports no command module: the command modules import this, and `phenaki_cli.cli` assembles them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer
from rich.console import Console

from phenaki_cli.errors import UserError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

def number(flag: str, low: float | None = None, high: float | None = None, above: bool = False):
    """A typer callback: the option's value must be finite and within [low, high] (above low when
    `above`); checked as it is parsed, before any work, with one line naming the option."""
    def check(value):
        if value is None:
            return value
        inside = math.isfinite(value) and (low is None or (value > low if above else value >= low)) and (
            high is None or value <= high)
        if not inside:
            bounds = [f"{'>' if above else '>='} {low}" if low is not None else "",
                      f"<= {high}" if high is not None else ""]
            raise UserError(f"{flag} must be a number {' and '.join(b for b in bounds if b)}, got {value}")
        return value
    return check


DEFAULT_MODEL = Path(os.environ.get("PHENAKI_MODEL", Path(__file__).resolve().parents[2] / "models" / "shapes-64"))
ModelOption = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model directory (default: the shipped Shapes World model).")
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QuietOption = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
OverwriteOption = typer.Option(False, "--overwrite", help="Replace the output if it exists.")
InferencePrecisionOption = typer.Option("fp32", "--precision", help="fp32, or bf16: about 1.6× as fast on CPUs "
                                        "with native bf16; a few near-tie tokens differ.")

# generation and sampling
TextEncoderOption = typer.Option(None, "--text-encoder", help="T5 encoder directory or hub id (default: the model's own).")
SeedOption = typer.Option(0, "--seed", help="Same seed, model and script give the same frames.",
                          callback=number("--seed", 0, 2 ** 64 - 1))
StepsOption = typer.Option(None, "--steps", help="MaskGIT decoding steps per window (default: the model's).",
                           callback=number("--steps", 1, 1000))
GuidanceOption = typer.Option(None, "--guidance", help="Classifier-free guidance scale (0 unconditional, 1 conditional).",
                              callback=number("--guidance", 0))
TemperatureOption = typer.Option(None, "--temperature", help="Confidence noise, annealed to 0 over the steps.",
                                 callback=number("--temperature", 0))
PlausibilityOption = typer.Option(None, "--plausibility", help="In windows that continue given frames, guidance "
                                  "draws only codes with at least this share of the top conditional probability "
                                  "(0 off; default: the model's).", callback=number("--plausibility", 0, 0.999))
IterationsOption = typer.Option(None, "--iterations", help="Re-encode rounds when known frames or pixels come after "
                                                           "or beside unknown ones (default 3; 1 when only the head "
                                                           "is known).", callback=number("--iterations", 1))
PrimeOption = typer.Option(None, "--prime-frames", help="K frames re-encoded to start each later window (1 + t·m).",
                           callback=number("--prime-frames", 1))
FpsOption = typer.Option(None, "--fps", help="Frame rate of the output and of scene durations (default: the model's).",
                         callback=number("--fps", 0, 240, above=True))
StoryboardOption = typer.Option(False, "--storyboard", help="Also write NAME.storyboard.png, a captioned contact sheet.")

# training
AccumulateOption = typer.Option(1, "--accumulate", help="Micro-batches per optimizer step (gradient accumulation).")
EmaOption = typer.Option(0.0, "--ema", help="EMA decay of the weights the model directory holds (0: off; e.g. 0.999).")
KeepOption = typer.Option(1, "--keep-last", help="Checkpoints to keep in OUTPUT/checkpoints/ (1: only the latest); "
                          "those of --cpu-minutes marks are always kept.")
PreviewOption = typer.Option(500, "--preview-every", help="Steps between preview videos in OUTPUT/previews/ (0: none).")
PrecisionOption = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16 (autocast; fp16 on CUDA "
                               "only). auto: bf16 on CPUs with bf16 matrix instructions and on GPUs, else fp32 "
                               "(`phenaki info` says which).")
StrategyOption = typer.Option("ddp", "--strategy", help="Under torchrun: ddp, or fsdp to shard the model.")
TensorboardOption = typer.Option(None, "--tensorboard", help="Also log to TensorBoard event files in this folder.")
DeviceOption = typer.Option(None, "--device", help="cpu | cuda (default: cuda when available).")
ResumeOption = typer.Option(False, "--resume", help="Continue from the checkpoint in --output.")
WorkersOption = typer.Option(0, "--workers", help="DataLoader worker processes for decoding videos.")
ThreadsOption = typer.Option(0, "--threads", help="Compute threads per process (0: the cores available, shared "
                             "among torchrun's processes). On a machine busy with other jobs, 1 is often faster.")
UntilStepOption = typer.Option(0, "--until-step", help="Stop after this step (0: at --steps); the schedule still "
                               "runs to --steps, so a later --resume continues the same run.")
LogEveryOption = typer.Option(100, "--log-every", help="When stderr is not a terminal (a log file): a plain line "
                              "every this many steps (0: none).")
CpuMinutesOption = typer.Option("", "--cpu-minutes", help="Save a checkpoint (kept with --keep-last) when the "
                                "training process has used each of these minutes of CPU time, e.g. 5,10,20,40, "
                                "and stop at the last: equal-compute points for learning curves.")


def setup() -> None:
    from phenaki_cli.runtime import tune_allocator
    tune_allocator()


def say(quiet: bool, message: str) -> None:
    """A line on stderr, as is: user text (paths, prompts) may hold brackets that rich would take for markup."""
    if not quiet:
        err.print(message, markup=False, highlight=False)


def trim_note(quiet: bool, used: int, total: int, tokenizer) -> None:
    """Say so when a video was cut to the tokenizer's 1 + t·n frames."""
    if used < total:
        say(quiet, f"note: used the first {used} of {total} frames (the tokenizer takes 1 + "
                   f"{tokenizer.config.temporal_patch_size}·n)")


def video_target(output: Path, overwrite: bool, *inputs: Path | None) -> None:
    """A command's one video output, checked before any work: its format, --overwrite, and that it
    is none of the command's inputs."""
    from phenaki_cli.files import Outputs
    from phenaki_cli.video_io import check_video_output

    check_video_output(output)
    Outputs([output], overwrite, inputs)


def check_precision(name: str) -> None:
    """Name a bad --precision before any work is done."""
    import torch

    from phenaki_cli.runtime import precision_scope
    precision_scope(torch.device("cpu"), name)


def scene_bounds(scenes: str) -> tuple[int, int]:
    try:
        low, _, high = scenes.partition("-")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise UserError(f"--scenes {scenes!r}: give N or MIN-MAX") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise UserError(f"--scenes {scenes!r}: need 1 <= MIN <= MAX")
    return bounds


def work_progress(quiet: bool):
    """A progress bar for long work (training, encoding), with a status field, on stderr."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=err,
                    disable=quiet or not err.is_terminal)  # a log file gets StepLog lines instead


class StepLog:
    """Plain progress lines for a log file (stderr not a terminal, where a progress bar shows only
    its last state): every `every` steps and at the last, with steps/s and the time left."""

    def __init__(self, name: str, total: int, every: int, quiet: bool):
        import time

        self.name, self.total, self.every, self.clock = name, total, every, time.perf_counter
        self.enabled = every > 0 and not quiet and not err.is_terminal
        self.first: tuple[int, float] | None = None

    def __call__(self, step: int, row: dict, status: str) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (step - 1, now)  # this run may have resumed: count from its first step
        if not self.enabled or (step % self.every and step != self.total):
            return
        rate, left = _rate_and_time_left(step - self.first[0], self.total - step, now - self.first[1])
        say(False, f"{self.name} step {step}/{self.total} {status} lr {row.get('lr', 0):.2e} {rate:.2f} steps/s "
                   f"ETA {left}")


class CountLog:
    """Plain progress lines for work counted in items (clips encoded) when stderr is a log file: one at
    each tenth of the total, with items/s and the time left."""

    def __init__(self, name: str, unit: str, quiet: bool):
        import time

        self.name, self.unit, self.clock = name, unit, time.perf_counter
        self.enabled = not quiet and not err.is_terminal
        self.total, self.done, self.started, self.next_mark = 0, 0, self.clock(), 0

    def set_total(self, total: int) -> None:
        self.total, self.next_mark = total, max(1, total // 10)

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled or not self.total or self.done < self.next_mark:
            return
        while self.next_mark <= self.done:
            self.next_mark += max(1, self.total // 10)
        rate, left = _rate_and_time_left(self.done, self.total - self.done, self.clock() - self.started)
        say(False, f"{self.name} {self.done}/{self.total} {self.unit} {rate:.1f} {self.unit}/s ETA {left}")


def _rate_and_time_left(done: int, left: int, elapsed: float) -> tuple[float, str]:
    """Items per second so far, and the time the `left` items take at that rate (h:mm:ss, or ? before
    any rate is known)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    return rate, (_clock(left / rate) if rate else "?")


def _clock(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"
