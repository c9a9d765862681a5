"""Input checks shared by the analysis functions (never ``assert`` on user input)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from forgetlab.errors import ConfigError, IncompatibleError, NumericalError

# A similarity further than this outside its range is a bug (SPEC §7): raise, never clamp.
RANGE_TOLERANCE = 1e-6


def as_matrix(value: Any, name: str) -> torch.Tensor:
    """``value`` as a 2-D floating tensor ``(n_samples, n_features)``, detached from any
    autograd graph (similarities are measurements, not losses); raises on anything else."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"The {name!r} parameter must be a torch.Tensor or numpy array of shape "
            f"(n_samples, n_features). Got {type(value).__name__} instead."
        )
    if value.dim() != 2:
        raise IncompatibleError(
            f"The {name!r} parameter must have shape (n_samples, n_features). Got shape "
            f"{tuple(value.shape)}; flatten conv maps first with {name}.flatten(1) "
            f"(or average-pool them: {name}.mean(dim=(2, 3)))."
        )
    value = value.detach()
    if not value.is_floating_point():
        value = value.to(torch.float32)
    elif value.dtype not in (torch.float32, torch.float64):
        value = value.to(torch.float32)
    return value


def check_pair(x: torch.Tensor, y: torch.Tensor, *, min_samples: int = 2) -> None:
    """Same number of rows, same device, at least ``min_samples`` rows."""
    if x.shape[0] != y.shape[0]:
        raise IncompatibleError(
            f"x and y must have the same number of samples (rows). Got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}."
        )
    if x.device != y.device:
        raise IncompatibleError(
            f"x and y must be on the same device. Got x on {x.device} and y on {y.device}."
        )
    if x.shape[0] < min_samples:
        raise IncompatibleError(
            f"This estimator needs at least {min_samples} samples. Got x of shape "
            f"{tuple(x.shape)} and y of shape {tuple(y.shape)}."
        )


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` or a ``ConfigError`` naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"The {name!r} parameter must be an integer >= {minimum}. Got {value!r} instead.")
    return int(value)


def check_in_range(value: float, measure: str, low: float = 0.0, high: float = 1.0) -> float:
    """Return ``value`` unchanged if it lies in ``[low, high]`` up to ``1e-6``; raise otherwise."""
    if not math.isfinite(value):
        raise NumericalError(f"{measure} is {value}: the inputs are degenerate (zero variance?).")
    if value < low - RANGE_TOLERANCE or value > high + RANGE_TOLERANCE:
        raise NumericalError(
            f"{measure} = {value!r} lies outside [{low}, {high}] by more than {RANGE_TOLERANCE}; "
            "this is a numerical bug or invalid input and is not clamped."
        )
    return value
