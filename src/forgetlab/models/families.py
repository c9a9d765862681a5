"""The built-in model families: MLP, VGG, ResNet (CIFAR-style) and a small DenseNet.

``width`` and ``depth`` mean, per family:

| family   | width                              | depth                                   |
|----------|------------------------------------|-----------------------------------------|
| mlp      | units of each hidden layer         | number of hidden layers (= blocks)      |
| vgg      | channels of the first conv block   | conv blocks (2 convs + pool; width x2 per block), then one fc block |
| resnet   | channels of the stem               | residual basic blocks after the stem (width x2 every 2 blocks) |
| densenet | growth rate                        | conv layers in each of the 3 dense blocks |
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from forgetlab.models.base import BlockModel


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class MLP(BlockModel):
    """Fully connected network: ``depth`` blocks of Linear + ReLU, ``width`` units each."""

    def __init__(
        self,
        input_shape: Sequence[int],
        head_sizes: Sequence[int],
        *,
        width: int = 256,
        depth: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(input_shape, head_sizes)
        in_features = self.input_shape[0] * self.input_shape[1] * self.input_shape[2]
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for index in range(depth):
            layers: list[nn.Module] = [nn.Flatten()] if index == 0 else []
            layers.append(nn.Linear(in_features, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            blocks[f"fc{index + 1}"] = nn.Sequential(*layers)
            in_features = width
        if depth == 0:
            blocks["flatten"] = nn.Flatten()
        self.blocks = nn.ModuleDict(blocks)
        self.neck = nn.Identity()
        self._build_heads(in_features)


class VGG(BlockModel):
    """VGG-style CNN: ``depth`` blocks of two 3x3 convs (+BN) + 2x2 max-pool, then an fc block.

    Pooling is skipped once the feature map is 1x1, so small inputs (8x8 digits) work.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        head_sizes: Sequence[int],
        *,
        width: int = 16,
        depth: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(input_shape, head_sizes)
        channels, height, width_px = self.input_shape
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        out_channels = width
        for index in range(depth):
            out_channels = width * 2**index
            layers: list[nn.Module] = [
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=not batch_norm),
                _norm(out_channels, batch_norm),
                nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm),
                _norm(out_channels, batch_norm),
                nn.ReLU(),
            ]
            if height >= 2 and width_px >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width_px = height // 2, width_px // 2
            blocks[f"conv{index + 1}"] = nn.Sequential(*layers)
            channels = out_channels
        fc_width = 2 * channels
        blocks["fc"] = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, fc_width),
            nn.ReLU(),
        )
        self.blocks = nn.ModuleDict(blocks)
        self.neck = nn.Identity()
        self._build_heads(fc_width)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a shortcut (1x1 conv when shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=not batch_norm)
        self.bn1 = _norm(out_channels, batch_norm)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=not batch_norm)
        self.bn2 = _norm(out_channels, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=not batch_norm),
                _norm(out_channels, batch_norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(BlockModel):
    """CIFAR-style ResNet: a 3x3 stem, then ``depth`` basic blocks, global average pool."""

    def __init__(
        self,
        input_shape: Sequence[int],
        head_sizes: Sequence[int],
        *,
        width: int = 16,
        depth: int = 4,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(input_shape, head_sizes)
        channels, height, _ = self.input_shape
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        blocks["stem"] = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm),
            _norm(width, batch_norm),
            nn.ReLU(),
        )
        in_channels = width
        for index in range(depth):
            stage = index // 2
            out_channels = width * 2**stage
            downsample = index > 0 and index % 2 == 0 and height >= 2
            if downsample:
                height //= 2
            blocks[f"res{index + 1}"] = BasicBlock(
                in_channels, out_channels, 2 if downsample else 1, batch_norm
            )
            in_channels = out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.neck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self._build_heads(in_channels)


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` channels, concatenated to its input."""

    def __init__(self, in_channels: int, growth: int, batch_norm: bool) -> None:
        super().__init__()
        self.norm = _norm(in_channels, batch_norm)
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1, bias=not batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(torch.relu(self.norm(x)))], dim=1)


class DenseNet(BlockModel):
    """Small DenseNet: stem, then 3 dense blocks separated by transitions (1x1 conv + avg-pool).

    Blocks: ``stem, dense1, trans1, dense2, trans2, dense3``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        head_sizes: Sequence[int],
        *,
        width: int = 12,
        depth: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(input_shape, head_sizes)
        in_channels, height, _ = self.input_shape
        channels = 2 * width
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        blocks["stem"] = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        for stage in range(3):
            layers = []
            for _ in range(depth):
                layers.append(DenseLayer(channels, width, batch_norm))
                channels += width
            blocks[f"dense{stage + 1}"] = nn.Sequential(*layers)
            if stage < 2:
                out_channels = channels // 2
                transition: list[nn.Module] = [
                    _norm(channels, batch_norm),
                    nn.ReLU(),
                    nn.Conv2d(channels, out_channels, 1, bias=False),
                ]
                if height >= 2:
                    transition.append(nn.AvgPool2d(2))
                    height //= 2
                blocks[f"trans{stage + 1}"] = nn.Sequential(*transition)
                channels = out_channels
        self.blocks = nn.ModuleDict(blocks)
        self.neck = nn.Sequential(
            _norm(channels, batch_norm), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self._build_heads(channels)
