"""Metrics against hand computations and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forgetlab.errors import IncompatibleError
from forgetlab.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    summary,
)

R3 = np.array(
    [
        [0.90, 0.10, 0.20],
        [0.70, 0.80, 0.30],
        [0.50, 0.60, 0.95],
    ]
)


def test_hand_computed_three_tasks():
    assert average_accuracy(R3) == pytest.approx((0.50 + 0.60 + 0.95) / 3)
    assert backward_transfer(R3) == pytest.approx(((0.50 - 0.90) + (0.60 - 0.80)) / 2)
    # f_0 = max(0.9, 0.7) - 0.5 ; f_1 = max(0.1, 0.8) - 0.6
    np.testing.assert_allclose(forgetting_per_task(R3), [0.40, 0.20])
    assert forgetting(R3) == pytest.approx(0.30)
    baseline = np.array([0.1, 0.2, 0.25])
    assert forward_transfer(R3, baseline) == pytest.approx(((0.10 - 0.20) + (0.30 - 0.25)) / 2)
    assert summary(R3) == {"acc": average_accuracy(R3), "bwt": backward_transfer(R3), "forgetting": forgetting(R3)}


def test_single_task_has_no_transfer():
    R = [[0.7]]
    assert average_accuracy(R) == pytest.approx(0.7)
    assert backward_transfer(R) == 0.0
    assert forgetting(R) == 0.0
    assert forward_transfer(R, [0.1]) == 0.0


def test_bad_shapes():
    with pytest.raises(IncompatibleError, match=r"square T x T.*\(2, 3\)"):
        average_accuracy(np.zeros((2, 3)))
    with pytest.raises(IncompatibleError, match=r"one accuracy per task, shape \(3,\). Got shape \(2,\)"):
        forward_transfer(R3, [0.1, 0.2])


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 6)).map(lambda t: (t[0], t[0])), elements=st.floats(0, 1)))
def test_invariances(R):
    # no forgetting (<= 0) when the last row dominates every earlier row
    no_forgetting = R.copy()
    no_forgetting[-1] = R.max(axis=0)
    assert forgetting(no_forgetting) <= 1e-12
    # forgetting >= -BWT (max over rows >= the diagonal entry)
    assert forgetting(R) >= -backward_transfer(R) - 1e-12
    # shifting every accuracy by c leaves BWT and forgetting unchanged, moves ACC by c
    shifted = R + 0.25
    assert backward_transfer(shifted) == pytest.approx(backward_transfer(R))
    assert forgetting(shifted) == pytest.approx(forgetting(R))
    assert average_accuracy(shifted) == pytest.approx(average_accuracy(R) + 0.25)
