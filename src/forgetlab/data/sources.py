"""Data sources: read a dataset's official files into uint8 tensors in memory.

Every source returns an :class:`ImageData` (train and test splits as uint8
``(N, C, H, W)`` tensors and int64 labels). Normalisation and augmentation happen
later, on whole batches, on the training device (:mod:`forgetlab.data.augment`).

Example:
    >>> data = load_source("digits")
    >>> tuple(data.train_x.shape[1:]), data.train_x.dtype, len(data.class_names)
    ((1, 8, 8), torch.uint8, 10)
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forgetlab.errors import DataError, unknown_name


@dataclass(frozen=True)
class ImageData:
    """A dataset held in memory.

    Attributes:
        name: source name.
        train_x, test_x: uint8 ``(N, C, H, W)``.
        train_y, test_y: int64 ``(N,)`` class indices into ``class_names``.
        class_names: human-readable class names.
        mean, std: per-channel statistics in [0, 1] pixel units, for normalisation.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class DatasetDefaults:
    """What a run on this dataset uses unless told otherwise."""

    model: str
    epochs: int
    lr: float
    augment: bool


@dataclass(frozen=True)
class Source:
    """A registered data source."""

    description: str
    loader: Callable[[Path | None, bool], ImageData]
    defaults: DatasetDefaults


# ------------------------------------------------------------------ digits ----

DIGITS_CSV_MD5 = "a0339c30a8a5312a1b6f9e5c719dcce5"  # md5 of the decompressed digits.csv
DIGITS_TEST_EVERY = 5  # (choice) every 5th example (by file order) is a test example


def _digits_file() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def load_digits(data_dir: Path | None = None, download: bool = False) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 16 grey levels scaled to 0-255).

    No official split exists: every 5th example (in file order) is a test example
    (359 test, 1,438 train). The decompressed CSV is checked against its MD5.
    """
    path = _digits_file()
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"Cannot read scikit-learn's digits file {str(path)!r}: {exc}. Reinstall scikit-learn.") from None
    actual = hashlib.md5(raw).hexdigest()
    if actual != DIGITS_CSV_MD5:
        raise DataError(
            f"Checksum mismatch for {str(path)!r} (decompressed): expected md5 {DIGITS_CSV_MD5}, "
            f"got {actual}. Reinstall scikit-learn."
        )
    table = np.loadtxt(raw.decode().splitlines(), delimiter=",", dtype=np.float64)
    pixels = np.rint(table[:, :-1] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = table[:, -1].astype(np.int64)
    is_test = np.arange(len(labels)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    x = torch.from_numpy(pixels)
    y = torch.from_numpy(labels)
    train_x = x[~torch.from_numpy(is_test)]
    mean = float(train_x.float().mean() / 255.0)
    std = float(train_x.float().std() / 255.0)
    return ImageData(
        name="digits",
        train_x=train_x.contiguous(),
        train_y=y[~torch.from_numpy(is_test)].contiguous(),
        test_x=x[torch.from_numpy(is_test)].contiguous(),
        test_y=y[torch.from_numpy(is_test)].contiguous(),
        class_names=tuple(str(i) for i in range(10)),
        mean=(mean,),
        std=(std,),
    )


SOURCES: dict[str, Source] = {
    "digits": Source(
        "scikit-learn's bundled 8x8 handwritten digits, 10 classes (no download; the default)",
        load_digits,
        DatasetDefaults(model="mlp", epochs=10, lr=0.05, augment=False),
    ),
}


def list_sources() -> dict[str, str]:
    """Registered source names mapped to a one-line description."""
    return {name: source.description for name, source in SOURCES.items()}


def dataset_defaults(name: str) -> DatasetDefaults:
    """The defaults a run on dataset ``name`` uses for fields left as ``None``."""
    if name not in SOURCES:
        raise unknown_name("dataset", name, SOURCES)
    return SOURCES[name].defaults


def load_source(name: str, *, data_dir: str | Path | None = None, download: bool = False) -> ImageData:
    """Load a registered source; see :func:`forgetlab.data.files.find_data_root` for lookup."""
    if name not in SOURCES:
        raise unknown_name("dataset", name, SOURCES)
    return SOURCES[name].loader(Path(data_dir) if data_dir is not None else None, download)
