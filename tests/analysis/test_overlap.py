from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from forgetlab.analysis import NumericalError, diagonal_fisher, task_similarity, trace_overlap
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.models import create_model


def _psd(seed: int, p: int, rank: int) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(p, rank))
    return z @ z.T


def _reference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.trace(a @ b) / np.sqrt(np.trace(a @ a) * np.trace(b @ b)))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(1, 5), st.floats(1e-3, 1e3))
def test_full_matrices_match_textbook_and_invariances(seed, p, rank, scale):
    a, b = _psd(seed, p, rank), _psd(seed + 1, p, rank)
    value = trace_overlap(torch.from_numpy(a), torch.from_numpy(b))
    assert value == pytest.approx(_reference(a, b), abs=1e-12)
    assert 0.0 <= value <= 1.0 + 1e-12
    assert trace_overlap(torch.from_numpy(b), torch.from_numpy(a)) == pytest.approx(value, abs=1e-12)
    assert trace_overlap(torch.from_numpy(scale * a), torch.from_numpy(b)) == pytest.approx(value, abs=1e-9)
    assert trace_overlap(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(1.0, abs=1e-12)
    q = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))[0]
    rotated = trace_overlap(torch.from_numpy(q @ a @ q.T), torch.from_numpy(q @ b @ q.T))
    assert rotated == pytest.approx(value, abs=1e-9)


def test_diagonal_form_equals_full_diagonal_matrices_and_fisher_dicts():
    rng = np.random.default_rng(0)
    a, b = rng.random(7), rng.random(7)
    expected = _reference(np.diag(a), np.diag(b))
    assert trace_overlap(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, abs=1e-12)
    assert trace_overlap(torch.from_numpy(np.diag(a)), torch.from_numpy(np.diag(b))) == pytest.approx(expected, abs=1e-12)
    fa = {"w": torch.from_numpy(a[:4]).reshape(2, 2), "b": torch.from_numpy(a[4:])}
    fb = {"w": torch.from_numpy(b[:4]).reshape(2, 2), "b": torch.from_numpy(b[4:])}
    assert trace_overlap(fa, fb) == pytest.approx(expected, abs=1e-12)


def test_task_similarity_forms():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 6, 6), head_sizes=(3, 3), width=12)
    xa, ya = torch.rand(40, 1, 6, 6), torch.randint(0, 3, (40,))
    xb, yb = torch.rand(40, 1, 6, 6) * 2, torch.randint(0, 3, (40,))
    assert task_similarity(model, xa, xa, targets_a=ya, targets_b=ya) == pytest.approx(1.0, abs=1e-12)
    fisher = task_similarity(model, xa, xb, targets_a=ya, targets_b=yb, head_indices=(0, 1))
    expected = trace_overlap(diagonal_fisher(model, xa, ya), diagonal_fisher(model, xb, yb, head_index=1))
    assert fisher == pytest.approx(expected, abs=1e-12)
    assert 0.0 < fisher < 1.0  # different heads: only the shared trunk overlaps
    gram = task_similarity(model, xa, xb, form="gram", batch_size=16)
    with torch.no_grad():
        fa, fb = model.eval().features(xa).double(), model.features(xb).double()
    ka, kb, kab = fa @ fa.T / 40, fb @ fb.T / 40, fa @ fb.T / 40
    reference = float(kab.square().sum() / torch.sqrt(ka.square().sum() * kb.square().sum()))
    assert gram == pytest.approx(reference, abs=1e-6)


def test_errors():
    a = torch.rand(4)
    with pytest.raises(IncompatibleError, match=r"same shape.*\(4,\).*\(5,\)"):
        trace_overlap(a, torch.rand(5))
    with pytest.raises(ConfigError, match="'b' parameter of trace_overlap must be PSD.*negative"):
        trace_overlap(a, torch.tensor([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="symmetric"):
        trace_overlap(torch.eye(3), torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(NumericalError, match="outside"):  # symmetric, non-negative diagonal, not PSD
        trace_overlap(torch.ones(2, 2), torch.tensor([[0.1, -1.0], [-1.0, 0.1]]))
    with pytest.raises(NumericalError, match="zero matrix"):
        trace_overlap(torch.zeros(3), torch.rand(3))
    with pytest.raises(ConfigError, match="'form' parameter of task_similarity"):
        task_similarity(torch.nn.Linear(2, 2), torch.rand(3, 2), torch.rand(3, 2), form="ntk")
    with pytest.raises(ConfigError, match="no features"):
        task_similarity(torch.nn.Linear(2, 2), torch.rand(3, 2), torch.rand(3, 2), form="gram")
