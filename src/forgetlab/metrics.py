"""Continual-learning metrics: pure functions of the accuracy matrix (SPEC §5).

``R[i, j]`` is the test accuracy on task ``j`` after training through task ``i``
(0-based here; ``T`` tasks, so ``R`` is ``T x T``).

Example:
    >>> import numpy as np
    >>> R = np.array([[0.9, 0.1], [0.6, 0.8]])
    >>> round(average_accuracy(R), 3), round(backward_transfer(R), 3), round(forgetting(R), 3)
    (0.7, -0.3, 0.3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forgetlab.errors import IncompatibleError


def _matrix(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    matrix = np.asarray(R, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise IncompatibleError(
            f"The accuracy matrix R must be square T x T with T >= 1. Got shape {matrix.shape}."
        )
    return matrix


def average_accuracy(R: Sequence[Sequence[float]] | np.ndarray) -> float:
    """ACC = mean_j R[T-1, j]: mean accuracy over all tasks after the last one."""
    matrix = _matrix(R)
    return float(matrix[-1].mean())


def backward_transfer(R: Sequence[Sequence[float]] | np.ndarray) -> float:
    """BWT = mean_{i < T-1} (R[T-1, i] - R[i, i]); negative means forgetting. 0 for T = 1."""
    matrix = _matrix(R)
    n_tasks = matrix.shape[0]
    if n_tasks == 1:
        return 0.0
    index = np.arange(n_tasks - 1)
    return float((matrix[-1, index] - matrix[index, index]).mean())


def forward_transfer(R: Sequence[Sequence[float]] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> float:
    """FWT = mean_{i >= 1} (R[i-1, i] - b[i]): accuracy on a task before training on it,
    above the baseline ``b`` (e.g. each task's accuracy at initialisation). 0 for T = 1."""
    matrix = _matrix(R)
    base = np.asarray(baseline, dtype=np.float64)
    n_tasks = matrix.shape[0]
    if base.shape != (n_tasks,):
        raise IncompatibleError(
            f"The baseline must hold one accuracy per task, shape ({n_tasks},). Got shape {base.shape}."
        )
    if n_tasks == 1:
        return 0.0
    index = np.arange(1, n_tasks)
    return float((matrix[index - 1, index] - base[index]).mean())


def forgetting_per_task(R: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """f_j = max_{l < T-1} R[l, j] - R[T-1, j] for every task j < T-1 (shape ``(T-1,)``),
    the maximum taken over every row before the last, as SPEC §5 defines it."""
    matrix = _matrix(R)
    return matrix[:-1, :-1].max(axis=0, initial=-np.inf) - matrix[-1, :-1]


def forgetting(R: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Average forgetting: mean of :func:`forgetting_per_task`; 0 for T = 1."""
    per_task = forgetting_per_task(R)
    return float(per_task.mean()) if per_task.size else 0.0


def summary(R: Sequence[Sequence[float]] | np.ndarray) -> dict[str, float]:
    """ACC, BWT and forgetting of one accuracy matrix, as a dict."""
    return {"acc": average_accuracy(R), "bwt": backward_transfer(R), "forgetting": forgetting(R)}
