"""The model contract every forgetlab model follows.

A model is an ordered list of named blocks, then a neck (pooling / flattening to a
feature vector), then one linear head per task (multi-head) or one shared head.
Blocks are the unit of freezing, resetting and probing (SPEC §2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from forgetlab.errors import ConfigError, IncompatibleError


class BlockModel(nn.Module):
    """Base class: subclasses fill ``self.blocks`` and ``self.neck``, then call ``_build_heads``.

    Attributes:
        blocks: ``nn.ModuleDict`` of the named blocks, in forward order.
        neck: module mapping the last block's output to ``(batch, feature_dim)``.
        heads: ``nn.ModuleList`` of linear heads, one per entry of ``head_sizes``.
        input_shape: ``(channels, height, width)`` of one input.
        head_sizes: number of classes of each head.
        feature_dim: width of the penultimate features the heads read.

    Example:
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5, 5))
        >>> logits, acts = model(torch.zeros(4, 1, 8, 8), head_index=1, return_activations=True)
        >>> tuple(logits.shape), list(acts) == list(model.block_names)
        ((4, 5), True)
    """

    blocks: nn.ModuleDict
    neck: nn.Module
    heads: nn.ModuleList

    def __init__(self, input_shape: Sequence[int], head_sizes: Sequence[int]) -> None:
        super().__init__()
        input_shape = tuple(int(s) for s in input_shape)
        head_sizes = tuple(int(s) for s in head_sizes)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(
                f"input_shape must be (channels, height, width) with positive sizes. Got {input_shape}."
            )
        if not head_sizes or min(head_sizes) < 1:
            raise ConfigError(
                f"head_sizes must list at least one head of >= 1 class. Got {head_sizes}."
            )
        self.input_shape = input_shape
        self.head_sizes = head_sizes
        self.feature_dim = 0

    def _build_heads(self, feature_dim: int) -> None:
        self.feature_dim = int(feature_dim)
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, k) for k in self.head_sizes)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Names of the blocks, input side first."""
        return tuple(self.blocks.keys())

    @property
    def n_heads(self) -> int:
        return len(self.heads)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise IncompatibleError(
                f"Input of shape {tuple(x.shape)} does not fit this model: it expects "
                f"(batch, {', '.join(map(str, self.input_shape))})."
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(batch, feature_dim)`` of inputs ``(batch, C, H, W)``."""
        self._check_input(x)
        h = x
        for block in self.blocks.values():
            h = block(h)
        return self.neck(h)

    def forward(
        self,
        x: torch.Tensor,
        head_index: int = 0,
        *,
        return_activations: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """Logits of head ``head_index`` for inputs ``(batch, C, H, W)``.

        With ``return_activations=True`` also returns an ordered dict mapping each block
        name to that block's output (conv maps stay ``(batch, C, H, W)``).
        """
        if not 0 <= head_index < len(self.heads):
            raise IncompatibleError(
                f"head_index must be in [0, {len(self.heads) - 1}] for a model with "
                f"{len(self.heads)} head(s). Got {head_index}."
            )
        self._check_input(x)
        activations: OrderedDict[str, torch.Tensor] = OrderedDict()
        h = x
        for name, block in self.blocks.items():
            h = block(h)
            if return_activations:
                activations[name] = h
        logits = self.heads[head_index](self.neck(h))
        if return_activations:
            return logits, activations
        return logits
