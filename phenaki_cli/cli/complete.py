"""Commands that work on an existing video: `complete`, `inpaint`, `edit` (and `generate --image-end`).

The method (what is given, how causality is handled) is in completion.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import typer

from phenaki_cli.cli.common import (GuidanceOption, IterationsOption, JsonOption, ModelOption, OverwriteOption,
                                    QuietOption, SeedOption, StepsOption, TemperatureOption, TextEncoderOption, say,
                                    setup, trim_note, video_target)
from phenaki_cli.errors import UserError

FramesOption = typer.Option(None, "--frames", help="Frames of the output (1 + t·n, one window; default: the "
                                                   "model's window).")


def _load(model: Path, text_encoder: Optional[str], steps, guidance, temperature):
    from phenaki_cli.pipeline import Phenaki

    setup()
    phenaki = Phenaki.from_pretrained(model, text_encoder)
    return phenaki, phenaki.settings(steps=steps, guidance=guidance, temperature=temperature)


def _read(path: Path, phenaki, trim: bool = True, quiet: bool = False) -> np.ndarray:
    """A video at the model's size and fps; trimmed to 1 + t·n frames when `trim` (documented
    policy, and said)."""
    from phenaki_cli.codec import load_clip
    from phenaki_cli.video_io import read_video

    if trim:
        frames, _, total = load_clip(path, phenaki.tokenizer, phenaki.fps)
        trim_note(quiet, len(frames), total, phenaki.tokenizer)
        return frames
    return read_video(path, fps=phenaki.fps, size=phenaki.tokenizer.config.image_size).frames


def _write(output: Path, chunks: Iterator[np.ndarray], fps: float, report: dict, as_json: bool, quiet: bool) -> None:
    """Stream the frames to `output` atomically, then report (JSON on stdout with --json)."""
    from phenaki_cli.video_io import VideoWriter

    started, count = time.perf_counter(), 0
    with VideoWriter(output, fps) as writer:
        for frames in chunks:
            writer.write(frames)
            count += len(frames)
    report = {"output": str(output), "frames": count, **report, "seconds": round(time.perf_counter() - started, 3)}
    if as_json:
        print(json.dumps(report))
    else:
        say(quiet, f"wrote {output} ({count} frames, {report['seconds']:.1f} s)")


def _window_frames(phenaki, settings, frames: Optional[int]) -> int:
    from phenaki_cli.config import check_frame_count

    total = settings.window_frames if frames is None else frames
    check_frame_count(total, phenaki.tokenizer.config.temporal_patch_size)
    longest = phenaki.tokenizer.config.frames_for(phenaki.transformer.config.max_time_steps)
    if total > longest:
        raise UserError(f"--frames {total}: one window of this model holds at most {longest} frames")
    return total


def complete(video: Path = typer.Argument(..., help="The video whose frames are kept."),
             prompt: str = typer.Argument(..., help="What happens in the frames to fill."),
             output: Path = typer.Option(..., "--output", "-o", help="Video to write."),
             mode: str = typer.Option("predict", "--mode", help="predict (keep the first N frames), rewind (the "
                                                                "last N), infill (first N and last N)."),
             given: int = typer.Option(5, "--given", help="N: frames of VIDEO kept at each given end."),
             frames: Optional[int] = FramesOption, iterations: Optional[int] = IterationsOption,
             model: Path = ModelOption, text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
             steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
             temperature: Optional[float] = TemperatureOption, overwrite: bool = OverwriteOption,
             as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Complete a video forward, backward or between its ends under a prompt; kept frames stay exact."""
    from phenaki_cli.completion import completion_frames, fill

    video_target(output, overwrite, video)
    phenaki, settings = _load(model, text_encoder, steps, guidance, temperature)
    total = _window_frames(phenaki, settings, frames)
    source, known = completion_frames(_read(video, phenaki, trim=False), mode, given, total)
    result = fill(phenaki, source, known, prompt, settings, seed, iterations)
    _write(output, iter([result.frames]), phenaki.fps, {"mode": mode, "given": given, "prompt": prompt, "seed": seed},
           as_json, quiet)


def inpaint(video: Path = typer.Argument(..., help="The video to change inside a region."),
            prompt: str = typer.Argument(..., help="What the region should show."),
            output: Path = typer.Option(..., "--output", "-o", help="Video to write."),
            box: Optional[str] = typer.Option(None, "--box", help="x0,y0,x1,y1 in pixels of the model's frame."),
            mask: Optional[Path] = typer.Option(None, "--mask", help="A mask image of the model's size: white = "
                                                                     "generate."),
            outside: bool = typer.Option(False, "--outside", help="Outpaint: keep the box, generate around it."),
            iterations: Optional[int] = IterationsOption, model: Path = ModelOption,
            text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
            steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
            temperature: Optional[float] = TemperatureOption, overwrite: bool = OverwriteOption,
            as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Regenerate a region of every frame (in- or outpainting); pixels outside it stay exact."""
    from phenaki_cli.completion import inpaint_window, parse_box, process_windows, region_mask
    from phenaki_cli.video_io import read_video

    video_target(output, overwrite, video, mask)
    if (box is None) == (mask is None):
        raise UserError("give the region as --box x0,y0,x1,y1 or --mask mask.png (one of them)")
    phenaki, settings = _load(model, text_encoder, steps, guidance, temperature)
    size = phenaki.tokenizer.config.image_size
    if box is not None:
        region = region_mask(size, box=parse_box(box, size), where=f"--box {box}")
    else:
        region = region_mask(size, mask=read_video(mask).frames[0], where=str(mask))
    region = ~region if outside else region
    if region.all():
        raise UserError("the region covers the whole frame: nothing is kept (use `generate`)")
    frames = _read(video, phenaki, quiet=quiet or as_json)
    chunks = process_windows(frames, settings, lambda window, carried: inpaint_window(
        phenaki, window, region, prompt, carried, settings, seed, iterations))
    _write(output, chunks, phenaki.fps,
           {"region_pixels": int(region.sum()), "prompt": prompt, "seed": seed}, as_json, quiet)


def edit(video: Path = typer.Argument(..., help="The video to edit."),
         prompt: str = typer.Argument(..., help="The video as it should be, e.g. 'the red circle turns blue'; "
                                     "with --source-prompt, the whole scene, as that describes it now with "
                                     "the change made (an object left out counts as unlikely, and is redrawn)."),
         output: Path = typer.Option(..., "--output", "-o", help="Video to write."),
         strength: float = typer.Option(0.5, "--strength", help="Share of tokens re-sampled, 0..1 (those the prompt "
                                                                "finds least likely, or see --source-prompt)."),
         source_prompt: Optional[str] = typer.Option(None, "--source-prompt", help="What the video shows now: "
                                                     "re-sample the tokens whose likelihood falls most from it "
                                                     "to PROMPT instead (keeps what the edit does not touch)."),
         keep_first: bool = typer.Option(False, "--keep-first", help="Keep the first frame as it is: an edit of "
                                         "what happens, not of how the video starts."),
         model: Path = ModelOption, text_encoder: Optional[str] = TextEncoderOption, seed: int = SeedOption,
         steps: Optional[int] = StepsOption, guidance: Optional[float] = GuidanceOption,
         temperature: Optional[float] = TemperatureOption, overwrite: bool = OverwriteOption,
         as_json: bool = JsonOption, quiet: bool = QuietOption):
    """Edit a video by instruction, window by window with the previous window's last frames kept."""
    from phenaki_cli.completion import edit_window, process_windows

    video_target(output, overwrite, video)
    if not 0 < strength <= 1:
        raise UserError(f"--strength must lie in (0, 1], got {strength:g}")
    phenaki, settings = _load(model, text_encoder, steps, guidance, temperature)
    frames = _read(video, phenaki, quiet=quiet or as_json)
    chunks = process_windows(frames, settings, lambda window, carried: edit_window(
        phenaki, window, prompt, carried, strength, settings, seed, source_prompt, keep_first))
    _write(output, chunks, phenaki.fps, {"strength": strength, "prompt": prompt, "source_prompt": source_prompt,
                                         "keep_first": keep_first, "seed": seed}, as_json, quiet)


def generate_between(prompt: str, output: Path, start: Optional[Path], end: Path, seconds: float, model: Path,
                     text_encoder: Optional[str], seed: int, steps, guidance, temperature, as_json: bool,
                     quiet: bool) -> None:
    """`generate --image-end`: a scene that ends on a given frame (and starts on one with --image)."""
    from phenaki_cli.completion import fill
    from phenaki_cli.video_io import read_video

    video_target(output, True, start, end)  # --overwrite was checked by `generate`
    phenaki, settings = _load(model, text_encoder, steps, guidance, temperature)
    t = phenaki.tokenizer.config.temporal_patch_size
    total = _window_frames(phenaki, settings, 1 + max(1, round((seconds * phenaki.fps - 1) / t)) * t)
    size = phenaki.tokenizer.config.image_size
    source = np.zeros((total, size, size, 3), dtype=np.uint8)
    known = np.zeros((total, size, size), dtype=bool)
    source[-1], known[-1] = read_video(end, size=size).frames[0], True
    if start is not None:
        source[0], known[0] = read_video(start, size=size).frames[0], True
    result = fill(phenaki, source, known, prompt, settings, seed)
    _write(output, iter([result.frames]), phenaki.fps, {"prompt": prompt, "seed": seed, "end_image": str(end)},
           as_json, quiet)
