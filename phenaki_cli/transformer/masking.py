"""The MaskGIT training objective: mask a cosine-scheduled share of the tokens, predict them.

Which tokens may be masked depends on the task a sample trains (one model learns them all):

- generate: everything after the clip's given prefix (continuation clips give their first
  K frames: at story time the re-encoded last K frames are exactly such a prefix, because
  the tokenizer is causal);
- predict / rewind / infill (MMVG): the first, the last, or the first and last time steps
  are given, the span between them is to be filled;
- box (in/outpainting): everything outside a rectangle of token positions is given;
- object (inpainting an object): everything outside the rectangle around one object's whole path
  is given (`object_box`), so the object is nowhere else and only the text can draw it there, as
  when a user boxes where a named thing should be; random boxes are mostly background inside;
- forecast: the clip's prefix (without one, its first time step) is given and *everything*
  after it is masked: the window as decoding meets it once the given or first frame is settled,
  where only the text can say what changes. Under a cosine-drawn share some token of a later
  step nearly always shows an object's new colour or place, so the other tasks teach copying it
  more than reading the verb.

Given tokens are never masked; among the others a cosine-drawn share is (all of them in
forecast). With `corrupt` a share of the tokens left visible is replaced by a neighbour's
(`corrupt_visible`), so the model learns to continue from tokens as imperfect as its own
earlier choices are when it samples. With
`change_weight` the masked tokens that differ from the true token at their place one time step
earlier (about a tenth of them in Shapes World: the edges of whatever moves, grows or changes
colour) weigh that much more in the loss, so copying the previous step is no longer nearly as good
as learning what changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from phenaki_cli.transformer.maskgit import MaskGIT

TASKS = ("generate", "predict", "rewind", "infill", "box", "forecast", "object")


@dataclass(frozen=True)
class TaskMix:
    """Shares of the completion tasks per sample; plain generation takes the rest."""

    predict: float = 0.0
    rewind: float = 0.0
    infill: float = 0.0
    box: float = 0.0
    forecast: float = 0.0  # the later a task, the later in this list: runs without it draw what they always drew
    object: float = 0.0

    @property
    def shares(self) -> list[float]:
        return [self.predict, self.rewind, self.infill, self.box, self.forecast, self.object]  # the order of TASKS[1:]

    def validate(self) -> None:
        shares = self.shares
        if not all(0 <= s <= 1 for s in shares) or not sum(shares) <= 1:  # nan fails these too
            raise ValueError(f"task shares must be >= 0 and sum to at most 1, got {shares}")

    def draw(self, count: int, generator: torch.Generator | None) -> list[str]:
        cumulative = torch.tensor(self.shares).cumsum(0)
        picks = torch.searchsorted(cumulative, torch.rand(count, generator=generator), right=True)
        return [TASKS[1 + int(i)] if i < len(cumulative) else "generate" for i in picks]


def cosine_schedule(r: torch.Tensor) -> torch.Tensor:
    """Share of tokens still masked at progress r ∈ [0, 1] (1 at the start, 0 at the end)."""
    return torch.cos(math.pi / 2 * r)


def _uniform(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in [low, high]."""
    return low + int(torch.randint(high - low + 1, (1,), generator=generator))


def object_box(clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """(h, w) bool: the rectangle of token positions around one object's whole path in a (T, h, w)
    clip, grown by up to one position on each side (a user's box is rarely tight); None when the
    clip shows no object. Objects are the tokens that differ from the clip's most common one (its
    background), connected across space and time: a Shapes World object moves less than a patch
    per time step, so its path is one region. Picked in proportion to size, so a stray token is
    rarely the object."""
    t, h, w = clip.shape
    foreground = clip != clip.flatten().mode().values
    if not foreground.any():
        return None
    # label each region with its largest position index: spread the maximum to the 26 neighbours until stable
    labels = torch.where(foreground, torch.arange(1, clip.numel() + 1, dtype=torch.float32).view(t, h, w), 0.0)
    while True:
        grown = F.max_pool3d(labels[None, None], 3, stride=1, padding=1)[0, 0] * foreground
        if torch.equal(grown, labels):
            break
        labels = grown
    chosen = labels[foreground]
    path = (labels == chosen[torch.randint(len(chosen), (1,), generator=generator)]).any(0)
    rows, cols = path.any(1).nonzero()[:, 0], path.any(0).nonzero()[:, 0]
    grow = torch.randint(2, (4,), generator=generator).tolist()
    box = torch.zeros(h, w, dtype=torch.bool)
    box[max(0, int(rows[0]) - grow[0]):int(rows[-1]) + 1 + grow[1],
        max(0, int(cols[0]) - grow[2]):int(cols[-1]) + 1 + grow[3]] = True
    return box


def task_given(shape: tuple[int, int, int, int], prefix_steps: torch.Tensor, tasks: list[str],
               generator: torch.Generator | None = None, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """(b, T, h, w) bool, True = given (never masked), for each sample's task; the object task
    needs the (b, T, h, w) `tokens` (a clip without an object trains a random box instead)."""
    b, t, h, w = shape
    time_index = torch.arange(t)[:, None, None].expand(t, h, w)
    given = torch.zeros(shape, dtype=torch.bool)
    for i, task in enumerate(tasks):
        # the clip's own prefix stays given in every task (its caption describes what follows it);
        # the spans of predict / rewind / infill lie after it, each leaving at least one step to fill
        prefix = int(prefix_steps[i])
        before = time_index < prefix
        first = max(prefix, 1)  # the earliest step a span may start at
        room = {"predict": 1, "forecast": 1, "rewind": 2 if prefix else 1, "infill": 2}  # steps from `first` needed
        if task in ("rewind", "infill") and t - first < room[task]:
            task = "predict"
        if task in ("predict", "forecast") and t - first < room[task]:
            task = "generate"
        inside = object_box(tokens[i], generator) if task == "object" else None
        if task == "generate":
            given[i] = before
        elif task == "forecast":  # mask_among masks all the rest
            given[i] = time_index < first
        elif task == "predict":  # the first k steps given
            given[i] = time_index < _uniform(first, t - 1, generator)
        elif task == "rewind":  # the last steps from k on given
            given[i] = before | (time_index >= _uniform(prefix + 1, t - 1, generator))
        elif task == "infill":  # head and tail given
            head = _uniform(first, t - 2, generator)
            given[i] = (time_index < head) | (time_index >= _uniform(head + 1, t - 1, generator))
        elif task in ("box", "object"):
            if inside is None:  # a random rectangle (also for an object task whose clip shows no object)
                rows, cols = _uniform(1, h, generator), _uniform(1, w, generator)
                top, left = _uniform(0, h - rows, generator), _uniform(0, w - cols, generator)
                inside = torch.zeros(h, w, dtype=torch.bool)
                inside[top:top + rows, left:left + cols] = True
            given[i] = before | ~inside[None]
        else:
            raise ValueError(f"unknown task {task!r}")
    return given


def mask_among(given: torch.Tensor, generator: torch.Generator | None = None,
               whole: torch.Tensor | None = None) -> torch.Tensor:
    """(b, T, h, w) bool, True = masked: per sample a cosine-drawn share (at least one token)
    of the positions that are not given; all of them for the samples where `whole` (b,) is True."""
    b = given.shape[0]
    maskable = ~given.reshape(b, -1)
    available = maskable.sum(-1)
    ratio = cosine_schedule(torch.rand(b, generator=generator))
    if whole is not None:  # after the draw, so the other samples' masks stay what they were
        ratio = torch.where(whole, torch.ones_like(ratio), ratio)
    count = torch.minimum(torch.clamp((ratio * available).ceil().long(), min=1), available)
    scores = torch.rand(maskable.shape, generator=generator).masked_fill(~maskable, 2.0)
    ranks = scores.argsort(-1).argsort(-1)
    return (ranks < count[:, None]).reshape(given.shape)


def random_mask(shape: tuple[int, int, int, int], prefix_steps: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain generation's mask: a cosine-drawn share of the positions after `prefix_steps`."""
    return mask_among(task_given(shape, prefix_steps, ["generate"] * shape[0], generator), generator)


def corrupt_visible(tokens: torch.Tensor, masked: torch.Tensor, share: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(b, T, h, w) tokens with a `share` of the positions not `masked` given the token of a random one of
    their four neighbours in the same time step (clamped at the border): a plausible wrong code, an edge
    or a colour one patch off, the kind of error a sampled step passes to the next."""
    h, w = tokens.shape[-2:]
    pick = (torch.rand(tokens.shape, generator=generator) < share).to(tokens.device) & ~masked
    step = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])[torch.randint(4, tokens.shape, generator=generator)]
    rows = (torch.arange(h).view(h, 1) + step[..., 0]).clamp(0, h - 1)
    cols = (torch.arange(w).view(1, w) + step[..., 1]).clamp(0, w - 1)
    neighbour = tokens.flatten(2).gather(2, (rows * w + cols).flatten(2).to(tokens.device)).view_as(tokens)
    return torch.where(pick, neighbour, tokens)


def changed_since_previous_step(tokens: torch.Tensor) -> torch.Tensor:
    """(b, T, h, w) → bool, True where a token differs from the one at its place a time step earlier
    (never at the first step, which has none)."""
    changed = torch.zeros_like(tokens, dtype=torch.bool)
    changed[:, 1:] = tokens[:, 1:] != tokens[:, :-1]
    return changed


def masked_token_loss(model: MaskGIT, tokens: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                      prefix_steps: torch.Tensor, text_drop: float = 0.1,
                      generator: torch.Generator | None = None, mix: TaskMix | None = None,
                      corrupt: float = 0.0, change_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on the masked tokens of (b, T, h, w) grids; the text of a `text_drop`
    share of the samples is replaced by the null context (for classifier-free guidance), and a
    `corrupt` share of the visible tokens by a neighbour's (the targets stay the true tokens); the
    tokens that changed since the previous time step weigh `change_weight` (a weighted mean)."""
    # drawn on the CPU from the step's generator (reproducible on any device), then moved
    tasks = (mix or TaskMix()).draw(tokens.shape[0], generator)
    given = task_given(tuple(tokens.shape), prefix_steps.cpu(), tasks, generator,
                       tokens.cpu() if "object" in tasks else None)
    mask = mask_among(given, generator, torch.tensor([task == "forecast" for task in tasks])).to(tokens.device)
    drop = torch.rand(tokens.shape[0], generator=generator) < text_drop
    context = model.prepare(text, text_mask, tokens.shape[1], drop=drop)
    seen = corrupt_visible(tokens, mask, corrupt, generator) if corrupt else tokens  # drawn last: masks and
    # drops are those of a run without corruption
    logits = model(seen.masked_fill(mask, model.config.mask_id), context, only=mask)
    if change_weight == 1.0:
        loss = F.cross_entropy(logits, tokens[mask])
    else:
        weight = 1.0 + (change_weight - 1.0) * changed_since_previous_step(tokens)[mask].to(logits.dtype)
        loss = (F.cross_entropy(logits, tokens[mask], reduction="none") * weight).sum() / weight.sum()
    with torch.no_grad():
        accuracy = (logits.argmax(-1) == tokens[mask]).float().mean().item()
    return loss, {"accuracy": accuracy, "masked": int(mask.sum())}
