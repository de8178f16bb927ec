"""Datasets on disk: a folder of videos (or images) with captions in a manifest.

    DIR/captions.jsonl   {"video": "videos/00000.mp4", "caption": "a red circle moves right"}
    DIR/captions.csv     same columns; WebVid-style names are accepted too
    DIR/any.csv          a folder's only .csv / .jsonl is its manifest (results_2M_train.csv)

Column names accepted: video | path | file | videoid (+ ".mp4") for the file (image | img |
path | file for images), and caption | text | name | txt for the caption. A folder without
a manifest is read file by file, each captioned by a same-named .txt beside it when there
is one (the img2dataset / LAION layout: 000001.jpg + 000001.txt), else with an empty caption
(enough for tokenizer training). `phenaki data shapes` writes this same format, so Shapes
World and a user's own data share one code path.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phenaki_cli.errors import UserError
from phenaki_cli.files import atomic_path
from phenaki_cli.video_io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_video, write_video

MANIFEST_NAMES = ("captions.jsonl", "manifest.jsonl", "captions.csv", "manifest.csv")
VIDEO_KEYS = ("video", "path", "file", "videoid")
IMAGE_KEYS = ("image", "img", "path", "file")
CAPTION_KEYS = ("caption", "text", "name", "txt")


@dataclass
class Entry:
    path: Path
    caption: str


@dataclass(frozen=True)
class Unreadable:
    """A file a dataset could not give a clip from, and why (the reason names the file)."""
    path: str
    reason: str


class SkippedFiles:
    """The files a run left out, each counted once however often it is read again; `on_new(reason)`
    hears of each the first time (the first `tell` of them: a command names a few, then counts)."""

    def __init__(self, known: dict[str, str] | None = None, on_new=None, tell: int = 5):
        self.files: dict[str, str] = dict(known or {})
        self.on_new, self.tell = on_new, tell

    def __len__(self) -> int:
        return len(self.files)

    def add(self, item: Unreadable) -> None:
        if item.path not in self.files:
            self.files[item.path] = item.reason
            if self.on_new is not None and len(self.files) <= self.tell:
                self.on_new(item.reason)

    def summary(self) -> str:
        """'skipped 2 unreadable or too-short files (a.mp4, b.gif)', or '' when none."""
        if not self.files:
            return ""
        names = [Path(p).name for p in list(self.files)[:3]]
        more = ", …" if len(self.files) > 3 else ""
        return f"skipped {len(self.files)} unreadable or too-short file{'s' if len(self.files) > 1 else ''} " \
               f"({', '.join(names)}{more})"


def _pick(row: dict, keys: tuple[str, ...]):
    for key in keys:
        if row.get(key) not in (None, ""):
            return key, row[key]
    return None, None


def _sidecar_caption(path: Path) -> str:
    text = path.with_suffix(".txt")
    return " ".join(text.read_text(errors="replace").split()) if text.is_file() else ""


def find_manifest(root: Path) -> Path | None:
    """The caption file of a dataset folder: one of MANIFEST_NAMES, else the folder's only .csv or
    .jsonl file (WebVid's results_2M_train.csv, say); None when it has none."""
    named = next((root / n for n in MANIFEST_NAMES if (root / n).is_file()), None)
    if named is not None:
        return named
    others = sorted(p for p in root.iterdir() if p.suffix.lower() in (".csv", ".jsonl") and p.is_file())
    if len(others) > 1:
        raise UserError(f"{root}: several caption files ({', '.join(p.name for p in others[:4])}); name the one "
                        f"to use captions.csv or captions.jsonl")
    return others[0] if others else None


def captions_hint(root: Path) -> str:
    """How to caption a folder, naming stray text files that look like captions but are not read."""
    stray = sorted(p.name for p in root.iterdir() if p.suffix.lower() in (".txt", ".tsv", ".json") and p.is_file()
                   and not any(p.with_suffix(s).exists() for s in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES)))
    found = f" ({', '.join(stray[:3])} is not read: captions are .csv or .jsonl)" if stray else ""
    return (f"captions go in {root}/captions.csv or captions.jsonl (columns video and caption), or in a .txt "
            f"beside each file with its name{found}")


def read_manifest(root: str | Path, images: bool = False) -> list[Entry]:
    """The entries of a dataset folder; `images` reads an image dataset (LAION-style)."""
    root = Path(root)
    what = "images" if images else "videos"
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    manifest = find_manifest(root)
    if manifest is None:
        suffixes = IMAGE_SUFFIXES if images else VIDEO_SUFFIXES
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes)
        if not files:
            raise UserError(f"{root}: no {what} and no manifest ({', '.join(MANIFEST_NAMES)})")
        return [Entry(p, _sidecar_caption(p)) for p in files]
    rows: list[tuple[int, dict]] = []
    if manifest.suffix == ".jsonl":
        for number, line in enumerate(manifest.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UserError(f"{manifest}:{number}: not valid JSON ({e.msg})") from None
    else:
        with manifest.open(newline="") as f:
            rows = list(enumerate(csv.DictReader(f), start=2))
    entries = []
    for number, row in rows:
        keys = IMAGE_KEYS if images else VIDEO_KEYS
        key, video = _pick(row, keys) if isinstance(row, dict) else (None, None)
        if video is None:
            raise UserError(f"{manifest}:{number}: no {what[:-1]} column ({' | '.join(keys)})")
        video = str(video) + (".mp4" if key == "videoid" and not Path(str(video)).suffix else "")
        entries.append(Entry(root / video, str(_pick(row, CAPTION_KEYS)[1] or "")))
    if not entries:
        raise UserError(f"{manifest}: manifest lists no {what}")
    return entries


class VideoClips:
    """Clips of a fixed frame count, read from a manifest folder at the model's fps and size.

    Indexable by an integer sample number: sample k is a fixed clip (file and start drawn from
    `seed` and k), so training that resumes at a step reads exactly the clips it would have.
    Unreadable or too-short files give an `Unreadable` (and are noted in `skipped`), never a crash.
    With `images`, the entries are images and every clip is one frame (frames must be 1).
    """

    def __init__(self, root: str | Path, frames: int, size: int, fps: float, seed: int = 0, images: bool = False):
        self.root, self.entries = Path(root), read_manifest(root, images=images)
        self.frames, self.size, self.fps, self.seed = frames, size, fps, seed
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def entry_for(self, sample: int) -> tuple[Entry, np.random.Generator]:
        epoch, position = divmod(sample, len(self.entries))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.entries))
        return self.entries[order[position]], np.random.default_rng([self.seed, epoch, position])

    def __getitem__(self, sample: int) -> tuple[np.ndarray, str] | Unreadable:
        entry, rng = self.entry_for(sample)
        try:
            frames = read_video(entry.path, fps=self.fps, size=self.size).frames
        except UserError as e:
            return self._skip(entry, str(e))
        if len(frames) < self.frames:
            return self._skip(entry, f"{entry.path}: {len(frames)} frames at {self.fps:g} fps, fewer than the "
                                     f"{self.frames} a clip needs")
        start = int(rng.integers(len(frames) - self.frames + 1))
        return frames[start:start + self.frames], entry.caption

    def _skip(self, entry: Entry, reason: str) -> Unreadable:
        self.skipped[str(entry.path)] = reason
        return Unreadable(str(entry.path), reason)

    def first_readable(self) -> None:
        """Fail now, with the reason, when no file gives a clip (rather than train on nothing)."""
        for sample in range(len(self.entries)):
            if not isinstance(self[sample], Unreadable):
                return
        first = next(iter(self.skipped.values()))
        raise UserError(f"{self.root}: none of its {len(self.entries)} files gives a clip of "
                        f"{self.frames} frames (first: {first})")


def write_shapes_dataset(out: str | Path, count: int, frames_per_scene: int, size: int, fps: float,
                         split: str, scenes: tuple[int, int] = (1, 1)) -> None:
    """Render `count` Shapes World stories as mp4 files plus captions.jsonl, atomically.

    Each row carries the whole story caption (scenes joined by ". ") and, per scene, its
    caption and frame range, so multi-scene samples can be scored by `phenaki eval`.
    """
    from phenaki_cli.data.shapes_sampler import sample_rendered_story

    with atomic_path(out, directory=True) as tmp:
        (tmp / "videos").mkdir()
        lines = []
        for i in range(count):
            sample = sample_rendered_story(split, i, scenes=scenes, frames_per_scene=frames_per_scene, size=size)
            name = f"videos/{split}-{i:06d}.mp4"
            write_video(tmp / name, sample.rendering.frames, fps)
            texts = [c.text() for c in sample.captions]
            lines.append(json.dumps({
                "video": name, "caption": ". ".join(texts), "split": split, "index": i, "fps": fps,
                "scenes": [{"prompt": t, "start": a, "end": b} for t, (a, b) in
                           zip(texts, sample.rendering.scene_ranges)]}))
        (tmp / "captions.jsonl").write_text("\n".join(lines) + "\n")
