"""The optional adversarial loss of tokenizer training: a PatchGAN over single frames, hinge loss.

An L2 loss pays the mean of what a code could mean, which blurs edges; a discriminator that
sees real and reconstructed frames pays for the blur itself (VQGAN, and the Phenaki paper's
C-ViViT). Frames are judged one at a time: the tokenizer's causality is not touched, and a
frame-level critic is what phenaki-pytorch uses too.

Generator and discriminator share the training loop's one optimizer: the discriminator's
loss sees the reconstruction detached, and the generator's loss sees the discriminator's
weights detached, so one backward pass gives each side exactly its own gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.func import functional_call


class FrameDiscriminator(nn.Module):
    """Real/fake logits for overlapping patches of each frame (b, f, c, H, W) in [0, 1]."""

    def __init__(self, channels: int = 3, width: int = 32, layers: int = 3):
        super().__init__()
        stack: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for i in range(layers - 1):
            c = width * 2 ** i
            # no bias before a norm: the norm removes it (and its gradient is zero)
            stack += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False), nn.GroupNorm(8, 2 * c),
                      nn.LeakyReLU(0.2)]
        stack.append(nn.Conv2d(width * 2 ** (layers - 1), 1, 3, padding=1))
        self.net = nn.Sequential(*stack)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(rearrange(video * 2 - 1, "b f c h w -> (b f) c h w"))


def adversarial_losses(discriminator: FrameDiscriminator, real: torch.Tensor,
                       fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(generator loss, discriminator loss), hinge form; see the module note on gradients."""
    d_loss = F.relu(1 - discriminator(real)).mean() + F.relu(1 + discriminator(fake.detach())).mean()
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    g_loss = -functional_call(discriminator, frozen, (fake,)).mean()
    return g_loss, d_loss
