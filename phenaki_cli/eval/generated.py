"""Scoring a model by generating: random Shapes World stories it never trained on, played by
the story pipeline, judged by the analyser. What `phenaki eval --generate N` and `make eval` run.

Stories are the `test` split (compositions seen in training, new stories) or the `heldout`
split (each story uses at least one of the eight compositions training never saw); within
`heldout`, clauses of a held-out composition are also scored on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from phenaki_cli.config import SamplingConfig
from phenaki_cli.data.shapes_sampler import is_held_out, sample_rendered_story
from phenaki_cli.data.shapes_world import DEFAULT_FPS, DEFAULT_SCENE_SECONDS
from phenaki_cli.eval.analyser import Report, analyse, clause_breakdown, extra_object_figures
from phenaki_cli.eval.metrics import psnr
from phenaki_cli.pipeline import Phenaki


@dataclass
class StoryResult:
    index: int
    prompts: list[str]
    report: Report
    held_out: list[bool]  # per clause, in report order: a composition training never saw
    psnr: float | None = None  # with `ceiling`: the reconstruction against the true frames


def tokenizer_ceiling(model: Phenaki, frames: np.ndarray, scene_frames: list[int],
                      settings: SamplingConfig) -> np.ndarray:
    """The true frames through the tokenizer alone, window by window as `generate` decodes them
    (each window's first K frames re-encoded): the best any transformer can score with this
    tokenizer, since a perfect one would choose exactly these tokens."""
    from phenaki_cli.codec import decode_grid, encode_frames

    made = []
    done = 0
    for window in model.plan(scene_frames, settings):
        clip = frames[done - window.prime: done - window.prime + window.frames]
        clip = np.concatenate([clip, np.repeat(clip[-1:], window.frames - len(clip), axis=0)])  # past the end
        decoded = decode_grid(model.tokenizer, encode_frames(model.tokenizer, clip))
        made.append(decoded[window.prime: window.prime + window.keep])
        done += window.keep
    return np.concatenate(made)


def generate_and_score(model: Phenaki, stories: int, split: str = "test", seed: int = 0,
                       settings: SamplingConfig | None = None, scenes: tuple[int, int] = (2, 6),
                       on_story: Callable[[StoryResult], None] | None = None,
                       ceiling: bool = False) -> list[StoryResult]:
    """Generate and score `stories` random stories; with `ceiling`, score tokenizer_ceiling's
    reconstructions of the true renders instead."""
    frames_per_scene = round(DEFAULT_SCENE_SECONDS * DEFAULT_FPS)
    settings = settings or model.settings()
    results = []
    for index in range(stories):
        story = sample_rendered_story(split, index, scenes=scenes, frames_per_scene=frames_per_scene,
                                      size=model.tokenizer.config.image_size)
        prompts = [c.text() for c in story.captions]
        quality = None
        if ceiling:
            video = tokenizer_ceiling(model, story.rendering.frames, [frames_per_scene] * len(prompts), settings)
            quality = psnr(story.rendering.frames, video)
        else:
            video = np.concatenate([f for _, f in model.generate([(p, frames_per_scene) for p in prompts], settings,
                                                                 seed=seed + index)])
        ranges = [(i * frames_per_scene, (i + 1) * frames_per_scene) for i in range(len(prompts))]
        report = analyse(video, story.captions, ranges)
        held_out = [is_held_out(clause) for caption in story.captions for clause in caption.clauses]  # report order
        result = StoryResult(index, prompts, report, held_out, quality)
        results.append(result)
        if on_story is not None:
            on_story(result)
    return results


def summarize(results: list[StoryResult]) -> dict:
    clauses = [c.ok for r in results for c in r.report.clauses]
    boundaries = [b.ok for r in results for b in r.report.boundaries]
    held = [c.ok for r in results for c, h in zip(r.report.clauses, r.held_out) if h]
    scores = [r.psnr for r in results if r.psnr is not None]
    return {"stories": len(results), "clauses": len(clauses), "boundaries": len(boundaries),
            "prompt_accuracy": float(np.mean(clauses)) if clauses else None,
            "continuity": float(np.mean(boundaries)) if boundaries else None,
            "held_out_clauses": len(held), "held_out_accuracy": float(np.mean(held)) if held else None,
            **extra_object_figures([r.report for r in results]),
            "breakdown": clause_breakdown([r.report for r in results]),
            **({"psnr": float(np.mean(scores)), "psnr_worst": float(np.min(scores))} if scores else {})}
