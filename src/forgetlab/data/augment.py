"""Batch-level input preparation: uint8 -> normalised float, optional crop + flip.

Everything works on whole batches on the training device; no per-sample Python.

Example:
    >>> import torch
    >>> prepare = BatchTransform(mean=(0.5,), std=(0.25,), augment=False)
    >>> round(prepare(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), train=True)[0, 0, 0, 0].item(), 4)
    2.0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from forgetlab.errors import ConfigError


class BatchTransform:
    """Normalise uint8 batches ``(B, C, H, W)``; when training with ``augment``, also
    random-crop (zero padding ``pad``) and flip horizontally with probability 1/2.

    Randomness comes only from the ``generator`` passed to ``__call__`` (on the
    batch's device), so runs are reproducible.

    Empty ``mean`` and ``std`` mean "inputs as given": uint8 batches of any shape are
    scaled to [0, 1], float batches pass unchanged (as float32); ``augment`` must then be
    False. User data for ``forgetlab.user`` (features or images) goes through this mode.
    With ``channels_last``, 4-D outputs are laid out NHWC (``train.memory_format``).

    Example:
        >>> as_given = BatchTransform((), (), augment=False)
        >>> as_given(torch.tensor([[255, 0]], dtype=torch.uint8), train=True).tolist()
        [[1.0, 0.0]]
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        augment: bool,
        pad: int = 4,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.augment = augment
        self.channels_last = channels_last
        self.pad = pad
        self.as_given = len(mean) == 0 and len(std) == 0
        if self.as_given:
            if augment:
                raise ConfigError("The 'augment' parameter of BatchTransform must be False when mean and std are empty (inputs as given). Got True.")
            self.scale = self.shift = torch.zeros(())
            return
        channels = len(mean)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, channels, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, channels, 1, 1)
        # x_norm = (x/255 - mean) / std = x * scale + shift
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(
        self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.as_given:
            out = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        else:
            if train and self.augment:
                x = random_crop_flip(x, self.pad, generator)
            out = torch.addcmul(self.shift, x.float(), self.scale)
        if self.channels_last and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Random ``pad``-padded crop and horizontal flip of every image of a batch, at once."""
    batch, _, height, width = x.shape
    device = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator, device=device)
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    rows = offsets[0, :, None] + torch.arange(height, device=device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(width, device=device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=device)[:, None, None, None]
    channel_index = torch.arange(x.shape[1], device=device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]
