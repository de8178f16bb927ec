"""Shapes World: vocabulary, caption grammar and renderer (spec: shared/SHAPES_WORLD.md).

    scene   := clause [" and " clause] [" on a " background " background"]
    clause  := ("a" | "the") [size " "] color " " shape " " verb

Physics are per frame at 64 px and scale linearly with the canvas size. Time runs as:
render the frame, then apply one step of the scene's verbs. So the first frame of a
scene shows the state one step after the last frame of the previous scene, and motion
stays continuous across scene boundaries.

Project choices (not fixed by the spec): a new object ("a ...") is placed at random,
fully inside the canvas, with room to carry out its verb when there is room, and clear
of the other objects' paths in that scene; objects are drawn in order of appearance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from phenaki_cli.errors import UserError

BACKGROUNDS = {"black": (0, 0, 0), "gray": (110, 110, 110)}
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 90, 220), "yellow": (235, 210, 40),
    "purple": (150, 60, 200), "orange": (245, 140, 30), "cyan": (40, 200, 210), "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 5.0, None: 7.0, "big": 10.0}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEED = 1.5  # px per frame at 64 px
GROW_RATE = 0.4
MAX_RADIUS = 16.0
MIN_RADIUS = 3.0
BLEND_FRAMES = 4
REFERENCE_SIZE = 64
DEFAULT_FPS = 8
DEFAULT_SCENE_SECONDS = 2
ACTIONS = tuple(f"moves {d}" for d in DIRECTIONS) + ("stays still", "grows", "shrinks") + tuple(
    f"turns {c}" for c in COLORS)


@dataclass(frozen=True)
class Clause:
    article: str  # "a" introduces an object, "the" refers to one that exists
    size: str | None
    color: str
    shape: str
    action: str  # one of ACTIONS

    @property
    def verb(self) -> str:
        return self.action.split()[0]

    @property
    def argument(self) -> str | None:
        parts = self.action.split()
        return parts[1] if len(parts) > 1 and self.verb in ("moves", "turns") else None

    def text(self) -> str:
        words = [self.article] + ([self.size] if self.size else []) + [self.color, self.shape, self.action]
        return " ".join(words)


@dataclass(frozen=True)
class Caption:
    clauses: tuple[Clause, ...]
    background: str = "black"

    def text(self, name_black: bool = False) -> str:
        """The canonical caption, which leaves a black background unsaid; `name_black` says it, as the
        grammar also allows ("... on a black background")."""
        text = " and ".join(c.text() for c in self.clauses)
        said = self.background != "black" or name_black
        return text + (f" on a {self.background} background" if said else "")


def _choices(options) -> str:
    return ", ".join(o for o in options if o)


def parse_caption(text: str) -> Caption:
    """Parse a scene caption; a word outside the grammar raises a UserError naming it and its position."""
    words = text.strip().rstrip(".").lower().split()
    position = 0

    def fail(expected: str) -> None:
        if position >= len(words):
            raise UserError(f"caption {text.strip()!r}: ends early; expected {expected}")
        raise UserError(f"caption {text.strip()!r}: word {position + 1} {words[position]!r} is not "
                        f"in the Shapes World grammar; expected {expected}")

    def take(options, expected: str) -> str:
        nonlocal position
        if position >= len(words) or words[position] not in options:
            fail(expected)
        position += 1
        return words[position - 1]

    def clause() -> Clause:
        nonlocal position
        article = take(("a", "the"), "'a' or 'the'")
        size = None
        if position < len(words) and words[position] in ("small", "big"):
            size = words[position]
            position += 1
        color = take(COLORS, f"a size or colour ({_choices(['small', 'big', *COLORS])})")
        shape = take(SHAPES, f"a shape ({_choices(SHAPES)})")
        verb = take(("moves", "stays", "grows", "shrinks", "turns"), "a verb (moves, stays, grows, shrinks, turns)")
        if verb == "moves":
            action = f"moves {take(DIRECTIONS, 'a direction (' + _choices(DIRECTIONS) + ')')}"
        elif verb == "stays":
            action = f"stays {take(('still',), 'still')}"
        elif verb == "turns":
            action = f"turns {take(COLORS, 'a colour (' + _choices(COLORS) + ')')}"
        else:
            action = verb
        return Clause(article, size, color, shape, action)

    clauses = [clause()]
    background = "black"
    while position < len(words):
        if words[position] == "and" and len(clauses) == 1:
            position += 1
            clauses.append(clause())
        elif words[position] == "on":
            position += 1
            take(("a",), "'a'")
            background = take(BACKGROUNDS, f"a background ({_choices(BACKGROUNDS)})")
            take(("background",), "'background'")
            if position < len(words):
                fail("the end of the caption")
        else:
            fail("'and' or 'on a ... background'" if len(clauses) == 1 else "'on a ... background' or the end")
    if len(clauses) == 2 and (clauses[0].color, clauses[0].shape) == (clauses[1].color, clauses[1].shape):
        raise UserError(f"caption {text.strip()!r}: two objects in one scene may not share both colour and shape")
    return Caption(tuple(clauses), background)


def parse_captions(prompts: list[str], locations: list[str]) -> list[Caption]:
    """Parse a story's scene captions; an error is prefixed with that scene's location (file:line)."""
    captions = []
    for prompt, where in zip(prompts, locations):
        try:
            captions.append(parse_caption(prompt))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    return captions


@dataclass
class WorldObject:
    shape: str
    color: str  # its colour name now (the target once a turn has run)
    rgb: np.ndarray  # float RGB actually drawn
    radius: float
    cx: float
    cy: float


@dataclass
class ObjectState:
    """One object in one frame: the ground truth an analyser is checked against."""
    index: int
    shape: str
    rgb: tuple[float, float, float]
    radius: float
    cx: float
    cy: float


@dataclass
class Rendering:
    frames: np.ndarray  # (F, size, size, 3) uint8
    states: list[list[ObjectState]]  # per frame
    scene_ranges: list[tuple[int, int]]  # [start, end) per scene
    captions: list[Caption] = field(default_factory=list)


@functools.lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    xs, ys = _pixel_centres(size)
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
    # isosceles, apex up: apex at (cx, cy - r), base from cx - r to cx + r at cy + r
    return (ys >= cy - r) & (ys <= cy + r) & (np.abs(xs - cx) <= (ys - (cy - r)) / 2)


class World:
    """The state of a story's objects, stepped frame by frame."""

    def __init__(self, size: int = REFERENCE_SIZE, rng: np.random.Generator | None = None):
        self.size = size
        self.scale = size / REFERENCE_SIZE
        self.rng = rng or np.random.default_rng(0)
        self.objects: list[WorldObject] = []

    def find(self, color: str, shape: str) -> int | None:
        for i, obj in enumerate(self.objects):
            if obj.color == color and obj.shape == shape:
                return i
        return None

    def trajectory(self, obj: WorldObject, action: str, frames: int) -> np.ndarray:
        """(frames, 3) of cx, cy, r the object would have in each frame of a scene under `action`."""
        out = np.empty((frames, 3), np.float32)
        cx, cy, r = obj.cx, obj.cy, obj.radius
        for j in range(frames):
            out[j] = cx, cy, r
            cx, cy, r = self._step(cx, cy, r, action)
        return out

    def _step(self, cx: float, cy: float, r: float, action: str) -> tuple[float, float, float]:
        k = self.scale
        if action.startswith("moves"):
            dx, dy = DIRECTIONS[action.split()[1]]
            cx = _advance(cx, dx * SPEED * k, r, self.size)
            cy = _advance(cy, dy * SPEED * k, r, self.size)
        elif action == "grows":
            r = min(r + GROW_RATE * k, MAX_RADIUS * k)
        elif action == "shrinks":
            r = max(r - GROW_RATE * k, MIN_RADIUS * k)
        return cx, cy, r

    def _place(self, clause: Clause, frames: int, others: list[np.ndarray]) -> WorldObject:
        """A new object fully inside the canvas, with room for its verb, clear of other paths."""
        k, size = self.scale, self.size
        r = SIZES[clause.size] * k
        obj = WorldObject(clause.shape, clause.color, np.array(COLORS[clause.color], np.float32), r, 0.0, 0.0)
        travel = SPEED * k * (frames - 1)
        reach = min(r + GROW_RATE * k * (frames - 1), MAX_RADIUS * k) if clause.action == "grows" else r
        lo_x = lo_y = reach
        hi_x = hi_y = size - reach
        if clause.action.startswith("moves"):
            dx, dy = DIRECTIONS[clause.action.split()[1]]
            if dx > 0: hi_x = max(lo_x, hi_x - travel)
            if dx < 0: lo_x = min(hi_x, lo_x + travel)
            if dy > 0: hi_y = max(lo_y, hi_y - travel)
            if dy < 0: lo_y = min(hi_y, lo_y + travel)
        best, best_gap = None, -np.inf
        for _ in range(200):
            obj.cx, obj.cy = self.rng.uniform(lo_x, hi_x), self.rng.uniform(lo_y, hi_y)
            path = self.trajectory(obj, clause.action, frames)
            gap = min((_clearance(path, other) for other in others), default=np.inf)
            if gap > best_gap:
                best, best_gap = (obj.cx, obj.cy), gap
            if gap > 2 * k:
                break
        obj.cx, obj.cy = best
        return obj

    def render_frame(self, background: str) -> np.ndarray:
        frame = np.empty((self.size, self.size, 3), np.uint8)
        frame[:] = BACKGROUNDS[background]
        for obj in self.objects:
            frame[shape_mask(obj.shape, obj.cx, obj.cy, obj.radius, self.size)] = np.round(obj.rgb).astype(np.uint8)
        return frame

    def play(self, caption: Caption, frames: int) -> tuple[list[np.ndarray], list[list[ObjectState]]]:
        """Run one scene: resolve its clauses against the world, then render and step `frames` times."""
        actions: dict[int, str] = {}
        targets: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for clause in caption.clauses:
            index = self.find(clause.color, clause.shape)
            if clause.article == "the":
                if index is None:
                    raise UserError(f"scene {caption.text()!r}: 'the {clause.color} {clause.shape}' refers to "
                                    f"no object in the story so far")
            else:
                if index is not None:
                    raise UserError(f"scene {caption.text()!r}: a {clause.color} {clause.shape} already exists; "
                                    f"refer to it with 'the'")
                others = [self.trajectory(o, actions.get(i, "stays still"), frames)
                          for i, o in enumerate(self.objects)]
                self.objects.append(self._place(clause, frames, others))
                index = len(self.objects) - 1
            actions[index] = clause.action
            if clause.verb == "turns":
                obj = self.objects[index]
                targets[index] = (obj.rgb.copy(), np.array(COLORS[clause.argument], np.float32))
        # names change only after every clause has been matched against the scene's start
        for clause in caption.clauses:
            if clause.verb == "turns":
                self.objects[self.find(clause.color, clause.shape)].color = clause.argument
        images, states = [], []
        for j in range(frames):
            for index, (start, end) in targets.items():
                self.objects[index].rgb = start + (end - start) * min(j, BLEND_FRAMES) / BLEND_FRAMES
            images.append(self.render_frame(caption.background))
            states.append([ObjectState(i, o.shape, tuple(float(c) for c in o.rgb), o.radius, o.cx, o.cy)
                           for i, o in enumerate(self.objects)])
            for index, action in actions.items():
                obj = self.objects[index]
                obj.cx, obj.cy, obj.radius = self._step(obj.cx, obj.cy, obj.radius, action)
        for index, (_, end) in targets.items():
            self.objects[index].rgb = end
        return images, states


def _advance(centre: float, velocity: float, r: float, size: int) -> float:
    """Move a centre, stopping where the edge touches the border. An object that grew past the
    border stays where it is rather than being pushed back inside (which would be a jump)."""
    if velocity > 0:
        return max(centre, min(centre + velocity, size - r))
    if velocity < 0:
        return min(centre, max(centre + velocity, r))
    return centre


def _clearance(path_a: np.ndarray, path_b: np.ndarray) -> float:
    """Smallest gap between two objects' bounding discs over a scene (negative: they overlap)."""
    if len(path_b) == 0:
        return np.inf
    n = min(len(path_a), len(path_b))
    a, b = path_a[:n], path_b[:n]
    distance = np.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1])
    return float((distance - 1.42 * (a[:, 2] + b[:, 2])).min())


def render_story(captions: list[Caption | str], frames_per_scene: list[int] | int = DEFAULT_SCENE_SECONDS * DEFAULT_FPS,
                 size: int = REFERENCE_SIZE, seed: int = 0) -> Rendering:
    """Render a story (list of scene captions) to frames, carrying the world state across scenes."""
    captions = [parse_caption(c) if isinstance(c, str) else c for c in captions]
    if isinstance(frames_per_scene, int):
        frames_per_scene = [frames_per_scene] * len(captions)
    if len(frames_per_scene) != len(captions):
        raise ValueError("one frame count per scene")
    world = World(size, np.random.default_rng(seed))
    frames, states, ranges = [], [], []
    for caption, n in zip(captions, frames_per_scene):
        images, scene_states = world.play(caption, n)
        ranges.append((len(frames), len(frames) + n))
        frames += images
        states += scene_states
    return Rendering(np.stack(frames), states, ranges, captions)


def min_object_gap(rendering: Rendering) -> float:
    """Smallest gap between any two objects over a rendering (negative: they overlapped)."""
    gap = np.inf
    for frame in rendering.states:
        for i in range(len(frame)):
            for j in range(i + 1, len(frame)):
                a, b = frame[i], frame[j]
                gap = min(gap, float(np.hypot(a.cx - b.cx, a.cy - b.cy) - 1.42 * (a.radius + b.radius)))
    return gap


def vocabulary() -> list[str]:
    """Every word a Shapes World caption can use."""
    words = {"a", "the", "and", "on", "background", *BACKGROUNDS, *COLORS, *SHAPES, *(s for s in SIZES if s),
             *(word for action in ACTIONS for word in action.split())}
    return sorted(words)
