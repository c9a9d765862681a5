"""Data sources: read a dataset's official files into uint8 tensors in memory.

Every source returns an :class:`ImageData` (train and test splits as uint8
``(N, C, H, W)`` tensors and int64 labels). Normalisation and augmentation happen
later, on whole batches, on the training device (:mod:`forgetlab.data.augment`).
File-based sources find and verify their files with :mod:`forgetlab.data.files` (once
per process, name, data root and options). The decoded arrays are stored once in the
per-user disk cache (:mod:`forgetlab.data.cache`, keyed by the files' checksums or
fingerprints and the resize size); every load returns fresh copy-on-write memory maps
of them: no copy is made, pages come from the OS page cache, and a caller that writes
to its tensors changes only its own pages. Without a writable cache, the decoded data is
kept in memory and every load returns its own copy.

Example:
    >>> data = load_source("digits")
    >>> tuple(data.train_x.shape[1:]), data.train_x.dtype, len(data.class_names)
    ((1, 8, 8), torch.uint8, 10)
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pickle
import struct
import threading
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from forgetlab.data.cache import cache_key, load_arrays, save_arrays
from forgetlab.data.files import DATASET_FILES, find_data_root, resolve_files, verify_file
from forgetlab.errors import ConfigError, DataError, unknown_name


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
        coarse_names: superclass names (CIFAR-100 and ImageNet; empty elsewhere).
        train_attributes, test_attributes: uint8 ``(N, n_attributes)``, 1 = the
            attribute is present (CelebA only; ``None`` elsewhere).
        attribute_names: names of the attribute columns (CelebA only; empty elsewhere).

    A source without classes (CelebA) has empty ``class_names`` and all-zero labels.
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
    train_attributes: torch.Tensor | None = None
    test_attributes: torch.Tensor | None = None
    attribute_names: tuple[str, ...] = ()

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
    """A registered data source.

    Attributes:
        description: one line for ``forgetlab list``.
        loader: ``loader(data_dir, download, **options)`` -> :class:`ImageData`.
        defaults: what a run on it uses unless told otherwise.
        options: the keyword options the loader takes (``image_size``, ``superclass_map``).
        streams: the only streams that can use it; empty = every stream over classes.
    """

    description: str
    loader: Callable[..., ImageData]
    defaults: DatasetDefaults
    options: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()


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
    test = torch.from_numpy(np.arange(len(labels)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1)
    x = torch.from_numpy(pixels)
    y = torch.from_numpy(labels)
    train_x = x[~test]
    mean = float(train_x.float().mean() / 255.0)
    std = float(train_x.float().std() / 255.0)
    return ImageData(
        name="digits",
        train_x=train_x.contiguous(),
        train_y=y[~test].contiguous(),
        test_x=x[test].contiguous(),
        test_y=y[test].contiguous(),
        class_names=tuple(str(i) for i in range(10)),
        mean=(mean,),
        std=(std,),
    )


# ------------------------------------------------------- shared machinery ----

# Per process and (name, data root, options): the key of the dataset's disk-cache entry,
# or the decoded dataset itself when the disk cache cannot be written.
_CACHE: dict[tuple, str | ImageData] = {}
_CACHE_SIZE = 4  # decoded datasets kept in memory when the disk cache is unwritable (CIFAR-10: 185 MB)


def clear_cache() -> None:
    """Forget every dataset this process has loaded, so the next load finds and verifies
    the files again (the disk cache of decoded arrays is kept).

    Example:
        >>> clear_cache()
    """
    _CACHE.clear()


def _tensors(data: ImageData) -> dict[str, torch.Tensor]:
    return {f.name: v for f in dataclasses.fields(data) if isinstance(v := getattr(data, f.name), torch.Tensor)}


def _memoized(key: tuple, load: Callable[[], str | ImageData]) -> ImageData:
    """``load()`` once per process and ``key``; every call gets tensors of its own, so no
    caller can change another's: fresh copy-on-write memory maps of the disk-cache entry
    (no copy made), or a copy of the decoded data when there is no disk cache."""
    if key not in _CACHE:
        _CACHE[key] = load()
        decoded = [k for k, v in _CACHE.items() if isinstance(v, ImageData)]
        for old in decoded[: max(0, len(decoded) - _CACHE_SIZE)]:
            del _CACHE[old]
    entry = _CACHE[key]
    if isinstance(entry, ImageData):
        return dataclasses.replace(entry, **{name: v.clone() for name, v in _tensors(entry).items()})
    data = _from_disk(entry)
    if data is None:  # the entry was deleted or damaged since: load again
        del _CACHE[key]
        return _memoized(key, load)
    return data


DECODE_VERSION = 1  # part of every disk-cache key: bump when a reader's output changes
_META_FIELDS = ("name", "class_names", "mean", "std", "coarse_names", "attribute_names")


def _disk_cached(key_parts: Mapping[str, Any], read: Callable[[], ImageData]) -> str | ImageData:
    """The disk-cache key of the dataset described by ``key_parts``, decoding it with
    ``read()`` and storing it first if needed; the decoded dataset itself when it cannot
    be stored."""
    from forgetlab.data.images import DECODER_VERSION

    key = cache_key(**key_parts, reader=DECODE_VERSION, decoder=DECODER_VERSION)
    if _from_disk(key) is not None:
        return key
    data = read()
    arrays = {name: value.numpy() for name, value in _tensors(data).items()}
    if save_arrays(key, arrays, {name: getattr(data, name) for name in _META_FIELDS}) and _from_disk(key) is not None:
        return key
    return data


def _from_disk(key: str) -> ImageData | None:
    """The dataset of a disk-cache entry as copy-on-write memory maps, or ``None``."""
    found = load_arrays(key)
    if found is None:
        return None
    arrays, meta = found
    try:
        tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
        fields = {name: tuple(meta[name]) if name != "name" else meta[name] for name in _META_FIELDS}
        return ImageData(**fields, **tensors)
    except (KeyError, TypeError, ValueError):
        return None  # an entry from another layout: rebuilt by the caller


def _load_files(
    name: str,
    data_dir: Path | None,
    download: bool,
    read: Callable[[Mapping[str, Path]], ImageData],
) -> ImageData:
    """Verify ``name``'s files (see :func:`resolve_files`), decode them (or read the disk
    cache, keyed by their official checksums), once per process and data root."""
    def load() -> str | ImageData:
        spec = DATASET_FILES[name]
        paths = resolve_files(spec, data_dir, download)
        return _disk_cached({"source": name, "md5": {f.name: f.md5 for f in spec.files}}, lambda: read(paths))

    return _memoized((name, str(find_data_root(data_dir)[0].resolve())), load)


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


# ----------------------------------------------------------------- CelebA ----

CELEBA_ZIP = "img_align_celeba.zip"
CELEBA_ZIP_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"
CELEBA_FOLDER = "img_align_celeba"
DEFAULT_IMAGE_SIZE = 64  # (choice) CelebA and ImageNet images are resized to 64 x 64 unless told
CELEBA_SPLITS = {"train": 0, "test": 2}  # (choice) the official validation split (1) is not used


def load_celeba(data_dir: Path | None = None, download: bool = False, *, image_size: int | None = None) -> ImageData:
    """CelebA from the official files: the aligned images (``img_align_celeba.zip``, MD5
    checked, or the folder it extracts to), ``list_attr_celeba.txt`` and
    ``list_eval_partition.txt`` (MD5 checked), under ``<root>/celeba/`` or the root.

    Images are centre-cropped to a square and resized to ``image_size`` (default 64)
    once, then cached on disk as uint8. Train = the official train partition, test = the
    official test partition. No classes: the 40 binary attributes are in
    ``train_attributes`` / ``test_attributes`` / ``attribute_names``. Not downloadable
    automatically (Google Drive).

    Example:
        data = load_celeba(image_size=32)
        data.attribute_names[20], tuple(data.train_x.shape[1:])
        ('Male', (3, 32, 32))
    """
    size = image_size or DEFAULT_IMAGE_SIZE

    def load() -> str | ImageData:
        paths = resolve_files(DATASET_FILES["celeba"], data_dir, download)
        folder = paths["list_attr_celeba.txt"].parent
        files, names, values, partition = _celeba_lists(paths)
        wanted = {split: [i for i, f in enumerate(files) if partition[f] == code] for split, code in CELEBA_SPLITS.items()}
        if (folder / CELEBA_FOLDER).is_dir():
            from forgetlab.data.images import files_fingerprint

            images = [folder / CELEBA_FOLDER / f for f in files]
            absent = [str(p) for p in images if not p.is_file()]
            if absent:
                raise DataError(
                    f"CelebA image folder {str(folder / CELEBA_FOLDER)!r} lacks {len(absent)} of the "
                    f"{len(files)} images listed in list_attr_celeba.txt, e.g. {absent[0]!r}. Extract "
                    f"{CELEBA_ZIP} again."
                )
            origin = "folder:" + files_fingerprint(images, folder)
        elif (folder / CELEBA_ZIP).is_file():
            verify_file(folder / CELEBA_ZIP, CELEBA_ZIP_MD5)
            origin = "zip:" + CELEBA_ZIP_MD5
        else:
            raise DataError(
                f"CelebA images not found: expected {str(folder / CELEBA_ZIP)!r} or the folder "
                f"{str(folder / CELEBA_FOLDER)!r} next to list_attr_celeba.txt."
            )
        key = {"source": "celeba", "md5": {f.name: f.md5 for f in DATASET_FILES["celeba"].files}, "images": origin, "size": size}
        return _disk_cached(key, lambda: _decode_celeba(folder, files, names, values, wanted, size))

    return _memoized(("celeba", str(find_data_root(data_dir)[0].resolve()), size), load)


def _celeba_lists(paths: Mapping[str, Path]) -> tuple[list[str], tuple[str, ...], np.ndarray, dict[str, int]]:
    from forgetlab.data.images import read_celeba_attributes, read_celeba_partition

    files, names, values = read_celeba_attributes(paths["list_attr_celeba.txt"])
    partition = read_celeba_partition(paths["list_eval_partition.txt"])
    unlisted = [f for f in files if f not in partition]
    if unlisted:
        raise DataError(
            f"{len(unlisted)} images of list_attr_celeba.txt are not in list_eval_partition.txt, "
            f"e.g. {unlisted[0]!r}: the two files do not belong together."
        )
    return files, names, values, partition


def _decode_celeba(
    folder: Path, files: list[str], names: tuple[str, ...], values: np.ndarray, wanted: Mapping[str, list[int]], size: int
) -> ImageData:
    from forgetlab.data.images import decode_images

    archive = folder / CELEBA_ZIP
    split: dict[str, np.ndarray] = {}
    if (folder / CELEBA_FOLDER).is_dir():
        for name, rows in wanted.items():
            split[name] = decode_images([folder / CELEBA_FOLDER / files[i] for i in rows], size, progress=f"CelebA {name}")
    else:
        with zipfile.ZipFile(archive) as zipped:
            members = {PurePosixPath(m).name: m for m in zipped.namelist() if not m.endswith("/")}
            lock = threading.Lock()

            def opener(member: str) -> Callable[[], io.BytesIO]:
                def read() -> io.BytesIO:
                    with lock:
                        return io.BytesIO(zipped.read(member))

                return read

            for name, rows in wanted.items():
                absent = [files[i] for i in rows if files[i] not in members]
                if absent:
                    raise DataError(f"{str(archive)!r} lacks {len(absent)} listed images, e.g. {absent[0]!r}.")
                split[name] = decode_images(
                    [opener(members[files[i]]) for i in rows], size,
                    names=[f"{archive}:{files[i]}" for i in rows], progress=f"CelebA {name}",
                )
    train_x, test_x = torch.from_numpy(split["train"]), torch.from_numpy(split["test"])
    mean, std = _channel_stats(train_x)
    return ImageData(
        "celeba", train_x, torch.zeros(len(train_x), dtype=torch.int64), test_x, torch.zeros(len(test_x), dtype=torch.int64),
        (), mean, std,
        train_attributes=torch.from_numpy(values[wanted["train"]]),
        test_attributes=torch.from_numpy(values[wanted["test"]]),
        attribute_names=names,
    )


# --------------------------------------------------------------- ImageNet ----

def _imagenet_root(data_dir: Path | None) -> Path:
    base = find_data_root(data_dir)[0]
    for candidate in (base / "imagenet", base):
        if (candidate / "train").is_dir():
            return candidate
    raise DataError(
        f"ImageNet folders not found: expected {str(base / 'imagenet' / 'train')}/<wnid>/*.JPEG and "
        f"{str(base / 'imagenet' / 'val')}/<wnid>/*.JPEG (or train/ and val/ directly under {str(base)!r}). "
        f"ImageNet needs a login at image-net.org and cannot be downloaded automatically: extract the "
        f"ILSVRC-2012 train and val archives there (val sorted into one folder per wnid, as torchvision's "
        f"ImageNet does) and point --data-dir or $FORGETLAB_DATA at the folder holding imagenet/."
    )


def _wnid_images(split_root: Path, wnids: tuple[str, ...], mapping_name: str) -> list[tuple[Path, int]]:
    from forgetlab.data.images import list_images

    if not split_root.is_dir():
        raise DataError(f"ImageNet folder {str(split_root)!r} not found (needed next to train/).")
    missing = [w for w in wnids if not (split_root / w).is_dir()]
    if missing:
        flat = list_images(split_root)
        hint = (
            f" {str(split_root)!r} holds images directly: sort them into one folder per wnid."
            if flat else ""
        )
        raise DataError(
            f"ImageNet folder {str(split_root)!r} has no folder for {len(missing)} of the {len(wnids)} wnids "
            f"of {mapping_name}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}.{hint} "
            f"Fix the folder, or give a mapping of the wnids you have (stream.superclass_map)."
        )
    items = []
    for label, wnid in enumerate(wnids):
        images = list_images(split_root / wnid)
        if not images:
            raise DataError(f"ImageNet folder {str(split_root / wnid)!r} holds no images.")
        items.extend((path, label) for path in images)
    return items


def load_imagenet(
    data_dir: Path | None = None,
    download: bool = False,
    *,
    image_size: int | None = None,
    superclass_map: str | Path | None = None,
) -> ImageData:
    """The classes of a superclass mapping from a user's ImageNet folders.

    Reads ``<root>/imagenet/train/<wnid>/*`` and ``<root>/imagenet/val/<wnid>/*`` (or
    ``train/``, ``val/`` under the root) for every wnid of the mapping
    (:func:`forgetlab.data.images.read_superclass_map`; ``None`` = the packaged default,
    10 animal and 10 artifact superclasses). Classes = the wnids in mapping order;
    coarse labels = the superclasses. Images are centre-cropped and resized to
    ``image_size`` (default 64) once, then cached on disk, keyed by the files' paths,
    sizes and mtimes (ImageNet has no per-image checksums). Not downloadable.

    Example:
        data = load_imagenet("/data", image_size=32)
        data.coarse_names[:2], data.class_names[0]
        (('fish', 'bird'), 'n01440764')
    """
    from forgetlab.data.images import read_superclass_map

    size = image_size or DEFAULT_IMAGE_SIZE
    mapping = read_superclass_map(superclass_map)
    mapping_name = f"mapping file {str(superclass_map)!r}" if superclass_map else "the default mapping"
    wnids = tuple(w for members in mapping.values() for w in members)
    coarse = np.array([k for k, members in enumerate(mapping.values()) for _ in members], dtype=np.int64)
    mapping_key = hashlib.sha256(json.dumps(list(mapping.items())).encode()).hexdigest()
    root = _imagenet_root(data_dir)

    def load() -> str | ImageData:
        from forgetlab.data.images import files_fingerprint

        train = _wnid_images(root / "train", wnids, mapping_name)
        test = _wnid_images(root / "val", wnids, mapping_name)
        key = {
            "source": "imagenet", "size": size, "mapping": mapping_key,
            "train": files_fingerprint([p for p, _ in train], root), "test": files_fingerprint([p for p, _ in test], root),
        }
        return _disk_cached(key, lambda: _decode_imagenet(train, test, wnids, coarse, tuple(mapping), size))

    return _memoized(("imagenet", str(root.resolve()), size, mapping_key), load)


def _decode_imagenet(
    train: list[tuple[Path, int]], test: list[tuple[Path, int]], wnids: tuple[str, ...],
    coarse: np.ndarray, coarse_names: tuple[str, ...], size: int,
) -> ImageData:
    from forgetlab.data.images import decode_images

    arrays = {}
    for name, items in (("train", train), ("test", test)):
        x = torch.from_numpy(decode_images([p for p, _ in items], size, progress=f"ImageNet {name}"))
        y = torch.tensor([label for _, label in items], dtype=torch.int64)
        arrays[name] = (x, y, torch.from_numpy(coarse)[y])
    mean, std = _channel_stats(arrays["train"][0])
    return ImageData(
        "imagenet", arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1], wnids, mean, std,
        train_coarse_y=arrays["train"][2], test_coarse_y=arrays["test"][2], coarse_names=coarse_names,
    )


# ----------------------------------------------------------------- custom ----

def _custom_placeholder(data_dir: Path | None = None, download: bool = False) -> ImageData:
    raise ConfigError(
        "The 'custom' dataset has no files of its own: it is read from stream.custom_paths by the "
        "'custom' stream (stream.stream='custom'), or built from tensors with "
        "forgetlab.data.streams.custom_stream()."
    )


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
    "celeba": Source(
        "CelebA aligned faces, 40 binary attributes, resized to `image_size` (official files, manual download)",
        load_celeba,
        DatasetDefaults(model="vgg", epochs=1, lr=0.05, augment=True),
        options=("image_size",),
        streams=("celeba-attributes",),
    ),
    "imagenet": Source(
        "your ImageNet train/val folders, the wnids of a superclass mapping (`superclass_map`), resized",
        load_imagenet,
        DatasetDefaults(model="resnet", epochs=2, lr=0.05, augment=True),
        options=("image_size", "superclass_map"),
    ),
    "custom": Source(
        "your own tasks: .npz files or image folders (`custom_paths`), for the custom stream",
        _custom_placeholder,
        DatasetDefaults(model="mlp", epochs=2, lr=0.05, augment=False),
        streams=("custom",),
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


def load_source(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
    superclass_map: str | Path | None = None,
) -> ImageData:
    """Load a registered source; see :func:`forgetlab.data.files.find_data_root` for lookup.

    ``image_size`` (CelebA, ImageNet) and ``superclass_map`` (ImageNet) are passed to the
    sources that take them; ``None`` = the source's default. Giving one to a source that
    does not take it is an error.

    Example:
        >>> load_source("digits").class_names[:3]
        ('0', '1', '2')
    """
    if name not in SOURCES:
        raise unknown_name("dataset", name, SOURCES)
    source = SOURCES[name]
    options: dict[str, Any] = {}
    for option, value in (("image_size", image_size), ("superclass_map", superclass_map or None)):
        if value is None:
            continue
        if option not in source.options:
            takers = [n for n, s in SOURCES.items() if option in s.options]
            raise ConfigError(
                f"The 'stream.{option}' parameter applies only to the datasets {', '.join(takers)}; leave it "
                f"{'auto' if option == 'image_size' else 'empty'} for dataset {name!r}. Got {value!r} instead."
            )
        options[option] = value
    return source.loader(Path(data_dir) if data_dir is not None else None, download, **options)
