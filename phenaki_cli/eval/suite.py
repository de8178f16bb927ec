"""Scoring video files against their stories: where scene boundaries come from, and suites."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phenaki_cli.data.shapes_world import parse_captions
from phenaki_cli.errors import UserError
from phenaki_cli.eval.analyser import Report, analyse, clause_breakdown, extra_object_figures
from phenaki_cli.story import load_story, sidecar_path
from phenaki_cli.video_io import VIDEO_SUFFIXES, read_video


@dataclass
class Scored:
    video: Path
    report: Report


def read_sidecar_scenes(path: Path) -> list[tuple[str, int, int]]:
    try:
        data = json.loads(path.read_text())
        return [(s["prompt"], int(s["start"]), int(s["end"])) for s in data["scenes"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a story sidecar (needs \"scenes\": [{{prompt, start, end}}]; {e})") from None


def score_video(video_path: str | Path, script: str | Path | None = None) -> Scored:
    """Score one video. Boundaries come from its sidecar JSON when present, else from the script's
    durations at the video's frame rate; prompts come from the script when given, else the sidecar."""
    video_path = Path(video_path)
    video = read_video(video_path)
    if video.frames.shape[1] != video.frames.shape[2]:
        raise UserError(f"{video_path}: Shapes World videos are square, got {video.frames.shape[2]}×{video.frames.shape[1]}")
    sidecar = sidecar_path(video_path)
    scenes = read_sidecar_scenes(sidecar) if sidecar.is_file() else None
    if script is not None:
        story = load_story(script, video.fps)
        if scenes is not None:
            if len(scenes) != len(story.scenes):
                raise UserError(f"{script}: {len(story.scenes)} scenes, but {sidecar} has {len(scenes)}")
            scenes = [(s.prompt, a, b) for s, (_, a, b) in zip(story.scenes, scenes)]
        else:
            scenes = [(s.prompt, a, b) for s, (a, b) in zip(story.scenes, story.frame_ranges())]
            if story.total_frames != len(video.frames):
                raise UserError(f"{video_path}: has {len(video.frames)} frames, but the durations in {script} add "
                                f"up to {story.total_frames} at {video.fps:g} fps (give the video's sidecar JSON)")
    if scenes is None:
        raise UserError(f"{video_path}: no story given and no sidecar {sidecar.name} beside it")
    if scenes[-1][2] > len(video.frames):
        raise UserError(f"{video_path}: has {len(video.frames)} frames; its scenes run to frame {scenes[-1][2]}")
    if script is not None:
        locations = [f"{script}:{s.line}" for s in story.scenes]
    else:
        locations = [f"{sidecar} scene {i + 1}" for i in range(len(scenes))]
    captions = parse_captions([prompt for prompt, _, _ in scenes], locations)
    return Scored(video_path, analyse(video.frames, captions, [(a, b) for _, a, b in scenes]))


def score_suite(folder: str | Path) -> list[Scored]:
    """Every video in a folder, each with its sidecar JSON or a script of the same name (.txt)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: suite folder not found")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise UserError(f"{folder}: no videos to score")
    results = []
    for video in videos:
        script = video.with_suffix(".txt")
        results.append(score_video(video, script if script.is_file() else None))
    return results


def aggregate(results: list[Scored]) -> dict:
    clauses = [c.ok for r in results for c in r.report.clauses]
    boundaries = [b.ok for r in results for b in r.report.boundaries]
    return {"videos": len(results), "clauses": len(clauses), "boundaries": len(boundaries),
            "prompt_accuracy": float(np.mean(clauses)) if clauses else 0.0,
            "continuity": float(np.mean(boundaries)) if boundaries else None,
            **extra_object_figures([r.report for r in results]),
            "breakdown": clause_breakdown([r.report for r in results])}
