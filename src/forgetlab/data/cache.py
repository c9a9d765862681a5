"""Disk cache of decoded datasets: uint8 arrays as ``.npy`` files in the per-user cache.

Decoding a dataset (unpickling CIFAR, gunzipping IDX files, decoding and resizing
CelebA / ImageNet JPEGs) happens once; the arrays are then stored under
``<user cache>/decoded/<key>/`` (one ``.npy`` per array plus ``index.json``), read back as memory maps, where
``key`` hashes everything the arrays depend on: the source files' checksums (or paths,
sizes and mtimes where no official checksum exists), the resize size and the decoder
version. An entry is written into a temporary folder and renamed into place, so a
reader never sees half an entry; ``index.json`` records each array's shape, dtype and
BLAKE2b checksum, verified the first time a process reads the array (again if its file
changes size or mtime); an entry that cannot be read back (truncated, edited, wrong
shape or checksum, a malformed index) is ignored and rebuilt. Nothing here ever raises for a cache problem: an
unwritable cache only means the next load decodes again.

Entries are read back as memory maps, so never shorten a cache file in place while a
process uses it (the OS then kills that process with SIGBUS): delete the entry's folder
instead; forgetlab itself only ever writes new folders and renames them into place.

Example:
    >>> import numpy as np
    >>> key = cache_key(source="example", size=4)
    >>> arrays, meta = cached_arrays(key, lambda: ({"x": np.zeros((2, 4), np.uint8)}, {"names": ["a"]}))
    >>> arrays["x"].shape, meta["names"]
    ((2, 4), ['a'])
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from forgetlab.data.files import user_cache_dir

CACHE_FORMAT = 2  # 2: a checksum per array
DECODED_FOLDER = "decoded"
INDEX_NAME = "index.json"
STALE_TMP_SECONDS = 24 * 3600

Arrays = dict[str, np.ndarray]


def decoded_cache_dir() -> Path:
    """Folder of the decoded-array cache: ``<user cache>/decoded``.

    Example:
        >>> decoded_cache_dir().name
        'decoded'
    """
    return user_cache_dir() / DECODED_FOLDER


def cache_key(**parts: Any) -> str:
    """A stable hex key for the JSON-serialisable ``parts`` (order-independent).

    Example:
        >>> cache_key(a=1, b=[2, 3]) == cache_key(b=[2, 3], a=1)
        True
    """
    payload = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def load_arrays(key: str) -> tuple[Arrays, dict[str, Any]] | None:
    """The arrays and metadata stored under ``key``, or ``None`` when absent or unreadable.

    The arrays are copy-on-write memory maps of the cache files: opening costs nothing,
    pages are read (from the OS page cache, usually) when touched, and writing to an
    array changes the process's copy, never the file.

    Example:
        >>> load_arrays("0" * 32) is None
        True
    """
    folder = decoded_cache_dir() / key
    try:
        index = json.loads((folder / INDEX_NAME).read_text())
        arrays: Arrays = {}
        for name, (shape, dtype, checksum) in index["arrays"].items():
            path = folder / f"{name}.npy"
            array = np.load(path, mmap_mode="c", allow_pickle=False)
            if list(array.shape) != list(shape) or str(array.dtype) != dtype:
                return None
            stat = path.stat()
            seen = (str(path), stat.st_size, stat.st_mtime_ns, checksum)
            if seen not in _VERIFIED:
                if _checksum(array) != checksum:
                    return None
                _VERIFIED.add(seen)
            arrays[name] = array
        meta = index["meta"]
        return (arrays, meta) if isinstance(meta, dict) else None
    except (OSError, ValueError, KeyError, TypeError, EOFError, AttributeError):
        return None


# Arrays whose checksum this process has verified: (path, size, mtime_ns, checksum).
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _checksum(array: np.ndarray) -> str:
    """BLAKE2b of the array's bytes (C order), hex."""
    return hashlib.blake2b(memoryview(np.ascontiguousarray(array)).cast("B"), digest_size=16).hexdigest()


def save_arrays(key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bool:
    """Store ``arrays`` and JSON-serialisable ``meta`` under ``key``, atomically. Returns
    whether the entry was written (``False``, silently, when the cache is unwritable).

    Example:
        >>> save_arrays(cache_key(source="example"), {"x": np.ones(3, np.uint8)}, {})
        True
    """
    root = decoded_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(root)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.", suffix=".tmp"))
    except OSError:
        return False
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        index = {
            "arrays": {name: [list(a.shape), str(a.dtype), _checksum(a)] for name, a in arrays.items()},
            "meta": dict(meta),
        }
        (tmp / INDEX_NAME).write_text(json.dumps(index))
        final = root / key
        if final.exists():  # an unreadable entry being replaced
            shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        return True
    except (OSError, TypeError, ValueError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_arrays(key: str, build: Callable[[], tuple[Arrays, dict[str, Any]]]) -> tuple[Arrays, dict[str, Any]]:
    """Read the entry ``key``, or ``build()`` it and store it.

    Example:
        >>> arrays, _ = cached_arrays(cache_key(source="example", n=1), lambda: ({"y": np.arange(3)}, {}))
        >>> arrays["y"].tolist()
        [0, 1, 2]
    """
    found = load_arrays(key)
    if found is not None:
        return found
    arrays, meta = build()
    save_arrays(key, arrays, meta)
    return arrays, meta


def _remove_stale_tmp(root: Path) -> None:
    """Delete temporary folders left by a process killed while writing an entry."""
    now = time.time()
    for entry in root.glob(".*.tmp"):
        try:
            if now - entry.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass
