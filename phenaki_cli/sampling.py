"""MaskGIT decoding, exactly as the reference (google-research/maskgit, aMUSEd, MAGVIT).

Start with the unknown positions masked. At step s of S (r = (s + 1) / S):
 1. sample a token at every masked position from the (guided) logits;
 2. keep masked the `clip(floor(N · cos(π/2 · r)), 1, remaining − 1)` least confident ones,
    where N is the number unknown at the start;
 3. confidence = log p(sampled) + temperature · (1 − r) · Gumbel noise; given tokens never
    change (infinite confidence), so a frozen prefix is never re-masked.
The last step fills whatever is left. Classifier-free guidance runs the conditional and
unconditional model in one batch: logits = uncond + s · (cond − uncond). With a plausibility
α > 0 (contrastive decoding's adaptive plausibility, Li et al. 2022), guidance chooses only among
the codes whose conditional probability is at least α times the most likely one's: guidance
amplifies every difference between the two models, and without the constraint it can lift a code
the conditional model all but rules out (an extra blob where the background is sure).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from phenaki_cli.transformer import MaskGIT, WindowContext


def gumbel_noise(shape, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def prepare_guided(model: MaskGIT, text: torch.Tensor, text_mask: torch.Tensor, time_steps: int,
                   guidance: float) -> WindowContext:
    """Context for a window, once per window: conditional, unconditional, or both stacked."""
    b = text.shape[0]
    if guidance == 1:
        drop = torch.zeros(b, dtype=torch.bool)
    elif guidance == 0:
        drop = torch.ones(b, dtype=torch.bool)
    else:
        text, text_mask = torch.cat([text, text]), torch.cat([text_mask, text_mask])
        drop = torch.arange(2 * b) >= b
    return model.prepare(text, text_mask, time_steps, drop=drop)


def guided_logits(model: MaskGIT, tokens: torch.Tensor, context: WindowContext, guidance: float,
                  codebook_size: int, plausibility: float = 0.0) -> torch.Tensor:
    implausible = None
    if guidance in (0, 1):
        logits = model(tokens, context)
    else:
        cond, uncond = model(torch.cat([tokens, tokens]), context).chunk(2)
        logits = uncond + guidance * (cond - uncond)
        if plausibility > 0:  # p < α · p_max  ⇔  logit < top logit + log α (the softmax's sum cancels)
            cond = cond[..., :codebook_size].float()
            implausible = cond < cond.max(-1, keepdim=True).values + math.log(plausibility)
    logits = logits.float()
    if implausible is not None:
        logits[..., :codebook_size].masked_fill_(implausible, -math.inf)
    if codebook_size < logits.shape[-1]:  # ids past the tokenizer's codebook can never be decoded
        logits[..., codebook_size:] = -math.inf
    return logits


@torch.inference_mode()
def maskgit_decode(model: MaskGIT, tokens: torch.Tensor, context: WindowContext, steps: int, guidance: float,
                   temperature: float, codebook_size: int, generator: torch.Generator | None = None,
                   on_step: Callable[[int], None] | None = None, plausibility: float = 0.0) -> torch.Tensor:
    """Fill the [MASK] positions of `tokens` (b, T, h, w); other positions are returned unchanged."""
    mask_id = model.config.mask_id
    shape = tokens.shape
    tokens = tokens.reshape(shape[0], -1).clone()
    unknown = tokens == mask_id
    unknown_at_start = unknown.sum(-1)
    for step in range(steps):
        logits = guided_logits(model, tokens.reshape(shape), context, guidance, codebook_size, plausibility)
        logits = logits.reshape(shape[0], tokens.shape[1], -1)
        sampled = (logits + gumbel_noise(logits.shape, generator)).argmax(-1)
        sampled = torch.where(unknown, sampled, tokens)
        if on_step is not None:
            on_step(step)
        if step == steps - 1:
            tokens = sampled
            break
        r = (step + 1) / steps
        remaining = unknown.sum(-1)
        keep_masked = torch.floor(unknown_at_start * math.cos(math.pi / 2 * r)).long()
        keep_masked = torch.maximum(torch.ones_like(keep_masked), torch.minimum(remaining - 1, keep_masked))
        keep_masked = torch.minimum(keep_masked, remaining)  # nothing unknown: nothing to re-mask
        log_p = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]
        confidence = log_p + temperature * (1 - r) * gumbel_noise(log_p.shape, generator)
        confidence = confidence.masked_fill(~unknown, math.inf)
        ranks = confidence.argsort(-1).argsort(-1)
        unknown = ranks < keep_masked[:, None]
        tokens = torch.where(unknown, torch.full_like(sampled, mask_id), sampled)
    return tokens.reshape(shape)
