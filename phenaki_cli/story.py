"""Story scripts: one scene per non-empty line.

    # a comment
    [3s] a red circle moves right        ← duration prefix in seconds ...
    [24f] the red circle turns blue      ← ... or in frames
    the blue circle moves up             ← no prefix: 2 seconds

Errors name the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from phenaki_cli.errors import UserError

MAX_SCENE_SECONDS = 3600.0  # one hour: longer is a typo, not a scene
DEFAULT_SCENE_SECONDS = 2.0
_DURATION = re.compile(r"^\[\s*([0-9]*\.?[0-9]+)\s*([sf])\s*\]\s*(.*)$")


@dataclass
class Scene:
    prompt: str
    frames: int
    line: int | None = None  # script line, for messages and sidecars (None: not from a script)


@dataclass
class Story:
    scenes: list[Scene]
    source: str

    @property
    def total_frames(self) -> int:
        return sum(s.frames for s in self.scenes)

    def frame_ranges(self) -> list[tuple[int, int]]:
        return frame_ranges([s.frames for s in self.scenes])


def frame_ranges(frame_counts: list[int], start: int = 0) -> list[tuple[int, int]]:
    """[start, end) of each scene when they play one after another from frame `start`."""
    ranges = []
    for count in frame_counts:
        ranges.append((start, start + count))
        start += count
    return ranges


def sidecar_path(video: str | Path) -> Path:
    """The JSON beside a video that records its scenes (prompts and frame ranges)."""
    return Path(video).with_suffix(".json")


def parse_story(text: str, fps: float, source: str = "<script>") -> Story:
    scenes = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        seconds = DEFAULT_SCENE_SECONDS
        frames = None
        if line.startswith("["):
            m = _DURATION.match(line)
            if not m:
                bad = line.split("]", 1)[0] + ("]" if "]" in line else "")
                raise UserError(f"{source}:{number}: bad duration {bad!r} (write it as [3s] or [24f])")
            value, unit, line = float(m.group(1)), m.group(2), m.group(3).strip()
            if unit == "f":
                if value != int(value):
                    raise UserError(f"{source}:{number}: frame count must be whole, got {m.group(1)}")
                frames = int(value)
            else:
                seconds = value
            if not line:
                raise UserError(f"{source}:{number}: duration without a prompt")
        if frames is None:
            if not seconds <= MAX_SCENE_SECONDS:  # also catches nan / inf
                raise UserError(f"{source}:{number}: a scene lasts at most {MAX_SCENE_SECONDS:g} s, got {seconds:g}")
            frames = round(seconds * fps)
        if frames < 1:
            raise UserError(f"{source}:{number}: scene must last at least one frame")
        if frames > MAX_SCENE_SECONDS * fps:
            raise UserError(f"{source}:{number}: a scene lasts at most {MAX_SCENE_SECONDS:g} s "
                            f"({round(MAX_SCENE_SECONDS * fps)} frames at {fps:g} fps), got {frames} frames")
        scenes.append(Scene(line, frames, number))
    if not scenes:
        raise UserError(f"{source}: no scenes (one prompt per line; '#' starts a comment)")
    return Story(scenes, source)


def load_story(path: str | Path, fps: float) -> Story:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: story script not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file") from None
    return parse_story(text, fps, str(path))
