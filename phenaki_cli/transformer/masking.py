"""The MaskGIT training objective: mask a cosine-scheduled share of the tokens, predict them.

A frozen prefix of time steps (the tokens of earlier frames) is never masked, so the model
learns continuation directly: at story time the re-encoded last K frames are exactly such
a prefix (the tokenizer is causal, so their tokens do not depend on what follows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from phenaki_cli.transformer.maskgit import MaskGIT


def cosine_schedule(r: torch.Tensor) -> torch.Tensor:
    """Share of tokens still masked at progress r ∈ [0, 1] (1 at the start, 0 at the end)."""
    return torch.cos(math.pi / 2 * r)


def random_mask(shape: tuple[int, int, int, int], prefix_steps: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(b, T, h, w) bool, True = masked. Per sample, a cosine-drawn share (at least one token)
    of the positions after `prefix_steps` time steps."""
    b, t, h, w = shape
    time_index = torch.arange(t)[None, :, None, None].expand(b, t, h, w)
    maskable = (time_index >= prefix_steps[:, None, None, None]).reshape(b, -1)
    available = maskable.sum(-1)
    ratio = cosine_schedule(torch.rand(b, generator=generator))
    count = torch.clamp((ratio * available).ceil().long(), min=1)
    count = torch.minimum(count, available)
    scores = torch.rand(b, t * h * w, generator=generator).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(-1).argsort(-1)
    return (ranks < count[:, None]).reshape(b, t, h, w)


def masked_token_loss(model: MaskGIT, tokens: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                      prefix_steps: torch.Tensor, text_drop: float = 0.1,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on the masked tokens of (b, T, h, w) grids; the text of a `text_drop`
    share of the samples is replaced by the null context (for classifier-free guidance)."""
    mask = random_mask(tuple(tokens.shape), prefix_steps, generator)
    drop = torch.rand(tokens.shape[0], generator=generator) < text_drop
    context = model.prepare(text, text_mask, tokens.shape[1], drop=drop)
    logits = model(tokens.masked_fill(mask, model.config.mask_id), context)
    loss = F.cross_entropy(logits[mask], tokens[mask])
    with torch.no_grad():
        accuracy = (logits[mask].argmax(-1) == tokens[mask]).float().mean().item()
    return loss, {"accuracy": accuracy, "masked": int(mask.sum())}
