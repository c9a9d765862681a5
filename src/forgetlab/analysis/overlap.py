"""Trace overlap of PSD matrices and the task-similarity helper (SPEC §3).

``TO(A, B) = Tr(AB) / sqrt(Tr(A²) Tr(B²))`` in ``[0, 1]`` for PSD A, B. Task similarity
(choice, SPEC §3): the trace overlap of one model's Fisher on two tasks' data
(``form="fisher"``, diagonal), or of the uncentred second-moment matrices of its
penultimate features (``form="gram"``: ``M = ΦᵀΦ / n``, so ``Tr(M_a M_b)`` is the squared
Frobenius norm of the cross Gram / last-layer NTK ``Φ_a Φ_bᵀ`` up to scale).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Union

import torch
from torch import nn

from forgetlab.analysis._checks import NumericalError, check_in_range, check_positive_int
from forgetlab.analysis._linalg import gram_upper, symmetrize_upper
from forgetlab.analysis.activations import Prepare, eval_mode, iter_batches, model_device
from forgetlab.analysis.fisher import diagonal_fisher
from forgetlab.errors import ConfigError, IncompatibleError

__all__ = ["task_similarity", "trace_overlap"]

_F64 = torch.float64
_FORMS = ("fisher", "gram")
Matrix = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def _flatten(value: Matrix, name: str, keys: list[str] | None) -> torch.Tensor:
    if isinstance(value, Mapping):
        if keys is not None and list(value) != keys:
            raise IncompatibleError(
                f"Fisher dicts a and b must have the same parameter names in the same order. "
                f"Got {list(value)[:5]}... vs {keys[:5]}..."
            )
        return torch.cat([torch.as_tensor(v).reshape(-1).to(_F64) for v in value.values()])
    if not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"The {name!r} parameter must be a tensor (1-D diagonal or 2-D matrix) or a dict of "
            f"tensors (a diagonal Fisher). Got {type(value).__name__}."
        )
    return value.to(_F64)


def trace_overlap(a: Matrix, b: Matrix) -> float:
    """``Tr(AB) / sqrt(Tr(A²) Tr(B²))`` for PSD ``a``, ``b``; in ``[0, 1]``.

    Each is a 1-D tensor (the diagonal of a diagonal matrix), a 2-D symmetric matrix,
    or a dict of tensors (a diagonal Fisher from :func:`diagonal_fisher`, flattened in
    key order). Computed in float64. Negative diagonal entries, an asymmetric matrix or
    a result outside [0, 1] (a matrix that is not PSD) raise.

    Example:
        >>> import torch
        >>> trace_overlap(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
        0.0
        >>> round(trace_overlap(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])), 12)
        1.0
    """
    keys = list(a) if isinstance(a, Mapping) else None
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise ConfigError("trace_overlap needs a and b of the same kind: both tensors or both Fisher dicts.")
    x = _flatten(a, "a", None)
    y = _flatten(b, "b", keys)
    if x.shape != y.shape or x.dim() not in (1, 2):
        raise IncompatibleError(
            "trace_overlap needs a and b of the same shape, both 1-D (diagonals) or both 2-D (square). "
            f"Got a of shape {tuple(x.shape)} and b of shape {tuple(y.shape)}."
        )
    if x.dim() == 2 and x.shape[0] != x.shape[1]:
        raise IncompatibleError(f"trace_overlap needs square matrices. Got a of shape {tuple(x.shape)} and b of shape {tuple(y.shape)}.")
    for name, m in (("a", x), ("b", y)):
        if not bool(torch.isfinite(m).all()):
            raise NumericalError(f"The {name!r} parameter of trace_overlap contains NaN or infinite values.")
        diagonal = m if m.dim() == 1 else m.diagonal()
        if float(diagonal.min()) < 0.0:
            raise ConfigError(
                f"The {name!r} parameter of trace_overlap must be PSD: its diagonal has a negative "
                f"entry {float(diagonal.min())!r}."
            )
        if m.dim() == 2:
            scale = float(m.abs().max())
            if float((m - m.T).abs().max()) > 1e-8 * max(scale, 1e-300):
                raise ConfigError(f"The {name!r} parameter of trace_overlap must be a symmetric (PSD) matrix.")
    if x.dim() == 1:
        cross, xx, yy = float(x @ y), float(x @ x), float(y @ y)
    else:  # Tr(AB) = Σ A_ij B_ji = Σ A∘B for symmetric B
        cross = float(torch.dot(x.reshape(-1), y.reshape(-1)))
        xx, yy = float(x.square().sum()), float(y.square().sum())
    if xx <= 0.0 or yy <= 0.0:
        raise NumericalError(f"trace_overlap is undefined for a zero matrix (Tr(A²)={xx}, Tr(B²)={yy}).")
    return check_in_range(cross / math.sqrt(xx * yy), "trace overlap")


def _feature_moment(
    model: nn.Module,
    inputs: Any,
    *,
    batch_size: int,
    prepare: Prepare | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    features = getattr(model, "features", None)
    if not callable(features):
        raise ConfigError(
            f"form='gram' needs penultimate features: {type(model).__name__} has no features(x) method "
            "(every BlockModel has one). Use form='fisher'."
        )
    upper: torch.Tensor | None = None
    n = 0
    target = model_device(model, device)
    for x, _ in iter_batches(inputs, batch_size=batch_size, device=target, prepare=prepare):
        with eval_mode(model), torch.no_grad():
            phi = features(x)
        phi = phi.reshape(phi.shape[0], -1)
        product = gram_upper(phi).to(_F64)
        upper = product if upper is None else upper + product
        n += phi.shape[0]
    if upper is None:
        raise ConfigError("The inputs of task_similarity hold no samples.")
    return symmetrize_upper(upper) / n


def task_similarity(
    model: nn.Module,
    inputs_a: torch.Tensor | Iterable[Any],
    inputs_b: torch.Tensor | Iterable[Any],
    *,
    targets_a: torch.Tensor | None = None,
    targets_b: torch.Tensor | None = None,
    form: str = "fisher",
    kind: str = "empirical",
    head_indices: tuple[int, int] = (0, 0),
    batch_size: int = 128,
    prepare: Prepare | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Similarity of two tasks seen through one (task-1) model: a trace overlap in [0, 1].

    ``form="fisher"`` (default): overlap of the model's exact diagonal Fisher
    (:func:`diagonal_fisher`, ``kind`` empirical or true) on task A's data (head
    ``head_indices[0]``) and on task B's data (head ``head_indices[1]``).
    ``form="gram"``: overlap of the penultimate features' uncentred second moments
    ``ΦᵀΦ/n`` (``model.features``); labels are not used.

    Example:
        >>> import torch
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(2,), width=16)
        >>> x = torch.rand(64, 1, 8, 8)
        >>> y = torch.randint(0, 2, (64,))
        >>> round(task_similarity(model, x, x, targets_a=y, targets_b=y), 6)
        1.0
        >>> 0.0 <= task_similarity(model, x, torch.rand(64, 1, 8, 8), form="gram") <= 1.0
        True
    """
    if form not in _FORMS:
        raise ConfigError(f"The 'form' parameter of task_similarity must be one of {_FORMS}. Got {form!r} instead.")
    batch_size = check_positive_int(batch_size, "batch_size")
    if form == "gram":
        return trace_overlap(*(
            _feature_moment(model, inputs, batch_size=batch_size, prepare=prepare, device=device)
            for inputs in (inputs_a, inputs_b)
        ))
    return trace_overlap(*(
        diagonal_fisher(
            model, inputs, targets, head_index=head, kind=kind,
            batch_size=batch_size, prepare=prepare, generator=generator, device=device,
        )
        for inputs, targets, head in ((inputs_a, targets_a, head_indices[0]), (inputs_b, targets_b, head_indices[1]))
    ))
