"""Completing and editing existing video with the same model: prediction, rewind, infilling,
image-to-video with a target end frame, in/outpainting, and instruction edits.

Every task is one question: which pixels are known? A token is *given* when every pixel of its
tubelet patch is known; the rest are masked and MaskGIT fills them under the prompt.

Causality. The tokenizer is causal in time: the tokens of frame t depend on frames 0..t, and,
through spatial attention, on every pixel of those frames. So only a known *head* of the video
has exact tokens. Tokens of known *later* frames (rewind, infilling, an end image) or of known
pixels beside an unknown box (inpainting) depend on what is missing. We therefore iterate:
start from a guess for the unknown pixels (the nearest known frame; the mean known colour
inside a box), encode, fill the unknown tokens, decode, put the known pixels back, and encode
again, so the given tokens are computed from ever better surroundings. The output keeps the
known pixels exactly; only the unknown ones come from the model. (Training matches this: the
model learns spans at the head, tail and middle and boxes; transformer/masking.py.)

Long videos (inpaint, edit) are processed window by window: each later window starts with the
last K frames already produced as its known head, so edits stay consistent over any length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from einops import reduce

from phenaki_cli.config import SamplingConfig
from phenaki_cli.errors import UserError
from phenaki_cli.pipeline import Phenaki
from phenaki_cli.sampling import guided_logits, maskgit_decode, prepare_guided
from phenaki_cli.video_io import frames_to_tensor, tensor_to_frames

MODES = ("predict", "rewind", "infill")


@dataclass
class FillResult:
    frames: np.ndarray  # (F, H, W, 3) uint8, known pixels exactly as given
    given_tokens: float  # share of the window's tokens that were given


def given_tokens(known: np.ndarray, patch: int, temporal_patch: int) -> torch.Tensor:
    """Pixel mask (F, H, W) → token mask (T, h, w): True where the whole tubelet patch is known."""
    first = reduce(known[:1], "f (h p1) (w p2) -> f h w", "min", p1=patch, p2=patch)
    if len(known) == 1:
        return torch.from_numpy(first)
    rest = reduce(known[1:], "(f pt) (h p1) (w p2) -> f h w", "min", pt=temporal_patch, p1=patch, p2=patch)
    return torch.from_numpy(np.concatenate([first, rest]))


def initial_guess(source: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The first guess for the unknown pixels: a wholly unknown frame copies the nearest frame
    that is known at all; the unknown part of a partly known frame takes the mean colour of its
    known part (neutral: what was there before, e.g. inside an inpainting box, does not leak in)."""
    per_frame = known.reshape(len(known), -1)
    known_frames = np.flatnonzero(per_frame.any(-1))
    if len(known_frames) == 0:
        raise UserError("nothing of the video is given")
    guess = source.copy()
    for f in known_frames:  # partly known frames first: wholly unknown ones may copy them
        if not per_frame[f].all():
            guess[f][~known[f]] = source[f][known[f]].mean(0).round().astype(np.uint8)
    for f in np.flatnonzero(~per_frame.any(-1)):
        guess[f] = guess[known_frames[np.abs(known_frames - f).argmin()]]
    return guess


def _prompt_context(model: Phenaki, prompt: str, time_steps: int, guidance: float):
    text = model.text_encoder.embed(prompt)[None]
    return prepare_guided(model.transformer, text, torch.ones(text.shape[:2], dtype=torch.bool), time_steps, guidance)


@torch.inference_mode()
def fill(model: Phenaki, source: np.ndarray, known: np.ndarray, prompt: str, settings: SamplingConfig,
         seed: int = 0, iterations: int | None = None, on_step: Callable[[int], None] | None = None) -> FillResult:
    """Fill the unknown pixels of one window. `source` (F, H, W, 3) uint8 holds the known pixels
    (anything elsewhere); `known` (F, H, W) bool says which. F must be 1 + t·n, within a window."""
    tok, transformer = model.tokenizer, model.transformer
    config = tok.config
    time_steps = config.time_steps(len(source))
    if time_steps > transformer.config.max_time_steps:
        raise UserError(f"{len(source)} frames are more than one window of the model "
                        f"({config.frames_for(transformer.config.max_time_steps)} frames)")
    given = given_tokens(known, config.patch_size, config.temporal_patch_size)[None]
    head_only = bool(given.any()) and _is_head(known)
    iterations = iterations if iterations is not None else (1 if head_only else 3)
    context = _prompt_context(model, prompt, time_steps, settings.guidance)
    video = initial_guess(source, known)
    mask = known[..., None]
    for _ in range(max(1, iterations)):
        tokens = tok.encode(frames_to_tensor(video)[None])
        tokens = tokens.masked_fill(~given, transformer.config.mask_id)
        generator = torch.Generator().manual_seed(seed)  # the same noise each round: it refines, not re-rolls
        tokens = maskgit_decode(transformer, tokens, context, settings.steps, settings.guidance,
                                settings.temperature, config.codebook_size, generator, on_step=on_step)
        decoded = tensor_to_frames(tok.decode(tokens)[0])
        video = np.where(mask, source, decoded)
    return FillResult(video, float(given.float().mean()))


def _is_head(known: np.ndarray) -> bool:
    """True when the known pixels are whole frames at the start (their tokens are exact)."""
    per_frame = known.reshape(len(known), -1)
    full = per_frame.all(-1)
    count = int(full.sum())
    return bool(full[:count].all() and not per_frame[count:].any())


def completion_frames(video: np.ndarray, mode: str, given: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """The window of a `complete` job: (source (total, H, W, 3), known (total, H, W))."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    need = 2 * given if mode == "infill" else given
    if given < 1:
        raise UserError(f"--given must be at least 1, got {given}")
    if need > len(video):
        raise UserError(f"--given {given}: {mode} needs {need} frames of the video, it has {len(video)}")
    if need >= total:
        raise UserError(f"--given {given}: {mode} keeps {need} frames, which leaves nothing to fill "
                        f"in {total} frames (raise --frames)")
    size = video.shape[1:3]
    source = np.zeros((total, *size, 3), dtype=np.uint8)
    known = np.zeros((total, *size), dtype=bool)
    if mode in ("predict", "infill"):  # the video's first frames head the output
        source[:given], known[:given] = video[:given], True
    if mode in ("rewind", "infill"):  # its last frames end it
        source[-given:], known[-given:] = video[-given:], True
    return source, known


def parse_box(text: str, size: int) -> tuple[int, int, int, int]:
    """'x0,y0,x1,y1' in pixels of the model's frame (x1, y1 exclusive)."""
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--box {text!r}: expected x0,y0,x1,y1 in pixels, e.g. 16,16,48,48") from None
    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
        raise UserError(f"--box {text!r}: must lie inside the {size}×{size} frame with x0 < x1 and y0 < y1")
    return x0, y0, x1, y1


def region_mask(size: int, box: tuple[int, int, int, int] | None = None, mask: np.ndarray | None = None,
                where: str = "mask") -> np.ndarray:
    """(H, W) bool, True = to be generated, from a box or a mask image (white = generate)."""
    if mask is not None:
        if mask.shape[:2] != (size, size):
            raise UserError(f"{where}: is {mask.shape[1]}×{mask.shape[0]}, the model's frames are {size}×{size}")
        region = mask.reshape(size, size, -1).mean(-1) >= 128
    else:
        region = np.zeros((size, size), dtype=bool)
        x0, y0, x1, y1 = box
        region[y0:y1, x0:x1] = True
    if not region.any():
        raise UserError(f"{where}: marks nothing to generate")
    return region


def window_spans(frames: int, window: int, prime: int) -> Iterator[tuple[int, int, int]]:
    """(start, end, carried) of each window over a video of `frames` = 1 + t·n frames: the first
    window takes up to `window` frames, each later one starts with the last `prime` frames already
    produced (`carried`) and adds new ones. With aligned counts every window is 1 + t·n frames."""
    produced = 0
    while produced < frames:
        carried = prime if produced else 0
        end = min(frames, produced - carried + window)
        yield produced - carried, end, carried
        produced = end


def process_windows(video: np.ndarray, settings: SamplingConfig,
                    run: Callable[[np.ndarray, int], np.ndarray]) -> Iterator[np.ndarray]:
    """`run(window, carried)` window by window, where the first `carried` frames of each window are
    the previous windows' output (not the source). Yields each window's new frames; only the last
    `prime` output frames are kept between windows, so memory stays flat over any length."""
    produced = None
    for start, end, carried in window_spans(len(video), settings.window_frames, settings.prime_frames):
        window = video[start:end].copy()
        if carried:
            window[:carried] = produced[-carried:]
        new = run(window, carried)[carried:]
        produced = new if produced is None else np.concatenate([produced, new])[-settings.prime_frames:]
        yield new


def inpaint_window(model: Phenaki, window: np.ndarray, region: np.ndarray, prompt: str, carried: int,
                   settings: SamplingConfig, seed: int, iterations: int | None = None) -> np.ndarray:
    """Generate the `region` (H, W) of every frame after the `carried` ones; keep all else."""
    known = np.broadcast_to(~region, window.shape[:3]).copy()
    known[:carried] = True
    return fill(model, window, known, prompt, settings, seed, iterations).frames


def prompt_fit(transformer, tokens: torch.Tensor, head: int, context, guidance: float,
               codebook_size: int) -> torch.Tensor:
    """log p(token | the first `head` time steps, prompt) for every position, all later tokens masked
    at once: how well the prompt, from the given start, explains each token. Scored with the rest of
    the window visible instead, a token is explained by its neighbours and the prompt hardly matters
    (session 39: an edited object's tokens fell 0.1–0.8 nats from the source prompt to the new one
    that way, 3–18 nats this way; the untouched object's about 0 both ways)."""
    masked = tokens.clone()
    masked[:, head:] = transformer.config.mask_id
    logits = guided_logits(transformer, masked, context, guidance, codebook_size)
    return torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]


def tokens_to_edit(fit: torch.Tensor, head: int, strength: float,
                   source_fit: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (B, T, h, w) of the `strength` share of the tokens after the first `head` time
    steps with the lowest `fit` (log-likelihood under the new prompt), or, given `source_fit`
    (under the source prompt), with the largest fall from one to the other."""
    score = (fit if source_fit is None else fit - source_fit).clone()
    score[:, :head] = torch.inf  # the carried time steps are never chosen
    count = int(round(strength * score[:, head:].numel()))
    chosen = torch.zeros(score.numel(), dtype=torch.bool)
    chosen[score.flatten().argsort()[:count]] = True
    return chosen.reshape(score.shape)


@torch.inference_mode()
def edit_window(model: Phenaki, window: np.ndarray, prompt: str, carried: int, strength: float,
                settings: SamplingConfig, seed: int, source_prompt: str | None = None,
                keep_first: bool = False) -> np.ndarray:
    """Re-sample the `strength` share of the window's tokens that the edit should change; keep the rest.
    Which tokens: without `source_prompt`, those the new prompt finds least likely (`prompt_fit`);
    with it, those whose likelihood falls most from the source prompt (what the video shows) to the
    new one, so tokens that neither prompt explains better (the background, an object the edit does
    not touch) are not chosen merely for being hard to predict. The `carried` frames at the start
    (the previous window's output) are given and kept; `keep_first` keeps the first frame too, for
    edits of what happens rather than of how the video starts (the first window has no carried frames)."""
    tok, transformer = model.tokenizer, model.transformer
    tokens = tok.encode(frames_to_tensor(window)[None])
    time_steps = tokens.shape[1]
    carried = max(carried, 1) if keep_first else carried
    head = tok.config.time_steps(carried) if carried else 0
    context = _prompt_context(model, prompt, time_steps, settings.guidance)
    fit = prompt_fit(transformer, tokens, head, context, settings.guidance, tok.config.codebook_size)
    source_fit = None
    if source_prompt is not None:
        source = _prompt_context(model, source_prompt, time_steps, settings.guidance)
        source_fit = prompt_fit(transformer, tokens, head, source, settings.guidance, tok.config.codebook_size)
    chosen = tokens_to_edit(fit, head, strength, source_fit)
    if not chosen.any():
        return window
    masked = tokens.masked_fill(chosen, transformer.config.mask_id)
    generator = torch.Generator().manual_seed(seed)
    filled = maskgit_decode(transformer, masked, context, settings.steps, settings.guidance,
                            settings.temperature, tok.config.codebook_size, generator)
    frames = tensor_to_frames(tok.decode(filled)[0])
    frames[:carried] = window[:carried]
    return frames
