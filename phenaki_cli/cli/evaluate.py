"""The `eval` command: score Shapes World videos, a folder of them, or N generated stories or task cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text  # user text (clauses, file names) is shown as is, never read as markup

from phenaki_cli.cli.common import (GuidanceOption, IterationsOption, JsonOption, ModelOption, PlausibilityOption,
                                    QuietOption, SeedOption, StepsOption, TemperatureOption, err, out, scene_bounds,
                                    setup)
from phenaki_cli.errors import UserError


def eval_command(video: Optional[Path] = typer.Argument(None, help="A generated video to score."),
                 story: Optional[Path] = typer.Option(None, "--story", help="Its story script."),
                 suite: Optional[Path] = typer.Option(None, "--suite", help="Score every video in this folder."),
                 generate: Optional[int] = typer.Option(
                     None, "--generate", help="Generate N random unseen stories with --model and score them."),
                 split: str = typer.Option("test", help="With --generate: test (new stories) or heldout "
                                                        "(compositions training never saw)."),
                 scenes: str = typer.Option("2-6", help="With --generate: scenes per story, MIN-MAX."),
                 task: Optional[str] = typer.Option(
                     None, "--task", help="With --generate: score a completion task instead of stories: predict | "
                                          "rewind | infill | image | inpaint | edit."),
                 ceiling: bool = typer.Option(False, "--ceiling", help="With --generate: score the true stories "
                                              "through the tokenizer alone (the best any transformer can do)."),
                 model: Path = ModelOption, seed: int = SeedOption, steps: Optional[int] = StepsOption,
                 guidance: Optional[float] = GuidanceOption, temperature: Optional[float] = TemperatureOption,
                 plausibility: Optional[float] = PlausibilityOption, iterations: Optional[int] = IterationsOption,
                 as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Score Shapes World videos: per-clause presence and motion, continuity at scene cuts."""
    from phenaki_cli.eval.suite import aggregate, score_suite, score_video

    if task is not None and generate is None:
        raise UserError("--task scores generated cases: give --generate N too")
    if ceiling and (generate is None or task is not None):
        raise UserError("--ceiling scores the --generate N stories through the tokenizer (not with --task)")
    if sum(x is not None for x in (video, suite, generate)) != 1:
        raise UserError("give one of: a VIDEO (with --story or a sidecar JSON), --suite DIR, or --generate N")
    if iterations is not None and task not in ("rewind", "infill", "inpaint"):
        raise UserError("--iterations sets the re-encode rounds of --task rewind, infill or inpaint")
    if plausibility is not None and (ceiling or task not in (None, "image")):
        raise UserError("--plausibility applies to generated stories and --task image (windows that continue "
                        "given frames)")
    if task is not None:
        _eval_task(task, generate, model, seed, steps, guidance, temperature, plausibility, iterations, as_json, quiet)
        return
    if generate is not None:
        _eval_generated(generate, split, scenes, model, seed, steps, guidance, temperature, plausibility, as_json, quiet,
                        ceiling)
        return
    results = score_suite(suite) if suite is not None else [score_video(video, story)]
    summary = aggregate(results)
    if as_json:
        print(json.dumps({**summary, "results": [{"video": str(r.video), **r.report.to_dict()} for r in results]}))
        return
    if suite is None:
        table = Table("scene", "clause", "present", "action", "detail")
        for c in results[0].report.clauses:
            table.add_row(str(c.scene + 1), Text(c.clause), "yes" if c.present else "[red]no",
                          "yes" if c.action_ok else "[red]no", Text(c.detail))
        for b in results[0].report.boundaries:
            table.add_row(f"{b.boundary + 1}|{b.boundary + 2}", Text(f"continuity: {b.object}"), "",
                          "yes" if b.ok else "[red]no", Text(b.detail))
    else:
        table = Table("video", "clauses", "prompt accuracy", "continuity")
        for r in results:
            cont = r.report.continuity
            table.add_row(Text(r.video.name), str(len(r.report.clauses)), f"{r.report.prompt_accuracy:.3f}",
                          "n/a" if cont is None else f"{cont:.3f}")
    out.print(table)
    cont = summary["continuity"]
    out.print(f"prompt accuracy {summary['prompt_accuracy']:.3f} over {summary['clauses']} clauses; continuity "
              + ("n/a (one scene)" if cont is None else f"{cont:.3f} over {summary['boundaries']} checks"))
    _print_clause_figures(summary)


def _print_clause_figures(summary: dict) -> None:
    """What the totals hide: extra objects, and where clauses fail."""
    out.print(f"extra objects (blobs beyond the story's, which the accuracy ignores): "
              f"{summary['extra_objects_per_frame']:.2f} per frame; clean scenes {summary['clean_scenes']:.3f}")
    out.print(_breakdown_line(summary["breakdown"]))


def _breakdown_line(breakdown: dict) -> str:
    """Accuracy (clauses) by verb and by objects in the scene, and how often the clause's object
    is found at all."""
    if breakdown["found"] is None:
        return "no clauses scored"
    verbs = ", ".join(f"{verb} {acc:.2f} ({n})" for verb, (acc, n) in breakdown["by_verb"].items())
    objects = ", ".join(f"{k} object{'' if k == '1' else 's'} {acc:.2f} ({n})"
                        for k, (acc, n) in breakdown["by_objects"].items())
    return (f"accuracy (clauses) by verb: {verbs}; by scene: {objects}; "
            f"the clause's object found in {breakdown['found']:.3f}")


def _eval_generated(count: int, split: str, scenes: str, model: Path, seed: int, steps, guidance, temperature,
                    plausibility, as_json: bool, quiet: bool, ceiling: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phenaki_cli.eval.generated import generate_and_score, summarize
    from phenaki_cli.pipeline import Phenaki

    setup()
    if split not in ("test", "heldout"):
        raise UserError(f"--split {split!r}: choose test or heldout (the others are for training)")
    if count < 1:
        raise UserError(f"--generate must be at least 1, got {count}")
    bounds = scene_bounds(scenes)
    phenaki = Phenaki.from_pretrained(model)
    settings = phenaki.settings(steps=steps, guidance=guidance, temperature=temperature, plausibility=plausibility)
    with Progress(TextColumn(f"[bold]eval {split}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=quiet or as_json) as progress:
        task = progress.add_task("eval", total=count)
        results = generate_and_score(phenaki, count, split, seed, settings, bounds,
                                     on_story=lambda r: progress.advance(task), ceiling=ceiling)
    summary = {"model": str(model), "split": split, "seed": seed, "sampling": vars(settings),
               "videos": "tokenizer ceiling" if ceiling else "generated", **summarize(results)}
    if as_json:
        print(json.dumps(summary))
        return
    table = Table("split", "videos", "stories", "clauses", "prompt accuracy", "continuity", "held-out clauses",
                  "held-out accuracy")

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    table.add_row(split, summary["videos"], str(summary["stories"]), str(summary["clauses"]), fmt(summary["prompt_accuracy"]),
                  fmt(summary["continuity"]), str(summary["held_out_clauses"]), fmt(summary["held_out_accuracy"]))
    out.print(table)
    _print_clause_figures(summary)
    if "psnr" in summary:
        out.print(f"tokenizer PSNR against the true stories: {summary['psnr']:.2f} dB (worst story "
                  f"{summary['psnr_worst']:.2f} dB)")


def _eval_task(task: str, count: int, model: Path, seed: int, steps, guidance, temperature, plausibility,
               iterations: Optional[int], as_json: bool, quiet: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phenaki_cli.eval.completion import TASKS, evaluate
    from phenaki_cli.pipeline import Phenaki

    setup()
    if task not in TASKS:
        raise UserError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if count < 1:
        raise UserError(f"--generate must be at least 1, got {count}")
    phenaki = Phenaki.from_pretrained(model)
    settings = phenaki.settings(steps=steps, guidance=guidance, temperature=temperature, plausibility=plausibility)
    with Progress(TextColumn(f"[bold]eval {task}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=quiet or as_json) as progress:
        bar = progress.add_task("eval", total=count)
        summary = evaluate(phenaki, task, count, settings, seed, on_case=lambda r: progress.advance(bar),
                           iterations=iterations)
    summary = {"model": str(model), "seed": seed, **summary}
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(*(k.replace("_", " ") for k in summary if k not in ("model", "seed")))
    table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in summary.items()
                    if k not in ("model", "seed")))
    out.print(table)
