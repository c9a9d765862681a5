"""Helpers for the strategy tests (imported by the test modules)."""

from __future__ import annotations

import torch

from forgetlab.data.augment import BatchTransform
from forgetlab.data.streams import TaskStream
from forgetlab.models import create_model
from forgetlab.strategies import StrategyContext


def tiny_model(stream: TaskStream, *, width: int = 16, depth: int = 2, batch_norm: bool = False, seed: int = 0):
    """A small MLP for ``stream`` with seeded initial weights."""
    torch.manual_seed(seed)
    return create_model(
        "mlp", input_shape=stream.input_shape, head_sizes=stream.head_sizes, width=width, depth=depth,
        batch_norm=batch_norm,
    )


def make_context(stream: TaskStream, task_index: int, seed: int = 0) -> StrategyContext:
    """The context the engine would pass for ``task_index`` (CPU, no augmentation)."""
    transform = BatchTransform(stream.mean, stream.std, augment=stream.augment)
    return StrategyContext(stream, task_index, torch.device("cpu"), transform, torch.Generator().manual_seed(seed))
