"""Subspace similarity of top-k PCA bases (SPEC §3).

``SubspaceSim_k(X, Y) = ||V_kᵀ U_k||²_F / k`` with ``V_k``, ``U_k`` the orthonormal top-k
principal directions of column-centred X and Y (same feature space): the mean squared
cosine of the k principal angles, in ``[0, 1]``. Bases come from the float64 scatter
matrix ``XcᵀXc`` (p x p) when features are at most the samples, otherwise from the n x n
Gram ``XcXcᵀ``: ``V_k = XcᵀU_k / s_k`` from its top-k eigenvectors ``U_k`` (the same
subspace as an SVD of Xc, 2.9x faster at 5,000 x 8,192: ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import torch

from forgetlab.analysis._checks import as_matrix, check_in_range, check_positive_int
from forgetlab.analysis._linalg import gram_upper, symmetrize_upper
from forgetlab.errors import ConfigError, IncompatibleError

__all__ = ["pca_basis", "subspace_similarity"]

_F64 = torch.float64
# Eigenvalues below this fraction of the largest count as zero when checking k <= rank.
_RANK_TOLERANCE = 1e-10


def _top_eigen(scatter: torch.Tensor, k: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest eigenvalues (descending) and their eigenvectors of a PSD matrix,
    checked to be non-zero (k <= rank)."""
    values, vectors = torch.linalg.eigh(scatter)  # ascending
    values = values.flip(0)
    largest = float(values[0]) if values.numel() else 0.0
    if largest <= 0.0 or float(values[k - 1]) <= _RANK_TOLERANCE * largest:
        rank = int((values > _RANK_TOLERANCE * max(largest, 0.0)).sum()) if largest > 0 else 0
        raise ConfigError(
            f"The 'k' parameter must be <= the rank of {name} ({rank}) for its top-k principal "
            f"subspace to be defined. Got k={k}."
        )
    return values[:k], vectors.flip(1)[:, :k]


def pca_basis(x: torch.Tensor, k: int) -> torch.Tensor:
    """Orthonormal top-``k`` principal directions of ``x`` (n, p): float64 ``(p, k)``.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 5, dtype=torch.float64) * torch.tensor([5.0, 1, 1, 1, 0.1], dtype=torch.float64)
        >>> basis = pca_basis(x, 1)
        >>> tuple(basis.shape), bool(basis[0, 0].abs() > 0.99)
        ((5, 1), True)
    """
    x = as_matrix(x, "x")
    k = check_positive_int(k, "k")
    n, p = x.shape
    if k > min(n - 1, p):
        raise ConfigError(
            f"The 'k' parameter must be <= min(n_samples - 1, n_features) = {min(n - 1, p)} for x of "
            f"shape {tuple(x.shape)}. Got k={k}."
        )
    if p <= n:
        shifted = x - x.mean(0)  # float32 products of the shifted data, float64 sums
        total = shifted.sum(0).to(_F64)
        scatter = symmetrize_upper(gram_upper(shifted).to(_F64)) - torch.outer(total, total) / n
        return _top_eigen(scatter, k, "x")[1]
    x64 = x.to(_F64)  # one float64 copy (1.3 GiB for 5,000 x 32,768)
    centred = x64 - x64.mean(0)
    values, vectors = _top_eigen(centred @ centred.T, k, "x")  # Xc = U S Vᵀ: Gram eigenpairs (s², U)
    basis = (centred.T @ vectors) / values.sqrt()
    return torch.linalg.qr(basis).Q  # the same span, orthonormal to rounding


def similarity_of_bases(v: torch.Tensor, u: torch.Tensor) -> float:
    """``||vᵀu||²_F / k`` for orthonormal ``(p, k)`` bases, checked to lie in [0, 1]."""
    k = v.shape[1]
    value = float((v.T @ u).square().sum(dtype=_F64)) / k
    return check_in_range(value, "subspace similarity")


def subspace_similarity(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """Mean squared cosine of the principal angles between the top-``k`` PCA subspaces.

    ``x`` (n1, p) and ``y`` (n2, p) must share the feature space (same p; the sample
    counts may differ). ``k`` must not exceed either representation's rank.

    Example:
        >>> import torch
        >>> x = torch.randn(200, 10, dtype=torch.float64)
        >>> q = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))[0]
        >>> round(subspace_similarity(x, 2 * x + 1, k=3), 12)
        1.0
        >>> 0.0 <= subspace_similarity(x, x @ q, k=3) <= 1.0
        True
    """
    x = as_matrix(x, "x")
    y = as_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise IncompatibleError(
            "subspace_similarity compares subspaces of one feature space: x and y need the same "
            f"number of features (columns). Got x of shape {tuple(x.shape)} and y of shape {tuple(y.shape)}."
        )
    return similarity_of_bases(pca_basis(x, k), pca_basis(y, k))
