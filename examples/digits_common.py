"""Shared by the digits examples: a user-defined model forgetlab has never seen, the
bundled scikit-learn digits split into an old task (0-4) and a new task (5-9), and a
plain PyTorch training loop (the user's own code, not forgetlab's)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

torch.set_num_threads(1)  # tiny models: one thread is fastest, above all on a shared machine


class ResidualMLP(nn.Module):
    """A small residual MLP: stem -> two residual blocks -> classifier (10 outputs)."""

    def __init__(self, n_inputs: int = 64, width: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU())
        self.res1 = Residual(width)
        self.res2 = Residual(width)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.res2(self.res1(self.stem(x))))


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.fc(self.norm(x)))


def digits_tasks(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"old_train", "old_test", "new_train", "new_test"}``: (x float32 (N, 64) in [0, 1], y)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_test = len(y) // 2  # per task: about 450 test and 450 training examples
    out = {}
    for name, keep in (("old", y < 5), ("new", y >= 5)):
        xs, ys = x[keep], y[keep]
        out[f"{name}_test"], out[f"{name}_train"] = (xs[:n_test // 2], ys[:n_test // 2]), (xs[n_test // 2:], ys[n_test // 2:])
    return out


def train_plain(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 10, lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """The user's own training loop: Adam, batches of 64, cross-entropy."""
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(yt)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xt[index]), yt[index]).backward()
            optimizer.step()
    return model.eval()
