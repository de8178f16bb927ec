"""Random captions, stories and training clips for Shapes World, with a fixed held-out split.

Splits are seeded independently: sample `i` of split `s` comes from
`np.random.default_rng([SPLIT_CODES[s], i])`, so any sample can be regenerated alone
(training resumes from a step number; evaluation suites are fixed lists of seeds).

Held-out compositions: the (colour, shape, action) triples in HELD_OUT never appear in a
training caption (as the clause's subject at the start of the scene), so a model's
score on them measures compositional generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenaki_cli.data.shapes_world import (ACTIONS, COLORS, DEFAULT_FPS, SHAPES, Caption, Clause, Rendering,
                                           min_object_gap, render_story)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2, "heldout": 3}
HELD_OUT = frozenset({
    ("purple", "triangle", "moves left"),
    ("orange", "circle", "grows"),
    ("cyan", "square", "moves up"),
    ("yellow", "triangle", "shrinks"),
    ("white", "circle", "moves down"),
    ("green", "square", "turns red"),
    ("blue", "triangle", "stays still"),
    ("red", "square", "moves right"),
})
SIZE_WORDS = ("small", None, "big")
# Share of training captions on black that say "on a black background" instead of leaving it unsaid.
# With none, every "on a ... background" a model ever read meant gray, so it drew gray for "black".
NAMED_BLACK_SHARE = 0.5


def split_rng(split: str, index: int, *stream: int) -> np.random.Generator:
    """Sample `index` of `split`'s generator; a `stream` number gives the same sample a second,
    independent one (a draw added later that must not shift the draws of the first)."""
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLIT_CODES)}")
    return np.random.default_rng([SPLIT_CODES[split], index, *stream])


def is_held_out(clause: Clause) -> bool:
    return (clause.color, clause.shape, clause.action) in HELD_OUT


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


VERB_WEIGHTS = {"moves": 0.35, "stays": 0.15, "grows": 0.15, "shrinks": 0.15, "turns": 0.2}


def _action(rng: np.random.Generator, color: str, shape: str, reserved: set[tuple[str, str]]) -> str:
    """A verb by VERB_WEIGHTS; a turn never targets its own colour or a (colour, shape) in `reserved`."""
    verbs = list(VERB_WEIGHTS)
    while True:
        verb = verbs[int(rng.choice(len(verbs), p=list(VERB_WEIGHTS.values())))]
        options = [a for a in ACTIONS if a.startswith(verb)]
        action = _pick(rng, options)
        if verb == "turns":
            target = action.split()[1]
            if target == color or (target, shape) in reserved:
                continue
        return action


def sample_story(rng: np.random.Generator, scenes: int, max_objects: int = 2, background: str | None = None,
                 split: str = "train") -> list[Caption]:
    """A story of `scenes` captions: objects appear with "a", later scenes refer back with "the".

    With split="train" no held-out composition appears; with split="heldout" at least one does.
    """
    for _ in range(1000):
        story = _draw_story(rng, scenes, max_objects, background)
        held = any(is_held_out(c) for caption in story for c in caption.clauses)
        if (split == "heldout") == held:
            return story
    raise RuntimeError("could not draw a story for this split")


def _draw_story(rng, scenes, max_objects, background) -> list[Caption]:
    background = background or ("gray" if rng.random() < 0.3 else "black")
    objects: list[tuple[str, str]] = []  # (colour now, shape)
    story = []
    for scene in range(scenes):
        clauses = []
        n_new = 0
        if scene == 0:
            n_new = 1 if max_objects == 1 or rng.random() < 0.5 else 2
        elif len(objects) < max_objects and rng.random() < 0.3:
            n_new = 1
        n_old = 0 if scene == 0 else (1 if n_new or len(objects) == 1 or rng.random() < 0.5 else 2)
        reserved = set(objects)  # every (colour, shape) in play this scene, before or after a turn
        for index in rng.permutation(len(objects))[:n_old]:
            color, shape = objects[index]
            action = _action(rng, color, shape, reserved)
            clauses.append(Clause("the", None, color, shape, action))
            if action.startswith("turns"):
                reserved.add((action.split()[1], shape))
        for _ in range(n_new):
            while True:
                color, shape = _pick(rng, tuple(COLORS)), _pick(rng, SHAPES)
                if (color, shape) not in reserved:
                    break
            objects.append((color, shape))
            reserved.add((color, shape))
            action = _action(rng, color, shape, reserved)
            if action.startswith("turns"):
                reserved.add((action.split()[1], shape))
            clauses.append(Clause("a", _pick(rng, SIZE_WORDS), color, shape, action))
        for clause in clauses:
            if clause.verb == "turns":
                objects[objects.index((clause.color, clause.shape))] = (clause.argument, clause.shape)
        story.append(Caption(tuple(clauses), background))
    return story


def sample_captions(split: str, count: int) -> list[str]:
    """Scene captions of `count` stories of 1–3 scenes, worded as training clips word them (a share
    of black backgrounds said): text for a text encoder to learn from, no frames rendered."""
    captions = []
    for index in range(count):
        rng = split_rng(split, index, 2)  # a stream of its own: the clips' own draws stay as they are
        for caption in sample_story(rng, int(rng.integers(1, 4)), split=split):
            captions.append(caption.text(bool(rng.random() < NAMED_BLACK_SHARE)))
    return captions


@dataclass
class StorySample:
    captions: list[Caption]
    rendering: Rendering
    seed: int


def sample_rendered_story(split: str, index: int, scenes: tuple[int, int] = (2, 6), frames_per_scene: int = 16,
                          size: int = 64, max_objects: int = 2) -> StorySample:
    """A random story and its rendering, re-drawn until no two objects overlap (no occlusion)."""
    rng = split_rng(split, index)
    for _ in range(50):
        n = int(rng.integers(scenes[0], scenes[1] + 1))
        captions = sample_story(rng, n, max_objects=max_objects, split=split)
        seed = int(rng.integers(2 ** 31))
        rendering = render_story(captions, frames_per_scene, size=size, seed=seed)
        if min_object_gap(rendering) > 0:
            break
    return StorySample(captions, rendering, seed)


@dataclass
class Clip:
    frames: np.ndarray  # (F, H, W, 3) uint8
    caption: str
    prime_frames: int  # how many leading frames come from the previous scene (0 for a single scene)


def sample_clip(split: str, index: int, frames: int, size: int = 64, prime_frames: int = 0,
                continuation_share: float = 0.5) -> Clip:
    """A training clip. With `prime_frames` > 0, a share of clips are continuation clips: their
    first `prime_frames` frames end the previous scene, the rest play the caption's scene, so a
    model learns to carry a story on from the frames it is given."""
    rng = split_rng(split, index)
    # its own stream, so the clip's frames and words stay what they were before captions varied
    name_black = bool(split_rng(split, index, 1).random() < NAMED_BLACK_SHARE)
    continuation = prime_frames > 0 and rng.random() < continuation_share
    captions = sample_story(rng, 2 if continuation else 1, split="train" if split == "train" else split)
    seed = int(rng.integers(2 ** 31))
    if not continuation:
        rendering = render_story(captions, frames, size=size, seed=seed)
        return Clip(rendering.frames, captions[0].text(name_black), 0)
    # the previous scene has run for a while (as in a story), and the clip starts K frames before its end
    before = int(rng.integers(prime_frames, 3 * DEFAULT_FPS + 1))
    rendering = render_story(captions, [before, frames - prime_frames], size=size, seed=seed)
    return Clip(rendering.frames[before - prime_frames:], captions[1].text(name_black), prime_frames)
