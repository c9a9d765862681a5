"""Centered kernel alignment (CKA) between two representations (SPEC §3, §7).

Representations are ``(n_samples, n_features)`` tensors of the same samples. Rows are
shifted by the first rows' mean before any product. The feature-space form streams the
rows ``z = [x', y', 1 (, a, b)]`` (shifted features, a column of ones, and the squared
row norms ``a``, ``b`` the debiased estimator needs) through cache-sized buffers: one
symmetric rank-k update per buffer (SciPy's BLAS syrk on CPU, half a GEMM's flops; a
matrix product elsewhere) gives ``XᵀX``, ``YᵀY``, ``XᵀY``, the column sums and the
row-norm statistics at once. Products run in the input dtype and go to float64 every
65,536 rows; every sum, norm and the final ratio is float64. Thread counts (torch's and
SciPy's BLAS) are the caller's: nothing here changes them.

* :func:`linear_cka` — exact linear CKA, biased (Kornblith et al. 2019) or debiased
  (unbiased HSIC of Song et al. 2007). Feature-space form (O(p²) memory, never n x n)
  unless the samples are few compared with the features, then the Gram form.
* :class:`LinearCKAAccumulator` — the same exact value streamed batch by batch.
* :func:`rbf_cka` — RBF-kernel CKA (builds n x n matrices: subsample large data).
* :class:`MinibatchCKA` — the minibatch estimator of Nguyen, Raghu & Kornblith (2021):
  a different estimator whose value depends on the batch size.
"""

from __future__ import annotations

import math

import torch

from forgetlab.analysis._checks import (
    as_matrix,
    check_in_range,
    check_pair,
    NumericalError,
)
from forgetlab.analysis._linalg import (
    _dot,
    gram_upper,
    scipy_syrk_add_,
    sym_frob2,
    sym_quadratic,
    symmetrize_upper,
)
from forgetlab.errors import ConfigError, IncompatibleError

__all__ = ["LinearCKAAccumulator", "MinibatchCKA", "linear_cka", "rbf_cka"]

_F64 = torch.float64
# Elements of one feature chunk of the Gram form multiplied at a time.
_CHUNK_ELEMENTS = 1 << 26
# The Gram form is used only while its n x n float64 matrices stay below this.
_GRAM_MAX_BYTES = 2 << 30
_METHODS = ("auto", "feature", "gram")
# Rows z are copied into a buffer of about this many elements (cache-sized; at least
# width / 8 rows, so that wide products stay compute-bound) and multiplied by one syrk.
_FUSED_BUFFER_ELEMENTS = 1 << 19
# Rows summed in the input dtype (BLAS beta = 1) before the product is added into float64.
_FUSED_ROWS_PER_FLUSH = 1 << 16


def _row_chunk(n_features: int, n_rows: int | None = None) -> int:
    """Rows per float32 product: about 2**26 elements, split evenly over ``n_rows``."""
    step = max(256, _CHUNK_ELEMENTS // max(1, n_features))
    if n_rows is not None and n_rows > step:
        n_chunks = -(-n_rows // step)
        step = -(-n_rows // n_chunks)
    return step


def _frob2(m: torch.Tensor) -> float:
    return _dot(m, m) if m.dtype == _F64 else float(m.to(_F64).square().sum())


def _hsic1(t: float, p: float, q: float, n: int) -> float:
    """Unbiased HSIC (SPEC §3) from tr(K~L~), 1'K~1·1'L~1 and 1'K~L~1."""
    return (t + p / ((n - 1) * (n - 2)) - 2.0 * q / (n - 2)) / (n * (n - 3))


def _hsic1_self(upper: torch.Tensor, total: torch.Tensor, weighted: torch.Tensor, norm_sum: float, norm_sq_sum: float, n: int) -> float:
    """HSIC1(K, K) for K = XXᵀ from upper(Σx'x'ᵀ), Σx', Σ a x', Σa and Σa² (invariant to the shift)."""
    t = sym_frob2(upper) - norm_sq_sum
    ones_k_ones = float(total @ total) - norm_sum
    q = sym_quadratic(upper, total) - 2.0 * float(total @ weighted) + norm_sq_sum
    return _hsic1(t, ones_k_ones * ones_k_ones, q, n)


def _scatter_frob2(upper: torch.Tensor, total: torch.Tensor, n: int) -> float:
    """``||Σ (x - mean)(x - mean)ᵀ||²_F`` from upper(Σx'x'ᵀ) and Σx', without a p x p temporary."""
    ss = float(total @ total)
    return sym_frob2(upper) - 2.0 * sym_quadratic(upper, total) / n + ss * ss / (n * n)


def _centred_cross_frob2(xy: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, n: int) -> float:
    """``||(X - mean)ᵀ(Y - mean)||²_F`` from the shifted cross product, no p x p temporary."""
    return _frob2(xy) - 2.0 * float(sx @ (xy @ sy)) / n + float(sx @ sx) * float(sy @ sy) / (n * n)


def _ratio(numerator: float, x_term: float, y_term: float, measure: str, low: float) -> float:
    if not all(math.isfinite(v) for v in (numerator, x_term, y_term)):
        raise NumericalError(f"{measure} is not finite: the inputs contain NaN or infinite values (or overflow).")
    if not (x_term > 0.0):
        raise NumericalError(f"{measure} is undefined: x has zero variance (its centred features are all 0).")
    if not (y_term > 0.0):
        raise NumericalError(f"{measure} is undefined: y has zero variance (its centred features are all 0).")
    return check_in_range(numerator / math.sqrt(x_term * y_term), measure, low=low)


class LinearCKAAccumulator:
    """Exact linear CKA streamed batch by batch, in O(p²) memory (never n x n).

    Keeps upper(ZᵀZ) in float64 for the rows ``z = [x', y', 1 (, a, b)]`` about a shift
    (the first rows' mean): n, the sums, ``XᵀX``, ``YᵀY``, ``XᵀY`` and the row-norm
    statistics of the debiased estimator. The result equals :func:`linear_cka` on the
    concatenated batches, biased or debiased. ``row_statistics=False`` skips the row-norm
    statistics that only the debiased estimator needs (a little faster);
    ``compute(debiased=True)`` then raises.

    Example:
        >>> import torch
        >>> acc = LinearCKAAccumulator()
        >>> x = torch.randn(300, 8)
        >>> for rows in torch.arange(300).split(100):
        ...     acc.update(x[rows], 2 * x[rows] + 1)
        >>> round(acc.compute(), 5), acc.n_samples
        (1.0, 300)
    """

    def __init__(self, *, row_statistics: bool = True) -> None:
        self.row_statistics = bool(row_statistics)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.n_samples = 0  # rows seen
        self._shifts: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buffer: torch.Tensor | None = None  # rows z, input dtype
        self._pending: torch.Tensor | None = None  # upper(Σ zᵀz) of _pending_rows rows, input dtype
        self._pending_rows = 0
        self._total: torch.Tensor | None = None  # float64, upper triangle valid

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch: ``x`` of shape ``(batch, p1)`` and ``y`` of shape ``(batch, p2)``."""
        x = as_matrix(x, "x")
        y = as_matrix(y, "y")
        check_pair(x, y, min_samples=1)
        if x.dtype != y.dtype:
            x, y = x.to(_F64), y.to(_F64)
        if self._shifts is None:
            # Zero columns pad the width to a multiple of 8: BLAS kernels are much faster there
            # (measured: 131 columns 15.0 ms, 136 columns 13.0 ms for 50,000 rows).
            self._width = -(-(x.shape[1] + y.shape[1] + 1 + 2 * self.row_statistics) // 8) * 8
            self._rows = max(64, _FUSED_BUFFER_ELEMENTS // self._width, self._width // 8)
            # Any shift near the mean keeps the sums accurate: the first rows' mean will do.
            self._shifts = (x[: self._rows].mean(0), y[: self._rows].mean(0))
        for name, m, shift in (("x", x, self._shifts[0]), ("y", y, self._shifts[1])):
            if m.shape[1] != shift.shape[0] or m.device != shift.device:
                raise IncompatibleError(
                    f"Every batch of {name} must have the same number of features and device as the "
                    f"first one: expected (batch, {shift.shape[0]}) on {shift.device}. "
                    f"Got shape {tuple(m.shape)} on {m.device}."
                )
        px, ones = x.shape[1], x.shape[1] + y.shape[1]
        rows = min(self._rows, x.shape[0])
        buffer = self._buffer
        if buffer is None or buffer.dtype != x.dtype or buffer.shape[0] < rows:
            self._flush()
            buffer = self._buffer = torch.zeros(rows, self._width, dtype=x.dtype, device=x.device)
            buffer[:, ones] = 1.0
            self._pending = torch.zeros(self._width, self._width, dtype=x.dtype, device=x.device)
        assert self._pending is not None
        sx, sy = self._shifts[0].to(x.dtype), self._shifts[1].to(x.dtype)
        for start in range(0, x.shape[0], buffer.shape[0]):
            stop = min(start + buffer.shape[0], x.shape[0])
            z = buffer[: stop - start]
            torch.sub(x[start:stop], sx, out=z[:, :px])
            torch.sub(y[start:stop], sy, out=z[:, px:ones])
            if self.row_statistics:
                torch.linalg.vecdot(z[:, :px], z[:, :px], out=z[:, ones + 1])
                torch.linalg.vecdot(z[:, px:ones], z[:, px:ones], out=z[:, ones + 2])
            # A flushed pending sum is stale: beta = 0 overwrites it.
            beta = 0.0 if self._pending_rows == 0 else 1.0
            if z.device.type == "cpu":
                scipy_syrk_add_(self._pending, z, beta)
            else:
                self._pending.addmm_(z.T, z, beta=beta)
            self._pending_rows += stop - start
            if self._pending_rows >= _FUSED_ROWS_PER_FLUSH:
                self._flush()
        self.n_samples += x.shape[0]

    def _flush(self) -> None:
        if self._pending_rows:
            assert self._pending is not None
            upper = self._pending.triu_()  # a GEMM (off CPU) fills both triangles
            self._total = upper.to(_F64, copy=True) if self._total is None else self._total.add_(upper)
            self._pending_rows = 0

    def _blocks(self) -> tuple[torch.Tensor, slice, slice, int]:
        """upper(ZᵀZ) in float64, the slices of x' and y' in it, and the index of the ones column."""
        self._flush()
        assert self._shifts is not None and self._total is not None
        px, py = self._shifts[0].shape[0], self._shifts[1].shape[0]
        return self._total, slice(0, px), slice(px, px + py), px + py

    def _hsic1_terms(self) -> tuple[float, float, float]:
        """HSIC1 (K,L), (K,K), (L,L) for K = XXᵀ, L = YYᵀ of everything seen (row statistics needed)."""
        z, x, y, o = self._blocks()
        a, b, n = o + 1, o + 2, self.n_samples
        sx, sy, xy = z[x, o], z[y, o], z[x, y]
        norm_product_sum = float(z[a, b])
        p = (float(sx @ sx) - float(z[o, a])) * (float(sy @ sy) - float(z[o, b]))
        q = float(sx @ (xy @ sy)) - float(sy @ z[y, a]) - float(sx @ z[x, b]) + norm_product_sum
        return (
            _hsic1(_frob2(xy) - norm_product_sum, p, q, n),
            _hsic1_self(z[x, x], sx, z[x, a], float(z[o, a]), float(z[a, a]), n),
            _hsic1_self(z[y, y], sy, z[y, b], float(z[o, b]), float(z[b, b]), n),
        )

    def scatter_matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The centred scatter matrices ``Σ (x - mean)(x - mean)ᵀ`` of x and of y seen so far,
        float64 ``(p1, p1)`` and ``(p2, p2)``: their top eigenvectors are the PCA subspaces
        (:func:`~forgetlab.analysis.subspace_similarity` without keeping the rows).

        Example:
            >>> acc = LinearCKAAccumulator()
            >>> x = torch.randn(50, 3, dtype=torch.float64)
            >>> acc.update(x, x)
            >>> sx, _ = acc.scatter_matrices()
            >>> bool(torch.allclose(sx, (x - x.mean(0)).T @ (x - x.mean(0))))
            True
        """
        if self._shifts is None:
            raise ConfigError("LinearCKAAccumulator.scatter_matrices() needs at least one batch. Call update(x, y) first.")
        z, x, y, o = self._blocks()
        n = self.n_samples
        out = []
        for part in (x, y):
            total = z[part, o]
            out.append(symmetrize_upper(z[part, part]) - torch.outer(total, total) / n)
        return out[0], out[1]

    def compute(self, *, debiased: bool = False) -> float:
        """Linear CKA of everything seen: biased (default) or debiased (needs n >= 4)."""
        n = self.n_samples
        if self._shifts is None or n < (4 if debiased else 2):
            raise ConfigError(
                f"LinearCKAAccumulator.compute(debiased={debiased}) needs at least "
                f"{4 if debiased else 2} samples; got {n}. Call update(x, y) first."
            )
        if debiased and not self.row_statistics:
            raise ConfigError(
                "compute(debiased=True) needs the row statistics: create the accumulator with "
                "LinearCKAAccumulator(row_statistics=True) (the default)."
            )
        if debiased:
            return _ratio(*self._hsic1_terms(), "debiased linear CKA", low=-1.0)
        z, x, y, o = self._blocks()
        sx, sy = z[x, o], z[y, o]
        return _ratio(
            _centred_cross_frob2(z[x, y], sx, sy, n), _scatter_frob2(z[x, x], sx, n), _scatter_frob2(z[y, y], sy, n),
            "linear CKA", low=0.0,
        )


def _centred_gram(x: torch.Tensor) -> torch.Tensor:
    """Double-centred linear Gram matrix ``H X Xᵀ H`` of ``x`` (n, p), float64 (n, n)."""
    n, p = x.shape
    mean = x.mean(0)
    gram = torch.zeros(n, n, dtype=_F64, device=x.device)
    step = _row_chunk(n, p)
    for start in range(0, p, step):
        centred = x[:, start : start + step] - mean[start : start + step]
        gram += gram_upper(centred.T)
    gram = symmetrize_upper(gram)
    return _double_centre(gram)


def _double_centre(gram: torch.Tensor) -> torch.Tensor:
    column = gram.mean(0, keepdim=True)
    row = gram.mean(1, keepdim=True)
    return gram - column - row + gram.mean()


def _hsic1_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """Unbiased HSIC (SPEC §3) of two n x n Gram matrices; never builds K·L or K~."""
    n = k.shape[0]
    dk, dl = k.diagonal(), l.diagonal()
    t = float(torch.dot(k.reshape(-1), l.reshape(-1)) - torch.dot(dk, dl))
    rk = k.sum(1) - dk
    rl = l.sum(1) - dl
    return _hsic1(t, float(rk.sum()) * float(rl.sum()), float(torch.dot(rk, rl)), n)


def _cka_from_grams(k: torch.Tensor, l: torch.Tensor, debiased: bool, measure: str) -> float:
    """CKA from float64 Gram matrices; ``k`` and ``l`` must be double-centred if biased."""
    if debiased:
        return _ratio(_hsic1_grams(k, l), _hsic1_grams(k, k), _hsic1_grams(l, l), measure, low=-1.0)
    kl = float(torch.dot(k.reshape(-1), l.reshape(-1)))
    return _ratio(kl, _frob2(k), _frob2(l), measure, low=0.0)


def _choose_method(n: int, p_x: int, p_y: int) -> str:
    feature_flops = n * (p_x * p_x / 2 + p_y * p_y / 2 + p_x * p_y)
    gram_flops = n * n * (p_x + p_y) / 2 + 8 * n * n
    fits = 3 * n * n * 8 <= _GRAM_MAX_BYTES
    return "gram" if fits and gram_flops < feature_flops else "feature"


def linear_cka(
    x: torch.Tensor, y: torch.Tensor, *, debiased: bool = False, method: str = "auto"
) -> float:
    """Linear CKA between ``x`` (n, p1) and ``y`` (n, p2), rows = the same samples.

    Biased (default): ``||XcᵀYc||²_F / (||XcᵀXc||_F ||YcᵀYc||_F)`` with column-centred
    X, Y, in ``[0, 1]``. ``debiased=True``: the unbiased-HSIC estimator (SPEC §3), in
    ``[-1, 1]``, needs n >= 4. ``method``: ``"feature"`` (p x p products, O(p²) memory),
    ``"gram"`` (n x n), or ``"auto"`` (the cheaper one; Gram only while it fits in 2 GiB).
    Float32 products, float64 sums; a value outside the range by more than 1e-6 raises
    ``NumericalError`` instead of being clamped.

    Example:
        >>> import torch
        >>> x = torch.randn(500, 20, dtype=torch.float64)
        >>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))[0]), 12)
        1.0
        >>> 0.0 <= linear_cka(x, torch.randn(500, 5, dtype=torch.float64)) <= 1.0
        True
    """
    x = as_matrix(x, "x")
    y = as_matrix(y, "y")
    check_pair(x, y, min_samples=4 if debiased else 2)
    if method not in _METHODS:
        raise ConfigError(f"The 'method' parameter of linear_cka must be one of {_METHODS}. Got {method!r} instead.")
    if x.dtype != y.dtype:
        x, y = x.to(_F64), y.to(_F64)
    if method == "auto":
        method = _choose_method(x.shape[0], x.shape[1], y.shape[1])
    if method == "gram":
        measure = "debiased linear CKA" if debiased else "linear CKA"
        return _cka_from_grams(_centred_gram(x), _centred_gram(y), debiased, measure)
    accumulator = LinearCKAAccumulator(row_statistics=debiased)
    accumulator.update(x, y)
    return accumulator.compute(debiased=debiased)


def _rbf_gram(x: torch.Tensor, sigma: float, name: str) -> torch.Tensor:
    """RBF Gram ``exp(-d²/(2 (sigma·median d)²))`` in float64; median over pairs i < j."""
    xc = x.to(_F64)
    xc = xc - xc.mean(0)
    n = xc.shape[0]
    sq = xc.square().sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)
    d2.clamp_(min=0.0)
    d2.fill_diagonal_(0.0)
    # Off-diagonal k-th smallest = element n + 2k of the full matrix (zeros on the diagonal
    # come first, each pair appears twice), so no index arrays are needed.
    m = n * (n - 1) // 2
    flat = d2.reshape(-1)
    lower = float(flat.kthvalue(n + 2 * ((m + 1) // 2)).values)
    upper = float(flat.kthvalue(n + 2 * (m // 2 + 1)).values) if m % 2 == 0 else lower
    median = 0.5 * (math.sqrt(lower) + math.sqrt(upper))
    if median <= 0.0:
        raise NumericalError(
            f"rbf_cka: the median pairwise distance of {name} is 0 (most samples are identical); "
            "the RBF bandwidth is undefined."
        )
    bandwidth = sigma * median
    return torch.exp(d2 / (-2.0 * bandwidth * bandwidth))


def rbf_cka(x: torch.Tensor, y: torch.Tensor, *, sigma: float = 0.8, debiased: bool = False) -> float:
    """RBF-kernel CKA of ``x`` (n, p1) and ``y`` (n, p2); bandwidth = ``sigma`` x median distance.

    The median is over pairs i < j of each representation's Euclidean distances. Builds
    n x n float64 matrices (O(n²) memory): subsample large data. Biased in ``[0, 1]``;
    ``debiased=True`` uses the unbiased HSIC (SPEC §3).

    Example:
        >>> import torch
        >>> x = torch.randn(200, 10, dtype=torch.float64)
        >>> round(rbf_cka(x, 5 * x + 2), 12)
        1.0
    """
    x = as_matrix(x, "x")
    y = as_matrix(y, "y")
    check_pair(x, y, min_samples=4 if debiased else 2)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ConfigError(f"The 'sigma' parameter of rbf_cka must be a number > 0. Got {sigma!r} instead.")
    k = _rbf_gram(x, float(sigma), "x")
    l = _rbf_gram(y, float(sigma), "y")
    measure = "debiased RBF CKA" if debiased else "RBF CKA"
    if not debiased:
        k, l = _double_centre(k), _double_centre(l)
    return _cka_from_grams(k, l, debiased, measure)


def _hsic1_triplet(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Unbiased HSIC1 (K,L), (K,K), (L,L) of one batch, normalised by n(n-3)."""
    n = x.shape[0]
    if _choose_method(n, x.shape[1], y.shape[1]) == "gram":
        k, l = _centred_gram(x), _centred_gram(y)
        return _hsic1_grams(k, l), _hsic1_grams(k, k), _hsic1_grams(l, l)
    acc = LinearCKAAccumulator()
    acc.update(x, y)
    return acc._hsic1_terms()


class MinibatchCKA:
    """Minibatch linear CKA of Nguyen, Raghu & Kornblith (2021), streamed with ``update``.

    ``CKA = Σ_i HSIC1(K_i, L_i) / sqrt(Σ_i HSIC1(K_i, K_i) · Σ_i HSIC1(L_i, L_i))`` over
    batches i, with the unbiased HSIC estimator (SPEC §3). Each batch needs >= 4 rows.
    This is a different estimator from full-data CKA: its value depends on the batch size
    (it converges to the debiased CKA as data grows). For the exact full-data value in a
    stream, use :class:`LinearCKAAccumulator`.

    Example:
        >>> import torch
        >>> metric = MinibatchCKA()
        >>> x = torch.randn(512, 16)
        >>> for rows in torch.arange(512).split(128):
        ...     metric.update(x[rows], -x[rows])
        >>> round(metric.compute(), 6), metric.n_batches
        (1.0, 4)
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.n_batches = 0
        self.n_samples = 0
        self._xy = 0.0
        self._xx = 0.0
        self._yy = 0.0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add one batch: ``x`` (batch, p1), ``y`` (batch, p2), batch >= 4."""
        x = as_matrix(x, "x")
        y = as_matrix(y, "y")
        check_pair(x, y, min_samples=4)
        if x.dtype != y.dtype:
            x, y = x.to(_F64), y.to(_F64)
        xy, xx, yy = _hsic1_triplet(x, y)
        self._xy += xy
        self._xx += xx
        self._yy += yy
        self.n_batches += 1
        self.n_samples += x.shape[0]

    def compute(self) -> float:
        """The minibatch CKA of all batches so far, in ``[-1, 1]``."""
        if self.n_batches == 0:
            raise ConfigError("MinibatchCKA.compute() needs at least one batch. Call update(x, y) first.")
        return _ratio(self._xy, self._xx, self._yy, "minibatch CKA", low=-1.0)
