"""Scores a video against its Shapes World story: presence, motion and continuity.

How it sees a frame: every pixel takes the nearest palette colour (object colours and the
scene's background) when one lies within COLOR_TOLERANCE, else it is "unknown" (blur,
noise). Pixels of one colour form objects by 8-connectivity; blobs smaller than MIN_AREA
are noise and ignored. An object's shape comes from how much of its bounding box it fills
(disc ≈ 0.79, square ≈ 1.0, triangle ≈ 0.5).

Per clause: *presence* — an object of the clause's colour and shape is found in most of
the scene's first frames; it is then tracked by position (so a colour blend does not lose
it) and its *action* is checked from its first and last tracked frames:
  moves: the centroid travels at least half the spec's distance the named way, with
         little sideways drift, or it ends against that edge of the canvas (objects stop
         there);
  stays still: it moves under 2 px and keeps its size;
  grows/shrinks: its radius changes by at least half of what the spec allows (or it is
         already at the limit and does not change the other way);
  turns: its colour in the last frames is the named one.
Per scene boundary and per object that exists there: *continuity* — found on both
sides with no jump in position (≤ 3 px), size (±25 %) or colour.
Per scene: *extra objects* — solid blobs (large enough to show a shape, with an interior, so
not a speck or a thin halo of blur) of a colour beyond the story's objects that may show it
then (its colour at the scene's start, or the one it turns), frame by frame. The clause
checks ignore them (any matching blob passes), so this is what says a model draws three
blobs where the prompt names one.
All lengths are for 64 px and scale with the frame size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from phenaki_cli.data.shapes_world import (BACKGROUNDS, COLORS, DIRECTIONS, GROW_RATE, MAX_RADIUS, MIN_RADIUS,
                                           REFERENCE_SIZE, SPEED, Caption)

COLOR_NAMES = list(COLORS)
COLOR_TOLERANCE = 60.0  # RGB distance from a background→colour line within which a pixel counts
MIN_AREA = 6  # pixels at 64 px; smaller blobs are noise
SHAPELESS_AREA = 24  # pixels at 64 px; a blurred blob this small shows no reliable shape
SHAPE_AREA = {"circle": np.pi, "square": 4.0, "triangle": 2.0}  # area = factor · r²
MAX_JUMP = 4 * SPEED  # px at 64 px a tracked object may move between frames (6: blur and growth move centres too)


@dataclass
class Blob:
    color: str
    area: int
    cx: float
    cy: float
    fill: float  # share of the bounding box covered
    bottom_heavy: float  # share of the area in the lower half of the bounding box
    touches_border: bool
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive
    scale: float  # frame size / 64
    interior: int  # pixels whose 8 neighbours are all in the blob: none in a 1–2 px halo of blur

    @property
    def shape(self) -> str:
        # a triangle (apex up) holds ~3/4 of its area in its lower half and fills ~1/2 of its box;
        # discs and squares are symmetric. Both cues together stay right for tiny, pixelated shapes.
        if self.bottom_heavy >= 0.62 or self.fill < 0.6:
            return "triangle"
        return "square" if self.fill >= 0.9 else "circle"

    @property
    def shapeless(self) -> bool:
        return self.area < SHAPELESS_AREA * self.scale ** 2

    @property
    def solid(self) -> bool:
        """Large and thick enough to be an object of its own, not a stray speck or the thin ring of
        another colour that blur leaves around an object's edge."""
        return not self.shapeless and self.interior >= MIN_AREA * self.scale ** 2

    def radius(self, shape: str) -> float:
        return float(np.sqrt(self.area / SHAPE_AREA[shape]))


def find_blobs(frames: np.ndarray, backgrounds: list[str]) -> list[list[Blob]]:
    """Objects in every frame: (F, H, W, 3) uint8 → per frame, a list of colour blobs."""
    n, h, w, _ = frames.shape
    scale = h / REFERENCE_SIZE
    palette = torch.tensor([COLORS[c] for c in COLOR_NAMES], dtype=torch.float32)  # (8, 3)
    pixels = torch.from_numpy(frames).float()  # (F, H, W, 3)
    bg = torch.tensor([BACKGROUNDS[b] for b in backgrounds], dtype=torch.float32)[:, None, None, :]
    # Blur mixes an object's edge with the background: judge each pixel along the line from the
    # background to each palette colour. It belongs to colour c if it lies at least halfway
    # towards c on that line (alpha >= 0.5) and close to the line (residual < tolerance).
    direction = palette[None, :, :] - bg[:, 0, 0, None, :]  # (F, 8, 3)
    offset = (pixels - bg)[:, :, :, None, :]  # (F, H, W, 1, 3)
    along = direction[:, None, None]  # (F, 1, 1, 8, 3)
    alpha = ((offset * along).sum(-1) / (along * along).sum(-1)).clamp(max=1.0)
    residual = (offset - alpha[..., None] * along).norm(dim=-1)
    residual = torch.where(alpha >= 0.5, residual, torch.inf)
    nearest, index = residual.min(dim=-1)
    label = torch.where(nearest < COLOR_TOLERANCE, index + 1, 0)  # 0: background/unknown

    # connected components of each colour, for all frames at once: propagate the largest
    # pixel id through 8-neighbours of the same colour until nothing changes
    # (only the frame × colour planes with enough pixels to hold an object)
    min_area = MIN_AREA * scale * scale
    masks = torch.stack([label == c + 1 for c in range(len(COLOR_NAMES))], dim=1).reshape(-1, h, w)
    planes = (masks.sum(dim=(1, 2)) >= min_area).nonzero().flatten()
    masks = masks[planes].float()[:, None]
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, 1, h, w) * masks
    for _ in range(h + w):
        grown = F.max_pool2d(ids, 3, stride=1, padding=1) * masks
        # pointer jumping: the pixel an id names is in the same component and may already know a
        # larger id, so take it too (a few rounds instead of one per pixel of the widest blob)
        pointed = (grown.flatten(1).long() - 1).clamp(min=0)
        grown = torch.maximum(grown, grown.flatten(1).gather(1, pointed).view_as(grown) * masks)
        if torch.equal(grown, ids):
            break
        ids = grown

    ys, xs = np.mgrid[0:h, 0:w]
    blobs: list[list[Blob]] = [[] for _ in range(n)]
    ids_np = ids[:, 0].numpy().astype(np.int64)
    for plane, flat_index in zip(ids_np, planes.tolist()):
        f, c = divmod(flat_index, len(COLOR_NAMES))
        color, found = COLOR_NAMES[c], blobs[f]
        values, counts = np.unique(plane[plane > 0], return_counts=True)
        for value in values[counts >= min_area]:
            mask = plane == value
            px, py = xs[mask], ys[mask]
            x0, x1, y0, y1 = px.min(), px.max(), py.min(), py.max()
            area = int(mask.sum())
            lower = float((py > (y0 + y1) / 2).sum() + 0.5 * (py == (y0 + y1) / 2).sum()) / area
            found.append(Blob(color, area, float(px.mean()) + 0.5, float(py.mean()) + 0.5,
                              area / float((x1 - x0 + 1) * (y1 - y0 + 1)), lower,
                              bool(x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1), (x0, y0, x1, y1), scale,
                              _interior(mask)))
    return blobs


def _interior(mask: np.ndarray) -> int:
    """Pixels of a mask whose 3×3 neighbourhood lies wholly inside it (a one-step erosion)."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    inside = mask.copy()
    for dy in range(3):
        for dx in range(3):
            inside &= padded[dy:dy + h, dx:dx + w]
    return int(inside.sum())


def match(blobs: list[Blob], color: str, shape: str) -> Blob | None:
    """The largest blob of this colour and shape; failing that, one clipped by the border
    (clipping hides the shape)."""
    same_color = [b for b in blobs if b.color == color]
    fits = [b for b in same_color if b.shape == shape] or [b for b in same_color if b.touches_border or b.shapeless]
    return max(fits, key=lambda b: b.area, default=None)


def track(blobs: list[list[Blob]], start: Blob) -> list[Blob | None]:
    """Follow a blob by position through frames, whatever its colour does."""
    max_jump = MAX_JUMP * start.scale
    path, last = [start], start
    for frame in blobs[1:]:
        near = [b for b in frame if np.hypot(b.cx - last.cx, b.cy - last.cy) <= max_jump]
        best = min(near, key=lambda b: np.hypot(b.cx - last.cx, b.cy - last.cy) + abs(b.area - last.area) / 50,
                   default=None)
        path.append(best)
        last = best or last
    return path


@dataclass
class ClauseResult:
    scene: int
    clause: str
    present: bool
    action_ok: bool
    detail: str
    verb: str  # moves, turns, grows, shrinks, stays
    objects: int  # clauses (objects named) in its scene: two objects halve what a model gets right

    @property
    def ok(self) -> bool:
        return self.present and self.action_ok


@dataclass
class BoundaryResult:
    boundary: int  # between scene `boundary` and `boundary + 1` (0-based)
    object: str
    ok: bool
    detail: str


@dataclass
class Report:
    clauses: list[ClauseResult] = field(default_factory=list)
    boundaries: list[BoundaryResult] = field(default_factory=list)
    extra_objects: list[list[int]] = field(default_factory=list)  # per scene, per frame: blobs beyond the story's

    @property
    def clean_scenes(self) -> list[bool]:
        """Per scene: no extra object in at least half of its frames."""
        return [2 * sum(k > 0 for k in scene) <= len(scene) for scene in self.extra_objects]

    @property
    def prompt_accuracy(self) -> float:
        return float(np.mean([c.ok for c in self.clauses])) if self.clauses else 0.0

    @property
    def continuity(self) -> float | None:
        return float(np.mean([b.ok for b in self.boundaries])) if self.boundaries else None

    def to_dict(self) -> dict:
        return {"prompt_accuracy": self.prompt_accuracy, "continuity": self.continuity,
                "clauses": [dict(vars(c), ok=c.ok) for c in self.clauses],
                "boundaries": [vars(b) for b in self.boundaries],
                "extra_objects": self.extra_objects, "clean_scenes": self.clean_scenes}


def extra_object_figures(reports: list[Report]) -> dict:
    """Over many reports: extra objects per frame, and the share of scenes that are clean."""
    frames = [k for r in reports for scene in r.extra_objects for k in scene]
    clean = [c for r in reports for c in r.clean_scenes]
    return {"extra_objects_per_frame": float(np.mean(frames)) if frames else None,
            "clean_scenes": float(np.mean(clean)) if clean else None}


def clause_breakdown(reports: list[Report]) -> dict:
    """Where the clauses fail, over many reports: the share whose object is found at all, and the
    accuracy by verb and by objects in the scene, each as [accuracy, clauses]."""
    clauses = [c for r in reports for c in r.clauses]

    def share(group: list[ClauseResult]) -> list:
        return [float(np.mean([c.ok for c in group])), len(group)]

    by_verb, by_objects = {}, {}
    for c in clauses:
        by_verb.setdefault(c.verb, []).append(c)
        by_objects.setdefault(str(c.objects), []).append(c)
    return {"found": float(np.mean([c.present for c in clauses])) if clauses else None,
            "by_verb": {verb: share(by_verb[verb]) for verb in sorted(by_verb)},
            "by_objects": {k: share(by_objects[k]) for k in sorted(by_objects, key=int)}}


def _check_action(clause, path: list[Blob | None], n: int, scale: float) -> tuple[bool, str]:
    seen = [b for b in path if b is not None]
    if len(seen) < max(2, len(path) // 2):
        return False, "lost track of the object"
    first, last = seen[0], seen[-1]
    dx, dy = last.cx - first.cx, last.cy - first.cy
    verb = clause.verb
    if verb == "moves":
        ux, uy = DIRECTIONS[clause.argument]
        along, across = dx * ux + dy * uy, abs(dx * uy - dy * ux)
        expected = SPEED * scale * (n - 1)
        x0, y0, x1, y1 = last.bbox
        size = REFERENCE_SIZE * scale
        at_edge = {"left": x0 <= 1, "right": x1 >= size - 2, "up": y0 <= 1, "down": y1 >= size - 2}[clause.argument]
        ok = (along >= 0.5 * expected or (at_edge and along >= -1 * scale)) and across <= max(3 * scale, 0.5 * along)
        return ok, f"moved {along:+.1f} px {clause.argument} (spec {expected:.1f}), {across:.1f} px sideways"
    if verb == "stays":
        drift = float(np.hypot(dx, dy))
        ratio = last.area / max(first.area, 1)
        return drift <= 2 * scale and 0.8 <= ratio <= 1.25, f"drifted {drift:.1f} px, area ×{ratio:.2f}"
    if verb in ("grows", "shrinks"):
        r0, r1 = first.radius(clause.shape), last.radius(clause.shape)
        sign = 1 if verb == "grows" else -1
        limit = MAX_RADIUS * scale if verb == "grows" else MIN_RADIUS * scale
        room = max(0.0, sign * (limit - r0))
        expected = min(GROW_RATE * scale * (n - 1), room)
        change = sign * (r1 - r0)
        if expected < scale:  # already at the limit: it must just not change the other way
            ok = change >= -scale
        elif last.touches_border:  # clipping hides part of the growth; the area must still change the right way
            ok = sign * (last.area - first.area) > 0
        else:
            ok = change >= 0.5 * expected
        return ok, f"radius {r0:.1f} → {r1:.1f} px (spec change {sign * expected:+.1f})"
    # turns: the colour of the object over its last tracked frames
    tail = [b.color for b in seen[-2:]]
    return all(c == clause.argument for c in tail), f"ends {tail[-1]}"


def analyse(frames: np.ndarray, captions: list[Caption], scene_ranges: list[tuple[int, int]]) -> Report:
    """Judge a video (F, H, W, 3) uint8 against a parsed story and its scenes' frame ranges."""
    if len(captions) != len(scene_ranges):
        raise ValueError("one frame range per scene")
    scale = frames.shape[1] / REFERENCE_SIZE
    backgrounds = ["black"] * len(frames)
    for caption, (start, end) in zip(captions, scene_ranges):
        backgrounds[start:end] = [caption.background] * (end - start)
    blobs = find_blobs(frames, backgrounds)
    report = Report()
    names: list[tuple[str, str]] = []  # objects in the world, by (colour now, shape)
    for s, (caption, (start, end)) in enumerate(zip(captions, scene_ranges)):
        n = end - start
        scene_blobs = blobs[start:end]
        if s > 0:
            _check_boundary(report, s - 1, names, blobs[start - 1], blobs[start], scale)
        for clause in caption.clauses:
            # a turning object starts to blend at frame 1, so only its first frames show its name
            check_frames = range(min(2 if clause.verb == "turns" else 4, n))
            hits = [match(scene_blobs[j], clause.color, clause.shape) for j in check_frames]
            needed = 1 if clause.verb == "turns" else len(hits) // 2 + 1
            present = sum(h is not None for h in hits) >= needed
            if not present:
                report.clauses.append(ClauseResult(s, clause.text(), False, False, "not found", clause.verb,
                                                   len(caption.clauses)))
                continue
            j0 = next(j for j, h in zip(check_frames, hits) if h is not None)
            path = track(scene_blobs[j0:], hits[check_frames.index(j0)])
            ok, detail = _check_action(clause, path, n - j0, scale)
            report.clauses.append(ClauseResult(s, clause.text(), True, bool(ok), detail, clause.verb,
                                               len(caption.clauses)))
        for clause in caption.clauses:
            if clause.article == "a":
                names.append((clause.color, clause.shape))
        # each object may show its colour at the scene's start and, if it turns, the named one
        may_show = Counter(color for color, _ in names)
        may_show.update(clause.argument for clause in caption.clauses if clause.verb == "turns")
        report.extra_objects.append([_extra_objects(frame, may_show) for frame in scene_blobs])
        for clause in caption.clauses:
            if clause.verb == "turns" and (clause.color, clause.shape) in names:
                names[names.index((clause.color, clause.shape))] = (clause.argument, clause.shape)
    return report


def _extra_objects(frame: list[Blob], may_show: Counter) -> int:
    """Solid blobs of each colour beyond the story's objects that may show that colour."""
    solid = Counter(b.color for b in frame if b.solid)
    return sum(max(0, k - may_show[color]) for color, k in solid.items())


def _check_boundary(report: Report, boundary: int, names, before: list[Blob], after: list[Blob], scale: float):
    for color, shape in names:
        a, b = match(before, color, shape), match(after, color, shape)
        label = f"{color} {shape}"
        if a is None or b is None:
            side = "before" if a is None else "after"
            report.boundaries.append(BoundaryResult(boundary, label, False, f"not found {side} the cut"))
            continue
        jump = float(np.hypot(b.cx - a.cx, b.cy - a.cy))
        ra, rb = a.radius(shape), b.radius(shape)
        ok = jump <= 3 * scale and abs(rb - ra) <= max(1.5 * scale, 0.25 * ra)
        report.boundaries.append(BoundaryResult(boundary, label, bool(ok), f"jump {jump:.1f} px, radius {ra:.1f} → {rb:.1f}"))
