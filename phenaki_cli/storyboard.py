"""Storyboards: a PNG contact sheet with a few frames of every scene and its prompt.

Pillow draws the captions (its built-in font needs no download); it is the one dependency
that is here only for this, because a storyboard without its prompts says little. The sheet is
drawn and compressed a scene at a time, so a story of thousands of scenes never holds it whole.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

FRAMES_PER_SCENE = 4


def pick_frames(start: int, end: int, count: int = FRAMES_PER_SCENE) -> list[int]:
    """Evenly spaced frame indices of [start, end), first and last included."""
    n = end - start
    if n <= count:
        return list(range(start, end))
    return sorted({start + round(i * (n - 1) / (count - 1)) for i in range(count)})


def _layout(scenes: list[tuple[str, list[np.ndarray]]], scale: int, caption_width: int):
    h, w = next(frames[0] for _, frames in scenes if frames).shape[:2]
    tile_h, tile_w, gap = h * scale, w * scale, 4
    columns = max(len(frames) for _, frames in scenes)
    return tile_h, tile_w, gap, caption_width + columns * (tile_w + gap) + gap


def storyboard_rows(scenes: list[tuple[str, list[np.ndarray]]], scale: int = 2, caption_width: int = 200):
    """The sheet's rows, one strip per scene (the prompt on the left, its frames to the right), then the
    bottom margin: (h, W, 3) uint8 each, so a long story's sheet is never whole in memory."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    tile_h, tile_w, gap, width = _layout(scenes, scale, caption_width)
    for row, (prompt, frames) in enumerate(scenes):
        strip = Image.new("RGB", (width, tile_h + gap), (245, 245, 245))
        draw = ImageDraw.Draw(strip)
        lines = textwrap.wrap(f"{row + 1}. {prompt}", width=caption_width // 7)
        draw.multiline_text((gap + 2, gap + 2), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=2)
        for col, frame in enumerate(frames):
            tile = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_w, tile_h), Image.NEAREST)
            strip.paste(tile, (caption_width + gap + col * (tile_w + gap), gap))
        yield np.asarray(strip)
    yield np.full((gap, width, 3), 245, dtype=np.uint8)


def write_storyboard(path: str | Path, scenes: list[tuple[str, list[np.ndarray]]]) -> None:
    """Write the sheet to `path` as it is (a staged temporary: the caller renames it into place),
    strip by strip: memory stays flat in the number of scenes."""
    from phenaki_cli.video_io import write_png_strips

    tile_h, _, gap, width = _layout(scenes, 2, 200)
    write_png_strips(path, width, len(scenes) * (tile_h + gap) + gap, storyboard_rows(scenes))
