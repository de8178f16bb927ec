"""Scoring the completion tasks on Shapes World: `phenaki eval --task MODE --generate N`.

Each case is a test-split scene rendered exactly (one window of the model), from which the task
keeps some of the truth and asks the model for the rest under the scene's caption:

- predict / rewind / infill: the first K, last K, or first and last K frames are kept (K = the
  model's prime frames); the analyser judges the whole output against the caption;
- image: image-to-video (`generate --image`): the scene's first frame is given, the model makes
  the rest of the window from it and the caption, and the whole clip is judged;
- inpaint: the box around one object's path is regenerated, the rest kept;
- edit: a two-object scene, re-prompted as a whole with one object's action changed (`a red circle
  turns blue and a white square moves up`) and edited with the scene's caption as the source prompt
  (the tokens whose likelihood falls most are re-sampled, the first frame kept: `edit --keep-first`);
  the edited clause is judged, and the object the edit does not touch must keep its trajectory
  within 2 px of the source.

Kept pixels are reported as PSNR against the source (completion keeps them exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from phenaki_cli.completion import completion_frames, edit_window, fill, process_windows
from phenaki_cli.config import SamplingConfig
from phenaki_cli.data.shapes_sampler import sample_rendered_story, split_rng
from phenaki_cli.data.shapes_world import ACTIONS, Caption
from phenaki_cli.eval.analyser import analyse, find_blobs, match, track
from phenaki_cli.eval.metrics import psnr
from phenaki_cli.pipeline import Phenaki

TASKS = ("predict", "rewind", "infill", "image", "inpaint", "edit")
KEEP_PX = 2.0  # how far an object the edit does not mention may drift (at 64 px)


@dataclass
class CaseResult:
    index: int
    prompt: str
    ok: bool  # the prompt is followed (the edited clause, for edits)
    kept_psnr: float  # over the kept pixels (inf: identical)
    kept_ok: bool | None = None  # edit: the unmentioned object kept its path
    detail: dict = field(default_factory=dict)


def _scene(model: Phenaki, index: int, frames: int, objects: int = 1):
    """A test-split scene of exactly `frames` frames with `objects` objects or more."""
    size = model.tokenizer.config.image_size
    for attempt in range(200):
        story = sample_rendered_story("test", index * 1000 + attempt, scenes=(1, 1), frames_per_scene=frames,
                                      size=size)
        if len(story.captions[0].clauses) >= objects:
            return story.captions[0], story.rendering.frames
    raise RuntimeError("no such scene")  # the sampler draws two objects often; never reached in practice


def _box_around(frames: np.ndarray, caption: Caption, patch: int) -> np.ndarray:
    """(H, W) region: the patch-aligned box around the first object over the whole clip."""
    clause = caption.clauses[0]
    blobs = [match(b, clause.color, clause.shape) for b in find_blobs(frames, [caption.background] * len(frames))]
    boxes = [b.bbox for b in blobs if b is not None]
    size = frames.shape[1]
    region = np.zeros((size, size), dtype=bool)
    if not boxes:
        region[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
        return region
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes) + 1, max(b[3] for b in boxes) + 1
    snap = lambda v, up: min(size, max(0, (v + (patch - 1 if up else 0)) // patch * patch))  # noqa: E731
    region[snap(y0, False):snap(y1, True), snap(x0, False):snap(x1, True)] = True
    return region


def _edited(caption: Caption, rng: np.random.Generator) -> Caption:
    """The whole caption with its first clause's action changed: the edit's prompt. Describing the
    whole scene matters: a prompt that names only the edited object makes the other one the least
    likely under it, and it would be re-sampled (session 38, the shipped model: its path kept in 2 of 30
    edits, 19 of 30 with the whole caption)."""
    clause = caption.clauses[0]
    options = [a for a in ACTIONS if a != clause.action and a != f"turns {clause.color}"]
    action = options[int(rng.integers(len(options)))]
    return replace(caption, clauses=(replace(clause, action=action), *caption.clauses[1:]))


def _path(frames: np.ndarray, background: str, color: str, shape: str) -> list[tuple[float, float] | None]:
    """The object's centre frame by frame: found by its name in the first frame, then followed by
    position whatever its colour does (an object that turns no longer matches its first colour)."""
    blobs = find_blobs(frames, [background] * len(frames))
    start = match(blobs[0], color, shape)
    if start is None:
        return [None] * len(frames)
    return [(b.cx, b.cy) if b else None for b in track(blobs, start)]


def score_case(model: Phenaki, task: str, index: int, settings: SamplingConfig, seed: int,
               edit_from_source: bool = True, strength: float = 0.5, iterations: int | None = None) -> CaseResult:
    """`iterations`: re-encode rounds of `fill` (rewind, infill, inpaint; None: its default)."""
    frames = settings.window_frames
    given = settings.prime_frames
    if task == "edit":
        caption, truth = _scene(model, index, frames, objects=2)
        edit = _edited(caption, split_rng("test", index))
        out = np.concatenate(list(process_windows(truth, settings, lambda w, c: edit_window(
            model, w, edit.text(), c, strength, settings, seed + index,
            caption.text() if edit_from_source else None, keep_first=True))))
        ok = analyse(out, [edit], [(0, len(out))]).clauses[0].ok  # the edited clause
        other = caption.clauses[1]
        before = _path(truth, caption.background, other.color, other.shape)
        after = _path(out, caption.background, other.color, other.shape)
        drift = [np.hypot(a[0] - b[0], a[1] - b[1]) for a, b in zip(before, after) if a and b]
        scale = truth.shape[1] / 64
        kept = len(drift) == len(before) and max(drift) <= KEEP_PX * scale
        return CaseResult(index, edit.text(), ok, float("nan"), kept,  # an edit keeps no pixels exactly
                          {"source": caption.text(), "max_drift_px": max(drift) if drift else None})
    caption, truth = _scene(model, index, frames)
    if task == "image":  # what `generate --image` runs: the start frame heads the output as given
        known = np.zeros(truth.shape[:3], dtype=bool)
        known[0] = True
        new = [f for _, f in model.generate([(caption.text(), frames - 1)], settings, seed + index, truth[:1])]
        out = np.concatenate([truth[:1], *new])
    else:
        if task == "inpaint":
            region = _box_around(truth, caption, model.tokenizer.config.patch_size)
            known = np.broadcast_to(~region, truth.shape[:3]).copy()
            source = truth
        else:
            source, known = completion_frames(truth, task, given, frames)
        out = fill(model, source, known, caption.text(), settings, seed + index, iterations).frames
    ok = analyse(out, [caption], [(0, len(out))]).prompt_accuracy == 1.0
    return CaseResult(index, caption.text(), ok, psnr(truth[known], out[known]))


def evaluate(model: Phenaki, task: str, cases: int, settings: SamplingConfig | None = None, seed: int = 0,
             on_case: Callable[[CaseResult], None] | None = None, iterations: int | None = None) -> dict:
    settings = settings or model.sampling
    results = []
    for index in range(cases):
        results.append(score_case(model, task, index, settings, seed, iterations=iterations))
        if on_case is not None:
            on_case(results[-1])
    summary = {"task": task, "cases": len(results), "prompt_accuracy": float(np.mean([r.ok for r in results]))}
    if task == "edit":
        summary["kept_trajectory"] = float(np.mean([bool(r.kept_ok) for r in results]))
    else:  # kept pixels: identical (infinite PSNR) unless something went wrong
        finite = [r.kept_psnr for r in results if np.isfinite(r.kept_psnr)]
        summary["kept_exact"] = len(results) - len(finite)
        summary["kept_psnr_min"] = min(finite) if finite else None  # None: every kept pixel identical
    return summary
