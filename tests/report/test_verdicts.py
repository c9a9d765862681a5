"""The six findings' verdicts on hand-made analysis results (every level; expected values by hand)."""

from __future__ import annotations

import json

import pytest

from forgetlab.errors import ConfigError
from forgetlab.report.verdicts import FINDINGS, VERDICTS, judge, summarize

NAN = float("nan")


def _freeze(task2):
    return {"k": list(range(len(task2))), "task2_accuracy": task2, "task1_accuracy": [0.3] * len(task2),
            "task1_before_task2": 0.6}


@pytest.mark.parametrize("task2, verdict", [
    ([0.70, 0.69, 0.685, 0.60, 0.55], "reproduced"),  # L = 4: blocks 1-2 frozen cost 1.5 points
    ([0.70, 0.69, 0.65, 0.60, 0.55], "partly"),  # blocks 1-2 cost 5 points, block 1 alone 1
    ([0.70, 0.65, 0.64, 0.60, 0.55], "not reproduced"),  # block 1 alone costs 5 points
])
def test_freeze_levels(task2, verdict):
    assert judge("freeze", [_freeze(task2)])["verdict"] == verdict


def test_freeze_averages_seeds_and_2_points_is_within():
    out = judge("freeze", [_freeze([0.72, 0.71, 0.70, 0.5, 0.4]), _freeze([0.68, 0.67, 0.66, 0.5, 0.4])])
    assert out["values"]["task2"] == pytest.approx([0.70, 0.69, 0.68, 0.5, 0.4])
    assert out["values"]["k"] == [0, 1, 2, 3, 4] and out["values"]["task1"] == pytest.approx([0.3] * 5)
    assert out["verdict"] == "reproduced" and out["id"] == 1 and out["name"] == "freeze"


def _cka(values):
    return {"blocks": ["b1", "b2", "b3", "b4"], "cka_debiased": values, "cka_biased": [v + 0.01 for v in values]}


@pytest.mark.parametrize("values, verdict", [
    ([0.90, 0.85, 0.86, 0.70], "reproduced"),  # drop 0.20; the 0.01 rise is within 0.02
    ([0.90, 0.85, 0.75, 0.85], "partly"),  # b3 is 0.15 below b1, but b4 only 0.05
    ([0.90, 0.70, 0.80, 0.75], "partly"),  # last 0.15 below first, but b3 rises 0.10 over b2
    ([0.90, 0.88, 0.86, 0.85], "not reproduced"),  # drops 0.05 only
])
def test_cka_levels(values, verdict):
    out = judge("cka", [_cka(values)])
    assert out["verdict"] == verdict and out["id"] == 2
    assert out["values"]["debiased"] == pytest.approx(values)
    assert out["values"]["biased"] == pytest.approx([v + 0.01 for v in values])


def _reset(top, bottom, after_task2=0.40):
    return {"blocks": ["b1", "b2", "b3", "b4"], "n": [1, 2, 3, 4], "top_down": top, "bottom_up": bottom,
            "task1_before_task2": 0.60, "task1_after_task2": after_task2}


@pytest.mark.parametrize("top, bottom, verdict", [
    ([0.50, 0.55, 0.58, 0.60], [0.42, 0.45, 0.50, 0.60], "reproduced"),  # +8, +10, +8 points
    ([0.45, 0.46, 0.58, 0.60], [0.41, 0.50, 0.52, 0.60], "partly"),  # +4, -4, +6: mean +2, not at every N
    ([0.41, 0.45, 0.52, 0.60], [0.40, 0.51, 0.54, 0.60], "not reproduced"),  # +1, -6, -2: mean -2.3
])
def test_reset_levels(top, bottom, verdict):
    out = judge("reset", [_reset(top, bottom)])
    assert out["verdict"] == verdict and out["id"] == 3
    assert out["values"]["after_task1"] == 0.60 and out["values"]["after_task2"] == 0.40
    assert out["values"]["n"] == [1, 2, 3, 4] and out["values"]["top_down"] == top


def test_reset_without_forgetting_is_not_reproduced():
    out = judge("reset", [_reset([0.60, 0.60, 0.60, 0.60], [0.50, 0.55, 0.58, 0.60], after_task2=0.59)])
    assert out["values"]["mean_difference"] == pytest.approx(0.17 / 3)
    assert out["verdict"] == "not reproduced"


def _subspace(values):
    return {"blocks": ["b1", "b2", "b3", "b4"], "k": 10,
            "conditions": {"task1 vs task2_only": [0.1] * 4, "task1 vs task1_then_2": values}}


@pytest.mark.parametrize("values, verdict", [
    ([0.80, 0.60, 0.45, 0.30], "reproduced"),
    ([0.589, 0.466, 0.466, 0.599], "partly"),  # the quick profile's 3 seeds, 2026-12: falls to b3, up at fc
    ([0.60, 0.58, 0.59, 0.55], "not reproduced"),
])
def test_subspace_levels(values, verdict):
    out = judge("subspace", [_subspace(values)])
    assert out["verdict"] == verdict and out["id"] == 4
    assert out["values"] == {"blocks": ["b1", "b2", "b3", "b4"], "task1_vs_task1then2": values}


def _point(top, task1=0.5):
    return {"task1_accuracy": task1, "task2_accuracy": 0.7, "cka_debiased": [0.9, top], "cka_biased": [0.9, top]}


def _mitigation(ewc, si, replay):
    return {"blocks": ["b1", "b2"], "naive": _point(0.70, 0.40), "methods": {
        "ewc": {"parameter": "lam", "values": [1.0, 10.0], "points": [_point(v) for v in ewc]},
        "si": {"parameter": "c", "values": [0.1, 1.0], "points": [_point(v) for v in si]},
        "replay": {"parameter": "fraction", "values": [0.1, 0.5], "points": [_point(v) for v in replay]},
    }}


@pytest.mark.parametrize("ewc, si, replay, verdict", [
    ([0.71, 0.80], [0.72, 0.73], [0.72, 0.76], "reproduced"),  # every strongest >= naive 0.70 + 0.02, >= weakest
    ([0.71, 0.80], [0.72, 0.73], [0.75, 0.74], "partly"),  # replay's strongest is below its weakest
    ([0.71, 0.715], [0.65, 0.69], [0.75, 0.74], "not reproduced"),  # ewc +0.015, si below naive, replay falls
])
def test_mitigation_levels(ewc, si, replay, verdict):
    out = judge("mitigation", [_mitigation(ewc, si, replay)])
    assert out["verdict"] == verdict and out["id"] == 5
    assert out["values"]["ewc"] == {"parameter": "lam", "strength": [1.0, 10.0], "cka_top": ewc, "task1": [0.5, 0.5]}
    assert out["values"]["naive"] == {"cka_top": 0.70, "task1": 0.40}


def test_mitigation_skips_a_diverged_setting_and_writes_none():
    data = _mitigation([0.71, 0.80], [0.72, 0.73], [0.72, 0.76])
    data["methods"]["ewc"]["points"][1] = {"task1_accuracy": NAN, "task2_accuracy": NAN, "cka_debiased": [NAN, NAN],
                                           "cka_biased": [NAN, NAN], "diverged": True}
    out = judge("mitigation", [data])
    assert out["verdict"] == "partly"  # ewc's strongest that trained is lam=1: 0.71 < 0.72
    assert out["values"]["ewc"]["cka_top"] == [0.71, None] and out["values"]["ewc"]["task1"] == [0.5, None]


def _mixup(alpha, forgetting, **extra):
    return {"alpha": alpha, "forgetting": forgetting, "trace_overlap_fisher": [0.9] * len(alpha),
            "trace_overlap_gram": [0.8] * len(alpha), **extra}


@pytest.mark.parametrize("forgetting, verdict", [
    ([0.05, 0.12, 0.08, 0.09], "reproduced"),  # peak 12 at alpha 0.1, 3 points above the ends' best (9)
    ([0.05, 0.10, 0.08, 0.09], "partly"),  # 1 point above
    ([0.02, 0.05, 0.08, 0.10], "not reproduced"),  # largest at alpha 1
])
def test_mixup_levels(forgetting, verdict):
    out = judge("mixup", [_mixup([0.0, 0.1, 0.5, 1.0], forgetting)])
    assert out["verdict"] == verdict and out["id"] == 6
    assert out["values"]["alpha"] == [0.0, 0.1, 0.5, 1.0] and out["values"]["forgetting"] == forgetting
    assert out["values"]["trace_overlap_fisher"] == [0.9] * 4 and out["values"]["trace_overlap_gram"] == [0.8] * 4


def test_mixup_any_grid_old_results_and_no_interior():
    unsorted = judge("mixup", [_mixup([1.0, 0.0, 0.3], [0.02, 0.01, 0.06])])
    assert unsorted["verdict"] == "reproduced" and unsorted["values"]["peak_alpha"] == 0.3
    old = judge("mixup", [{"alpha": [0.0, 1.0], "forgetting": [0.0, 0.1], "trace_overlap": [1.0, 0.5]}])
    assert old["verdict"] == "not reproduced"  # no alpha between the ends
    assert old["values"]["trace_overlap_fisher"] == [1.0, 0.5] and old["values"]["trace_overlap_gram"] is None
    assert old["values"]["head"] == "shared"


def test_summarize_shape_not_run_and_json():
    freeze = _freeze([0.70, 0.69, 0.685, 0.60, 0.55])
    mitigation = _mitigation([0.71, NAN], [0.72, 0.73], [0.72, 0.76])
    convergence = {"epochs": 4, "accuracy": 0.80, "epochs_2x": 8, "accuracy_2x": 0.81}
    out = summarize({"freeze": [freeze, freeze], "mitigation": [mitigation]}, profile="quick", seeds=2,
                    convergence=convergence)
    assert list(out) == ["profile", "seeds", "task1_accuracy", "convergence", "findings"]
    assert out["profile"] == "quick" and out["seeds"] == 2 and out["task1_accuracy"] == 0.6
    assert out["convergence"] == convergence
    assert [f["id"] for f in out["findings"]] == [1, 2, 3, 4, 5, 6]
    assert [f["verdict"] for f in out["findings"]] == ["reproduced", "not run", "not run", "not run", "partly", "not run"]
    assert all(f["values"] == {} for f in out["findings"] if f["verdict"] == "not run")
    assert json.loads(json.dumps(out, allow_nan=False)) == out  # NaN became null
    assert summarize({}, profile="tiny", seeds=1)["task1_accuracy"] is None


def test_every_finding_has_a_plain_criterion_and_unknown_names_fail():
    assert [f.id for f in FINDINGS.values()] == [1, 2, 3, 4, 5, 6]
    assert all("SPEC" not in f.criterion and f.criterion.endswith(".") for f in FINDINGS.values())
    assert VERDICTS == ("reproduced", "partly", "not reproduced", "not run")
    with pytest.raises(ConfigError, match="'name' parameter must be one of.*Did you mean 'reset'"):
        judge("resett", [])
