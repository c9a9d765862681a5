"""Model classes forgetlab has never seen, for the tests of ``forgetlab.user``."""

from __future__ import annotations

import torch
from torch import nn


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: self-attention + MLP, both residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, num_heads=2, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Inputs (batch, tokens=6, features=4) -> logits (batch, n_classes)."""

    def __init__(self, width: int = 8, n_classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.block1 = AttentionBlock(width)
        self.block2 = AttentionBlock(width)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.block2(self.block1(self.embed(x))).mean(1))


class BNNet(nn.Module):
    """An MLP with BatchNorm (buffers) on flat inputs (batch, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU())
        self.out = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(x))


class ScaledOutput(nn.Module):
    """Its last Linear is NOT its last operation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.fc(x)


def token_data(n: int = 48, n_classes: int = 4, offset: int = 0, seed: int = 0):
    """(x (n, 6, 4) float, y (n,)) with a learnable rule."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.randn(n, 6, 4, generator=generator) * 0.5
    x[:, :, 0] += y[:, None].float() - 1.5
    return x, (y + offset) % max(n_classes, 1)
