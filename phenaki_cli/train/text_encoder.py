"""Teach the small closed-world T5 to read clauses: each word's state tells its whole clause.

A T5 with frozen random weights gives every word a distinct state but almost none of its context
(T5 has relative positions only, and random layers mix little), so the transformer reads a prompt
as a bag of words and cannot tell which verb is whose: swapping the verbs of "a red circle moves
right and a blue square stays still" changes nothing it predicts (MODEL_CARD, session 12). A
pretrained T5 carries that context; none can be downloaded here, so the project's own T5 learns
it from captions alone. From every word's final state, linear heads predict the word itself and
the words of its clause in order (clauses are split at "and"; the background phrase starts at
"on"). Afterwards the state of "red" says "a red circle moves right", and one cross-attention
lookup from a red object finds its verb.

The heads are thrown away; only the encoder is kept (`TextEncoder.save`), so a model directory
still holds a plain `T5EncoderModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from phenaki_cli.errors import UserError
from phenaki_cli.text import TextEncoder

CLAUSE_SLOTS = 6  # the longest Shapes World clause: "the small green triangle turns yellow"
IGNORE = -100


def clause_of_each_word(words: list[str]) -> list[int]:
    """Per word, the index of the clause it belongs to; -1 for the "and" between clauses. The
    background phrase ("on a gray background") is a clause of its own."""
    clause, out = 0, []
    for word in words:
        if word == "and":
            out.append(-1)
            clause += 1
        else:
            if word == "on":
                clause += 1
            out.append(clause)
    return out


def clause_targets(ids: list[int], words: list[str], length: int, pad_id: int) -> torch.Tensor:
    """(length, 1 + CLAUSE_SLOTS) targets of one caption: per word its own id, then the ids of its
    clause's words in order (padded); IGNORE for "and", the end-of-sequence token and padding."""
    clause = clause_of_each_word(words)
    targets = torch.full((length, 1 + CLAUSE_SLOTS), IGNORE, dtype=torch.long)
    for i, c in enumerate(clause):
        if c < 0:
            continue
        members = [ids[j] for j, other in enumerate(clause) if other == c][:CLAUSE_SLOTS]
        targets[i, 0] = ids[i]
        targets[i, 1:] = torch.tensor(members + [pad_id] * (CLAUSE_SLOTS - len(members)))
    return targets


@dataclass
class ClauseReading:
    """How well each word's state tells its clause, on captions training never saw."""

    word_accuracy: float  # words whose every slot (itself and its whole clause) is right
    slot_accuracy: float
    steps: int
    loss: float
    state_drift: float | None = None  # with keep_states: |new − old| / |old| of the states

    def as_dict(self) -> dict:
        return {"word_accuracy": round(self.word_accuracy, 4), "slot_accuracy": round(self.slot_accuracy, 4),
                "steps": self.steps, "loss": round(self.loss, 4),
                "state_drift": None if self.state_drift is None else round(self.state_drift, 4)}


class _ClauseHeads(torch.nn.Module):
    def __init__(self, dim: int, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.linear = torch.nn.Linear(dim, vocab * (1 + CLAUSE_SLOTS))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.linear(states).unflatten(-1, (1 + CLAUSE_SLOTS, self.vocab))


def _batch(encoder: TextEncoder, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    texts = [encoder.normalize(c) for c in captions]
    tokens = encoder.tokenizer(texts, return_tensors="pt", padding=True)
    length = tokens.input_ids.shape[1]
    targets = []
    end = encoder.tokenizer.eos_token_id
    for text, ids, count in zip(texts, tokens.input_ids.tolist(), tokens.attention_mask.sum(1).tolist()):
        words = text.split()
        word_ids = ids[:count - 1] if ids[count - 1] == end else ids[:count]  # T5 ends each caption with </s>
        if len(word_ids) != len(words):  # a word vocabulary gives one token per word; anything else cannot
            raise UserError(f"{encoder.source}: the text encoder splits words into pieces ({text!r}); "
                            f"clause reading needs a word vocabulary (a closed-world T5 built by phenaki)")
        targets.append(clause_targets(word_ids, words, length, encoder.tokenizer.pad_token_id))
    return tokens.input_ids, tokens.attention_mask, torch.stack(targets)


def _logits(encoder: TextEncoder, heads: _ClauseHeads, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    return heads(encoder.model(input_ids=ids, attention_mask=attention).last_hidden_state)


@torch.no_grad()
def measure_clause_reading(encoder: TextEncoder, heads: _ClauseHeads, captions: list[str]) -> tuple[float, float]:
    ids, attention, targets = _batch(encoder, captions)
    right = _logits(encoder, heads, ids, attention).argmax(-1) == targets
    counted = targets != IGNORE
    words = counted[..., 0]
    return (float((right | ~counted).all(-1)[words].float().mean()), float(right[counted].float().mean()))


def train_clause_reading(encoder: TextEncoder, captions: list[str], held_out: list[str], steps: int = 1000,
                         batch_size: int = 64, lr: float = 1e-3, seed: int = 0, keep_states: float = 0.0,
                         on_step: Callable[[int, float], None] | None = None) -> ClauseReading:
    """Train all of `encoder`'s weights in place on `captions` (then frozen again, as a TextEncoder
    is); report the reading of `held_out` captions. With `keep_states` w > 0 the loss also holds each
    word's state near what the encoder gave before (w · |new − old|² / |old|²), so a transformer trained
    on the old states still reads them, and the clause is added beside them."""
    import copy

    torch.manual_seed(seed)
    model = encoder.model
    before = copy.deepcopy(model).eval().requires_grad_(False) if keep_states else None
    heads = _ClauseHeads(model.config.d_model, model.config.vocab_size)
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps)))
    order = np.random.default_rng(seed)
    loss = torch.tensor(float("nan"))
    try:
        for step in range(steps):
            ids, attention, targets = _batch(encoder, [captions[i] for i in order.integers(len(captions), size=batch_size)])
            states = model(input_ids=ids, attention_mask=attention).last_hidden_state
            loss = F.cross_entropy(heads(states).flatten(0, -2), targets.flatten(), ignore_index=IGNORE)
            if before is not None:
                old = before(input_ids=ids, attention_mask=attention).last_hidden_state
                valid = attention.bool()
                loss = loss + keep_states * ((states - old)[valid].pow(2).sum() / old[valid].pow(2).sum())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if on_step is not None:
                on_step(step + 1, loss.item())
    finally:
        model.eval().requires_grad_(False)
    encoder.clear_cache()
    word, slot = measure_clause_reading(encoder, heads, held_out)
    return ClauseReading(word, slot, steps, loss.item(),
                         state_drift(encoder, before, held_out) if before is not None else None)


@torch.no_grad()
def state_drift(encoder: TextEncoder, before, captions: list[str]) -> float:
    """How far the word states moved from the `before` model's: |new − old| / |old| over `captions`."""
    ids, attention, _ = _batch(encoder, captions)
    new = encoder.model(input_ids=ids, attention_mask=attention).last_hidden_state
    old = before(input_ids=ids, attention_mask=attention).last_hidden_state
    valid = attention.bool()
    return float((new - old)[valid].norm() / old[valid].norm())
