"""The `phenaki` command line: parses arguments, calls the library, prints. No model logic here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from phenaki_cli.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Text-to-video stories with a causal C-ViViT tokenizer and a MaskGIT transformer.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: Shapes World renders, and dataset folders.")
app.add_typer(data_app, name="data")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_MODEL = Path(os.environ.get("PHENAKI_MODEL", Path(__file__).resolve().parent.parent / "models" / "shapes-64"))
ModelOption = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model directory (default: the shipped Shapes World model).")
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QuietOption = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")
OverwriteOption = typer.Option(False, "--overwrite", help="Replace the output if it exists.")
InferencePrecisionOption = typer.Option("fp32", "--precision", help="fp32, or bf16: about 1.6× as fast on CPUs "
                                        "with native bf16; a few near-tie tokens differ.")


def _setup() -> None:
    from phenaki_cli.runtime import tune_allocator
    tune_allocator()


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        err.print(message)


@app.command()
def tokenize(video: Path = typer.Argument(..., help="Video, image or folder of images."),
             output: Path = typer.Option(..., "--output", "-o", help="Tokens file (.npz)."),
             model: Path = ModelOption, fps: Optional[float] = typer.Option(None, help="Resample to this frame rate."),
             precision: str = InferencePrecisionOption,
             overwrite: bool = OverwriteOption, as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Encode a video into its grid of discrete tokens."""
    import numpy as np

    from phenaki_cli.codec import Tokens, encode_frames, load_clip, save_tokens
    from phenaki_cli.files import check_output
    from phenaki_cli.modeldir import load_tokenizer

    _setup()
    _check_precision(precision)
    check_output(output, overwrite)
    tokenizer, config_hash = load_tokenizer(model)
    frames, fps, source_frames = load_clip(video, tokenizer, fps)
    grid = encode_frames(tokenizer, frames, precision)
    save_tokens(output, Tokens(grid, fps, len(frames), source_frames, config_hash))
    info = {"output": str(output), "grid": list(grid.shape), "frames": len(frames), "source_frames": source_frames,
            "fps": fps, "config_hash": config_hash, "codes_used": int(np.unique(grid).size)}
    if as_json:
        print(json.dumps(info))
    else:
        if len(frames) < source_frames:
            _say(quiet, f"note: used the first {len(frames)} of {source_frames} frames (the tokenizer takes 1 + "
                        f"{tokenizer.config.temporal_patch_size}·n)")
        _say(quiet, f"wrote {output}: {grid.shape[0]}×{grid.shape[1]}×{grid.shape[2]} tokens for {len(frames)} frames")


@app.command()
def reconstruct(source: Path = typer.Argument(..., help="A video (encode → decode) or a tokens .npz (decode)."),
                output: Path = typer.Option(..., "--output", "-o", help="Reconstructed video (.mp4, .gif, folder)."),
                model: Path = ModelOption, compare: Optional[Path] = typer.Option(
                    None, help="Also write input and reconstruction side by side here."),
                fps: Optional[float] = typer.Option(None, help="Resample the input to this frame rate."),
                precision: str = InferencePrecisionOption,
                overwrite: bool = OverwriteOption, as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Round-trip a video through the tokenizer and report PSNR / SSIM."""
    import numpy as np

    from phenaki_cli.codec import decode_grid, encode_frames, load_clip, load_tokens
    from phenaki_cli.eval.metrics import psnr, psnr_per_frame, ssim_per_frame
    from phenaki_cli.files import check_output
    from phenaki_cli.modeldir import load_tokenizer
    from phenaki_cli.video_io import write_video

    _setup()
    _check_precision(precision)
    check_output(output, overwrite)
    if compare is not None:
        check_output(compare, overwrite)
    tokenizer, config_hash = load_tokenizer(model)
    if source.suffix.lower() == ".npz":
        if compare is not None:
            raise UserError("--compare needs a video input (a tokens file has no original frames)")
        tokens = load_tokens(source, config_hash)
        recon = decode_grid(tokenizer, tokens.grid, precision)
        write_video(output, recon, tokens.fps)
        info = {"output": str(output), "frames": len(recon)}
    else:
        frames, fps, _ = load_clip(source, tokenizer, fps)
        recon = decode_grid(tokenizer, encode_frames(tokenizer, frames, precision), precision)
        write_video(output, recon, fps)
        if compare is not None:
            write_video(compare, np.concatenate([frames, recon], axis=2), fps)
        per_frame_psnr, per_frame_ssim = psnr_per_frame(frames, recon), ssim_per_frame(frames, recon)
        info = {"output": str(output), "frames": len(recon), "psnr": psnr(frames, recon),
                "ssim": float(per_frame_ssim.mean())}
        if as_json:
            info["per_frame"] = [{"frame": i, "psnr": float(p), "ssim": float(s)}
                                 for i, (p, s) in enumerate(zip(per_frame_psnr, per_frame_ssim))]
    if as_json:
        print(json.dumps(info))
    else:
        scores = f": PSNR {info['psnr']:.2f} dB, SSIM {info['ssim']:.4f}" if "psnr" in info else ""
        _say(quiet, f"wrote {output} ({info['frames']} frames){scores}")


def _check_precision(name: str) -> None:
    """Name a bad --precision before any work is done."""
    import torch

    from phenaki_cli.runtime import precision_scope
    precision_scope(torch.device("cpu"), name)


TextEncoderOption = typer.Option(None, "--text-encoder", help="T5 encoder directory or hub id (default: the model's own).")
SeedOption = typer.Option(0, "--seed", help="Same seed, model and script give the same frames.")
StepsOption = typer.Option(None, "--steps", help="MaskGIT decoding steps per window (default: the model's).")
GuidanceOption = typer.Option(None, "--guidance", help="Classifier-free guidance scale (0 unconditional, 1 conditional).")
TemperatureOption = typer.Option(None, "--temperature", help="Confidence noise, annealed to 0 over the steps.")
PrimeOption = typer.Option(None, "--prime-frames", help="K frames re-encoded to start each later window (1 + t·m).")
FpsOption = typer.Option(None, "--fps", help="Frame rate of the output and of scene durations (default: the model's).")
StoryboardOption = typer.Option(False, "--storyboard", help="Also write NAME.storyboard.png, a captioned contact sheet.")


def _warn_unknown_words(text_encoder, scenes, where: str) -> None:
    """One warning per script line that first uses words the vocabulary does not cover."""
    first_seen: dict[str, object] = {}
    counts: dict[str, int] = {}
    for scene in scenes:
        for word in dict.fromkeys(text_encoder.unknown_words(scene.prompt)):
            first_seen.setdefault(word, scene.line)
            counts[word] = counts.get(word, 0) + 1
    by_line: dict[object, list[str]] = {}
    for word, line in first_seen.items():
        by_line.setdefault(line, []).append(word)
    for line, words in by_line.items():
        place = f"{where}:{line}" if line else where
        more = max(counts[w] for w in words) - 1
        err.print(f"[yellow]warning:[/yellow] {place}: the text encoder does not know "
                  + ", ".join(repr(w) for w in words) + (f" (used in {more} more scenes)" if more else ""),
                  highlight=False)


def _generate_video(scenes, output: Path, model: Path, text_encoder: Optional[str], seed: int, steps, guidance,
                    temperature, prime_frames, fps: Optional[float], start: Optional[Path], start_is_image: bool,
                    storyboard: bool, as_json: bool, quiet: bool, where: str) -> None:
    """What `story` and `generate` share: load, warn about unknown words, generate with progress, report."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phenaki_cli.jobs import render_video, storyboard_path
    from phenaki_cli.pipeline import Phenaki
    from phenaki_cli.video_io import read_video

    _setup()
    loaded = time.perf_counter()
    phenaki = Phenaki.from_pretrained(model, text_encoder)
    load_seconds = time.perf_counter() - loaded
    settings = phenaki.settings(steps=steps, guidance=guidance, temperature=temperature, prime_frames=prime_frames)
    fps = fps or phenaki.fps
    scenes = scenes(fps)
    _warn_unknown_words(phenaki.text_encoder, scenes, where)
    start_frames, source = None, None
    if start is not None:
        size = phenaki.tokenizer.config.image_size
        video = read_video(start, fps=None if start_is_image else fps, size=size)
        start_frames = video.frames[:1] if start_is_image else video.frames
        source = {"path": str(start), "kind": "image" if start_is_image else "video"}
    plan = phenaki.plan([s.frames for s in scenes], settings, 0 if start_frames is None else len(start_frames))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=quiet or as_json) as progress:
        tasks = [progress.add_task(f"scene {i + 1}: {s.prompt[:48]}", total=settings.steps * sum(
            w.scene == i for w in plan)) for i, s in enumerate(scenes)]
        sidecar = render_video(phenaki, scenes, output, settings, seed, fps, start_frames, source, storyboard,
                               on_step=lambda window, step: progress.advance(tasks[window.scene]))
    sidecar["timings"]["load_seconds"] = round(load_seconds, 3)
    if as_json:
        print(json.dumps({"output": str(output), **sidecar}))
        return
    extra = f" and {storyboard_path(output)}" if storyboard else ""
    _say(quiet, f"wrote {output} ({sidecar['frames']} frames, {len(scenes)} scene(s), "
                f"{sidecar['timings']['seconds']:.1f} s){extra}")


@app.command()
def story(script: Path = typer.Argument(..., help="Story script: one scene prompt per line, optional [3s]/[24f]."),
          output: Path = typer.Option(..., "--output", "-o", help="Video to write (.mp4, .webm, .gif, folder)."),
          model: Path = ModelOption, text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
          steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
          temperature: Optional[float] = TemperatureOption, prime_frames: Optional[int] = PrimeOption,
          fps: Optional[float] = FpsOption,
          start: Optional[Path] = typer.Option(None, "--from", help="Continue this video (it heads the output)."),
          storyboard: bool = StoryboardOption, overwrite: bool = OverwriteOption, as_json: bool = JsonOption,
          quiet: bool = QuietOption):
    """Turn a story script into one continuous video, scene after scene."""
    from phenaki_cli.files import check_output
    from phenaki_cli.story import load_story

    check_output(output, overwrite)
    if not script.is_file():
        raise UserError(f"{script}: story script not found")

    def scenes(fps: float):
        return load_story(script, fps).scenes

    scenes(8.0)  # parse errors before loading the model
    _generate_video(scenes, output, model, text_encoder, seed, steps, guidance, temperature, prime_frames, fps,
                    start, False, storyboard, as_json, quiet, str(script))


@app.command()
def generate(prompt: str = typer.Argument(..., help="What happens in the scene."),
             output: Path = typer.Option(..., "--output", "-o", help="Video to write (.mp4, .webm, .gif, folder)."),
             seconds: float = typer.Option(2.0, "--seconds", help="Length of the scene."),
             image: Optional[Path] = typer.Option(None, "--image", help="Start frame (image-to-video)."),
             image_end: Optional[Path] = typer.Option(None, "--image-end", help="Last frame to arrive at (one window)."),
             model: Path = ModelOption, text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
             steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
             temperature: Optional[float] = TemperatureOption, prime_frames: Optional[int] = PrimeOption,
             fps: Optional[float] = FpsOption, storyboard: bool = StoryboardOption,
                overwrite: bool = OverwriteOption, as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Generate one scene from a prompt (from a start image with --image)."""
    from phenaki_cli.files import check_output
    from phenaki_cli.story import Scene

    check_output(output, overwrite)
    if not prompt.strip():
        raise UserError("the prompt is empty")
    if seconds <= 0:
        raise UserError(f"--seconds must be positive, got {seconds:g}")

    if image_end is not None:
        if storyboard or prime_frames is not None or fps is not None:
            raise UserError("--image-end makes one window at the model's fps: drop --storyboard, --prime-frames, --fps")
        from phenaki_cli.cli_complete import generate_between
        return generate_between(prompt.strip(), output, image, image_end, seconds, model, text_encoder, seed, steps,
                                guidance, temperature, as_json, quiet)

    def scenes(fps: float):
        return [Scene(prompt.strip(), max(1, round(seconds * fps)))]

    _generate_video(scenes, output, model, text_encoder, seed, steps, guidance, temperature, prime_frames, fps,
                    image, True, storyboard, as_json, quiet, "prompt")


@data_app.command("shapes")
def data_shapes(count: int = typer.Option(..., "-n", help="Number of videos."),
                output: Path = typer.Option(..., "--output", "-o", help="Dataset folder to write."),
                split: str = typer.Option("train", help="train | val | test | heldout"),
                scenes: str = typer.Option("1", help="Scenes per video: N or MIN-MAX (e.g. 2-6)."),
                frames_per_scene: int = typer.Option(16), size: int = typer.Option(64), fps: float = typer.Option(8.0),
                overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Write a Shapes World dataset: mp4 files + captions.jsonl (the format of user datasets)."""
    from phenaki_cli.data.datasets import write_shapes_dataset
    from phenaki_cli.data.shapes_sampler import SPLIT_CODES
    from phenaki_cli.files import check_output

    check_output(output, overwrite)
    if split not in SPLIT_CODES:
        raise UserError(f"--split {split!r}: choose one of {', '.join(SPLIT_CODES)}")
    bounds = _scene_bounds(scenes)
    if count < 1 or frames_per_scene < 1 or size < 8:
        raise UserError("need -n >= 1, --frames-per-scene >= 1, --size >= 8")
    write_shapes_dataset(output, count, frames_per_scene, size, fps, split, bounds)
    _say(quiet, f"wrote {output}: {count} videos + captions.jsonl")


@data_app.command("render")
def data_render(script: Path = typer.Argument(..., help="A Shapes World story script."),
                output: Path = typer.Option(..., "--output", "-o", help="Video to write (+ sidecar .json)."),
                size: int = typer.Option(64), fps: float = typer.Option(8.0), seed: int = typer.Option(0),
                overwrite: bool = OverwriteOption, quiet: bool = QuietOption):
    """Render a Shapes World story exactly (ground truth), with a sidecar JSON of its scenes."""
    from phenaki_cli.data.shapes_world import parse_captions, render_story
    from phenaki_cli.files import check_output, write_text_atomic
    from phenaki_cli.story import load_story, sidecar_path
    from phenaki_cli.video_io import write_video

    check_output(output, overwrite)
    story = load_story(script, fps)
    captions = parse_captions([s.prompt for s in story.scenes], [f"{script}:{s.line}" for s in story.scenes])
    rendering = render_story(captions, [s.frames for s in story.scenes], size=size, seed=seed)
    write_video(output, rendering.frames, fps)
    sidecar = {"fps": fps, "seed": seed, "source": str(script), "scenes": [
        {"prompt": s.prompt, "start": a, "end": b} for s, (a, b) in zip(story.scenes, rendering.scene_ranges)]}
    write_text_atomic(sidecar_path(output), json.dumps(sidecar, indent=2) + "\n")
    _say(quiet, f"wrote {output} ({len(rendering.frames)} frames, {len(story.scenes)} scenes)")


@app.command("eval")
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
                                          "rewind | infill | inpaint | edit."),
                 ceiling: bool = typer.Option(False, "--ceiling", help="With --generate: score the true stories "
                                              "through the tokenizer alone (the best any transformer can do)."),
                 model: Path = ModelOption, seed: int = SeedOption, steps: Optional[int] = StepsOption,
                 guidance: Optional[float] = GuidanceOption, temperature: Optional[float] = TemperatureOption,
                 as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Score Shapes World videos: per-clause presence and motion, continuity at scene cuts."""
    from phenaki_cli.eval.suite import aggregate, score_suite, score_video

    if task is not None and generate is None:
        raise UserError("--task scores generated cases: give --generate N too")
    if ceiling and (generate is None or task is not None):
        raise UserError("--ceiling scores the --generate N stories through the tokenizer (not with --task)")
    if sum(x is not None for x in (video, suite, generate)) != 1:
        raise UserError("give one of: a VIDEO (with --story or a sidecar JSON), --suite DIR, or --generate N")
    if task is not None:
        _eval_task(task, generate, model, seed, steps, guidance, temperature, as_json, quiet)
        return
    if generate is not None:
        _eval_generated(generate, split, scenes, model, seed, steps, guidance, temperature, as_json, quiet, ceiling)
        return
    results = score_suite(suite) if suite is not None else [score_video(video, story)]
    summary = aggregate(results)
    if as_json:
        print(json.dumps({**summary, "results": [{"video": str(r.video), **r.report.to_dict()} for r in results]}))
        return
    if suite is None:
        table = Table("scene", "clause", "present", "action", "detail")
        for c in results[0].report.clauses:
            table.add_row(str(c.scene + 1), c.clause, "yes" if c.present else "[red]no",
                          "yes" if c.action_ok else "[red]no", c.detail)
        for b in results[0].report.boundaries:
            table.add_row(f"{b.boundary + 1}|{b.boundary + 2}", f"continuity: {b.object}", "", "yes" if b.ok else "[red]no",
                          b.detail)
    else:
        table = Table("video", "clauses", "prompt accuracy", "continuity")
        for r in results:
            cont = r.report.continuity
            table.add_row(r.video.name, str(len(r.report.clauses)), f"{r.report.prompt_accuracy:.3f}",
                          "n/a" if cont is None else f"{cont:.3f}")
    out.print(table)
    cont = summary["continuity"]
    out.print(f"prompt accuracy {summary['prompt_accuracy']:.3f} over {summary['clauses']} clauses; continuity "
              + ("n/a (one scene)" if cont is None else f"{cont:.3f} over {summary['boundaries']} checks"))


def _eval_generated(count: int, split: str, scenes: str, model: Path, seed: int, steps, guidance, temperature,
                    as_json: bool, quiet: bool, ceiling: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phenaki_cli.eval.generated import generate_and_score, summarize
    from phenaki_cli.pipeline import Phenaki

    _setup()
    if split not in ("test", "heldout"):
        raise UserError(f"--split {split!r}: choose test or heldout (the others are for training)")
    if count < 1:
        raise UserError(f"--generate must be at least 1, got {count}")
    bounds = _scene_bounds(scenes)
    phenaki = Phenaki.from_pretrained(model)
    settings = phenaki.settings(steps=steps, guidance=guidance, temperature=temperature)
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
    if "psnr" in summary:
        out.print(f"tokenizer PSNR against the true stories: {summary['psnr']:.2f} dB (worst story "
                  f"{summary['psnr_worst']:.2f} dB)")


def _eval_task(task: str, count: int, model: Path, seed: int, steps, guidance, temperature, as_json: bool,
               quiet: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phenaki_cli.eval.completion import TASKS, evaluate
    from phenaki_cli.pipeline import Phenaki

    _setup()
    if task not in TASKS:
        raise UserError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if count < 1:
        raise UserError(f"--generate must be at least 1, got {count}")
    phenaki = Phenaki.from_pretrained(model)
    settings = phenaki.settings(steps=steps, guidance=guidance, temperature=temperature)
    with Progress(TextColumn(f"[bold]eval {task}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=quiet or as_json) as progress:
        bar = progress.add_task("eval", total=count)
        summary = evaluate(phenaki, task, count, settings, seed, on_case=lambda r: progress.advance(bar))
    summary = {"model": str(model), "seed": seed, **summary}
    if as_json:
        print(json.dumps(summary))
        return
    table = Table(*(k.replace("_", " ") for k in summary if k not in ("model", "seed")))
    table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in summary.items()
                    if k not in ("model", "seed")))
    out.print(table)


def _scene_bounds(scenes: str) -> tuple[int, int]:
    try:
        low, _, high = scenes.partition("-")
        bounds = (int(low), int(high or low))
    except ValueError:
        raise UserError(f"--scenes {scenes!r}: give N or MIN-MAX") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise UserError(f"--scenes {scenes!r}: need 1 <= MIN <= MAX")
    return bounds


@app.command()
def info(model: Path = ModelOption, as_json: bool = JsonOption):
    """Describe a model directory: sizes, token grid, parameter counts, sampling defaults."""
    from phenaki_cli.modeldir import load_tokenizer, read_config

    tokenizer, config_hash = load_tokenizer(model)
    c = tokenizer.config
    details = {"model": str(model), "config_hash": config_hash, "tokenizer": vars(c).copy(),
               "tokenizer_parameters": sum(p.numel() for p in tokenizer.parameters()),
               "tokens_per_17_frames": list(tokenizer.token_shape(17))}
    lines = [f"{model}: C-ViViT {c.image_size}×{c.image_size}, patch {c.patch_size}, temporal patch "
             f"{c.temporal_patch_size}, dim {c.dim}, {c.spatial_depth}+{c.temporal_depth} layers, codebook "
             f"{c.codebook_size}; {details['tokenizer_parameters'] / 1e6:.2f} M parameters; 17 frames → "
             f"{'×'.join(map(str, details['tokens_per_17_frames']))} tokens"]
    if "transformer" in read_config(model):
        from phenaki_cli.pipeline import Phenaki
        phenaki = Phenaki.from_pretrained(model)
        t, s = phenaki.transformer.config, phenaki.sampling
        details.update(transformer=vars(t).copy(), sampling=vars(s).copy(), fps=phenaki.fps,
                       transformer_parameters=sum(p.numel() for p in phenaki.transformer.parameters()),
                       text_encoder={"source": phenaki.text_encoder.source, "dim": phenaki.text_encoder.dim,
                                     "parameters": sum(p.numel() for p in phenaki.text_encoder.model.parameters())})
        lines.append(f"MaskGIT: dim {t.dim}, depth {t.depth}, {t.heads} heads of {t.dim_head}, "
                     f"{details['transformer_parameters'] / 1e6:.2f} M parameters; windows of {s.window_frames} frames "
                     f"({t.max_time_steps}×{t.grid_size}×{t.grid_size} tokens), prime {s.prime_frames}; "
                     f"{s.steps} steps, guidance {s.guidance:g}, temperature {s.temperature:g}; {phenaki.fps:g} fps")
        lines.append(f"text encoder: T5 d_model {phenaki.text_encoder.dim}, "
                     f"{details['text_encoder']['parameters'] / 1e6:.2f} M parameters ({phenaki.text_encoder.source})")
    else:
        lines.append("tokenizer only: it can tokenize and reconstruct, not generate")
    import torch

    from phenaki_cli.runtime import machine_precision

    chosen, why = machine_precision(torch.device("cpu"))
    details["training_precision"] = {"auto": chosen, "why": why}
    lines.append(f"training precision (--precision auto): {chosen}, because {why}")
    if as_json:
        print(json.dumps(details))
    else:
        for line in lines:
            out.print(line, highlight=False)


# the training and completion commands live in their own modules; importing them registers them on `app`
from phenaki_cli import cli_complete, cli_train  # noqa: E402,F401


def main() -> None:
    import signal

    # Ctrl-C (and a polite kill) must reach the atomic writers even when a parent shell started us
    # with SIGINT ignored, as non-interactive shells do for background jobs
    from phenaki_cli.runtime import on_interrupt

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    try:
        app()  # typer reports usage errors itself (exit 2) and turns Ctrl-C into exit 130
    except UserError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
        sys.exit(2)
    except SystemExit as e:
        if e.code == 130:
            err.print("interrupted; no partial output was left")
        raise


if __name__ == "__main__":
    main()
