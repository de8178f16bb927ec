"""The generation commands: `story` (a script → one continuous video) and `generate` (one scene)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from phenaki_cli.cli.common import (FpsOption, GuidanceOption, InferencePrecisionOption, JsonOption, ModelOption,
                                    OverwriteOption, PlausibilityOption, PrimeOption, QuietOption, SeedOption,
                                    StepsOption, StoryboardOption, TemperatureOption, TextEncoderOption,
                                    check_precision, err, say, setup)
from phenaki_cli.errors import UserError


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
        _warn(f"{place}: the text encoder does not know " + ", ".join(repr(w) for w in words)
              + (f" (used in {more} more scenes)" if more else ""))


def _warn_long_prompts(text_encoder, scenes, where: str) -> None:
    """Say so when a prompt is longer than the text encoder reads (it keeps the first tokens)."""
    told = set()
    for scene in scenes:
        if scene.prompt in told:
            continue
        told.add(scene.prompt)
        length = text_encoder.token_count(scene.prompt)
        if length > text_encoder.max_length:
            place = f"{where}:{scene.line}" if scene.line else where
            _warn(f"{place}: the prompt is {length} tokens; the text encoder reads the first "
                  f"{text_encoder.max_length}")


def _warn(message: str) -> None:
    from rich.text import Text
    err.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)  # user text: no markup


def _generate_video(scenes, outputs, model: Path, text_encoder: Optional[str], seed: int, steps, guidance,
                    temperature, plausibility, prime_frames, fps: Optional[float], start: Optional[Path],
                    start_is_image: bool, as_json: bool, quiet: bool, where: str, precision: str) -> None:
    """What `story` and `generate` share: load, warn about unknown words, generate with progress, report."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phenaki_cli.jobs import render_video, storyboard_path
    from phenaki_cli.pipeline import Phenaki
    from phenaki_cli.video_io import read_video

    setup()
    loaded = time.perf_counter()
    phenaki = Phenaki.from_pretrained(model, text_encoder)
    load_seconds = time.perf_counter() - loaded
    settings = phenaki.settings(steps=steps, guidance=guidance, temperature=temperature, plausibility=plausibility,
                                prime_frames=prime_frames)
    fps = fps or phenaki.fps
    scenes = scenes(fps)
    _warn_unknown_words(phenaki.text_encoder, scenes, where)
    _warn_long_prompts(phenaki.text_encoder, scenes, where)
    start_frames, source = None, None
    if start is not None:
        size = phenaki.tokenizer.config.image_size
        video = read_video(start, fps=None if start_is_image else fps, size=size)
        start_frames = video.frames[:1] if start_is_image else video.frames
        source = {"path": str(start), "kind": "image" if start_is_image else "video"}
    plan = phenaki.plan([s.frames for s in scenes], settings, 0 if start_frames is None else len(start_frames))
    # one bar for the whole story (a bar per scene costs time quadratic in the scenes)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=quiet or as_json) as progress:
        task = progress.add_task("", total=settings.steps * len(plan))
        shown = [-1]

        def on_step(window, step: int) -> None:
            if window.scene != shown[0]:
                shown[0] = window.scene
                prompt = scenes[window.scene].prompt
                progress.update(task, description=f"scene {window.scene + 1}/{len(scenes)}: {prompt[:48]}")
            progress.advance(task)

        sidecar = render_video(phenaki, scenes, outputs, settings, seed, fps, start_frames, source, on_step=on_step,
                               precision=precision)
    sidecar["timings"]["load_seconds"] = round(load_seconds, 3)
    output = outputs.paths[-1]
    if as_json:
        print(json.dumps({"output": str(output), **sidecar}))
        return
    extra = f" and {storyboard_path(output)}" if "storyboard" in sidecar else ""
    say(quiet, f"wrote {output} ({sidecar['frames']} frames, {len(scenes)} scene(s), "
                f"{sidecar['timings']['seconds']:.1f} s){extra}")


def story(script: Path = typer.Argument(..., help="Story script: one scene prompt per line, optional [3s]/[24f]."),
          output: Path = typer.Option(..., "--output", "-o", help="Video to write (.mp4, .webm, .gif, folder)."),
          model: Path = ModelOption, text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
          steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
          temperature: Optional[float] = TemperatureOption, plausibility: Optional[float] = PlausibilityOption,
          prime_frames: Optional[int] = PrimeOption, fps: Optional[float] = FpsOption,
          start: Optional[Path] = typer.Option(None, "--from", help="Continue this video (it heads the output)."),
          storyboard: bool = StoryboardOption, precision: str = InferencePrecisionOption,
          overwrite: bool = OverwriteOption, as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Turn a story script into one continuous video, scene after scene."""
    from phenaki_cli.jobs import video_outputs
    from phenaki_cli.story import load_story

    outputs = video_outputs(output, storyboard, overwrite, inputs=[script, start])
    check_precision(precision)
    if not script.is_file():
        raise UserError(f"{script}: story script not found")

    def scenes(fps: float):
        return load_story(script, fps).scenes

    scenes(8.0)  # parse errors before loading the model
    _generate_video(scenes, outputs, model, text_encoder, seed, steps, guidance, temperature, plausibility,
                    prime_frames, fps, start, False, as_json, quiet, str(script), precision)


def generate(prompt: str = typer.Argument(..., help="What happens in the scene."),
             output: Path = typer.Option(..., "--output", "-o", help="Video to write (.mp4, .webm, .gif, folder)."),
             seconds: float = typer.Option(2.0, "--seconds", help="Length of the scene."),
             image: Optional[Path] = typer.Option(None, "--image", help="Start frame (image-to-video)."),
             image_end: Optional[Path] = typer.Option(None, "--image-end", help="Last frame to arrive at (one window)."),
             model: Path = ModelOption, text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
             steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
             temperature: Optional[float] = TemperatureOption, plausibility: Optional[float] = PlausibilityOption,
             prime_frames: Optional[int] = PrimeOption, fps: Optional[float] = FpsOption,
             storyboard: bool = StoryboardOption,
             precision: str = InferencePrecisionOption, overwrite: bool = OverwriteOption,
             as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Generate one scene from a prompt (from a start image with --image)."""
    from phenaki_cli.files import check_output
    from phenaki_cli.jobs import video_outputs
    from phenaki_cli.story import MAX_SCENE_SECONDS, Scene

    check_precision(precision)
    if not prompt.strip():
        raise UserError("the prompt is empty")
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_SCENE_SECONDS):
        raise UserError(f"--seconds must be a positive number up to {MAX_SCENE_SECONDS:g}, got {seconds:g}")

    if image_end is not None:
        if storyboard or prime_frames is not None or fps is not None or plausibility is not None:
            raise UserError("--image-end makes one window at the model's fps: drop --storyboard, --prime-frames, "
                            "--fps, --plausibility")
        check_output(output, overwrite)
        from phenaki_cli.cli.complete import generate_between
        return generate_between(prompt.strip(), output, image, image_end, seconds, model, text_encoder, seed, steps,
                                guidance, temperature, as_json, quiet)

    def scenes(fps: float):
        return [Scene(prompt.strip(), max(1, round(seconds * fps)))]

    outputs = video_outputs(output, storyboard, overwrite, inputs=[image])
    _generate_video(scenes, outputs, model, text_encoder, seed, steps, guidance, temperature, plausibility,
                    prime_frames, fps, image, True, as_json, quiet, "prompt", precision)
