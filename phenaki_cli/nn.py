"""Transformer pieces shared by the tokenizer (C-ViViT) and the generator (MaskGIT).

Attention goes through `scaled_dot_product_attention`, so the fused CPU/GPU kernels do the
work and causal masks cost nothing to build.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor, causal: bool = False, bias: torch.Tensor | None = None) -> torch.Tensor:
        """`bias` (heads, n, n) is added to the attention logits (-inf: not attended)."""
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                             is_causal=causal)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Attention from tokens to a context (text). Keys/values can be projected once and reused."""

    def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = rearrange(self.to_kv(context), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
        k, v = kv
        mask = None if context_mask is None else rearrange(context_mask, "b m -> b 1 1 m")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float):
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block; with `context_dim` it also cross-attends to a context."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: float, context_dim: int | None = None):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dim_head)
        self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim)
            self.cross = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, causal: bool = False, context_kv=None, context_mask=None,
                attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), causal=causal, bias=attn_bias)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context_kv, context_mask)
        return x + self.ff(self.norm_ff(x))


@functools.lru_cache(maxsize=32)
def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """Fixed sin/cos position table (length, dim), built once per shape and cached.

    Used for time: an absolute table depends only on the index, so it cannot leak later
    frames into earlier ones, and it extends to any clip length.
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freqs)
    table[:, 1::2] = torch.cos(position * freqs[: dim // 2])
    return table
