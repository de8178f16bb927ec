"""Transformer pieces shared by the tokenizer (C-ViViT) and the generator (MaskGIT).

Attention is chosen per call by `attention()`: the fused `scaled_dot_product_attention`
kernels in fp32, on GPUs and for long sequences; plain matrix products (q·kᵀ, softmax, ·v)
for short sequences in bf16 on CPU, where the fused CPU kernel is several times slower than
the matrix units it could use (bench/train_step.py measures both).
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# "auto": choose per call (below); "fused": always the fused kernel (the path before the choice
# existed, kept so that benchmarks can measure both in one run)
ATTENTION_KERNELS = ("auto", "fused")
_kernel = "auto"
# Measured on 2 cores with AVX512-BF16, forward + backward in bf16 (bench/train_step.py): the
# fused CPU kernel takes 3–6× as long as matrix products at 9–64 keys, about the same at 704.
MATMUL_ATTENTION_MAX_KEYS = 256


@contextlib.contextmanager
def attention_kernel(name: str):
    """Run the enclosed code with attention kernel `name` (one of ATTENTION_KERNELS)."""
    global _kernel
    if name not in ATTENTION_KERNELS:
        raise ValueError(f"attention kernel {name!r}: choose one of {', '.join(ATTENTION_KERNELS)}")
    previous, _kernel = _kernel, name
    try:
        yield
    finally:
        _kernel = previous


@functools.lru_cache(maxsize=16)
def _future_mask(n: int, device: torch.device) -> torch.Tensor:
    """(n, n) True above the diagonal: the keys a causal query may not see."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
              bias: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q·kᵀ/√d + bias)·v over (..., n, d) tensors. `bias` is added to the logits (-inf:
    not attended); `mask` (broadcastable bool, True = attend) drops keys; `causal` hides later keys."""
    matmul = (_kernel == "auto" and q.device.type == "cpu" and q.dtype == torch.bfloat16
              and k.shape[-2] <= MATMUL_ATTENTION_MAX_KEYS)
    if not matmul:
        if bias is not None:
            bias = bias.to(q.dtype)
        if mask is not None:
            bias = mask if bias is None else bias.masked_fill(~mask, -math.inf)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf)
    if causal:
        logits = logits.masked_fill(_future_mask(q.shape[-2], q.device), -math.inf)
    return logits.softmax(-1) @ v


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor, causal: bool = False, bias: torch.Tensor | None = None,
                rotary: torch.Tensor | None = None) -> torch.Tensor:
        """`bias` (heads, n, n) is added to the attention logits (-inf: not attended); `rotary`
        (n, dim_head / 2) angles rotate queries and keys (`rotary_angles`)."""
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if rotary is not None:
            q, k = rotate(q, rotary), rotate(k, rotary)
        out = attention(q, k, v, causal=causal, bias=bias)
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
        out = attention(q, k, v, mask=mask)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float):
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def rotary_angles(grid: tuple[int, ...], dim_head: int, base: float = 100.0) -> torch.Tensor:
    """Rotary position angles (n, dim_head / 2) for the raster-flattened positions of `grid`
    (e.g. (t, h, w)), the frequency slots split between the axes (RoFormer, axial for video).

    With rotated queries and keys, attention depends on the offset between two positions, never
    on where they are: one rule at every place and time. The base is small because the axes are
    short (≤ 16 positions), so that most frequencies turn by a useful angle between neighbours."""
    slots = dim_head // 2
    sizes = [slots // len(grid) + (i < slots % len(grid)) for i in range(len(grid))]
    coords = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
    parts = []
    for coord, size in zip(coords, sizes):
        freqs = base ** (-torch.arange(size, dtype=torch.float32) / max(size, 1))
        parts.append(coord.reshape(-1, 1) * freqs)
    return torch.cat(parts, dim=-1)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the halves (x1, x2) of the last dim of x (..., n, d) by `angles` (n, d / 2)."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


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
                attn_bias: torch.Tensor | None = None, rotary: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), causal=causal, bias=attn_bias, rotary=rotary)
        return self._cross_and_ff(x, context_kv, context_mask)

    def _cross_and_ff(self, x: torch.Tensor, context_kv, context_mask) -> torch.Tensor:
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context_kv, context_mask)
        return x + self.ff(self.norm_ff(x))


class SpaceTimeBlock(Block):
    """A block over a (t, h, w) token grid whose self-attention is factorized: within each time
    step over its h·w positions, then across time at each position (bidirectional), as in
    Genie's ST-transformer. Attention over n = t·h·w tokens costs n·(h·w + t) instead of n², and
    each step sees its neighbours directly."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_ratio: float, context_dim: int | None = None):
        super().__init__(dim, heads, dim_head, mlp_ratio, context_dim)
        self.norm_time = nn.LayerNorm(dim)
        self.attn_time = SelfAttention(dim, heads, dim_head)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int], context_kv=None, context_mask=None,
                rotary_space: torch.Tensor | None = None, rotary_time: torch.Tensor | None = None) -> torch.Tensor:
        t, h, w = grid
        space = rearrange(x, "b (t n) d -> (b t) n d", t=t)
        space = space + self.attn(self.norm_attn(space), rotary=rotary_space)
        time = rearrange(space, "(b t) (h w) d -> (b h w) t d", t=t, h=h)
        time = time + self.attn_time(self.norm_time(time), rotary=rotary_time)
        x = rearrange(time, "(b h w) t d -> b (t h w) d", h=h, w=w)
        return self._cross_and_ff(x, context_kv, context_mask)


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
