from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from forgetlab.analysis import LinearCKAAccumulator, MinibatchCKA, NumericalError, linear_cka, rbf_cka
from forgetlab.analysis import _checks
from forgetlab.errors import ConfigError, IncompatibleError

from analysis_references import correlated_pair, reference_linear_cka, reference_rbf_cka

T = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", ["feature", "gram", "auto"])
@pytest.mark.parametrize("shape", [(60, 5, 9), (25, 40, 70), (200, 3, 150)])
def test_linear_cka_matches_gram_textbook(shape, method, debiased):
    n, p1, p2 = shape
    x, y = correlated_pair(n, p1, p2, seed=n + p1, offset=3.0)
    expected = reference_linear_cka(x, y, debiased)
    assert linear_cka(T(x), T(y), debiased=debiased, method=method) == pytest.approx(expected, abs=1e-10)


def test_debiased_removes_the_bias_of_unrelated_representations():
    # Independent representations: biased CKA is far above 0 when p ~ n, debiased is ~0.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 150)), rng.normal(size=(200, 150))
    assert linear_cka(T(x), T(y)) > 0.3
    assert abs(linear_cka(T(x), T(y), debiased=True)) < 0.02


def test_accumulator_streams_to_the_full_batch_value():
    x, y = correlated_pair(1000, 12, 20, seed=3, offset=50.0)
    acc = LinearCKAAccumulator()
    for rows in np.array_split(np.arange(1000), 7):
        acc.update(T(x[rows]), T(y[rows]))
    assert acc.n_samples == 1000
    for debiased in (False, True):
        assert acc.compute(debiased=debiased) == pytest.approx(reference_linear_cka(x, y, debiased), abs=1e-10)
    acc.reset()
    with pytest.raises(ConfigError, match="needs at least 2 samples"):
        acc.compute()


def test_float32_inputs_are_exact_to_1e6_even_with_a_large_mean():
    rng = np.random.default_rng(4)
    n, p = 20000, 64
    z = rng.normal(size=(n, 4))
    x = (z @ rng.normal(size=(4, p)) + rng.normal(size=(n, p)) + 1000.0).astype(np.float32)
    y = (np.tanh(z @ rng.normal(size=(4, p))) + rng.normal(size=(n, p)) - 300.0).astype(np.float32)
    for debiased in (False, True):
        truth = linear_cka(T(x).double(), T(y).double(), debiased=debiased)
        assert linear_cka(T(x), T(y), debiased=debiased) == pytest.approx(truth, abs=1e-6)
    # Products formed before centring (then corrected by n·mean·meanᵀ) in float32 are far
    # off on the same data: the 1e-6 check above has teeth.
    xs, ys = T(x), T(y)
    n = xs.shape[0]

    def centred_by_correction(a, b):
        return a.T @ b - n * torch.outer(a.mean(0), b.mean(0))

    sxy, sxx, syy = centred_by_correction(xs, ys), centred_by_correction(xs, xs), centred_by_correction(ys, ys)
    naive = float(sxy.double().square().sum() / (sxx.double().square().sum() * syy.double().square().sum()).sqrt())
    assert abs(naive - linear_cka(T(x).double(), T(y).double())) > 1e-4


def test_syrk_path_matches_gemm_path():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1500, 1100)).astype(np.float32)
    y = (x[:, :300] @ rng.normal(size=(300, 1030)) + rng.normal(size=(1500, 1030))).astype(np.float32)
    ours = linear_cka(T(x), T(y), method="feature")
    truth = linear_cka(T(x).double(), T(y).double(), method="gram")
    assert ours == pytest.approx(truth, abs=1e-6)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def test_feature_space_form_never_builds_an_n_by_n_matrix():
    n = 4000
    x, y = torch.randn(n, 16), torch.randn(n, 24)
    with _LargestTensor() as probe:
        linear_cka(x, y, debiased=True)
    # About the inputs' size: the fused path's row buffer holds [x', y', 1, a, b], padded
    # to a multiple of 8 columns.
    assert probe.largest <= n * (16 + 24 + 8)  # far below n * n
    with _LargestTensor() as probe:
        linear_cka(x[:100], y[:100], method="gram")
    assert probe.largest >= 100 * 100  # the probe does see Gram matrices


def _data(seed, n, p1, p2, scale_x=1.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p1)) * scale_x
    y = x[:, : min(p1, p2)] @ rng.normal(size=(min(p1, p2), p2)) + rng.normal(size=(n, p2))
    return T(x), T(y)


shapes = st.tuples(st.integers(6, 40), st.integers(1, 12), st.integers(1, 12))


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 10_000), st.booleans())
def test_self_similarity_is_one_and_symmetry(shape, seed, debiased):
    n, p1, p2 = shape
    x, y = _data(seed, n, p1, p2)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(linear_cka(y, x, debiased=debiased), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 10_000), st.floats(1e-3, 1e3), st.booleans())
def test_invariant_to_orthogonal_transforms_isotropic_scaling_and_translation(shape, seed, scale, debiased):
    n, p1, p2 = shape
    x, y = _data(seed, n, p1, p2)
    q = torch.linalg.qr(torch.randn(p1, p1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))[0]
    base = linear_cka(x, y, debiased=debiased)
    assert linear_cka(scale * (x @ q) + 7.0, y, debiased=debiased) == pytest.approx(base, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(shapes, st.integers(0, 10_000))
def test_range(shape, seed):
    x, y = _data(seed, *shape)
    assert 0.0 <= linear_cka(x, y) <= 1.0 + 1e-12
    assert -1.0 <= linear_cka(x, y, debiased=True) <= 1.0 + 1e-12
    assert 0.0 <= rbf_cka(x, y) <= 1.0 + 1e-12


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("sigma", [0.4, 0.8, 2.0])
def test_rbf_cka_matches_textbook(sigma, debiased):
    x, y = correlated_pair(41, 7, 5, seed=7)
    assert rbf_cka(T(x), T(y), sigma=sigma, debiased=debiased) == pytest.approx(
        reference_rbf_cka(x, y, sigma, debiased), abs=1e-10
    )


def test_rbf_cka_invariances():
    x, y = correlated_pair(50, 6, 6, seed=8)
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    base = rbf_cka(T(x), T(y))
    assert rbf_cka(T(x), T(x)) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(T(3.0 * x @ q + 1.0), T(y)) == pytest.approx(base, abs=1e-10)
    assert rbf_cka(T(y), T(x)) == pytest.approx(base, abs=1e-12)


def test_minibatch_cka_single_batch_equals_debiased_and_converges():
    x, y = correlated_pair(64, 10, 12, seed=9)
    metric = MinibatchCKA()
    metric.update(T(x), T(y))
    assert metric.compute() == pytest.approx(reference_linear_cka(x, y, debiased=True), abs=1e-10)

    # More data from the same distribution: the minibatch estimate approaches full-data
    # debiased CKA (Nguyen et al. 2021), while biased CKA of one small batch stays off.
    x, y = correlated_pair(12000, 40, 40, seed=10)
    full = linear_cka(T(x), T(y), debiased=True)
    errors = []
    for n in (500, 12000):
        metric = MinibatchCKA()
        for rows in np.array_split(np.arange(n), n // 50):
            metric.update(T(x[rows]), T(y[rows]))
        errors.append(abs(metric.compute() - full))
    assert errors[1] < 0.01
    assert abs(linear_cka(T(x[:50]), T(y[:50])) - full) > 0.03


def test_minibatch_cka_gram_form_for_wide_batches():
    x, y = correlated_pair(30, 50, 60, seed=11)
    metric = MinibatchCKA()
    metric.update(T(x), T(y))
    assert metric.compute() == pytest.approx(reference_linear_cka(x, y, debiased=True), abs=1e-10)


def test_errors():
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(IncompatibleError, match=r"same number of samples.*\(10, 3\).*\(9, 3\)"):
        linear_cka(x, torch.randn(9, 3))
    with pytest.raises(IncompatibleError, match=r"\(n_samples, n_features\).*flatten"):
        linear_cka(torch.randn(10, 3, 2, 2), x)
    with pytest.raises(ConfigError, match="'method' parameter"):
        linear_cka(x, x, method="svd")
    with pytest.raises(IncompatibleError, match="at least 4 samples"):
        linear_cka(x[:3], x[:3], debiased=True)
    with pytest.raises(NumericalError, match="x has zero variance"):
        linear_cka(torch.ones(10, 3), x)
    with pytest.raises(NumericalError, match="y has zero variance"):
        linear_cka(x, torch.ones(10, 2), debiased=True)
    with pytest.raises(NumericalError, match="NaN or infinite"):
        linear_cka(x.index_put((torch.tensor([4]), torch.tensor([1])), torch.tensor(float("nan"))), x)
    with pytest.raises(ConfigError, match="'sigma' parameter of rbf_cka must be a number > 0. Got -1"):
        rbf_cka(x, x, sigma=-1)
    with pytest.raises(NumericalError, match="median pairwise distance"):
        rbf_cka(torch.cat([torch.zeros(8, 3), torch.ones(2, 3)]), x)
    with pytest.raises(IncompatibleError, match="at least 4"):
        MinibatchCKA().update(x[:3], x[:3])
    with pytest.raises(ConfigError, match="Call update"):
        MinibatchCKA().compute()
    acc = LinearCKAAccumulator()
    acc.update(x, x)
    with pytest.raises(IncompatibleError, match=r"same number of features.*\(batch, 3\).*\(4, 5\)"):
        acc.update(torch.randn(4, 5), torch.randn(4, 3))


def test_out_of_range_raises_instead_of_clamping():
    assert _checks.check_in_range(1.0 + 5e-7, "CKA") == 1.0 + 5e-7
    with pytest.raises(NumericalError, match="outside \\[0.0, 1.0\\].*not clamped"):
        _checks.check_in_range(1.0 + 2e-6, "CKA")
    with pytest.raises(NumericalError, match="outside"):
        _checks.check_in_range(-2e-6, "CKA")


def test_accumulator_without_row_statistics_refuses_the_debiased_estimate():
    x, y = correlated_pair(50, 4, 6, seed=12)
    acc = LinearCKAAccumulator(row_statistics=False)
    acc.update(T(x), T(y))
    assert acc.compute() == pytest.approx(reference_linear_cka(x, y), abs=1e-10)
    with pytest.raises(ConfigError, match="row_statistics=True"):
        acc.compute(debiased=True)


@pytest.mark.parametrize("cols", [7, 1100])  # torch GEMM path and BLAS syrk path
def test_symmetric_product_helpers(cols):
    from forgetlab.analysis._linalg import gram_upper, sym_frob2, sym_quadratic, symmetrize_upper

    m = torch.randn(40, cols, dtype=torch.float64)
    upper = gram_upper(m)
    full = m.T @ m
    assert torch.equal(torch.tril(upper, diagonal=-1), torch.zeros_like(upper))
    assert torch.allclose(symmetrize_upper(upper), full, atol=1e-10)
    v = torch.randn(cols, dtype=torch.float64)
    assert sym_frob2(upper) == pytest.approx(float(full.square().sum()), rel=1e-12)
    assert sym_quadratic(upper, v) == pytest.approx(float(v @ full @ v), rel=1e-10)


def test_many_chunks_and_flushes_give_the_same_value(monkeypatch):
    from forgetlab.analysis import cka

    monkeypatch.setattr(cka, "_FUSED_BUFFER_ELEMENTS", 1 << 16)  # 142 rows per chunk at p = 1100
    monkeypatch.setattr(cka, "_FUSED_ROWS_PER_FLUSH", 3 * 142)
    rng = np.random.default_rng(13)
    x = (rng.normal(size=(700, 1100)) + 5.0).astype(np.float32)
    y = (x[:, :40] @ rng.normal(size=(40, 30)) + rng.normal(size=(700, 30))).astype(np.float32)
    for debiased in (False, True):
        truth = reference_linear_cka(x, y, debiased)
        assert linear_cka(T(x), T(y), debiased=debiased, method="feature") == pytest.approx(truth, abs=1e-6)
    acc = LinearCKAAccumulator()
    acc.update(T(x[:300]), T(y[:300]))
    acc.update(T(x[300:]).double(), T(y[300:]).double())  # dtype change between batches
    assert acc.compute(debiased=True) == pytest.approx(reference_linear_cka(x, y, True), abs=1e-6)


def test_in_place_syrk_accumulation():
    from forgetlab.analysis._linalg import gram_upper, scipy_syrk_add_

    m1, m2 = torch.randn(50, 1030), torch.randn(40, 1030)
    acc = gram_upper(m1).contiguous()
    address = acc.data_ptr()
    scipy_syrk_add_(acc, m2)
    assert acc.data_ptr() == address
    expected = torch.triu(m1.T @ m1 + m2.T @ m2)
    assert torch.allclose(acc, expected, rtol=1e-4, atol=1e-3)


def test_fused_small_feature_path_is_exact_with_a_large_mean(monkeypatch):
    # < 1,024 features on CPU: one syrk per chunk of rows [x', y', 1, a, b]. Small buffers
    # and flushes force many chunks, flushes, a buffer that grows between batches and a
    # dtype change; a large mean checks that rows are shifted before any product.
    from forgetlab.analysis import cka

    monkeypatch.setattr(cka, "_FUSED_BUFFER_ELEMENTS", 1 << 12)  # 64-85 rows per chunk
    monkeypatch.setattr(cka, "_FUSED_ROWS_PER_FLUSH", 150)
    x64, y64 = correlated_pair(1200, 37, 21, seed=21, offset=1000.0)
    x, y = x64.astype(np.float32), y64.astype(np.float32)
    for debiased in (False, True):
        truth = reference_linear_cka(x, y, debiased)  # float64 reference of the float32 values
        assert linear_cka(T(x), T(y), debiased=debiased, method="feature") == pytest.approx(truth, abs=1e-6)
        assert linear_cka(T(x).double(), T(y).double(), debiased=debiased, method="feature") == pytest.approx(
            truth, abs=1e-10
        )
        acc = LinearCKAAccumulator(row_statistics=debiased)
        acc.update(T(x[:50]), T(y[:50]))  # a small first batch: the buffer grows later
        acc.update(T(x[50:700]), T(y[50:700]))
        assert acc.compute(debiased=debiased) == pytest.approx(reference_linear_cka(x[:700], y[:700], debiased), abs=1e-6)
        acc.update(T(x[700:]).double(), T(y[700:]).double())  # dtype change after a compute()
        assert acc.n_samples == 1200
        assert acc.compute(debiased=debiased) == pytest.approx(truth, abs=1e-6)


def test_fused_sums_after_compute_start_from_zero():
    # After compute() the fused path's input-dtype sum is stale (the next product
    # overwrites it, BLAS beta = 0): nothing of an earlier batch may leak into a later one.
    x64, y64 = correlated_pair(900, 30, 18, seed=9, offset=50.0)
    x, y = T(x64.astype(np.float32)), T(y64.astype(np.float32))
    acc = LinearCKAAccumulator()
    acc.update(x[:400], y[:400])
    first = acc.compute(debiased=True)
    acc.update(x[400:], y[400:])
    both = acc.compute(debiased=True)
    again = [linear_cka(x[:400], y[:400], debiased=True, method="feature") for _ in range(2)]
    xf, yf = x64.astype(np.float32), y64.astype(np.float32)
    assert first == pytest.approx(reference_linear_cka(xf[:400], yf[:400], True), abs=1e-6)
    assert both == pytest.approx(reference_linear_cka(xf, yf, True), abs=1e-6)
    assert again[0] == again[1] == pytest.approx(first, abs=1e-9)


def test_cka_leaves_the_callers_torch_thread_count_alone(monkeypatch):
    # Before, during (set_num_threads may not be called, and the BLAS products run under the
    # caller's setting) and after every CKA function, on the fused and the wide path.
    from forgetlab.analysis import _linalg

    before = torch.get_num_threads()
    threads = 2 if before == 1 else before
    torch.set_num_threads(threads)
    seen = []
    syrk = _linalg.scipy_syrk_add_

    def recording_syrk(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return syrk(*args, **kwargs)

    def refuse(n):
        raise AssertionError(f"a CKA call changed torch's thread count to {n}")

    try:
        monkeypatch.setattr(_linalg, "scipy_syrk_add_", recording_syrk)
        monkeypatch.setattr("forgetlab.analysis.cka.scipy_syrk_add_", recording_syrk)
        monkeypatch.setattr(torch, "set_num_threads", refuse)
        for p in (20, 1100):  # fused path, then the syrk path for wide features
            x, y = _data(p, 300, p, 30)
            for debiased in (False, True):
                linear_cka(x.float(), y.float(), debiased=debiased, method="feature")
                linear_cka(x, y, debiased=debiased, method="gram")
            acc = LinearCKAAccumulator()
            acc.update(x.float(), y.float())
            acc.compute(debiased=True)
            metric = MinibatchCKA()
            metric.update(x[:100], y[:100])
            metric.compute()
        rbf_cka(x[:100], y[:100])
        assert torch.get_num_threads() == threads
        assert seen and set(seen) == {threads}
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
