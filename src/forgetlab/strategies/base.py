"""The strategy contract: how a mitigation method plugs into the training loop.

The engine calls, in this order, for every task ``task_index`` of a stream:

1. ``before_task(model, task_index, stream)``
2. for every batch: ``loss = task_loss + penalty(model, task_index)`` (``None`` = no
   term); ``loss.backward()``; ``after_backward(model, task_index)``; optimizer step
3. ``after_task(model, task_index, stream)``

Constructors store hyperparameters only; learned state (anchors, importances,
buffers) is created by the hooks and round-trips through ``state_dict`` /
``load_state_dict`` so that it lives in every checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from forgetlab.data.streams import TaskStream


class Strategy:
    """Base class with no-op hooks: plain sequential fine-tuning ("naive")."""

    name = "naive"

    def before_task(self, model: nn.Module, task_index: int, stream: TaskStream) -> None:
        """Called before training on task ``task_index``."""

    def penalty(self, model: nn.Module, task_index: int) -> torch.Tensor | None:
        """An extra loss term added to every batch's task loss, or ``None``."""
        return None

    def after_backward(self, model: nn.Module, task_index: int) -> None:
        """Called after ``backward()`` and before the optimizer step (gradient surgery)."""

    def after_task(self, model: nn.Module, task_index: int, stream: TaskStream) -> None:
        """Called after training on task ``task_index`` (importance estimates, buffers)."""

    def state_dict(self) -> dict[str, Any]:
        """Learned state, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Naive(Strategy):
    """Plain fine-tuning on each task in turn: the baseline that forgets."""

    name = "naive"
