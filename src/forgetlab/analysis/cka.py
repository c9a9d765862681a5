"""Centered kernel alignment (CKA) between two representations (SPEC §3, §7).

Representations are ``(n_samples, n_features)`` tensors of the same samples. Rows are
shifted by the first batch's mean before any product; float32 inputs are multiplied in
float32, chunk products are summed in place (BLAS beta = 1), then added into float64
totals; every sum, norm and the final ratio is float64. Thread counts (torch's and
SciPy's BLAS) are the caller's: nothing here changes them.

* CPU, fewer than 1,024 features each (the fused path): one pass over the rows; each
  chunk of rows ``[x', y', 1]`` (plus the squared row norms for the debiased estimator)
  is copied into a cache-sized buffer and one symmetric rank-k update (SciPy's BLAS
  syrk) gives ``XᵀX``, ``YᵀY``, ``XᵀY``, the column sums and the row-norm statistics at
  once; sums go to float64 every 65,536 rows.
* Otherwise: row chunks of about 2**26 elements, three products (``XᵀX`` and ``YᵀY`` by
  syrk, half a GEMM's flops, on CPU for >= 1,024 features), 8 chunks per float64 flush.

* :func:`linear_cka` — exact linear CKA, biased (Kornblith et al. 2019) or debiased
  (unbiased HSIC of Song et al. 2007). Feature-space form (``XᵀX``-type products,
  O(p²) memory, never n x n) unless the samples are few compared with the features,
  then the Gram form.
* :class:`LinearCKAAccumulator` — the same exact value streamed batch by batch;
  :class:`Moments`, :class:`CrossMoments` and :func:`cka_from_moments` are its parts,
  for callers that share one side's statistics between several pairs.
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
    SYRK_MIN_COLUMNS,
    _dot,
    gram_upper,
    gram_upper_add_,
    scipy_syrk_add_,
    sym_frob2,
    sym_quadratic,
    symmetrize_upper,
)
from forgetlab.errors import ConfigError, IncompatibleError

__all__ = [
    "CrossMoments",
    "LinearCKAAccumulator",
    "MinibatchCKA",
    "Moments",
    "cka_from_moments",
    "linear_cka",
    "rbf_cka",
]

_F64 = torch.float64
# Elements of one row chunk (per representation) multiplied in float32 at a time.
_CHUNK_ELEMENTS = 1 << 26
# The Gram form is used only while its n x n float64 matrices stay below this.
_GRAM_MAX_BYTES = 2 << 30
_METHODS = ("auto", "feature", "gram")
# Chunk products are summed in the input dtype for this many chunks (BLAS beta = 1, no
# temporaries), then added into the float64 totals.
_CHUNKS_PER_FLUSH = 8
# Fused path (CPU, < SYRK_MIN_COLUMNS features each): rows of [x', y', 1 (, a, b)] are copied
# into a buffer of about this many elements (cache-sized) and multiplied by one syrk.
_FUSED_BUFFER_ELEMENTS = 1 << 19
# Rows summed in the input dtype (BLAS beta = 1) before the fused product is added into float64.
_FUSED_ROWS_PER_FLUSH = 1 << 16


def _row_chunk(n_features: int, n_rows: int | None = None) -> int:
    """Rows per float32 product: about 2**26 elements, split evenly over ``n_rows``."""
    step = max(256, _CHUNK_ELEMENTS // max(1, n_features))
    if n_rows is not None and n_rows > step:
        n_chunks = -(-n_rows // step)
        step = -(-n_rows // n_chunks)
    return step


class Moments:
    """Streaming moments of one representation, about a fixed shift (first batch's mean).

    Holds n, Σx', upper(Σx'x'ᵀ), Σa, Σa², Σ a_i x'_i with x' = x - shift and
    a_i = ||x'_i||², all in float64 (``row_stats=False``: no a terms). The products of up
    to ``_CHUNKS_PER_FLUSH`` chunks are first summed in the input dtype, then flushed into
    float64. Feed a batch with ``m.update(*m.prepare(x, name))``; :meth:`scatter` gives the
    centred scatter matrix, :func:`cka_from_moments` the CKA of two sides.
    """

    def __init__(self, row_stats: bool = True) -> None:
        self.row_stats = row_stats
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self._upper64: torch.Tensor | None = None
        self._pending: torch.Tensor | None = None
        self._pending_chunks = 0
        self.norm_sum = 0.0
        self.norm_sq_sum = 0.0
        self.norm_weighted: torch.Tensor | None = None

    @property
    def n_features(self) -> int:
        return 0 if self.shift is None else int(self.shift.shape[0])

    def start(self, x: torch.Tensor, name: str) -> None:
        """Check ``x`` against the first batch; the first batch sets the shift (its mean)."""
        if self.shift is None:
            # Any shift near the mean will do (sums are kept about it): a float32 mean is enough.
            self.shift = x.mean(0)
            p = x.shape[1]
            self.sum = torch.zeros(p, dtype=_F64, device=x.device)
            self.norm_weighted = torch.zeros(p, dtype=_F64, device=x.device)
        elif x.shape[1] != self.shift.shape[0] or x.device != self.shift.device:
            raise IncompatibleError(
                f"Every batch of {name} must have the same number of features and device as the "
                f"first one: expected (batch, {self.shift.shape[0]}) on {self.shift.device}. "
                f"Got shape {tuple(x.shape)} on {x.device}."
            )

    def prepare(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Shifted rows ``x'`` (input dtype) and their squared norms (float64; None without row stats)."""
        self.start(x, name)
        assert self.shift is not None
        shifted = x - self.shift.to(x.dtype)
        if not self.row_stats:
            return shifted, None
        # Row norms in float32 (vector_norm: fast and accurate to ~5e-7), squared in float64.
        norms = torch.linalg.vector_norm(shifted, dim=1).to(_F64).square()
        return shifted, norms

    def update(self, shifted: torch.Tensor, norms: torch.Tensor | None) -> None:
        assert self.sum is not None and self.norm_weighted is not None
        self.n += shifted.shape[0]
        self.sum += shifted.sum(0).to(_F64)
        if self._pending is not None and self._pending.dtype != shifted.dtype:
            self._flush()
        if self._pending is None:
            self._pending = gram_upper(shifted).contiguous()
        else:
            gram_upper_add_(self._pending, shifted)
        self._pending_chunks += 1
        if self._pending_chunks >= _CHUNKS_PER_FLUSH:
            self._flush()
        if norms is None:
            return
        self.norm_sum += float(norms.sum())
        self.norm_sq_sum += float(norms.square().sum())
        self.norm_weighted += (shifted.T @ norms.to(shifted.dtype)).to(_F64)

    def add_totals(
        self, total: torch.Tensor, upper: torch.Tensor, norm_sum: float, norm_sq_sum: float, norm_weighted: torch.Tensor | None
    ) -> None:
        """Add float64 sums computed elsewhere (the fused path): Σx', upper(Σx'x'ᵀ), row-norm statistics.

        Takes ownership of ``upper`` (kept, not copied, when nothing was summed yet).
        """
        assert self.sum is not None and self.norm_weighted is not None
        self.sum += total
        self._upper64 = upper if self._upper64 is None else self._upper64.add_(upper)
        self.norm_sum += norm_sum
        self.norm_sq_sum += norm_sq_sum
        if norm_weighted is not None:
            self.norm_weighted += norm_weighted

    def _flush(self) -> None:
        if self._pending is None:
            return
        if self._upper64 is None:
            self._upper64 = self._pending.to(_F64)
        else:
            self._upper64 += self._pending
        self._pending = None
        self._pending_chunks = 0

    @property
    def upper(self) -> torch.Tensor | None:
        """Upper triangle of ``Σ x'x'ᵀ`` in float64 (strictly lower part zero)."""
        self._flush()
        return self._upper64

    def scatter(self) -> torch.Tensor:
        """Centred scatter matrix ``Σ (x - mean)(x - mean)ᵀ``, float64 ``(p, p)``."""
        assert self.sum is not None and self.upper is not None
        return symmetrize_upper(self.upper) - torch.outer(self.sum, self.sum) / self.n

    def scatter_frob2(self) -> float:
        """``||Σ (x - mean)(x - mean)ᵀ||²_F`` from the upper triangle, without a p x p temporary."""
        assert self.sum is not None and self.upper is not None
        s, n = self.sum, self.n
        ss = float(s @ s)
        return sym_frob2(self.upper) - 2.0 * sym_quadratic(self.upper, s) / n + ss * ss / (n * n)

    def mean(self) -> torch.Tensor:
        assert self.sum is not None and self.shift is not None
        return self.shift.to(_F64) + self.sum / self.n


class CrossMoments:
    """Streaming cross statistics of two representations about their shifts."""

    def __init__(self, p_x: int, p_y: int, device: torch.device) -> None:
        self._xy64: torch.Tensor | None = None
        self._pending: torch.Tensor | None = None
        self._pending_chunks = 0
        self.norm_product_sum = 0.0
        self.x_weighted_by_y = torch.zeros(p_x, dtype=_F64, device=device)  # Σ b_i x'_i
        self.y_weighted_by_x = torch.zeros(p_y, dtype=_F64, device=device)  # Σ a_i y'_i

    def update(self, xs: torch.Tensor, a: torch.Tensor | None, ys: torch.Tensor, b: torch.Tensor | None) -> None:
        if xs.dtype != ys.dtype:
            xs, ys = xs.to(_F64), ys.to(_F64)
        if self._pending is not None and self._pending.dtype != xs.dtype:
            self._flush()
        if self._pending is None:
            self._pending = xs.T @ ys
        else:
            self._pending.addmm_(xs.T, ys)
        self._pending_chunks += 1
        if self._pending_chunks >= _CHUNKS_PER_FLUSH:
            self._flush()
        if a is None or b is None:
            return
        self.norm_product_sum += float((a * b).sum())
        self.x_weighted_by_y += (xs.T @ b.to(xs.dtype)).to(_F64)
        self.y_weighted_by_x += (ys.T @ a.to(ys.dtype)).to(_F64)

    def add_totals(
        self,
        xy: torch.Tensor,
        norm_product_sum: float,
        x_weighted_by_y: torch.Tensor | None,
        y_weighted_by_x: torch.Tensor | None,
    ) -> None:
        """Add float64 sums computed elsewhere (the fused path); takes ownership of ``xy``."""
        self._xy64 = xy if self._xy64 is None else self._xy64.add_(xy)
        self.norm_product_sum += norm_product_sum
        if x_weighted_by_y is not None and y_weighted_by_x is not None:
            self.x_weighted_by_y += x_weighted_by_y
            self.y_weighted_by_x += y_weighted_by_x

    def _flush(self) -> None:
        if self._pending is None:
            return
        if self._xy64 is None:
            self._xy64 = self._pending.to(_F64)
        else:
            self._xy64 += self._pending
        self._pending = None
        self._pending_chunks = 0

    @property
    def xy(self) -> torch.Tensor | None:
        """``Σ x'y'ᵀ`` in float64."""
        self._flush()
        return self._xy64


class _Fused:
    """Fused small-feature statistics: upper(ZᵀZ) for the rows ``z = [x', y', 1 (, a, b)]``.

    One pass over the rows: each chunk of rows is shifted into a buffer of about
    ``_FUSED_BUFFER_ELEMENTS`` elements (cache-sized), with a column of ones (its products
    are the column sums) and, with row statistics, the squared row norms ``a``, ``b`` (their
    products give Σa, Σa², Σab, Σ a x', ...). One SciPy BLAS syrk per chunk adds
    upper(ZᵀZ) into an input-dtype sum (beta = 1), added into float64 every
    ``_FUSED_ROWS_PER_FLUSH`` rows. :meth:`drain` moves the float64 totals into the
    :class:`Moments` / :class:`CrossMoments` sums.
    """

    def __init__(self, p_x: int, p_y: int, row_stats: bool) -> None:
        self.p_x, self.p_y, self.row_stats = p_x, p_y, row_stats
        used = p_x + p_y + 1 + (2 if row_stats else 0)
        # Zero columns pad the width to a multiple of 8: BLAS kernels are much faster there
        # (measured: 131 columns 15.0 ms, 136 columns 13.0 ms for 50,000 rows).
        self.width = -(-used // 8) * 8
        self.chunk_rows = max(64, _FUSED_BUFFER_ELEMENTS // self.width)  # rows per buffer (cache-sized)
        self.buffer: torch.Tensor | None = None
        self.pending: torch.Tensor | None = None  # upper(Σ zᵀz) of pending_rows rows, input dtype
        self.pending_rows = 0
        self.total: torch.Tensor | None = None  # float64, upper triangle valid

    def _flush(self) -> None:
        if self.pending_rows:
            assert self.pending is not None
            if self.total is None:
                self.total = self.pending.to(_F64, copy=True)  # a float64 pending must not alias it
            else:
                self.total += self.pending
            self.pending_rows = 0

    def update(self, x: torch.Tensor, y: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor) -> None:
        px, ones = self.p_x, self.p_x + self.p_y
        rows = min(self.chunk_rows, x.shape[0])
        if self.buffer is None or self.buffer.dtype != x.dtype or self.buffer.shape[0] < rows:
            self._flush()
            self.buffer = torch.zeros(rows, self.width, dtype=x.dtype)
            self.buffer[:, ones] = 1.0
            self.pending = torch.zeros(self.width, self.width, dtype=x.dtype)
        assert self.pending is not None
        sx, sy = shift_x.to(x.dtype), shift_y.to(x.dtype)
        for start in range(0, x.shape[0], self.buffer.shape[0]):
            stop = min(start + self.buffer.shape[0], x.shape[0])
            z = self.buffer[: stop - start]
            torch.sub(x[start:stop], sx, out=z[:, :px])
            torch.sub(y[start:stop], sy, out=z[:, px:ones])
            if self.row_stats:
                torch.linalg.vecdot(z[:, :px], z[:, :px], out=z[:, ones + 1])
                torch.linalg.vecdot(z[:, px:ones], z[:, px:ones], out=z[:, ones + 2])
            # A flushed pending sum is stale: beta = 0 overwrites it.
            scipy_syrk_add_(self.pending, z, 0.0 if self.pending_rows == 0 else 1.0)
            self.pending_rows += stop - start
            if self.pending_rows >= _FUSED_ROWS_PER_FLUSH:
                self._flush()

    def drain(self, mx: Moments, my: Moments, cross: CrossMoments) -> None:
        """Add everything summed so far into ``mx``, ``my`` and ``cross``, and start again from zero."""
        self._flush()
        if self.total is None:
            return
        z, self.total = self.total, None
        px, o = self.p_x, self.p_x + self.p_y
        a, b = o + 1, o + 2
        x, y = slice(0, px), slice(px, o)

        def t(rows, cols) -> torch.Tensor:  # a new contiguous float64 block
            return z[rows, cols].clone()

        if self.row_stats:
            mx.add_totals(t(x, o), t(x, x), float(z[o, a]), float(z[a, a]), t(x, a))
            my.add_totals(t(y, o), t(y, y), float(z[o, b]), float(z[b, b]), t(y, b))
            cross.add_totals(t(x, y), float(z[a, b]), t(x, b), t(y, a))
        else:
            mx.add_totals(t(x, o), t(x, x), 0.0, 0.0, None)
            my.add_totals(t(y, o), t(y, y), 0.0, 0.0, None)
            cross.add_totals(t(x, y), 0.0, None, None)


def _frob2(m: torch.Tensor) -> float:
    return _dot(m, m) if m.dtype == _F64 else float(m.to(_F64).square().sum())


def _hsic1(t: float, p: float, q: float, n: int) -> float:
    """Unbiased HSIC (SPEC §3) from tr(K~L~), 1'K~1·1'L~1 and 1'K~L~1."""
    return (t + p / ((n - 1) * (n - 2)) - 2.0 * q / (n - 2)) / (n * (n - 3))


def _hsic1_self(m: Moments) -> float:
    """HSIC1(K, K) for K = XXᵀ from streamed moments (invariant to the shift)."""
    assert m.sum is not None and m.norm_weighted is not None and m.upper is not None
    total = m.sum
    t = sym_frob2(m.upper) - m.norm_sq_sum
    ones_k_ones = float(total @ total) - m.norm_sum
    q = sym_quadratic(m.upper, total) - 2.0 * float(total @ m.norm_weighted) + m.norm_sq_sum
    return _hsic1(t, ones_k_ones * ones_k_ones, q, m.n)


def _hsic1_cross(mx: Moments, my: Moments, c: CrossMoments) -> float:
    """HSIC1(K, L) for K = XXᵀ, L = YYᵀ from streamed moments."""
    assert mx.sum is not None and my.sum is not None and c.xy is not None
    sx, sy = mx.sum, my.sum
    t = _frob2(c.xy) - c.norm_product_sum
    p = (float(sx @ sx) - mx.norm_sum) * (float(sy @ sy) - my.norm_sum)
    q = (
        float(sx @ (c.xy @ sy))
        - float(sy @ c.y_weighted_by_x)
        - float(sx @ c.x_weighted_by_y)
        + c.norm_product_sum
    )
    return _hsic1(t, p, q, mx.n)


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

    Keeps n, the sums, ``XᵀX``, ``YᵀY``, ``XᵀY`` and the row-norm statistics of the
    debiased estimator, all in float64 about a shift (the first batch's mean). The result
    equals :func:`linear_cka` on the concatenated batches, biased or debiased.
    ``row_statistics=False`` skips the row-norm statistics that only the debiased
    estimator needs (a little faster); ``compute(debiased=True)`` then raises.

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
        self._x = Moments(self.row_statistics)
        self._y = Moments(self.row_statistics)
        self._cross: CrossMoments | None = None
        self._fused: _Fused | None = None

    @property
    def n_samples(self) -> int:
        """Number of rows seen."""
        return self._x.n

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch: ``x`` of shape ``(batch, p1)`` and ``y`` of shape ``(batch, p2)``."""
        x = as_matrix(x, "x")
        y = as_matrix(y, "y")
        check_pair(x, y, min_samples=1)
        if _fusable(x, y):
            self._update_fused(x, y)
            return
        step = _row_chunk(max(x.shape[1], y.shape[1]), x.shape[0])
        for start in range(0, x.shape[0], step):
            xs, a = self._x.prepare(x[start : start + step], "x")
            ys, b = self._y.prepare(y[start : start + step], "y")
            self._x.update(xs, a)
            self._y.update(ys, b)
            if self._cross is None:
                self._cross = CrossMoments(xs.shape[1], ys.shape[1], xs.device)
            self._cross.update(xs, a, ys, b)

    def _update_fused(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self._fused is None:
            self._fused = _Fused(x.shape[1], y.shape[1], self.row_statistics)
        # The first rows' mean is the shift (any value near the mean keeps the sums accurate).
        rows = self._fused.chunk_rows
        self._x.start(x[:rows], "x")
        self._y.start(y[:rows], "y")
        if self._cross is None:
            self._cross = CrossMoments(x.shape[1], y.shape[1], x.device)
        assert self._x.shift is not None and self._y.shift is not None
        self._fused.update(x, y, self._x.shift, self._y.shift)
        self._x.n += x.shape[0]
        self._y.n += y.shape[0]

    def _drain(self) -> None:
        """Move the fused path's sums into the moments (before reading them)."""
        if self._fused is not None and self._cross is not None:
            self._fused.drain(self._x, self._y, self._cross)

    def compute(self, *, debiased: bool = False) -> float:
        """Linear CKA of everything seen: biased (default) or debiased (needs n >= 4)."""
        self._drain()
        n = self.n_samples
        if self._cross is None or n < (4 if debiased else 2):
            raise ConfigError(
                f"LinearCKAAccumulator.compute(debiased={debiased}) needs at least "
                f"{4 if debiased else 2} samples; got {n}. Call update(x, y) first."
            )
        if debiased and not self.row_statistics:
            raise ConfigError(
                "compute(debiased=True) needs the row statistics: create the accumulator with "
                "LinearCKAAccumulator(row_statistics=True) (the default)."
            )
        return cka_from_moments(self._x, self._y, self._cross, debiased=debiased)


def cka_from_moments(mx: Moments, my: Moments, cross: CrossMoments, *, debiased: bool = False) -> float:
    """Linear CKA from streamed statistics: ``mx``, ``my`` of each side and their ``cross``.

    What :meth:`LinearCKAAccumulator.compute` returns; for callers that share one side's
    :class:`Moments` between several pairs. ``debiased`` needs row statistics and n >= 4.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 4, dtype=torch.float64)
        >>> mx, my = Moments(), Moments()
        >>> xs, a = mx.prepare(x, "x"); ys, b = my.prepare(-x, "y")
        >>> mx.update(xs, a); my.update(ys, b)
        >>> cross = CrossMoments(4, 4, x.device); cross.update(xs, a, ys, b)
        >>> round(cka_from_moments(mx, my, cross, debiased=True), 12)
        1.0
    """
    if debiased:
        return _ratio(_hsic1_cross(mx, my, cross), _hsic1_self(mx), _hsic1_self(my), "debiased linear CKA", low=-1.0)
    return _ratio(_centred_cross_frob2(mx, my, cross), mx.scatter_frob2(), my.scatter_frob2(), "linear CKA", low=0.0)


def _fusable(x: torch.Tensor, y: torch.Tensor) -> bool:
    """The fused one-product path: CPU tensors of one dtype, fewer than SYRK_MIN_COLUMNS features each."""
    return (
        x.device.type == "cpu"
        and y.device.type == "cpu"
        and x.dtype == y.dtype
        and x.dtype in (torch.float32, torch.float64)
        and max(x.shape[1], y.shape[1]) < SYRK_MIN_COLUMNS
    )


def _centred_cross_frob2(mx: Moments, my: Moments, c: CrossMoments) -> float:
    """``||(X - mean)ᵀ(Y - mean)||²_F`` from the shifted cross product, no p x p temporary."""
    assert mx.sum is not None and my.sum is not None and c.xy is not None
    sx, sy, n = mx.sum, my.sum, mx.n
    return _frob2(c.xy) - 2.0 * float(sx @ (c.xy @ sy)) / n + float(sx @ sx) * float(sy @ sy) / (n * n)


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
    acc._drain()
    assert acc._cross is not None
    return _hsic1_cross(acc._x, acc._y, acc._cross), _hsic1_self(acc._x), _hsic1_self(acc._y)


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


# The names before they were public (analysis/tables.py imports them).
_Moments = Moments
_Cross = CrossMoments
