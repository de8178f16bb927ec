"""How local a tokenizer's tokens are; prints JSON.

    python bench/token_locality.py [MODEL_DIR ...]    # default: the shipped model

A masked token model predicts each token from the others. If a patch of plain background gets
one code wherever it is, the transformer's job there is trivial; if its code depends on where the
objects are (an all-to-all encoder spreads an object's details over far background tokens), every
background token is a guess about global context, and MaskGIT's parallel sampling draws those
guesses independently. Over Shapes World test clips (21 frames, black background) this takes the
patches that are background with no object within `reach` patches, in this time step or any earlier
one (the encoder is causal), and reports:

- `distinct_codes`: how many codes such patches get;
- `top_code_share_per_time_step`: the share taking the most common code at the same time step,
  averaged over time steps; 1.0 means their token is a function of their pixels and time alone;
- `top_code_share_per_position`: the same for all background patches (near objects too) at a fixed
  (time, row, column), averaged over positions with at least 5 patches.

Tokens should also mean the same at any time and place (shared/REFERENCES.md):

- `still_stationarity`: a still scene (a test clip's first frame, 21 times) keeps this share of its
  tokens at time steps 2–10 equal to step 1's (1.0: a still tubelet keeps its code);
- `shift_equivariance`: the same still scene moved right by one patch (the vacated column filled with
  the background) keeps this share of its tokens equal to the original's one column to the left.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from phenaki_cli.codec import encode_frames
from phenaki_cli.data.shapes_sampler import sample_clip
from phenaki_cli.modeldir import load_tokenizer

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "shapes-64"


def plain_patches(frames: np.ndarray, patch: int, tubelet: int) -> np.ndarray:
    """(T, h, w) bool: the first frame's patches and each later tubelet that are all black."""
    size = frames.shape[1] // patch
    first = frames[:1].reshape(1, 1, size, patch, size, patch, 3)
    rest = frames[1:].reshape(-1, tubelet, size, patch, size, patch, 3)
    return np.concatenate([(first == 0).all(axis=(1, 3, 5, 6)), (rest == 0).all(axis=(1, 3, 5, 6))])


def top_share(counts: Counter) -> float:
    return counts.most_common(1)[0][1] / sum(counts.values())


def background_codes(model_dir: Path, clips: int = 60, frames: int = 21, reach: int = 2) -> dict:
    tokenizer, _ = load_tokenizer(model_dir)
    c = tokenizer.config
    far_by_step, near_by_position = defaultdict(Counter), defaultdict(Counter)
    for index in range(clips):
        clip = sample_clip("test", index, frames, size=c.image_size)
        if clip.frames[0, 0, 0].any():  # a gray background: skip (black is the common case)
            continue
        grid = encode_frames(tokenizer, clip.frames)
        plain = plain_patches(clip.frames, c.patch_size, c.temporal_patch_size)
        for step, row, col in zip(*np.nonzero(plain)):
            code = int(grid[step, row, col])
            near_by_position[(step, row, col)][code] += 1
            around = plain[: step + 1, max(0, row - reach): row + reach + 1, max(0, col - reach): col + reach + 1]
            if around.all():
                far_by_step[step][code] += 1
    far = sum(far_by_step.values(), Counter())
    return {"model": str(model_dir), "clips": clips, "reach": reach, "far_background_patches": sum(far.values()),
            "distinct_codes": len(far),
            "top_code_share_per_time_step": float(np.mean([top_share(n) for n in far_by_step.values()])),
            "top_code_share_per_position": float(np.mean([top_share(n) for n in near_by_position.values()
                                                           if sum(n.values()) >= 5]))}


def still_and_shifted(model_dir: Path, clips: int = 40, frames: int = 21) -> dict:
    tokenizer, _ = load_tokenizer(model_dir)
    c = tokenizer.config
    p = c.patch_size
    stationary, equivariant = [], []
    for index in range(clips):
        first = sample_clip("test", index, 1, size=c.image_size).frames[0]
        background = first[0, 0]  # sampled objects start clear of the corner (Shapes World placement)
        shifted = np.empty_like(first)
        shifted[:, p:], shifted[:, :p] = first[:, :-p], background
        still = encode_frames(tokenizer, np.repeat(first[None], frames, axis=0))
        moved = encode_frames(tokenizer, np.repeat(shifted[None], frames, axis=0))
        stationary.append(float((still[2:] == still[1:2]).mean()))
        equivariant.append(float((moved[:, :, 1:] == still[:, :, :-1]).mean()))
    return {"still_stationarity": round(float(np.mean(stationary)), 3),
            "shift_equivariance": round(float(np.mean(equivariant)), 3), "still_clips": clips}


if __name__ == "__main__":
    for model in sys.argv[1:] or [SHIPPED]:
        print(json.dumps({**background_codes(Path(model)), **still_and_shifted(Path(model))}))
