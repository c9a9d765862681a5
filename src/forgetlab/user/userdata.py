"""User data for diagnose / finetune: a ``.npz`` file, a CSV of features, or an image folder
(read and checked by :mod:`forgetlab.data.custom`, the one loader of custom data):

* ``.npz``: arrays ``x`` (inputs ``(N, ...)``) and ``y`` (integer labels ``(N,)``);
  ``x_train`` / ``y_train`` are accepted when ``x`` / ``y`` are absent (other arrays
  are ignored).
* ``.csv``: a header row, one row per example; the label column (default ``label``)
  holds integers, every other column is a float feature: ``x`` is ``(N, n_features)``.
* a folder with one subfolder per class (images; ``train/`` and ``test/`` subfolders
  are merged): ``x`` is uint8 ``(N, C, H, W)``, labels follow the sorted class names.

What is specific to a model lives here: inputs are fed to the model as given, as float32;
uint8 inputs (images) are scaled to [0, 1]. Any other normalisation is yours: apply it
before saving the file, except for a model that records its own
(:class:`InputNormalization`: forgetlab checkpoints), which is applied to *raw* inputs:
uint8 pixels 0-255, or floats in [0, 1] (pixel / 255), the images a custom stream
takes. Every error names the file and the problem.

Example:
    >>> import tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> np.savez(path, x=np.zeros((6, 4), dtype=np.float32), y=np.array([0, 1, 2, 0, 1, 2]))
    >>> data = load_user_data(path)
    >>> tuple(data.x.shape), data.n_classes
    ((6, 4), 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np  # noqa: F401 - the examples use it
import torch

from forgetlab.data.custom import labelled_arrays, read_labelled_file
from forgetlab.errors import ConfigError, DataError, IncompatibleError

__all__ = ["INPUT_NORMALIZATIONS", "InputNormalization", "chosen_normalization", "UserData", "as_inputs", "check_fits", "load_user_data", "normalize_inputs", "split_data", "user_data"]


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


@dataclass(frozen=True)
class InputNormalization:
    """The input normalisation a model was trained with: ``(x - mean) / std`` per channel
    (dimension 1) of raw inputs ``x`` in [0, 1] (uint8 pixels / 255), as forgetlab's
    stream pipeline does (``stream.normalize = none`` records mean 0, std 1). ``origin``
    says where it was read (a checkpoint, a ``.json`` sidecar)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    origin: str = ""

    def describe(self) -> str:
        """One line: what is applied to what.

        Example:
            >>> InputNormalization((0.5,), (0.25,), "task-1.pt").describe()
            '(x - mean) / std with mean [0.5], std [0.25] (recorded in task-1.pt), x = raw inputs in [0, 1] (uint8 pixels / 255)'
        """
        numbers = lambda values: "[" + ", ".join(f"{v:.4g}" for v in values) + "]"  # noqa: E731
        where = f" (recorded in {self.origin})" if self.origin else ""
        return f"(x - mean) / std with mean {numbers(self.mean)}, std {numbers(self.std)}{where}, x = raw inputs in [0, 1] (uint8 pixels / 255)"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "origin": self.origin}


def normalize_inputs(data: UserData, normalization: InputNormalization) -> UserData:
    """``data`` with ``normalization`` applied to its raw inputs: uint8 pixels (scaled to
    [0, 1] first) or floats in [0, 1]; other floats are refused (already normalised, or
    not pixels) with a :class:`DataError` that says what to pass instead.

    Example:
        >>> norm = InputNormalization((0.5,), (0.25,))
        >>> normalize_inputs(user_data(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), [0], "a.npz"), norm).x.flatten().tolist()
        [-2.0, 2.0]
        >>> normalize_inputs(user_data(torch.full((1, 1, 1, 2), -0.4), [0], "b.npz"), norm)
        Traceback (most recent call last):
        ...
        forgetlab.errors.DataError: b.npz: holds float inputs in [-0.4, -0.4], not raw inputs (uint8 pixels 0-255 or floats in [0, 1]), so the model's recorded input normalisation cannot be applied. If they are already normalised, pass --input-normalization none (input_normalization="none"); else save the raw pixels.
    """
    x = data.x
    if x.dtype != torch.uint8 and x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(
            f"{data.source}: holds float inputs in [{float(x.min()):.3g}, {float(x.max()):.3g}], not raw inputs (uint8 "
            "pixels 0-255 or floats in [0, 1]), so the model's recorded input normalisation cannot be applied. If they "
            'are already normalised, pass --input-normalization none (input_normalization="none"); else save the raw pixels.'
        )
    channels = len(normalization.mean)
    if channels != 1 and (x.dim() < 2 or x.shape[1] != channels):
        raise IncompatibleError(
            f"{data.source}: inputs of shape {data.input_shape} do not have the {channels} channels (dimension 1) of the "
            "model's recorded input normalisation."
        )
    view = (1, channels, *([1] * max(x.dim() - 2, 0))) if x.dim() >= 2 else (channels,)
    mean = torch.tensor(normalization.mean, dtype=torch.float32).view(view)
    std = torch.tensor(normalization.std, dtype=torch.float32).view(view)
    return UserData((as_inputs(x) - mean) / std, data.y, data.source)


INPUT_NORMALIZATIONS = ("auto", "none")


def chosen_normalization(model: Any, mode: str) -> tuple[InputNormalization | None, dict[str, Any]]:
    """What ``mode`` (``input_normalization``) means for ``model``: ``auto`` applies the
    normalisation the model records (``model.input_normalization``; none recorded: inputs
    as given), ``none`` feeds the inputs as given. Returns that normalisation (or ``None``)
    and its JSON record (``mode``, ``applied``, ``mean``, ``std``, ``origin``, ``description``).

    Example:
        >>> from torch import nn
        >>> from forgetlab.user.wrap import WrappedModel
        >>> chosen_normalization(WrappedModel(nn.Sequential(nn.Linear(2, 2))), "auto")[1]["description"]
        'none: inputs as given (uint8 scaled to [0, 1]); the model records no input normalisation'
    """
    if mode not in INPUT_NORMALIZATIONS:
        raise ConfigError(
            "The 'input_normalization' parameter (--input-normalization) must be 'auto' (apply the model's recorded "
            f"normalisation) or 'none' (inputs as given). Got {mode!r}."
        )
    recorded: InputNormalization | None = getattr(model, "input_normalization", None)
    chosen = recorded if mode == "auto" else None
    if chosen is not None:
        text = chosen.describe()
    elif recorded is not None:
        text = f"none (input_normalization 'none'): inputs as given, already normalised; the model records {recorded.describe()}"
    else:
        text = "none: inputs as given (uint8 scaled to [0, 1]); the model records no input normalisation"
    record = {"mode": mode, "applied": chosen is not None, **(chosen.to_dict() if chosen else {"mean": None, "std": None, "origin": None}),
              "description": text}
    return chosen, record


def as_inputs(x: torch.Tensor) -> torch.Tensor:
    """Model inputs: uint8 scaled to [0, 1], anything else as float32.

    Example:
        >>> as_inputs(torch.tensor([255], dtype=torch.uint8)).tolist()
        [1.0]
    """
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


def user_data(x: Any, y: Any, source: str = "data") -> UserData:
    """Validate in-memory arrays (numpy or torch) as :class:`UserData`
    (the checks: :func:`forgetlab.data.custom.labelled_arrays`).

    Example:
        >>> user_data(np.zeros((3, 2)), np.array([0.5, 1, 2]), "mine")
        Traceback (most recent call last):
        ...
        forgetlab.errors.DataError: mine: labels 'y' must be integers; got float64 values such as 0.5.
    """
    return UserData(*labelled_arrays(x, y, source), source)


def load_user_data(path: str | Path, *, label_column: str = "label", image_size: int | None = None) -> UserData:
    """Read ``path`` (``.npz``, ``.csv`` or an image folder) as validated :class:`UserData`
    (the reader: :func:`forgetlab.data.custom.read_labelled_file`).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "f.csv")
        >>> _ = open(path, "w").write("a,b,label\\n0.5,1,0\\n2,3,1\\n")
        >>> data = load_user_data(path)
        >>> data.x.tolist(), data.y.tolist()
        ([[0.5, 1.0], [2.0, 3.0]], [0, 1])
    """
    x, y = read_labelled_file(path, label_column=label_column, image_size=image_size)
    return UserData(x, y, str(Path(path).expanduser()))


def check_fits(data: UserData, model: Any, *, check_labels: bool = True) -> None:
    """Raise :class:`IncompatibleError` if ``data`` does not fit ``model`` (a WrappedModel):
    input shape (both shapes), or (``check_labels``) labels beyond the model's outputs. Runs one sample
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
    if check_labels and data.n_classes > model.n_outputs:
        raise IncompatibleError(
            f"{data.source}: labels go up to {data.n_classes - 1} but the model has {model.n_outputs} outputs "
            f"(labels 0..{model.n_outputs - 1})."
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
