"""Batch transform: normalisation and crop+flip against a per-image reference loop."""

from __future__ import annotations

import torch

from forgetlab.data.augment import BatchTransform, random_crop_flip


def test_normalisation_matches_formula():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = BatchTransform(mean, std, augment=True)(x, train=False)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


def test_crop_flip_equals_per_image_reference():
    x = torch.randint(0, 256, (16, 3, 6, 7), dtype=torch.uint8)
    pad = 2
    out = random_crop_flip(x, pad, torch.Generator().manual_seed(3))
    # replay the same random draws, then crop and flip image by image
    generator = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 2 * pad + 1, (2, 16), generator=generator)
    flips = torch.rand(16, generator=generator) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(16):
        top, left = int(offsets[0, i]), int(offsets[1, i])
        crop = padded[i, :, top : top + 6, left : left + 7]
        if flips[i]:
            crop = crop.flip(-1)
        assert torch.equal(out[i], crop)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_augment_only_when_training():
    x = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform((0.5,) * 3, (0.5,) * 3, augment=True)
    plain = BatchTransform((0.5,) * 3, (0.5,) * 3, augment=False)
    torch.testing.assert_close(transform(x, train=False), plain(x, train=True))
    augmented = transform(x, train=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(augmented, plain(x, train=True))
