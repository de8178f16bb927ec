"""Storyboards: a PNG contact sheet with a few frames of every scene and its prompt.

Pillow draws the captions (its built-in font needs no download); it is the one dependency
that is here only for this, because a storyboard without its prompts says little.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from phenaki_cli.files import atomic_path

FRAMES_PER_SCENE = 4


def pick_frames(start: int, end: int, count: int = FRAMES_PER_SCENE) -> list[int]:
    """Evenly spaced frame indices of [start, end), first and last included."""
    n = end - start
    if n <= count:
        return list(range(start, end))
    return sorted({start + round(i * (n - 1) / (count - 1)) for i in range(count)})


def render_storyboard(scenes: list[tuple[str, list[np.ndarray]]], scale: int = 2, caption_width: int = 200) -> np.ndarray:
    """One row per scene: the prompt on the left, its frames to the right. Returns (H, W, 3) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    h, w = scenes[0][1][0].shape[:2]
    tile_h, tile_w, gap = h * scale, w * scale, 4
    columns = max(len(frames) for _, frames in scenes)
    sheet = Image.new("RGB", (caption_width + columns * (tile_w + gap) + gap, len(scenes) * (tile_h + gap) + gap),
                      (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    for row, (prompt, frames) in enumerate(scenes):
        y = gap + row * (tile_h + gap)
        lines = textwrap.wrap(f"{row + 1}. {prompt}", width=caption_width // 7)
        draw.multiline_text((gap + 2, y + 2), "\n".join(lines), fill=(20, 20, 20), font=font, spacing=2)
        for col, frame in enumerate(frames):
            tile = Image.fromarray(np.ascontiguousarray(frame)).resize((tile_w, tile_h), Image.NEAREST)
            sheet.paste(tile, (caption_width + gap + col * (tile_w + gap), y))
    return np.asarray(sheet)


def write_storyboard(path: str | Path, scenes: list[tuple[str, list[np.ndarray]]]) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(render_storyboard(scenes)).save(tmp, format="PNG")
