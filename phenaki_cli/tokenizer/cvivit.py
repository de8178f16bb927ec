"""C-ViViT: the causal video tokenizer of Phenaki.

A clip of 1 + t·n frames becomes (1 + n) × (H/p) × (W/p) discrete tokens: the first frame
is cut into p×p patches on its own, each later group of t frames into t×p×p tubelets.
Encoder: patch embedding → spatial transformer (all-to-all within one time step, or within a
window of neighbouring patches: `encoder_window`) → temporal transformer with causal attention.
The decoder mirrors it back to pixels (`decoder_window` likewise).

Time (`time_encoding`): "absolute" adds a sin/cos time table and embeds the first frame on its
own (the paper); "stationary" uses no time positions and embeds the first frame as a tubelet of
itself repeated, so identical tubelets get identical codes at any time step.

Causality: the only operations that mix time steps are the causal temporal attentions;
the time position table is absolute (index-only), and every reshape keeps time and space
apart. So the tokens of time steps 0..k never depend on later frames (tests prove it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from phenaki_cli.config import TokenizerConfig, check_frame_count
from phenaki_cli.errors import UserError
from phenaki_cli.nn import Block, sinusoidal_table
from phenaki_cli.tokenizer.quantizer import FactorizedVQ


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # (b, f, c, H, W), unclamped, target range [0, 1]
    indices: torch.Tensor  # (b, T, h, w)
    vq_loss: torch.Tensor
    perplexity: torch.Tensor
    used_fraction: torch.Tensor


class RefineHead(nn.Module):
    """Per-frame 3×3 convolutions from the unpatchified RGB + features to an RGB correction, with
    `blocks` residual pairs of convolutions before the last layer.

    The last layer, and each block's last convolution, start at zero, so adding the head (or blocks
    to a trained head) changes nothing until it learns. Frames are folded into the batch: no
    operation mixes time."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, blocks: int = 0):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, out_channels, 3, padding=1))
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                                  nn.Conv2d(channels, channels, 3, padding=1))
                                    for _ in range(blocks))
        for last in [self.net[-1]] + [block[-1] for block in self.blocks]:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        # channels-last: oneDNN's convolutions take about 2/3 of the time that way (bf16, forward +
        # backward at 64×64, measured), and the head is a third of a 4×4-patch tokenizer's step
        hidden = self.net[:-1](rearrange(x, "b f c h w -> (b f) c h w").contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            hidden = hidden + block(hidden)
        return rearrange(self.net[-1](hidden), "(b f) c h w -> b f c h w", b=b)


def window_offsets(grid: int, radius: int) -> torch.Tensor:
    """(grid², grid²) index of each query/key pair's offset among the (2r + 1)² of a window
    of radius r (row-major), -1 where the key lies outside the query's window."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy, dx = rows[:, None] - rows[None], cols[:, None] - cols[None]
    index = (dy + radius) * (2 * radius + 1) + (dx + radius)
    return index.masked_fill((dy.abs() > radius) | (dx.abs() > radius), -1)


class CViViT(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        p, t = c.patch_size, c.temporal_patch_size

        def blocks(depth: int) -> nn.ModuleList:
            return nn.ModuleList(Block(c.dim, c.heads, c.dim_head, c.mlp_ratio) for _ in range(depth))

        self.stationary = c.time_encoding == "stationary"
        if not self.stationary:  # a stationary tokenizer embeds the first frame as a tubelet
            self.embed_first = nn.Linear(c.channels * p * p, c.dim)
        self.embed_rest = nn.Linear(c.channels * t * p * p, c.dim)
        # local attention: a relative-position bias per head instead of absolute positions
        for part, radius in (("encoder", c.encoder_window), ("decoder", c.decoder_window)):
            if radius:
                setattr(self, f"{part}_window_bias", nn.Parameter(torch.zeros(c.heads, (2 * radius + 1) ** 2)))
                self.register_buffer(f"{part}_window_offsets", window_offsets(c.grid_size, radius), persistent=False)
            else:
                setattr(self, f"{part}_spatial_pos", nn.Parameter(torch.randn(c.grid_size ** 2, c.dim) * 0.02))
        self.encoder_spatial = blocks(c.spatial_depth)
        self.encoder_temporal = blocks(c.temporal_depth)
        self.encoder_norm = nn.LayerNorm(c.dim)
        self.quantizer = FactorizedVQ(c.dim, c.codebook_size, c.code_dim, c.commitment_weight, c.dead_code_steps,
                                      c.dead_code_restart)
        self.decoder_temporal = blocks(c.temporal_depth)
        self.decoder_spatial = blocks(c.spatial_depth)
        self.decoder_norm = nn.LayerNorm(c.dim)
        if not self.stationary:  # a stationary tokenizer draws the first frame as the last of a tubelet
            self.to_first = nn.Linear(c.dim, c.channels * p * p)
        self.to_rest = nn.Linear(c.dim, c.channels * t * p * p)
        if c.refine_channels:
            e = c.refine_features
            if not self.stationary:
                self.to_first_features = nn.Linear(c.dim, e * p * p)
            self.to_rest_features = nn.Linear(c.dim, e * t * p * p)
            self.refine = RefineHead(c.channels + e, c.refine_channels, c.channels, c.refine_blocks)

    # which tokens a video gets depends on these weights alone; the rest only draws tokens
    # (the quantizer's project_out included), so it can be fine-tuned with tokens unchanged
    ENCODER_PREFIXES = ("embed_", "encoder_", "quantizer.project_in.", "quantizer.codebook")
    # the refinement head (its blocks too): what a tokenizer trained without it lacks when it is added
    # for fine-tuning
    REFINE_PREFIXES = ("to_first_features.", "to_rest_features.", "refine.")

    # ----- shapes ---------------------------------------------------------------------------
    def check_video(self, video: torch.Tensor) -> None:
        c = self.config
        if video.ndim != 5:
            raise UserError(f"video tensor must be (batch, frames, channels, height, width), got {tuple(video.shape)}")
        _, f, ch, h, w = video.shape
        if ch != c.channels or h != c.image_size or w != c.image_size:
            raise UserError(f"video frames are {ch}×{h}×{w}; this tokenizer takes "
                            f"{c.channels}×{c.image_size}×{c.image_size}")
        check_frame_count(f, c.temporal_patch_size)

    def token_parameters(self) -> dict[str, torch.Tensor]:
        """The weights that decide which tokens a video gets (encoder + codebook), by name."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.ENCODER_PREFIXES)}

    def token_shape(self, num_frames: int) -> tuple[int, int, int]:
        g = self.config.grid_size
        return self.config.time_steps(num_frames), g, g

    # ----- encoder --------------------------------------------------------------------------
    def _patchify(self, video: torch.Tensor) -> torch.Tensor:
        p, t = self.config.patch_size, self.config.temporal_patch_size
        video = video * 2 - 1
        if self.stationary:  # the first frame as a still tubelet: all time steps are embedded alike
            video = torch.cat([video[:, :1].expand(-1, t - 1, -1, -1, -1), video], dim=1)
            return self.embed_rest(rearrange(video, "b (f pt) c (h p1) (w p2) -> b f h w (c pt p1 p2)",
                                             pt=t, p1=p, p2=p))
        first = rearrange(video[:, :1], "b f c (h p1) (w p2) -> b f h w (c p1 p2)", p1=p, p2=p)
        tokens = [self.embed_first(first)]
        if video.shape[1] > 1:
            rest = rearrange(video[:, 1:], "b (f pt) c (h p1) (w p2) -> b f h w (c pt p1 p2)",
                             pt=t, p1=p, p2=p)
            tokens.append(self.embed_rest(rest))
        return torch.cat(tokens, dim=1)

    def _spatial(self, x: torch.Tensor, pos: torch.Tensor | None, blocks: nn.ModuleList,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w, _ = x.shape
        x = rearrange(x, "b t h w d -> (b t) (h w) d")
        if pos is not None:
            x = x + pos
        for block in blocks:
            x = block(x, attn_bias=bias)
        return rearrange(x, "(b t) (h w) d -> b t h w d", b=b, h=h, w=w)

    def _local_spatial(self, x: torch.Tensor, part: str) -> torch.Tensor:
        """The encoder's or decoder's spatial transformer: absolute positions, or a window bias."""
        blocks = getattr(self, f"{part}_spatial")
        if not getattr(self.config, f"{part}_window"):
            return self._spatial(x, getattr(self, f"{part}_spatial_pos"), blocks)
        offsets = getattr(self, f"{part}_window_offsets")
        bias = getattr(self, f"{part}_window_bias")[:, offsets.clamp(min=0)].masked_fill(offsets < 0, -torch.inf)
        return self._spatial(x, None, blocks, bias)

    def _temporal(self, x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        b, t, h, w, d = x.shape
        x = rearrange(x, "b t h w d -> (b h w) t d")
        if not self.stationary:
            x = x + sinusoidal_table(t, d).to(x)
        for block in blocks:
            x = block(x, causal=True)
        return rearrange(x, "(b h w) t d -> b t h w d", b=b, h=h, w=w)

    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """(b, f, c, H, W) in [0, 1] → continuous latents (b, T, h, w, dim), before quantization."""
        self.check_video(video)
        x = self._local_spatial(self._patchify(video), "encoder")
        return self.encoder_norm(self._temporal(x, self.encoder_temporal))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(b, f, c, H, W) in [0, 1] → token indices (b, T, h, w)."""
        return self.quantizer.lookup(self.encode_latents(video))[1]

    # ----- decoder --------------------------------------------------------------------------
    def _unpatchify(self, x: torch.Tensor, to_first: nn.Linear | None, to_rest: nn.Linear) -> torch.Tensor:
        """(b, T, h, w, dim) → (b, 1 + t·(T-1), c, H, W) through the first-frame / tubelet projections
        (stationary: tubelets only, the first step's last frame being the first frame)."""
        p, t = self.config.patch_size, self.config.temporal_patch_size
        if self.stationary:
            video = rearrange(to_rest(x), "b f h w (c pt p1 p2) -> b (f pt) c (h p1) (w p2)", pt=t, p1=p, p2=p)
            return video[:, t - 1:]
        frames = [rearrange(to_first(x[:, :1]), "b f h w (c p1 p2) -> b f c (h p1) (w p2)", p1=p, p2=p)]
        if x.shape[1] > 1:
            frames.append(rearrange(to_rest(x[:, 1:]), "b f h w (c pt p1 p2) -> b (f pt) c (h p1) (w p2)",
                                    pt=t, p1=p, p2=p))
        return torch.cat(frames, dim=1)

    def decode_latents(self, x: torch.Tensor) -> torch.Tensor:
        x = self._temporal(x, self.decoder_temporal)
        x = self.decoder_norm(self._local_spatial(x, "decoder"))
        video = self._unpatchify(x, getattr(self, "to_first", None), self.to_rest)
        if self.config.refine_channels:
            features = self._unpatchify(x, getattr(self, "to_first_features", None), self.to_rest_features)
            video = video + self.refine(torch.cat([video, features], dim=2))
        return (video + 1) / 2

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Token indices (b, T, h, w) → video (b, 1 + t·(T-1), c, H, W) clamped to [0, 1]."""
        g = self.config.grid_size
        if indices.ndim != 4 or indices.shape[2:] != (g, g):
            raise UserError(f"token grid must be (batch, time, {g}, {g}), got {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.quantizer.codebook_size):
            raise UserError(f"token ids must lie in [0, {self.quantizer.codebook_size}), "
                            f"got {int(indices.min())}..{int(indices.max())}")
        return self.decode_latents(self.quantizer.embed(indices)).clamp(0, 1)

    def forward(self, video: torch.Tensor) -> TokenizerOutput:
        q = self.quantizer(self.encode_latents(video))
        return TokenizerOutput(self.decode_latents(q.quantized), q.indices, q.loss, q.perplexity, q.used_fraction)
