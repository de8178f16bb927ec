"""MaskGIT: a bidirectional transformer over one window's flattened token grid.

Input: token ids (b, T, h, w), where id `vocab_size` is [MASK]; output: logits over the
codebook for every position. Each token knows its (t, row, col) either through three learned
tables that are summed (`positions="absolute"`, the paper's way) or through rotary angles on
queries and keys (`"rotary"`: attention sees only offsets, so "the token one column to the left,
one step earlier" is one relation everywhere). Any window of up to `max_time_steps` time steps
works. Self-attention is over the whole window or factorized over space and time (`attention`).
Every block cross-attends to the text embeddings (padding masked). When the text is
dropped (classifier-free guidance) the context is one learned null vector. With `token_group`
g > 1 each g×g square of tokens is one position: their embeddings are concatenated and projected
down on the way in, and the position's output is projected up to g² token vectors on the way
out, so the transformer's cost follows the position grid, not the token grid. With
`carry_forward` each [MASK] also carries the embedding of the nearest given token at its own
place in time (`carried_tokens`), a second table summed into the input. With `text_layers` the
text states first pass through that many trained self-attention blocks with rotary positions over
the prompt (`read_text`), so that each word can take on its clause (which verb is whose).

`prepare()` computes what depends only on the window's shape and the prompt (positions,
each block's text keys/values) once; `forward()` then runs once per decoding step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from phenaki_cli.config import TransformerConfig
from phenaki_cli.errors import UserError
from phenaki_cli.nn import Block, SpaceTimeBlock, rotary_angles


@dataclass
class WindowContext:
    positions: torch.Tensor | None  # (T·h·w, dim) added to the input (absolute positions)
    text_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block: keys, values (b, heads, L, dim_head)
    text_mask: torch.Tensor  # (b, L) True where valid
    time_steps: int
    # rotary angles (n, dim_head / 2) per attention: "full" over the window, or "space" and "time"
    rotary: dict[str, torch.Tensor] | None = None


def carried_tokens(tokens: torch.Tensor, mask_id: int) -> torch.Tensor:
    """(b, T, h, w) → for each [MASK], the latest given token at the same (row, col) before it in
    time, else the earliest one after it; `mask_id` where there is none and at given positions."""
    t = tokens.shape[1]
    given = tokens != mask_id
    steps = torch.arange(t, device=tokens.device).view(1, t, 1, 1)
    latest = torch.where(given, steps, -1).cummax(1).values  # latest given step ≤ each step
    earliest = torch.where(given, steps, t).flip(1).cummin(1).values.flip(1)  # earliest given step ≥ it
    source = torch.where(latest >= 0, latest, earliest)
    carried = tokens.gather(1, source.clamp(max=t - 1))
    return torch.where(given | (source >= t), mask_id, carried)


class MaskGIT(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        self.token_embedding = nn.Embedding(c.vocab_size + 1, c.dim)  # + [MASK]
        # same scale as the positions: with torch's N(0, 1) default the token vectors are ~50× larger
        # and drown the (t, row, col) signal, and the model learns layout very slowly
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        if c.carry_forward:  # id vocab_size: nothing carried
            self.carry_embedding = nn.Embedding(c.vocab_size + 1, c.dim)
            nn.init.normal_(self.carry_embedding.weight, std=0.02)
        if c.code_features:  # filled from the tokenizer by set_codes; [MASK] and ids past its codebook stay 0
            self.register_buffer("codes", torch.zeros(c.vocab_size + 1, c.code_features))
            self.code_in = nn.Linear(c.code_features, c.dim, bias=False)
            self.code_out = nn.Linear(c.dim, c.code_features, bias=False)
        if c.token_group > 1:
            self.group_in = nn.Linear(c.token_group ** 2 * c.dim, c.dim)
            self.group_out = nn.Linear(c.dim, c.token_group ** 2 * c.dim)
        if c.positions == "absolute":
            self.time_position = nn.Parameter(torch.randn(c.max_time_steps, c.dim) * 0.02)
            self.row_position = nn.Parameter(torch.randn(c.position_grid, c.dim) * 0.02)
            self.col_position = nn.Parameter(torch.randn(c.position_grid, c.dim) * 0.02)
        self.null_text = nn.Parameter(torch.randn(1, c.text_dim) * 0.02)
        if c.text_layers:
            self.text_blocks = nn.ModuleList(Block(c.text_dim, c.text_dim // c.dim_head, c.dim_head, c.mlp_ratio)
                                             for _ in range(c.text_layers))
            for text_block in self.text_blocks:  # each starts as the identity (a residual adding zero), so a
                # trained model's weights loaded with them added still give what that model gave
                for layer in (text_block.attn.to_out, text_block.ff[-1]):
                    nn.init.zeros_(layer.weight)
                    nn.init.zeros_(layer.bias)
        block = SpaceTimeBlock if c.attention == "factorized" else Block
        self.blocks = nn.ModuleList(block(c.dim, c.heads, c.dim_head, c.mlp_ratio, context_dim=c.text_dim)
                                    for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.to_logits = nn.Linear(c.dim, c.vocab_size)

    def set_codes(self, codes: torch.Tensor) -> None:
        """The tokenizer's normalized code vectors (codebook_size, code_features), for code_features."""
        if not self.config.code_features:
            raise ValueError("this transformer has no code features (code_features 0)")
        self.codes.zero_()
        self.codes[:len(codes)] = codes.to(self.codes)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens)
        if self.config.code_features:
            x = x + self.code_in(self.codes[tokens])
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.to_logits(x)
        if self.config.code_features:
            logits = logits + self.code_out(x) @ self.codes[:self.config.vocab_size].t()
        return logits

    def reset_cross_attention(self) -> None:
        """Start every block's cross-attention (how the model reads the prompt) afresh, its output layer
        at zero: a trained model then keeps what it knows of video and starts by ignoring the text.
        A fine-tune (`train --fresh-cross-attention`) then learns to read the prompt anew, through
        text layers added with it, rather than through the cross-attention tuned to the text as it was."""
        for block in self.blocks:
            block.cross.to_q.reset_parameters()
            block.cross.to_kv.reset_parameters()
            nn.init.zeros_(block.cross.to_out.weight)
            nn.init.zeros_(block.cross.to_out.bias)

    # ----- what depends only on shape and prompt ---------------------------------------------
    def positions(self, time_steps: int) -> torch.Tensor | None:
        """The absolute position table (T·h·w, dim) added to the input; None with rotary positions."""
        c = self.config
        if time_steps > c.max_time_steps:
            raise UserError(f"a window of {time_steps} token time steps is longer than the transformer's "
                            f"{c.max_time_steps} positions")
        if c.positions != "absolute":
            return None
        table = (self.time_position[:time_steps, None, None] + self.row_position[None, :, None]
                 + self.col_position[None, None, :])
        return rearrange(table, "t h w d -> (t h w) d")

    def rotary(self, time_steps: int, device: torch.device) -> dict[str, torch.Tensor] | None:
        c = self.config
        if c.positions != "rotary":
            return None
        g = c.position_grid
        if c.attention == "factorized":
            return {"space": rotary_angles((g, g), c.dim_head).to(device),
                    "time": rotary_angles((time_steps,), c.dim_head).to(device)}
        return {"full": rotary_angles((time_steps, g, g), c.dim_head).to(device)}

    def text_context(self, text: torch.Tensor, text_mask: torch.Tensor | None,
                     drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings (b, L, text_dim) with the rows in `drop` replaced by the null context
        (the learned null vector in slot 0, the rest masked): the unconditional model."""
        if text.shape[-1] != self.config.text_dim:
            raise UserError(f"text embeddings have dim {text.shape[-1]}, the transformer expects "
                            f"{self.config.text_dim} (text encoder and transformer do not match)")
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        if drop is not None:  # even when no row drops: the null vector stays in the graph (DDP needs every
            # parameter to take part in every step)
            drop = drop.to(text.device)
            null = torch.zeros_like(text)
            null[:, 0] = self.null_text.to(text)
            null_mask = torch.zeros_like(text_mask)
            null_mask[:, 0] = True
            text = torch.where(drop[:, None, None], null, text)
            text_mask = torch.where(drop[:, None], null_mask, text_mask)
        return text, text_mask

    def read_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The text states (b, L, text_dim) after the `text_layers` blocks (padding never attended)."""
        if not self.config.text_layers:
            return text
        angles = rotary_angles((text.shape[1],), self.config.dim_head).to(text.device)
        padding = torch.zeros(text_mask.shape, dtype=text.dtype, device=text.device)
        padding = rearrange(padding.masked_fill(~text_mask, float("-inf")), "b m -> b 1 1 m")
        for block in self.text_blocks:
            text = block(text, attn_bias=padding, rotary=angles)
        return text

    def prepare(self, text: torch.Tensor, text_mask: torch.Tensor | None, time_steps: int,
                drop: torch.Tensor | None = None) -> WindowContext:
        text, text_mask = self.text_context(text, text_mask, drop)
        text = self.read_text(text, text_mask)
        text_kv = [block.cross.project_context(text) for block in self.blocks]
        return WindowContext(self.positions(time_steps), text_kv, text_mask, time_steps,
                             self.rotary(time_steps, text.device))

    # ----- one step --------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, context: WindowContext, only: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (b, T, h, w) with [MASK] = vocab_size → logits (b, T, h, w, vocab_size); with `only`
        (b, T, h, w) bool, the logits (n, vocab_size) of those positions alone (training needs just
        the masked ones, and the output layer is the widest matrix product of a step)."""
        c = self.config
        b, t, h, w = tokens.shape
        if (h, w) != (c.grid_size, c.grid_size) or t != context.time_steps:
            raise UserError(f"token grid {t}×{h}×{w} does not match the window "
                            f"{context.time_steps}×{c.grid_size}×{c.grid_size}")
        g = c.token_group
        x = self.embed(tokens)
        if c.carry_forward:
            x = x + self.carry_embedding(carried_tokens(tokens, c.mask_id))
        x = rearrange(x, "b t (h p1) (w p2) d -> b (t h w) (p1 p2 d)", p1=g, p2=g)
        if g > 1:
            x = self.group_in(x)
        if context.positions is not None:
            x = x + context.positions
        rotary = context.rotary or {}
        for block, kv in zip(self.blocks, context.text_kv):
            if c.attention == "factorized":
                x = block(x, (t, h // g, w // g), context_kv=kv, context_mask=context.text_mask,
                          rotary_space=rotary.get("space"), rotary_time=rotary.get("time"))
            else:
                x = block(x, context_kv=kv, context_mask=context.text_mask, rotary=rotary.get("full"))
        x = self.norm(x)
        if g > 1:  # back to one vector per token, in the token grid's raster order
            x = rearrange(self.group_out(x), "b (t h w) (p1 p2 d) -> b (t h p1 w p2) d",
                          t=t, h=h // g, p1=g, p2=g)
        if only is not None:
            return self.logits(x[rearrange(only, "b t h w -> b (t h w)")])
        logits = self.logits(x)
        return rearrange(logits, "b (t h w) v -> b t h w v", t=t, h=h, w=w)
