"""Image files: decoding with Pillow, class folders, CelebA lists, superclass mappings.

Everything returns plain numpy arrays; :mod:`forgetlab.data.sources` turns them into
datasets and caches them (decoded once, see :mod:`forgetlab.data.cache`).

Resizing (a choice, documented here once): the largest centred square is cropped, then
resized to ``size x size`` with bilinear filtering (Pillow's antialiased resize). JPEGs
are first decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers the
target size (``Image.draft``), which is several times faster and visually identical.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (40, 30), (255, 0, 0)).save(buffer, format="PNG")
    >>> decode_images([io.BytesIO(buffer.getvalue())], 8).shape
    (1, 3, 8, 8)
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import IO, Union

import numpy as np

from forgetlab.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
DECODER_VERSION = 1  # part of every decoded-cache key: bump when decoding changes
CHUNK = 256  # images per worker task

ImageSource = Union[str, Path, IO[bytes], Callable[[], IO[bytes]]]


# ----------------------------------------------------------------- decoding ----

def _decode_one(source: ImageSource, size: int | None) -> np.ndarray:
    """One image as uint8 ``(3, H, W)`` RGB: native size, or centre square resized to ``size``."""
    from PIL import Image

    with Image.open(source() if callable(source) else source) as image:
        if size is not None:
            image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
        if size is not None:
            width, height = rgb.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        return np.asarray(rgb).transpose(2, 0, 1)


def decode_images(
    sources: Sequence[ImageSource], size: int | None, *, names: Sequence[str] | None = None, progress: str = ""
) -> np.ndarray:
    """Decode images into one uint8 ``(N, 3, H, W)`` RGB array, with a few threads.

    ``size`` = side of the square output (centre crop + bilinear resize); ``None`` keeps
    the native size, which must then be the same for every image. A source is a path, a
    binary file object, or a callable returning one. ``names`` (one per source) name the
    file in errors. A tqdm bar labelled ``progress`` shows when stderr is a terminal.

    Example:
        decode_images(["a.png", "b.png"], 32).shape
        (2, 3, 32, 32)
    """
    from PIL import UnidentifiedImageError
    from tqdm import tqdm

    names = [str(s) for s in sources] if names is None else list(names)
    n = len(sources)
    if n == 0:
        side = size or 1
        return np.zeros((0, 3, side, side), dtype=np.uint8)

    def fail(index: int, exc: Exception) -> DataError:
        return DataError(f"Cannot decode image {names[index]!r}: {exc}. Delete or replace the file.")

    try:
        first = _decode_one(sources[0], size)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise fail(0, exc) from None
    out = np.empty((n, *first.shape), dtype=np.uint8)
    out[0] = first
    errors: list[DataError] = []
    bar = tqdm(total=n, desc=progress or "decoding", unit="img", disable=not sys.stderr.isatty(), leave=False)
    bar.update(1)
    lock = threading.Lock()

    def work(start: int) -> None:
        for index in range(start, min(start + CHUNK, n)):
            if errors:
                return
            try:
                image = _decode_one(sources[index], size)
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
                errors.append(fail(index, exc))
                return
            if image.shape != first.shape:
                errors.append(
                    DataError(
                        f"Image {names[index]!r} is {image.shape[2]}x{image.shape[1]}, but {names[0]!r} is "
                        f"{first.shape[2]}x{first.shape[1]}: images of different sizes need a resize size "
                        f"(set stream.image_size)."
                    )
                )
                return
            out[index] = image
        with lock:
            bar.update(min(start + CHUNK, n) - start)

    try:
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(1, n, CHUNK)))
    finally:
        bar.close()
    if errors:
        raise errors[0]
    return out


def to_grey_if_grey(images: np.ndarray) -> np.ndarray:
    """``(N, 3, H, W)`` -> ``(N, 1, H, W)`` when every image has three equal channels.

    Example:
        >>> to_grey_if_grey(np.zeros((2, 3, 4, 4), np.uint8)).shape
        (2, 1, 4, 4)
    """
    if images.shape[1] == 3 and np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 0], images[:, 2]):
        return np.ascontiguousarray(images[:, :1])
    return images


# ---------------------------------------------------------- class folders ----

def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, case-insensitive), sorted by name.

    Example:
        list_images(Path("train/n01440764"))[:1]
        [PosixPath('train/n01440764/n01440764_10026.JPEG')]
    """
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"Cannot read image folder {str(folder)!r}: {exc.strerror or exc}.") from None
    return sorted(
        Path(e.path) for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    )


def class_folders(root: Path) -> list[str]:
    """Names of the subfolders of ``root`` (one per class), sorted.

    Example:
        class_folders(Path("my-images/train"))
        ['cat', 'dog']
    """
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"Cannot read folder {str(root)!r}: {exc.strerror or exc}.") from None


def files_fingerprint(paths: Sequence[Path], base: Path) -> str:
    """Hash of (path relative to ``base``, size, mtime_ns) of every file: changes when
    any file is added, removed, renamed or rewritten.

    Example:
        >>> len(files_fingerprint([], Path(".")))
        64
    """
    digest = hashlib.sha256()
    for path in paths:
        st = path.stat()
        digest.update(f"{path.relative_to(base).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------ CelebA ----

def read_celeba_attributes(path: str | Path) -> tuple[list[str], tuple[str, ...], np.ndarray]:
    """Parse the official ``list_attr_celeba.txt``: a count line, a line of the 40
    attribute names, then ``<file> <+1|-1> x 40`` per image.

    Returns (file names, attribute names, uint8 ``(N, n_attributes)`` with 1 = present).

    Example:
        files, names, values = read_celeba_attributes("celeba/list_attr_celeba.txt")
        names[20], values.shape
        ('Male', (202599, 40))
    """
    lines = _read_lines(path)
    if len(lines) < 2:
        raise DataError(f"CelebA attribute file {str(path)!r} must start with a count line and a names line.")
    try:
        count = int(lines[0])
    except ValueError:
        raise DataError(f"CelebA attribute file {str(path)!r}, line 1: expected the image count, got {lines[0]!r}.") from None
    names = tuple(lines[1].split())
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise DataError(f"CelebA attribute file {str(path)!r} announces {count} images but lists {len(rows)}.")
    files = []
    values = np.empty((count, len(names)), dtype=np.uint8)
    for index, row in enumerate(rows):
        if len(row) != len(names) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise DataError(
                f"CelebA attribute file {str(path)!r}, line {index + 3}: expected a file name and "
                f"{len(names)} values of 1 or -1, got {' '.join(row)[:80]!r}."
            )
        files.append(row[0])
        values[index] = [v == "1" for v in row[1:]]
    return files, names, values


def read_celeba_partition(path: str | Path) -> dict[str, int]:
    """Parse the official ``list_eval_partition.txt``: ``<file> <0|1|2>`` (train, val, test).

    Example:
        read_celeba_partition("celeba/list_eval_partition.txt")["000001.jpg"]
        0
    """
    partition = {}
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(
                f"CelebA partition file {str(path)!r}, line {number}: expected '<file> <0|1|2>', got {line[:80]!r}."
            )
        partition[fields[0]] = int(fields[1])
    return partition


def _read_lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {str(path)!r}: {exc}.") from None


# ------------------------------------------------------ superclass mapping ----

DEFAULT_SUPERCLASS_MAP = "imagenet_superclasses.txt"
_WNID = re.compile(r"^n\d{8}$")


def default_superclass_map_text() -> str:
    """The packaged ImageNet mapping (10 animal and 10 artifact superclasses).

    Example:
        >>> "fish:" in default_superclass_map_text()
        True
    """
    return resources.files("forgetlab.data").joinpath(DEFAULT_SUPERCLASS_MAP).read_text()


def read_superclass_map(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Parse a superclass -> WordNet-id mapping file (``None`` = the packaged default).

    Format: one superclass per line, ``name: wnid wnid ...``; ``#`` starts a comment.
    Names must be unique, every superclass non-empty, and no wnid may belong to two
    superclasses.

    Example:
        >>> mapping = read_superclass_map()
        >>> len(mapping), mapping["fish"][0]
        (20, 'n01440764')
    """
    if path is None or str(path) == "":
        text, where = default_superclass_map_text(), "the packaged default mapping"
    else:
        try:
            text, where = Path(path).expanduser().read_text(), f"mapping file {str(path)!r}"
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"Cannot read the superclass mapping file {str(path)!r}: {exc}.") from None
    mapping: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, rest = line.partition(":")
        name, wnids = name.strip(), tuple(rest.split())
        if not sep or not name:
            raise DataError(f"In {where}, line {number}: expected 'superclass: wnid wnid ...', got {raw.strip()!r}.")
        if name in mapping:
            raise DataError(f"In {where}, line {number}: superclass {name!r} is listed twice.")
        if not wnids:
            raise DataError(f"In {where}, line {number}: superclass {name!r} has no wnids (an empty class set).")
        for wnid in wnids:
            if not _WNID.match(wnid):
                raise DataError(f"In {where}, line {number}: {wnid!r} is not a WordNet id (n + 8 digits, e.g. n01440764).")
            if wnid in owner:
                raise DataError(
                    f"In {where}, line {number}: wnid {wnid} is in superclasses {owner[wnid]!r} and {name!r}; "
                    f"superclasses must not overlap."
                )
            owner[wnid] = name
        mapping[name] = wnids
    if not mapping:
        raise DataError(f"{where[0].upper() + where[1:]} lists no superclass.")
    return mapping
