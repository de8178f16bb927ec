"""What a resumed run keeps: its settings, its design and its window, taken from the run when not
given and refused when given otherwise; and the line Ctrl-C leaves. Shared by the training commands."""

from __future__ import annotations

from pathlib import Path

import typer

from phenaki_cli.cli.common import say
from phenaki_cli.errors import Interrupted, UserError

RUN_PARAMS = {"ema_decay": "ema", "l1_weight": "l1", "adversarial_weight": "adversarial",
              "corrupt_share": "corrupt", "change_weight": "change_weight", **{
    f"{task}_share": "tasks" for task in ("predict", "rewind", "infill", "box", "forecast", "object")}}  # settings field → option


def given(ctx: typer.Context, param: str) -> bool:
    """Was this option given (on the command line or by its environment variable)?"""
    source = ctx.get_parameter_source(param)  # by name: typer may bring its own copy of click's enum
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def resumed(ctx: typer.Context, output: Path, settings, quiet: bool):
    """A resumed run's settings: each run setting not given on the command line is the run's own
    (so `--resume` alone continues a run); one given that differs is refused by the loop
    (LoopSettings.check_same_run). Says where the run resumes and what it took from the run."""
    import dataclasses

    from phenaki_cli.train.checkpoint import read_state

    state = read_state(output)
    saved, taken = state["settings"], {}
    for field, flag in settings.RUN_FIELDS.items():
        param = RUN_PARAMS.get(field, field)
        if field in saved and saved[field] != getattr(settings, field) and not (
                param in ctx.params and given(ctx, param)):
            taken[field] = saved[field]
    # the CPU-minute marks too, but they may be given anew (a learning curve extended): they add
    # checkpoints and a stop, never change what the run computes
    marks = tuple(saved.get("cpu_minutes", ()))
    if marks and marks != settings.cpu_minutes and not given(ctx, "cpu_minutes"):
        taken["cpu_minutes"] = marks
    settings = dataclasses.replace(settings, **taken)
    settings.check_same_run(saved, output)
    say(quiet, f"resuming {output} from step {state['step']} of {settings.steps}"
               + (f" (the run's own {shown})" if (shown := _as_flags(taken, settings.RUN_FIELDS)) else ""))
    return settings


def _as_flags(values: dict, flags: dict[str, str]) -> str:
    """Run settings as the command line gives them: `--lr 0.001, --tasks predict=0.1,rewind=0.1,
    --cpu-minutes 10,20` (fields with no flag, such as warm-up steps, are left out)."""
    flags, shown = dict(flags, cpu_minutes="--cpu-minutes"), {}
    for field, value in values.items():
        flag = flags[field]
        if not flag.startswith("--"):
            continue
        text = ",".join(f"{v:g}" for v in value) if isinstance(value, (tuple, list)) else str(value)
        name, _, key = flag.partition(" ")  # "--tasks predict=": one flag holds several fields
        shown.setdefault(name, []).append(key + text)
    return ", ".join(f"{name} {','.join(parts)}" for name, parts in shown.items())


def interrupted(output: Path, stopped, is_main: bool) -> Interrupted:
    """Ctrl-C: the line that says which step the output folder keeps (from process 0 only)."""
    if not is_main:
        return Interrupted("")
    kept = (f"{output} keeps the checkpoint of step {stopped.saved}; continue with --resume"
            if stopped.saved is not None else f"no checkpoint was written yet, so {output} was not created")
    return Interrupted(f"interrupted after step {stopped.step}: {kept}")


# transformer config fields that come from the tokenizer, the window and the text encoder, not a preset
DERIVED_FIELDS = ("vocab_size", "grid_size", "max_time_steps", "text_dim")


def same_design(asked, own, output: Path) -> None:
    """A resumed run keeps its design: refuse options that would make another one, naming a field."""
    from phenaki_cli.config import to_dict

    asked, own = to_dict(asked), to_dict(own)
    changed = [k for k in own if asked.get(k) != own[k]]
    if changed:
        field = changed[0]
        raise UserError(f"{output} has {field} {own[field]!r}, and the design options given ask for "
                        f"{asked.get(field)!r}; a resumed run keeps its own design (drop them, or start a new run)")


def fixed_by(ctx: typer.Context, values: dict[str, int], fixed: dict[str, int], what: str,
              remedy: str) -> dict[str, int]:
    """`fixed` values (of a run, of shards) for options not given; a given one that differs is refused."""
    for param, value in fixed.items():
        if values[param] != value and given(ctx, param):
            flag = f"--{param.replace('_', '-')}"
            raise UserError(f"{flag} {values[param]}: {what} {flag} {value}; drop {flag}, or {remedy}")
    return dict(fixed)
