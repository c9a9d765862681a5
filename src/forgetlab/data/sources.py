"""Data sources: read a dataset's official files into uint8 tensors in memory.

Every source returns an :class:`ImageData` (train and test splits as uint8
``(N, C, H, W)`` tensors and int64 labels). Normalisation and augmentation happen
later, on whole batches, on the training device (:mod:`forgetlab.data.augment`).
File-based sources find and verify their files with :mod:`forgetlab.data.files`; a
dataset loaded once is kept in memory (per name and data root) and every call returns
its own copy of the tensors.

Example:
    >>> data = load_source("digits")
    >>> tuple(data.train_x.shape[1:]), data.train_x.dtype, len(data.class_names)
    ((1, 8, 8), torch.uint8, 10)
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forgetlab.data.files import DATASET_FILES, find_data_root, resolve_files
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
        train_coarse_y, test_coarse_y: int64 ``(N,)`` superclass indices into
            ``coarse_names`` (CIFAR-100 only; ``None`` elsewhere).
        coarse_names: superclass names (CIFAR-100 only; empty elsewhere).

    Treat the tensors as read-only: share them freely, copy before changing them.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_coarse_y: torch.Tensor | None = None
    test_coarse_y: torch.Tensor | None = None
    coarse_names: tuple[str, ...] = ()

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


# ------------------------------------------------------- shared machinery ----

_CACHE: dict[tuple[str, str], ImageData] = {}
_CACHE_SIZE = 4  # datasets kept in memory per process (CIFAR-10 is about 185 MB)


def clear_cache() -> None:
    """Forget every dataset kept in memory, so the next load reads the files again.

    Example:
        >>> clear_cache()
    """
    _CACHE.clear()


def _own_copy(data: ImageData) -> ImageData:
    tensors = {f.name: v.clone() for f in dataclasses.fields(data) if isinstance(v := getattr(data, f.name), torch.Tensor)}
    return dataclasses.replace(data, **tensors)


def _load_files(name: str, data_dir: Path | None, download: bool, read: Callable[[Mapping[str, Path]], ImageData]) -> ImageData:
    """Verify ``name``'s files (see :func:`resolve_files`), parse them once per process and
    data root, and return a private copy so no caller can change another's tensors."""
    key = (name, str(find_data_root(data_dir)[0].resolve()))
    if key not in _CACHE:
        data = read(resolve_files(DATASET_FILES[name], data_dir, download))
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    return _own_copy(_CACHE[key])


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std in [0, 1] units of uint8 images
    ``(N, C, H, W)``, from a 256-bin histogram per channel (no float copy of the data)."""
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = torch.bincount(x[:, channel].reshape(-1), minlength=256).double()
        mean = (counts * levels).sum() / counts.sum()
        means.append(float(mean))
        stds.append(float(((counts * (levels - mean) ** 2).sum() / counts.sum()).sqrt()))
    return tuple(means), tuple(stds)


# ------------------------------------------------------ MNIST and Fashion ----

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: str | Path) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format) of unsigned bytes.

    Header: two zero bytes, the type code 0x08 (unsigned byte), the number of
    dimensions, then each dimension as a big-endian uint32. Raises :class:`DataError`
    naming the file when the header or the length is wrong.

    Example:
        read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape
        (10000,)
    """
    try:
        raw = gzip.decompress(Path(path).read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"Cannot read IDX file {str(path)!r}: {exc}.") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08 or raw[3] == 0:
        raise DataError(
            f"Malformed IDX header in {str(path)!r}: the magic number must be 00 00 08 <ndim>=1+ "
            f"(unsigned bytes), got {raw[:4].hex(' ') or 'an empty file'}."
        )
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataError(f"Malformed IDX header in {str(path)!r}: {ndim} dimensions need {offset} header bytes, the file holds {len(raw)}.")
    dims = struct.unpack(f">{ndim}I", raw[4:offset])
    if len(raw) != offset + int(np.prod(dims)):
        raise DataError(f"Malformed IDX file {str(path)!r}: dimensions {dims} need {offset + int(np.prod(dims))} bytes, the file holds {len(raw)}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _idx_split(paths: Mapping[str, Path], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path = paths[f"{prefix}-images-idx3-ubyte.gz"], paths[f"{prefix}-labels-idx1-ubyte.gz"]
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"IDX file {str(images_path)!r} must hold (N, 28, 28) images, got shape {images.shape}.")
    if labels.shape != images.shape[:1] or labels.max(initial=0) > 9:
        raise DataError(f"IDX file {str(labels_path)!r} must hold {images.shape[0]} labels in 0..9, got shape {labels.shape}, max {labels.max(initial=0)}.")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _idx_reader(name: str, class_names: tuple[str, ...]) -> Callable[[Mapping[str, Path]], ImageData]:
    def read(paths: Mapping[str, Path]) -> ImageData:
        train_x, train_y = _idx_split(paths, "train")
        test_x, test_y = _idx_split(paths, "t10k")
        mean, std = _channel_stats(train_x)
        return ImageData(name, train_x, train_y, test_x, test_y, class_names, mean, std)

    return read


def load_mnist(data_dir: Path | None = None, download: bool = False) -> ImageData:
    """MNIST from the official IDX .gz files: uint8 ``(N, 1, 28, 28)``, 60,000 train and
    10,000 test images. Mean/std are computed from the training images.

    Example:
        load_mnist(download=True).train_y[0].item()
        5
    """
    return _load_files("mnist", data_dir, download, _idx_reader("mnist", tuple(str(i) for i in range(10))))


def load_fashion_mnist(data_dir: Path | None = None, download: bool = False) -> ImageData:
    """Fashion-MNIST from the official IDX .gz files (same format and sizes as MNIST).
    Mean/std are computed from the training images.

    Example:
        load_fashion_mnist(download=True).class_names[0]
        'T-shirt/top'
    """
    return _load_files("fashion-mnist", data_dir, download, _idx_reader("fashion-mnist", FASHION_CLASSES))


# ---------------------------------------------------------------- CIFAR ----

# The only globals the official CIFAR pickles refer to (numpy array reconstruction).
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    # Safety: only ever called on files whose MD5 matched the official checksum
    # (resolve_files verifies before it returns); a file that failed the check is never
    # unpickled. The unpickler also refuses any global but numpy's array reconstruction.
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"Cannot unpickle CIFAR file {str(path)!r}: {exc}.") from None
    missing = [k for k in keys if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise DataError(f"CIFAR file {str(path)!r} must be a dict with keys {keys}; missing {missing}.")
    return obj


def _cifar_split(paths: list[Path], label_keys: tuple[bytes, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images uint8 ``(N, 3, 32, 32)`` and one int64 label tensor per key, from batches."""
    images, labels = [], [[] for _ in label_keys]
    for path in paths:
        batch = _unpickle(path, (b"data", *label_keys))
        data = np.asarray(batch[b"data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"CIFAR file {str(path)!r}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}.")
        for column, key in zip(labels, label_keys):
            if len(batch[key]) != len(data):
                raise DataError(f"CIFAR file {str(path)!r}: {len(batch[key])} {key!r} for {len(data)} images.")
            column.append(np.asarray(batch[key], dtype=np.int64))
        images.append(data)
    x = torch.from_numpy(np.concatenate(images)).reshape(-1, 3, 32, 32)
    return x, [torch.from_numpy(np.concatenate(column)) for column in labels]


def _names(meta: dict, key: bytes) -> tuple[str, ...]:
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[key])


def _read_cifar10(paths: Mapping[str, Path]) -> ImageData:
    train_x, (train_y,) = _cifar_split([paths[f"data_batch_{i}"] for i in range(1, 6)], (b"labels",))
    test_x, (test_y,) = _cifar_split([paths["test_batch"]], (b"labels",))
    names = _names(_unpickle(paths["batches.meta"], (b"label_names",)), b"label_names")
    mean, std = _channel_stats(train_x)
    return ImageData("cifar10", train_x, train_y, test_x, test_y, names, mean, std)


def _read_cifar100(paths: Mapping[str, Path]) -> ImageData:
    keys = (b"fine_labels", b"coarse_labels")
    train_x, (train_y, train_coarse_y) = _cifar_split([paths["train"]], keys)
    test_x, (test_y, test_coarse_y) = _cifar_split([paths["test"]], keys)
    meta = _unpickle(paths["meta"], (b"fine_label_names", b"coarse_label_names"))
    mean, std = _channel_stats(train_x)
    return ImageData(
        "cifar100", train_x, train_y, test_x, test_y, _names(meta, b"fine_label_names"), mean, std,
        train_coarse_y=train_coarse_y, test_coarse_y=test_coarse_y, coarse_names=_names(meta, b"coarse_label_names"),
    )


def load_cifar10(data_dir: Path | None = None, download: bool = False) -> ImageData:
    """CIFAR-10 from the official python pickles: uint8 ``(N, 3, 32, 32)``, 50,000 train
    and 10,000 test images, class names from ``batches.meta``. Mean/std are computed
    from the training images.

    Example:
        load_cifar10(download=True).class_names[:2]
        ('airplane', 'automobile')
    """
    return _load_files("cifar10", data_dir, download, _read_cifar10)


def load_cifar100(data_dir: Path | None = None, download: bool = False) -> ImageData:
    """CIFAR-100 from the official python pickles: uint8 ``(N, 3, 32, 32)``, 50,000 train
    and 10,000 test images. ``train_y``/``test_y`` are the 100 fine labels; the 20
    superclasses are in ``train_coarse_y``/``test_coarse_y``/``coarse_names``.
    Mean/std are computed from the training images.

    Example:
        len(load_cifar100(download=True).coarse_names)
        20
    """
    return _load_files("cifar100", data_dir, download, _read_cifar100)


SOURCES: dict[str, Source] = {
    "digits": Source(
        "scikit-learn's bundled 8x8 handwritten digits, 10 classes (no download; the default)",
        load_digits,
        DatasetDefaults(model="mlp", epochs=10, lr=0.05, augment=False),
    ),
    "mnist": Source(
        "MNIST handwritten digits, 28x28 grey, 10 classes (official IDX files)",
        load_mnist,
        DatasetDefaults(model="mlp", epochs=1, lr=0.05, augment=False),
    ),
    "fashion-mnist": Source(
        "Fashion-MNIST clothing, 28x28 grey, 10 classes (official IDX files)",
        load_fashion_mnist,
        DatasetDefaults(model="mlp", epochs=1, lr=0.05, augment=False),
    ),
    "cifar10": Source(
        "CIFAR-10, 32x32 colour, 10 classes (official python pickles)",
        load_cifar10,
        DatasetDefaults(model="vgg", epochs=2, lr=0.05, augment=True),
    ),
    "cifar100": Source(
        "CIFAR-100, 32x32 colour, 100 classes in 20 superclasses (official python pickles)",
        load_cifar100,
        DatasetDefaults(model="vgg", epochs=2, lr=0.05, augment=True),
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
