from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from forgetlab.analysis import pca_basis, subspace_similarity
from forgetlab.errors import ConfigError, IncompatibleError

from analysis_references import reference_subspace

T = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731


def _pair(seed: int, n1: int, n2: int, p: int):
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, p)  # distinct variances: well-defined top-k subspaces
    x = rng.normal(size=(n1, p)) * scales + 4.0
    mix = np.eye(p) + 0.4 * rng.normal(size=(p, p))
    y = (rng.normal(size=(n2, p)) * scales) @ mix - 1.0
    return x, y


@pytest.mark.parametrize("n1,n2,p,k", [(200, 150, 10, 3), (30, 40, 60, 5), (100, 100, 8, 8)])
def test_matches_svd_reference(n1, n2, p, k):
    x, y = _pair(n1 + p, n1, n2, p)
    assert subspace_similarity(T(x), T(y), k) == pytest.approx(reference_subspace(x, y, k), abs=1e-9)


def test_float32_inputs_agree_with_reference():
    x, y = _pair(2, 500, 500, 20)
    value = subspace_similarity(T(x).float(), T(y).float(), 4)
    assert value == pytest.approx(reference_subspace(x, y, 4), abs=1e-5)


def test_k_equal_to_dimension_gives_one():
    x, y = _pair(3, 50, 60, 6)
    assert subspace_similarity(T(x), T(y), 6) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.floats(1e-2, 1e2))
def test_invariances(seed, k, scale):
    x, y = _pair(seed, 80, 90, 8)
    q = np.linalg.qr(np.random.default_rng(seed).normal(size=(8, 8)))[0]
    base = subspace_similarity(T(x), T(y), k)
    assert 0.0 <= base <= 1.0 + 1e-12
    assert subspace_similarity(T(x), T(x), k) == pytest.approx(1.0, abs=1e-9)
    assert subspace_similarity(T(y), T(x), k) == pytest.approx(base, abs=1e-9)
    assert subspace_similarity(T(scale * x + 3.0), T(y), k) == pytest.approx(base, abs=1e-7)
    assert subspace_similarity(T(x @ q), T(y @ q), k) == pytest.approx(base, abs=1e-7)


def test_orthogonal_subspaces_give_zero():
    rng = np.random.default_rng(0)
    x = np.zeros((100, 4))
    y = np.zeros((100, 4))
    x[:, :2] = rng.normal(size=(100, 2)) * [3, 2]
    y[:, 2:] = rng.normal(size=(100, 2)) * [3, 2]
    assert subspace_similarity(T(x), T(y), 2) == pytest.approx(0.0, abs=1e-12)
    y[:, 0] = 2.5 * rng.normal(size=100)  # y's top-2 now spans e0 and e2: about half shared
    assert 0.4 < subspace_similarity(T(x), T(y), 2) < 0.6


@pytest.mark.parametrize("n,p", [(300, 12), (40, 200)])  # scatter (p <= n) and Gram (p > n) routes
def test_pca_basis_is_orthonormal_and_spans_numpys_top_singular_vectors(n, p):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, p)) * np.linspace(4.0, 0.1, p) + 2.0
    basis = pca_basis(T(x), 5)
    assert torch.allclose(basis.T @ basis, torch.eye(5, dtype=torch.float64), atol=1e-10)
    reference = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:5].T  # numpy's SVD, independent
    projection = basis.numpy() @ basis.numpy().T  # the same subspace: the reference lies in it
    assert np.allclose(projection @ reference, reference, atol=1e-8)


def test_errors():
    x = torch.randn(20, 5, dtype=torch.float64)
    with pytest.raises(IncompatibleError, match=r"same\s+number of features.*\(20, 5\).*\(20, 4\)"):
        subspace_similarity(x, torch.randn(20, 4), 2)
    with pytest.raises(ConfigError, match="'k' parameter must be an integer >= 1. Got 0"):
        subspace_similarity(x, x, 0)
    with pytest.raises(ConfigError, match=r"'k' parameter must be <= min\(n_samples - 1, n_features\) = 5"):
        subspace_similarity(x, x, 6)
    low_rank = torch.randn(20, 2, dtype=torch.float64) @ torch.randn(2, 5, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"rank of x \(2\)"):
        subspace_similarity(low_rank, x, 3)
    wide_low_rank = torch.randn(20, 2, dtype=torch.float64) @ torch.randn(2, 50, dtype=torch.float64)  # p > n
    with pytest.raises(ConfigError, match=r"rank of x \(2\)"):
        pca_basis(wide_low_rank, 3)
