"""User data for diagnose / finetune: a ``.npz`` file, a CSV of features, or an image folder.

* ``.npz``: arrays ``x`` (inputs ``(N, ...)``) and ``y`` (integer labels ``(N,)``);
  ``x_train`` / ``y_train`` are accepted when ``x`` / ``y`` are absent (other arrays
  are ignored).
* ``.csv``: a header row, one row per example; the label column (default ``label``)
  holds integers, every other column is a float feature: ``x`` is ``(N, n_features)``.
* a folder with one subfolder per class (images; ``train/`` and ``test/`` subfolders
  are merged): ``x`` is uint8 ``(N, C, H, W)``, labels follow the sorted class names.

Inputs are fed to the model as given, as float32; uint8 inputs (images) are scaled to
[0, 1]. Any other normalisation is yours: apply it before saving the file. Every error
names the file and the problem.

Example:
    >>> import tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(path, x=np.zeros((6, 4), dtype=np.float32), y=np.array([0, 1, 2, 0, 1, 2]))
    >>> data = load_user_data(path)
    >>> tuple(data.x.shape), data.n_classes
    ((6, 4), 3)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgetlab.errors import ConfigError, DataError, IncompatibleError

__all__ = ["UserData", "as_inputs", "check_fits", "load_user_data", "split_data", "user_data"]


@dataclass(frozen=True)
class UserData:
    """Inputs ``x`` (float32 ``(N, ...)``, or uint8 images ``(N, C, H, W)``) and int64 labels
    ``y`` ``(N,)``; ``source`` names where they came from (for error messages)."""

    x: torch.Tensor
    y: torch.Tensor
    source: str = "data"

    @property
    def n_samples(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        """``max label + 1``."""
        return int(self.y.max()) + 1 if self.n_samples else 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def as_inputs(x: torch.Tensor) -> torch.Tensor:
    """Model inputs: uint8 scaled to [0, 1], anything else as float32.

    Example:
        >>> as_inputs(torch.tensor([255], dtype=torch.uint8)).tolist()
        [1.0]
    """
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def user_data(x: Any, y: Any, source: str = "data") -> UserData:
    """Validate in-memory arrays (numpy or torch) as :class:`UserData`.

    Example:
        >>> user_data(np.zeros((3, 2)), np.array([0.5, 1, 2]), "mine")
        Traceback (most recent call last):
        ...
        forgetlab.errors.DataError: mine: labels 'y' must be integers; got float64 values such as 0.5.
    """
    x_t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach().cpu()
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
    if y_np.min() < 0:
        raise DataError(f"{source}: labels 'y' must be >= 0. Got {int(y_np.min())}.")
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
    return UserData(x_t.contiguous(), torch.from_numpy(y_np.astype(np.int64)), source)


def load_user_data(path: str | Path, *, label_column: str = "label", image_size: int | None = None) -> UserData:
    """Read ``path`` (``.npz``, ``.csv`` or an image folder) as validated :class:`UserData`.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "f.csv")
        >>> _ = open(path, "w").write("a,b,label\\n0.5,1,0\\n2,3,1\\n")
        >>> data = load_user_data(path)
        >>> data.x.tolist(), data.y.tolist()
        ([[0.5, 1.0], [2.0, 3.0]], [0, 1])
    """
    path = Path(path).expanduser()
    where = str(path)
    if path.is_dir():
        from forgetlab.data.streams import load_task_path

        (x_train, y_train, x_test, y_test), _ = load_task_path(path, image_size)
        return user_data(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), where)
    if not path.is_file():
        raise DataError(f"Data file {where!r} does not exist.")
    if path.suffix == ".npz":
        return _load_npz(path)
    if path.suffix == ".csv":
        return _load_csv(path, label_column)
    raise DataError(
        f"Data file {where!r} must be a .npz file (arrays x, y), a .csv file with a label column, or a folder "
        f"with one subfolder per class. Got suffix {path.suffix!r}."
    )


def _load_npz(path: Path) -> UserData:
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = archive.files
            for xk, yk in (("x", "y"), ("x_train", "y_train")):
                if xk in keys and yk in keys:
                    x, y = archive[xk], archive[yk]
                    break
            else:
                raise DataError(f"Data file {where!r} must hold arrays 'x' and 'y' (or 'x_train' and 'y_train'); it holds {sorted(keys)}.")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy raises many types for a bad file
        raise DataError(f"Data file {where!r} cannot be read as .npz ({type(exc).__name__}: {exc}).") from None
    return user_data(x, y, where)


def _load_csv(path: Path, label_column: str) -> UserData:
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
    return user_data(np.array(xs, dtype=np.float32), np.array(ys, dtype=np.int64), where)


def check_fits(data: UserData, model: Any) -> None:
    """Raise :class:`IncompatibleError` if ``data`` does not fit ``model`` (a WrappedModel):
    input shape (both shapes), or labels beyond the model's outputs. Runs one sample
    through the model when its input shape is unknown.

    Example:
        >>> from torch import nn
        >>> from forgetlab.user.wrap import WrappedModel
        >>> model = WrappedModel(nn.Sequential(nn.Linear(3, 2)), input_shape=(3,))
        >>> check_fits(user_data(np.zeros((2, 4)), [0, 1], "d.npz"), model)
        Traceback (most recent call last):
        ...
        forgetlab.errors.IncompatibleError: d.npz: inputs of shape (4,) do not fit the model, which expects (3,).
    """
    if model.input_shape is not None and data.input_shape != tuple(model.input_shape):
        raise IncompatibleError(
            f"{data.source}: inputs of shape {data.input_shape} do not fit the model, which expects {tuple(model.input_shape)}."
        )
    if model.input_shape is None:
        try:
            with torch.no_grad():
                model.eval()
                model(as_inputs(data.x[:2]).to(next(model.parameters()).device))
        except IncompatibleError as exc:
            raise IncompatibleError(f"{data.source}: inputs of shape {data.input_shape} do not fit the model: {exc}") from None
    if data.n_classes > model.n_outputs:
        raise IncompatibleError(
            f"{data.source}: labels go up to {data.n_classes - 1} but the model has {model.n_outputs} outputs "
            f"(labels 0..{model.n_outputs - 1}). New classes need a larger final layer."
        )


def split_data(data: UserData, test_fraction: float, seed: int = 0) -> tuple[UserData, UserData]:
    """A seeded random ``(train, test)`` split with ``round(N * test_fraction)`` (>= 1) test examples.

    Example:
        >>> train, test = split_data(user_data(np.zeros((10, 2)), np.arange(10) % 2), 0.2)
        >>> train.n_samples, test.n_samples
        (8, 2)
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"The 'test_fraction' parameter must be in (0, 1). Got {test_fraction}.")
    n = data.n_samples
    if n < 2:
        raise DataError(f"{data.source}: needs at least 2 examples to hold some out for testing. Got {n}.")
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    return (
        UserData(data.x[train], data.y[train], f"{data.source} (train part)"),
        UserData(data.x[test], data.y[test], f"{data.source} (test part)"),
    )
