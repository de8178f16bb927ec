"""Whole jobs behind `phenaki story` and `phenaki generate`: generate, stream to the video
file, pick storyboard frames on the way, and write the sidecar JSON, all atomically.

Only the frames of one window are in memory at a time (plus, with a storyboard, copies of
four frames a scene); the video file, its sidecar and the storyboard appear together, only
when everything succeeded (files.Outputs).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from phenaki_cli.config import SamplingConfig
from phenaki_cli.files import Outputs
from phenaki_cli.pipeline import Phenaki, Window
from phenaki_cli.story import Scene, frame_ranges, sidecar_path
from phenaki_cli.storyboard import pick_frames, write_storyboard
from phenaki_cli.video_io import VideoWriter, check_video_output, output_kind


def storyboard_path(output: Path) -> Path:
    return output.with_name(output.stem + ".storyboard.png")


def video_outputs(output: Path, storyboard: bool, overwrite: bool, inputs=()) -> Outputs:
    """What `story` / `generate` write, as one unit: the sidecar, the storyboard, the video last
    (checked before any work: none may exist without --overwrite, none may be an input)."""
    check_video_output(output)
    paths = [sidecar_path(output), *([storyboard_path(output)] if storyboard else []), output]
    return Outputs(paths, overwrite, inputs, folders=[output] if output_kind(output) == "folder" else [])


def render_video(model: Phenaki, scenes: list[Scene], outputs: Outputs, settings: SamplingConfig, seed: int,
                 fps: float, start_frames: np.ndarray | None = None, source: dict | None = None,
                 on_step: Callable[[Window, int], None] | None = None, precision: str = "fp32") -> dict:
    """Generate `scenes` after `start_frames` (kept at the head of the output) and write the video of
    `outputs` (`video_outputs`), its sidecar JSON and, if asked, its storyboard, all or none.
    Returns the sidecar's content."""
    output = outputs.paths[-1]
    storyboard = storyboard_path(output) in outputs.paths
    started = time.perf_counter()
    offset = 0 if start_frames is None else len(start_frames)
    ranges = frame_ranges([s.frames for s in scenes], offset)
    end = ranges[-1][1]
    check_video_output(output, end)
    # a storyboard keeps a few frames per scene, as copies (a view would keep its whole window)
    wanted = {i: scene for scene, (a, b) in enumerate(ranges) for i in pick_frames(a, b)} if storyboard else {}
    board: dict[int, list[np.ndarray]] = {}
    scene_seconds = [0.0] * len(scenes)
    window_started = time.perf_counter()

    with outputs.staged() as staged:
        with VideoWriter(output, fps, staged_at=staged[output]) as writer:
            if start_frames is not None and len(start_frames):
                writer.write(start_frames)
            for window, chunk in model.generate([(s.prompt, s.frames) for s in scenes], settings, seed,
                                                start_frames, on_step, precision):
                first = writer.frames_written
                writer.write(chunk)
                for i in range(first, first + len(chunk)):
                    if i in wanted:
                        board.setdefault(wanted[i], []).append(chunk[i - first].copy())
                now = time.perf_counter()
                scene_seconds[window.scene] += now - window_started
                window_started = now
        generate_seconds = time.perf_counter() - started

        sidecar = {
            "video": output.name, "fps": fps, "frames": end, "seed": seed, "model": model.name,
            "text_encoder": model.text_encoder.source, "sampling": asdict(settings), "precision": precision,
            "scenes": [{"prompt": s.prompt, "start": a, "end": b, **({"line": s.line} if s.line else {})}
                       for s, (a, b) in zip(scenes, ranges)],
            "timings": {"seconds": round(generate_seconds, 3),
                        "scene_seconds": [round(s, 3) for s in scene_seconds],
                        "frames_per_second": round((end - offset) / max(generate_seconds, 1e-9), 2)},
        }
        if source is not None:
            sidecar["source"] = {**source, "frames": offset}
        if storyboard:
            write_storyboard(staged[storyboard_path(output)],
                             [(s.prompt, board.get(i, [])) for i, s in enumerate(scenes)])
            sidecar["storyboard"] = storyboard_path(output).name
        staged[sidecar_path(output)].write_text(json.dumps(sidecar, indent=2, allow_nan=False) + "\n")
    return sidecar
