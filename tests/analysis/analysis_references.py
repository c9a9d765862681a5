"""Independent textbook references (numpy, float64) shared by the analysis tests."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist, squareform


def gram_hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2007) unbiased HSIC, written out with explicit matrices."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return float(
        (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one @ kt @ lt @ one)
        / (n * (n - 3))
    )


def gram_cka(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    """CKA from Gram matrices: HSIC with the centring matrix H, or the unbiased HSIC."""
    if debiased:
        return gram_hsic1(k, l) / np.sqrt(gram_hsic1(k, k) * gram_hsic1(l, l))
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)))


def reference_linear_cka(x, y, debiased=False) -> float:
    # Centring first changes neither estimator mathematically; it keeps float64 accurate
    # when the data have a large mean (the raw Gram matrices would cancel catastrophically).
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    return gram_cka(x @ x.T, y @ y.T, debiased)


def reference_rbf_cka(x, y, sigma=0.8, debiased=False) -> float:
    def gram(z):
        d = pdist(np.asarray(z, np.float64))
        bandwidth = sigma * np.median(d)
        return np.exp(-squareform(d) ** 2 / (2 * bandwidth**2))

    return gram_cka(gram(x), gram(y), debiased)


def reference_subspace(x, y, k) -> float:
    def basis(z):
        z = np.asarray(z, np.float64)
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        return vt[:k].T

    return float(np.linalg.norm(basis(x).T @ basis(y)) ** 2 / k)


def correlated_pair(n: int, p1: int, p2: int, seed: int, offset: float = 0.0):
    """Two related representations (float64 numpy): a shared latent plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    x = z @ rng.normal(size=(6, p1)) + 0.7 * rng.normal(size=(n, p1)) + offset
    y = np.tanh(z @ rng.normal(size=(6, p2))) + 0.5 * rng.normal(size=(n, p2)) - offset
    return x, y
