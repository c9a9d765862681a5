"""Your own data, read and checked in one place: task files for the ``custom`` stream,
labelled files for ``forgetlab.user``, unlabelled inputs for pseudo-rehearsal, and the
content fingerprint that makes a run's identity follow its input files.

* a task (``stream.custom_paths``): a ``.npz`` file with arrays ``x_train``, ``y_train``,
  ``x_test``, ``y_test`` (optional ``label_names``), or an image folder with one
  subfolder per class (:func:`load_task_path`); arrays are checked by :func:`check_tasks`
  (uint8 or [0, 1] float images, integer labels >= 0).
* labelled data (diagnose / finetune): ``.npz`` (``x``, ``y``), ``.csv`` or an image
  folder (:func:`read_labelled_file`), checked by :func:`labelled_arrays` (any numeric
  inputs, integral labels >= 0).
* unlabelled inputs (``method.revision_path``): :func:`load_revision_inputs`.

Every error is a :class:`~forgetlab.errors.DataError` naming the file (or task) and the problem.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "task.npz")
    >>> x = np.zeros((4, 1, 5, 5), np.uint8)
    >>> np.savez(path, x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x, y_test=np.array([1, 0, 1, 0]))
    >>> (x_train, y_train, x_test, y_test), names = load_task_path(path)
    >>> x_train.shape, names
    ((4, 1, 5, 5), ('0', '1'))
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgetlab.data.files import read_cache_json, write_cache_json
from forgetlab.errors import ConfigError, DataError, IncompatibleError

__all__ = [
    "CUSTOM_TEST_EVERY", "NPZ_KEYS", "check_tasks", "content_fingerprint", "labelled_arrays",
    "load_revision_inputs", "load_task_path", "load_task_paths", "read_labelled_file",
]

CUSTOM_TEST_EVERY = 5  # (choice) image folders without train/ and test/: every 5th image of a class is a test image
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
ArrayLike = Any  # a torch.Tensor or a numpy array
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _tensor(a: ArrayLike) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _check_nonnegative(y: np.ndarray | torch.Tensor, where: str) -> None:
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{where} must be >= 0. Got {int(y.min())}.")


@contextmanager
def _open_npz(path: Path, what: str) -> Iterator[Any]:
    """The archive of ``path``; any failure to read it is a DataError naming ``what`` and the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            yield archive
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises many types for a bad file
        raise DataError(f"{what} {str(path)!r} cannot be read as .npz ({type(exc).__name__}: {exc}).") from None


# ------------------------------------------------------------ task arrays ----

def _as_images(x: ArrayLike, where: str) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` from ``(N, C, H, W)`` or ``(N, H, W)`` uint8, or float in [0, 1]."""
    x = _tensor(x)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(f"{where}: images must be (N, C, H, W) or (N, H, W). Got shape {tuple(x.shape)}.")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if x.is_floating_point():
        if not bool(torch.isfinite(x).all()):
            bad = x[~torch.isfinite(x)][0]
            raise DataError(f"{where}: images must be finite numbers in [0, 1]. Got {float(bad)} values.")
        if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
            raise DataError(
                f"{where}: float images must lie in [0, 1] (they are stored as uint8 x 255). Got values in "
                f"[{float(x.min()):g}, {float(x.max()):g}]; pass uint8 images instead."
            )
        return torch.round(x * 255.0).to(torch.uint8).contiguous()
    raise DataError(f"{where}: images must be uint8 or float in [0, 1]. Got dtype {x.dtype}.")


def _as_labels(y: ArrayLike, n: int, where: str) -> torch.Tensor:
    """int64 ``(n,)`` labels >= 0 from integers (floats and booleans are refused)."""
    y = _tensor(y)
    if y.dim() != 1 or y.shape[0] != n or y.is_floating_point() or y.dtype == torch.bool:
        raise DataError(f"{where}: labels must be integers of shape ({n},). Got {y.dtype} of shape {tuple(y.shape)}.")
    y = y.long()
    _check_nonnegative(y, f"{where}: labels")
    return y


def check_tasks(
    tasks: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]], task_names: Sequence[str] | None = None
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every ``(x_train, y_train, x_test, y_test)`` as uint8 images and int64 labels, checked:
    non-empty splits and the same ``(C, H, W)`` in every task.

    Example:
        >>> x, y = np.zeros((2, 4, 4), np.uint8), np.array([0, 1])
        >>> [tuple(a.shape) for a in check_tasks([(x, y, x, y)])[0]]
        [(2, 1, 4, 4), (2,), (2, 1, 4, 4), (2,)]
    """
    if not tasks:
        raise ConfigError("The 'tasks' parameter must hold at least one (x_train, y_train, x_test, y_test) tuple. Got none.")
    prepared = []
    shape = None
    for index, task in enumerate(tasks):
        if len(task) != 4:
            raise ConfigError(f"Task {index + 1} must be a tuple (x_train, y_train, x_test, y_test). Got {len(task)} items.")
        where = f"task {index + 1}" + (f" ({task_names[index]})" if task_names else "")
        train_x, test_x = _as_images(task[0], f"{where}, x_train"), _as_images(task[2], f"{where}, x_test")
        train_y, test_y = _as_labels(task[1], len(train_x), f"{where}, y_train"), _as_labels(task[3], len(test_x), f"{where}, y_test")
        if len(train_x) == 0 or len(test_x) == 0:
            raise DataError(f"{where}: the train and test splits must not be empty. Got {len(train_x)} and {len(test_x)} examples.")
        for x, split in ((train_x, "x_train"), (test_x, "x_test")):
            if shape is None:
                shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != shape:
                raise IncompatibleError(f"{where}, {split}: images of shape {tuple(x.shape[1:])} do not match task 1's {shape}.")
        prepared.append((train_x, train_y, test_x, test_y))
    return prepared


# ------------------------------------------------------------- task files ----

def load_task_path(path: str | Path, image_size: int | None = None) -> tuple[Arrays, tuple[str, ...]]:
    """One task's ``(x_train, y_train, x_test, y_test)`` arrays and label names from a
    ``.npz`` file or an image folder.

    ``.npz``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (optional
    ``label_names``). Image folder: one subfolder per class, either under ``train/`` and
    ``test/`` (or ``val/``), or directly (then every 5th image of a class, by file name,
    is a test image). Images are decoded once (RGB, or grey when every image is grey;
    :func:`load_task_paths` makes grey tasks RGB when other tasks are in colour), at their
    own size or resized to ``image_size``, and cached on disk.

    Example:
        (x_train, y_train, x_test, y_test), names = load_task_path("pets/")
        names
        ('cat', 'dog')
    """
    path = Path(path).expanduser()
    if path.suffix == ".npz" and path.is_file():
        return _load_npz_task(path)
    if path.is_dir():
        return _load_image_folder(path, image_size)
    raise DataError(
        f"Custom task path {str(path)!r} must be a .npz file (arrays {', '.join(NPZ_KEYS)}) or an image folder "
        f"with one subfolder per class; {'it is neither' if path.exists() else 'it does not exist'}."
    )


def load_task_paths(paths: Sequence[str | Path], image_size: int | None = None) -> list[tuple[Arrays, tuple[str, ...]]]:
    """:func:`load_task_path` for every path; grey tasks are made RGB when other tasks are in colour.

    Example:
        tasks = load_task_paths(["pets/", "birds.npz"], image_size=32)
        [names for _, names in tasks]
        [('cat', 'dog'), ('0', '1', '2')]
    """
    loaded = [load_task_path(path, image_size) for path in paths]
    if {arrays[0].shape[1:2] for arrays, _ in loaded} == {(1,), (3,)}:  # grey folders next to colour ones
        loaded = [
            ((np.repeat(a[0], 3, axis=1), a[1], np.repeat(a[2], 3, axis=1), a[3]) if a[0].shape[1] == 1 else a, names)
            for a, names in loaded
        ]
    return loaded


def _load_npz_task(path: Path) -> tuple[Arrays, tuple[str, ...]]:
    with _open_npz(path, "Custom task file") as archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise DataError(f"Custom task file {str(path)!r} lacks array(s) {missing}; it holds {sorted(archive.files)}.")
        arrays = tuple(archive[k] for k in NPZ_KEYS)
        names = tuple(str(n) for n in archive["label_names"]) if "label_names" in archive.files else ()
    for key, array in zip(NPZ_KEYS, arrays):
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise DataError(
                f"Custom task file {str(path)!r}: array {key!r} holds {array[~np.isfinite(array)][0]} values; "
                "images must be finite numbers (uint8, or float in [0, 1])."
            )
    if not names:
        size = int(max(np.max(arrays[1], initial=0), np.max(arrays[3], initial=0))) + 1
        names = tuple(str(k) for k in range(size))
    return arrays, names  # type: ignore[return-value]


def _load_image_folder(path: Path, image_size: int | None) -> tuple[Arrays, tuple[str, ...]]:
    from forgetlab.data.cache import cache_key, cached_arrays
    from forgetlab.data.images import DECODER_VERSION, class_folders, decode_images, files_fingerprint, list_images, to_grey_if_grey

    train_root, test_root = path, None
    if (path / "train").is_dir():
        train_root = path / "train"
        test_root = next((path / name for name in ("test", "val") if (path / name).is_dir()), None)
    classes = class_folders(train_root)
    if not classes:
        raise DataError(f"Image folder {str(train_root)!r} must hold one subfolder per class; it holds none.")
    train_items: list[tuple[Path, int]] = []
    test_items: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        images = list_images(train_root / name)
        if not images:
            raise DataError(f"Class folder {str(train_root / name)!r} holds no images (.png, .jpg, ...).")
        if test_root is None:
            train_items += [(p, label) for k, p in enumerate(images) if k % CUSTOM_TEST_EVERY != CUSTOM_TEST_EVERY - 1]
            test_items += [(p, label) for k, p in enumerate(images) if k % CUSTOM_TEST_EVERY == CUSTOM_TEST_EVERY - 1]
        else:
            train_items += [(p, label) for p in images]
    if test_root is not None:
        extra = [c for c in class_folders(test_root) if c not in classes]
        if extra:
            raise DataError(f"Test folder {str(test_root)!r} has classes {extra} that {str(train_root)!r} lacks.")
        for name in class_folders(test_root):
            test_items += [(p, classes.index(name)) for p in list_images(test_root / name)]
    if not test_items:
        raise DataError(
            f"Image folder {str(path)!r} yields no test images: give it train/ and test/ subfolders, or at least "
            f"{CUSTOM_TEST_EVERY} images in a class (every {CUSTOM_TEST_EVERY}th is held out for testing)."
        )
    items = train_items + test_items
    key = cache_key(
        source="image-folder", size=image_size, decoder=DECODER_VERSION, classes=classes, n_train=len(train_items),
        files=files_fingerprint([p for p, _ in items], path),
    )

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        x = to_grey_if_grey(decode_images([p for p, _ in items], image_size, progress=path.name))
        y = np.array([label for _, label in items], dtype=np.int64)
        n = len(train_items)
        return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}, {"classes": classes}

    arrays, _ = cached_arrays(key, build)
    return tuple(arrays[k] for k in NPZ_KEYS), tuple(classes)  # type: ignore[return-value]


# ---------------------------------------------------------- labelled data ----

def labelled_arrays(x: ArrayLike, y: ArrayLike, source: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (uint8 kept, other numbers as finite float32, ``(N, ...)`` with N >= 1) and int64
    labels ``(N,)`` >= 0 (integral floats accepted), checked; errors start with ``source``.

    Example:
        >>> labelled_arrays(np.zeros((3, 2)), np.array([0.5, 1, 2]), "mine")
        Traceback (most recent call last):
        ...
        forgetlab.errors.DataError: mine: labels 'y' must be integers; got float64 values such as 0.5.
    """
    x_t = x.detach().cpu() if isinstance(x, torch.Tensor) else _tensor(x)
    y_np = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if x_t.dim() < 2:
        raise DataError(f"{source}: inputs 'x' must be (n_samples, ...) with at least 2 dimensions. Got shape {tuple(x_t.shape)}.")
    if x_t.shape[0] == 0:
        raise DataError(f"{source}: holds no examples (x has shape {tuple(x_t.shape)}).")
    if y_np.ndim != 1:
        raise DataError(f"{source}: labels 'y' must be 1-D (n_samples,). Got shape {y_np.shape}.")
    if y_np.shape[0] != x_t.shape[0]:
        raise DataError(f"{source}: x has {x_t.shape[0]} samples but y has {y_np.shape[0]}; they must match.")
    if y_np.dtype.kind == "f":
        bad = y_np[~np.isfinite(y_np) | (y_np != np.round(y_np))]
        if bad.size:
            raise DataError(f"{source}: labels 'y' must be integers; got {y_np.dtype} values such as {float(bad[0])!r}.")
        y_np = y_np.astype(np.int64)
    if y_np.dtype.kind not in "iu":
        raise DataError(f"{source}: labels 'y' must be integers; got dtype {y_np.dtype}.")
    _check_nonnegative(y_np, f"{source}: labels 'y'")
    if x_t.dtype == torch.uint8:
        pass
    elif x_t.is_floating_point() or x_t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        x_t = x_t.float()
        finite = torch.isfinite(x_t)
        if not bool(finite.all()):
            first = int((~finite).reshape(len(x_t), -1).any(1).nonzero()[0])
            raise DataError(f"{source}: inputs 'x' hold NaN or infinite values (first in sample {first}).")
    else:
        raise DataError(f"{source}: inputs 'x' must be numbers (float or uint8). Got dtype {x_t.dtype}.")
    return x_t.contiguous(), torch.from_numpy(y_np.astype(np.int64))


def read_labelled_file(
    path: str | Path, *, label_column: str = "label", image_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(x, y)`` (see :func:`labelled_arrays`) from a ``.npz`` file (arrays ``x``, ``y``,
    or ``x_train``, ``y_train``), a ``.csv`` file (a header row, integer ``label_column``,
    every other column a float feature) or an image folder (train/ and test/ merged).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "f.csv")
        >>> _ = open(path, "w").write("a,b,label\\n0.5,1,0\\n2,3,1\\n")
        >>> x, y = read_labelled_file(path)
        >>> x.tolist(), y.tolist()
        ([[0.5, 1.0], [2.0, 3.0]], [0, 1])
    """
    path = Path(path).expanduser()
    where = str(path)
    if path.is_dir():
        (x_train, y_train, x_test, y_test), _ = load_task_path(path, image_size)
        return labelled_arrays(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), where)
    if not path.is_file():
        raise DataError(f"Data file {where!r} does not exist.")
    if path.suffix == ".npz":
        with _open_npz(path, "Data file") as archive:
            keys = archive.files
            for xk, yk in (("x", "y"), ("x_train", "y_train")):
                if xk in keys and yk in keys:
                    x, y = archive[xk], archive[yk]
                    break
            else:
                raise DataError(f"Data file {where!r} must hold arrays 'x' and 'y' (or 'x_train' and 'y_train'); it holds {sorted(keys)}.")
        return labelled_arrays(x, y, where)
    if path.suffix == ".csv":
        return _read_csv(path, label_column)
    raise DataError(
        f"Data file {where!r} must be a .npz file (arrays x, y), a .csv file with a label column, or a folder "
        f"with one subfolder per class. Got suffix {path.suffix!r}."
    )


def _read_csv(path: Path, label_column: str) -> tuple[torch.Tensor, torch.Tensor]:
    where = str(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Data file {where!r} cannot be read as CSV ({exc}).") from None
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"Data file {where!r} is empty: it needs a header row and one row per example.")
    header = [cell.strip() for cell in rows[0]]
    if label_column not in header:
        raise DataError(
            f"Data file {where!r} has no label column {label_column!r}; its columns are {header[:20]}. "
            "Name the label column with --label-column."
        )
    if len(header) < 2:
        raise DataError(f"Data file {where!r} has no feature column besides {label_column!r}.")
    label_at = header.index(label_column)
    xs, ys = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"Data file {where!r}, line {line}: {len(row)} values for {len(header)} columns.")
        try:
            ys.append(int(row[label_at]))
        except ValueError:
            raise DataError(
                f"Data file {where!r}, line {line}: label {row[label_at]!r} in column {label_column!r} is not an integer."
            ) from None
        try:
            xs.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError as exc:
            raise DataError(f"Data file {where!r}, line {line}: a feature is not a number ({exc}).") from None
    if not ys:
        raise DataError(f"Data file {where!r} holds a header but no examples.")
    return labelled_arrays(np.array(xs, dtype=np.float32), np.array(ys, dtype=np.int64), where)


# ------------------------------------------------------- unlabelled inputs ----

def load_revision_inputs(path: str | Path, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Read unlabelled inputs for pseudo-rehearsal (``method.revision_path``): ``(N, C, H, W)``
    in pixel units (uint8, or float = 255 x the file's [0, 1] values), from a ``.npz``
    (array ``x``, or its only array), ``.npy`` or ``.pt`` file; channels-last is accepted.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npz")
        >>> np.savez(path, x=np.zeros((3, 8, 8), dtype=np.uint8))
        >>> tuple(load_revision_inputs(path, (1, 8, 8)).shape)
        (3, 1, 8, 8)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The revision inputs file {str(path)!r} (method.revision_path) does not exist.")
    try:
        if path.suffix in (".pt", ".pth"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            array = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        else:
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    keys = list(loaded.keys())
                    if "x" not in keys and len(keys) != 1:
                        raise DataError(f"{str(path)!r} holds arrays {keys}: name the inputs 'x'.")
                    array = loaded["x" if "x" in keys else keys[0]]
            else:
                array = loaded
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy/torch raise many types for a bad file
        raise DataError(f"Cannot read revision inputs {str(path)!r} ({type(exc).__name__}: {exc}).") from None
    x = torch.from_numpy(np.ascontiguousarray(array))
    channels, height, width = input_shape
    if x.dim() == 3 and channels == 1:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and tuple(x.shape[1:]) == (height, width, channels) and tuple(x.shape[1:]) != input_shape:
        x = x.permute(0, 3, 1, 2).contiguous()
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] == 0:
        raise DataError(
            f"Revision inputs in {str(path)!r} have shape {tuple(x.shape)}; the stream's inputs are "
            f"(N, {channels}, {height}, {width})."
        )
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise DataError(f"Revision inputs in {str(path)!r} must be uint8 pixels or floats in [0, 1]. Got {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"Revision inputs in {str(path)!r} must be finite numbers. Got {float(x[~torch.isfinite(x)][0])} values.")
    return x.float() * 255.0


# ------------------------------------------------------ content identity ----

FINGERPRINT_MEMO = "content-hashes.json"  # in the per-user cache folder
SETTLED_NS = 2_000_000_000  # a file modified less than 2 s before it is hashed is never memoised
_CHUNK_BYTES = 1 << 20


def content_fingerprint(paths: Sequence[str | Path]) -> str:
    """blake2b hex digest of the content of ``paths``, in order: a file's bytes; a folder's
    files (recursively, every regular file) as sorted relative paths with their bytes; a
    missing path as "missing" (its loader then raises). Names outside a folder do not count:
    the same bytes under another name give the same fingerprint.

    Files are read in 1 MiB chunks, and a file's digest is memoised in
    ``<user cache>/content-hashes.json`` under (absolute path, size, mtime_ns), so an
    unchanged file is not read again. A file modified less than 2 s before it is hashed
    is not memoised (timestamps are coarser than a quick rewrite). Caveat: a file
    rewritten with the same size whose mtime is then set back (``os.utime``, some copy
    tools) keeps its memoised digest; delete the memo file (always safe) to rehash.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> a, b = Path(folder, "a.npz"), Path(folder, "b.npz")
        >>> _ = a.write_bytes(b"same"), b.write_bytes(b"same")
        >>> content_fingerprint([a]) == content_fingerprint([b]) != content_fingerprint([a, b])
        True
    """
    memo = _read_memo()
    before = dict(memo)
    digest = hashlib.blake2b(digest_size=32)
    for path in (Path(p).expanduser() for p in paths):
        if path.is_file():
            digest.update(b"file\0" + _file_digest(path, memo).encode())
        elif path.is_dir():
            files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
            digest.update(f"dir\0{len(files)}\0".encode())
            for name, file in files:
                raw = os.fsencode(name)
                digest.update(b"%d\0%s\0%s" % (len(raw), raw, _file_digest(file, memo).encode()))
        else:
            digest.update(b"missing\0")
        digest.update(b"\n")
    if memo != before:
        _write_memo(memo)
    return digest.hexdigest()


def _file_digest(path: Path, memo: dict[str, Any]) -> str:
    st = path.stat()
    key, stamp = str(path.absolute()), [st.st_size, st.st_mtime_ns]
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("blake2b"), str):
        return known["blake2b"]
    digest = hashlib.blake2b(digest_size=32)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"Cannot read input file {str(path)!r} to fingerprint its content: {exc.strerror or exc}.") from None
    value = digest.hexdigest()
    after = path.stat()
    if time.time_ns() - st.st_mtime_ns >= SETTLED_NS and [after.st_size, after.st_mtime_ns] == stamp:
        memo[key] = {"stamp": stamp, "blake2b": value}
    return value


def _read_memo() -> dict[str, Any]:
    return read_cache_json(FINGERPRINT_MEMO)


def _write_memo(memo: dict[str, Any]) -> None:
    write_cache_json(FINGERPRINT_MEMO, memo)
