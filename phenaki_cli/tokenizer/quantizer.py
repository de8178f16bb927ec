"""Vector quantizer with factorized, l2-normalized codes (ViT-VQGAN style, as in Phenaki).

Vectors are projected to a small `code_dim`, l2-normalized, and matched to the nearest
normalized code by cosine similarity; the quantized code is projected back up. Codes
that no batch has used for `dead_code_steps` training steps are restarted from vectors of the
current batch, so the codebook does not collapse: drawn uniformly ("random"), or with probability
proportional to their squared distance from their code ("error", k-means++ seeding), which sends
spare codes to the rare vectors the codebook fits worst. Under torch.distributed the
usage counts are summed over processes and the restart vectors come from process 0, so every
process keeps the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (..., dim), straight-through: gradients reach the encoder
    indices: torch.Tensor  # (...,) long
    loss: torch.Tensor  # codebook + commitment loss
    perplexity: torch.Tensor  # exp(entropy) of this batch's code usage
    used_fraction: torch.Tensor  # share of the codebook used in this batch


class FactorizedVQ(nn.Module):
    def __init__(self, dim: int, codebook_size: int, code_dim: int, commitment_weight: float,
                 dead_code_steps: int, dead_code_restart: str = "random"):
        super().__init__()
        self.commitment_weight = commitment_weight
        self.dead_code_steps = dead_code_steps
        self.dead_code_restart = dead_code_restart
        self.project_in = nn.Linear(dim, code_dim)
        self.project_out = nn.Linear(code_dim, dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def normalized_codes(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., dim) → normalized low-dim vectors (..., code_dim) and code indices (...).

        Always in fp32, also under bf16/fp16 autocast: nearby codes differ by less than bf16's
        precision, and a rounded comparison would pick other codes."""
        with torch.autocast(x.device.type, enabled=False):
            z = F.normalize(self.project_in(x.float()), dim=-1)
            indices = (z @ self.normalized_codes().t()).argmax(dim=-1)
        return z, indices

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (...) → vectors (..., dim) for the decoder."""
        return self.project_out(F.embedding(indices, self.normalized_codes()))

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        z, indices = self.lookup(x)
        codes = F.embedding(indices, self.normalized_codes())
        loss = F.mse_loss(codes, z.detach()) + self.commitment_weight * F.mse_loss(z, codes.detach())
        straight_through = z + (codes - z).detach()

        counts = torch.bincount(indices.flatten(), minlength=self.codebook_size).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        if self.training:
            self._restart_dead_codes(z.detach().reshape(-1, z.shape[-1]), counts,
                                     codes.detach().reshape(-1, z.shape[-1]))
        return QuantizerOutput(self.project_out(straight_through), indices, loss, perplexity,
                               (counts > 0).float().mean())

    @torch.no_grad()
    def _restart_dead_codes(self, batch_vectors: torch.Tensor, counts: torch.Tensor,
                            batch_codes: torch.Tensor) -> None:
        """`batch_codes`: the code each of `batch_vectors` was snapped to."""
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            counts = counts.clone()
            dist.all_reduce(counts)
        self.steps_unused.copy_(torch.where(counts > 0, 0, self.steps_unused + 1))
        dead = (self.steps_unused >= self.dead_code_steps).nonzero().flatten()
        if len(dead):
            errors = None if self.dead_code_restart == "random" else (batch_vectors - batch_codes).square().sum(-1)
            picks = self._restart_picks(len(dead), batch_vectors, errors)
            vectors = batch_vectors[picks].contiguous()
            if distributed:
                dist.broadcast(vectors, src=0)
            # through .data: the backward pass still to come needs no gradient for these rows
            # (no index in this batch selected them), so rewriting them now is safe
            self.codebook.data[dead] = vectors.to(self.codebook.dtype)
            self.steps_unused[dead] = 0

    @staticmethod
    def _restart_picks(count: int, batch_vectors: torch.Tensor, errors: torch.Tensor | None) -> torch.Tensor:
        """Rows of `batch_vectors` for `count` dead codes: uniform, or by squared error (distinct rows
        while enough vectors have any error, so two dead codes do not restart as one)."""
        if errors is None or not bool((errors > 0).any()):
            return torch.randint(len(batch_vectors), (count,), device=batch_vectors.device)
        return torch.multinomial(errors.float(), count, replacement=count > int((errors > 0).sum()))
