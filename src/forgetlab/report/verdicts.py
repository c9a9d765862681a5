"""The six findings of the Anatomy paper (SPEC §6), judged by numbers fixed before the runs.

One pure function per finding reads the stored per-seed data of its analysis (the
``data`` dicts :func:`forgetlab.experiments.reproduce_anatomy` stores), averages over
seeds and applies the criterion written in ``docs/REPRODUCTION.md`` ("How each finding
is judged"). Each returns a JSON-ready dict: ``id``, ``name`` (the analysis), ``claim``
and ``criterion`` (plain words), ``verdict`` (one of :data:`VERDICTS`), ``measured``
(the deciding number in words) and ``values`` (accuracies as fractions; NaN -> None).
:func:`summarize` judges all six; an analysis that was not run gets ``"not run"``.

Example:
    >>> data = [{"k": [0, 1, 2], "task2_accuracy": [0.80, 0.79, 0.70], "task1_accuracy": [0.3, 0.4, 0.5]}]
    >>> judge("freeze", data)["verdict"]
    'reproduced'
    >>> summarize({}, profile="quick", seeds=1)["findings"][5]["verdict"]
    'not run'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetlab.errors import ConfigError, did_you_mean

VERDICTS = ("reproduced", "partly", "not reproduced", "not run")
POINTS = 0.01  # one percentage point of accuracy, as a fraction
_EPS = 1e-9  # "within 2 points" includes 2 points whatever the float rounding

Data = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Finding:
    """One of SPEC §6's findings: its number, analysis, claim and criterion (plain words)."""

    id: int
    name: str
    claim: str
    criterion: str


_FALLS = ("the last block at least 0.10 below the first and no block more than 0.02 above the block beneath "
          "it: reproduced; some block of the upper half at least 0.10 below the first: partly; otherwise: not "
          "reproduced.")

FINDINGS: dict[str, Finding] = {f.name: f for f in (
    Finding(1, "freeze",
            "Freezing the lower blocks after task 1 barely hurts how well the network then learns task 2.",
            "Task-2 test accuracy with the lower half of the L blocks frozen after task 1 (blocks 1..floor(L/2)) "
            "within 2 points of training every block: reproduced; within 2 points only with block 1 frozen: partly; "
            "otherwise: not reproduced."),
    Finding(2, "cka",
            "After task 2, the lower blocks still represent task-1 images much as they did after task 1; the "
            "upper blocks much less so.",
            "Debiased linear CKA per block between the network after task 1 and after task 2, on task-1 test "
            "images: " + _FALLS),
    Finding(3, "reset",
            "Rewinding the top blocks to their weights after task 1 brings back far more task-1 accuracy than "
            "rewinding as many bottom blocks.",
            "Task-1 accuracy after rewinding N blocks from the top minus after rewinding N blocks from the bottom, "
            "averaged over N = 1..L-1 (N = L rewinds everything either way): more than 2 points, with the top "
            "ahead at every N: reproduced; more than 0: partly; otherwise, or if task 2 cost task 1 no more than "
            "2 points (nothing to recover): not reproduced."),
    Finding(4, "subspace",
            "The main directions (principal subspace) of the task-1 representations change little in the lower "
            "blocks and much in the upper blocks.",
            "Subspace similarity of the top-k principal components per block between the network after task 1 and "
            "after task 2, on task-1 test images: " + _FALLS),
    Finding(5, "mitigation",
            "Stronger EWC, SI and replay keep the upper blocks' representations closer to where task 1 left them.",
            "For each method, the last block's debiased CKA between the run's own network after task 1 and after "
            "task 2, at the strongest setting that trained (did not diverge): at least 0.02 above plain "
            "fine-tuning and not below the weakest setting. Every method: reproduced; some: partly; none: not "
            "reproduced."),
    Finding(6, "mixup",
            "Forgetting is worst when task 2 is of intermediate similarity to task 1, not when it is most similar "
            "or most different.",
            "Forgetting of task 1 (its accuracy after task 1 minus after task 2) against the mixing fraction alpha "
            "(0: task 2 is task 1 again; 1: other classes): the largest forgetting at an alpha strictly between the "
            "grid's ends, above the forgetting at both ends by more than 2 points: reproduced; by more than 0: "
            "partly; otherwise (largest at an end, or no alpha between the ends): not reproduced."),
)}


def seed_mean(data: Data, *path: Any) -> Any:
    """Mean over seeds of ``data[seed][path...]`` (a number or a list, position by position);
    ``None`` where the first seed lacks the path (a result stored before it existed).

    Example:
        >>> seed_mean([{"a": {"b": [1.0, 2.0]}}, {"a": {"b": [3.0, 2.0]}}], "a", "b")
        [2.0, 2.0]
        >>> seed_mean([{"a": 1.0}], "z") is None
        True
    """
    values = []
    for entry in data:
        item: Any = entry
        for key in path:
            if not isinstance(item, (Mapping, Sequence)) or (isinstance(item, Mapping) and key not in item):
                return None
            item = item[key]
        values.append(item)
    mean = np.asarray(values, dtype=float).mean(axis=0)
    return mean.tolist() if mean.ndim else float(mean)


def _clean(value: Any) -> Any:
    """NaN and infinities -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _finding(name: str, verdict: str, measured: str, values: Mapping[str, Any]) -> dict[str, Any]:
    spec = FINDINGS[name]
    return {"id": spec.id, "name": name, "claim": spec.claim, "criterion": spec.criterion, "verdict": verdict,
            "measured": measured, "values": _clean(dict(values))}


def _falls_with_depth(values: Sequence[float], drop: float = 0.10, rise: float = 0.02) -> tuple[str, str]:
    """The verdict of "high in the lower blocks, lower in the upper blocks" and its numbers in words."""
    if len(values) < 2:
        return "not reproduced", "only one block"
    steps = [b - a for a, b in zip(values, values[1:])]
    upper = range(len(values) // 2, len(values))
    largest_drop = max(values[0] - values[j] for j in upper)
    measured = (f"first block {values[0]:.3f}, last block {values[-1]:.3f} (drop {values[0] - values[-1]:.3f}); "
                f"largest rise from a block to the next {max(steps):.3f}; largest drop below the first in the "
                f"upper half {largest_drop:.3f}")
    if values[0] - values[-1] >= drop - _EPS and max(steps) <= rise + _EPS:
        return "reproduced", measured
    return ("partly" if largest_drop >= drop - _EPS else "not reproduced"), measured


def judge_freeze(data: Data) -> dict[str, Any]:
    """Finding 1 from the freeze sweep (``k``, ``task2_accuracy``, ``task1_accuracy``)."""
    k, task2, task1 = list(data[0]["k"]), seed_mean(data, "task2_accuracy"), seed_mean(data, "task1_accuracy")
    values = {"k": k, "task2": task2, "task1": task1}
    n_blocks = len(k) - 1
    if n_blocks < 1:
        return _finding("freeze", "not reproduced", "no block to freeze", values)
    half = max(1, n_blocks // 2)
    cost_half, cost_one = task2[0] - task2[half], task2[0] - task2[1]
    lower = f"blocks 1..{half}" if half > 1 else "block 1"
    measured = (f"task 2: {task2[0]:.1%} training every block, {task2[half]:.1%} with {lower} frozen "
                f"(cost {cost_half / POINTS:.1f} points), {task2[1]:.1%} with block 1 frozen "
                f"(cost {cost_one / POINTS:.1f} points)")
    if cost_half <= 2 * POINTS + _EPS:
        verdict = "reproduced"
    else:
        verdict = "partly" if cost_one <= 2 * POINTS + _EPS else "not reproduced"
    return _finding("freeze", verdict, measured, values)


def judge_cka(data: Data) -> dict[str, Any]:
    """Finding 2 from the CKA analysis (``blocks``, ``cka_debiased``, ``cka_biased``)."""
    debiased = seed_mean(data, "cka_debiased")
    verdict, measured = _falls_with_depth(debiased)
    values = {"blocks": list(data[0]["blocks"]), "debiased": debiased, "biased": seed_mean(data, "cka_biased")}
    return _finding("cka", verdict, "debiased CKA: " + measured, values)


def judge_reset(data: Data) -> dict[str, Any]:
    """Finding 3 from the reset sweep (``n``, ``top_down``, ``bottom_up``, accuracies after tasks 1 and 2)."""
    n, top, bottom = list(data[0]["n"]), seed_mean(data, "top_down"), seed_mean(data, "bottom_up")
    values = {"n": n, "top_down": top, "bottom_up": bottom, "after_task1": seed_mean(data, "task1_before_task2"),
              "after_task2": seed_mean(data, "task1_after_task2")}
    partial = [i for i, count in enumerate(n) if count < max(n)]
    if not partial:
        return _finding("reset", "not reproduced", "one block only: nothing to compare", values)
    gaps = [top[i] - bottom[i] for i in partial]
    mean_gap = sum(gaps) / len(gaps)
    forgetting = values["after_task1"] - values["after_task2"]
    values["mean_difference"] = mean_gap
    measured = (f"top-down minus bottom-up, mean over N = 1..{max(n) - 1}: {mean_gap / POINTS:.1f} points "
                f"(per N: {', '.join(f'{g / POINTS:.1f}' for g in gaps)}); task 2 cost task 1 "
                f"{forgetting / POINTS:.1f} points")
    if not forgetting > 2 * POINTS:
        verdict = "not reproduced"  # nothing to recover: the comparison says nothing about the claim
    elif mean_gap > 2 * POINTS and all(g > 0 for g in gaps):
        verdict = "reproduced"
    else:
        verdict = "partly" if mean_gap > 0 else "not reproduced"
    return _finding("reset", verdict, measured, values)


SUBSPACE_CONDITION = "task1 vs task1_then_2"


def judge_subspace(data: Data) -> dict[str, Any]:
    """Finding 4 from the subspace analysis (condition task 1 vs task 1 then 2)."""
    similarity = seed_mean(data, "conditions", SUBSPACE_CONDITION)
    verdict, measured = _falls_with_depth(similarity)
    values = {"blocks": list(data[0]["blocks"]), "task1_vs_task1then2": similarity}
    return _finding("subspace", verdict, "subspace similarity: " + measured, values)


def judge_mitigation(data: Data) -> dict[str, Any]:
    """Finding 5 from the mitigation grids (last block's debiased CKA per strength vs naive)."""
    naive_top = seed_mean(data, "naive", "cka_debiased")[-1]
    values: dict[str, Any] = {}
    passed, words = [], []
    for method, info in data[0]["methods"].items():
        points = range(len(info["values"]))
        top = [seed_mean(data, "methods", method, "points", i, "cka_debiased")[-1] for i in points]
        task1 = [seed_mean(data, "methods", method, "points", i, "task1_accuracy") for i in points]
        values[method] = {"parameter": info["parameter"], "strength": list(info["values"]), "cka_top": top, "task1": task1}
        trained = sorted((s, c) for s, c in zip(info["values"], top) if math.isfinite(c))
        ok = bool(trained) and trained[-1][1] - naive_top >= 2 * POINTS - _EPS and trained[-1][1] >= trained[0][1]
        passed.append(ok)
        words.append(f"{method} {trained[-1][1]:.3f} at {info['parameter']}={trained[-1][0]:g}" if trained
                     else f"{method}: every setting diverged")
    values["naive"] = {"cka_top": naive_top, "task1": seed_mean(data, "naive", "task1_accuracy")}
    verdict = "reproduced" if passed and all(passed) else ("partly" if any(passed) else "not reproduced")
    measured = f"last-block CKA: naive {naive_top:.3f}; strongest settings: " + ", ".join(words)
    return _finding("mitigation", verdict, measured, values)


def judge_mixup(data: Data) -> dict[str, Any]:
    """Finding 6 from the mixup-fraction sweep; reads ``trace_overlap`` (stored before the two
    forms existed) as the Fisher form."""
    alpha, forgetting = list(data[0]["alpha"]), seed_mean(data, "forgetting")
    fisher = seed_mean(data, "trace_overlap_fisher")
    values = {"alpha": alpha, "forgetting": forgetting,
              "trace_overlap_fisher": fisher if fisher is not None else seed_mean(data, "trace_overlap"),
              "trace_overlap_gram": seed_mean(data, "trace_overlap_gram"), "head": data[0].get("head", "shared")}
    low, high = min(alpha), max(alpha)
    ends = [f for a, f in zip(alpha, forgetting) if a in (low, high)]
    inside = [(f, a) for a, f in zip(alpha, forgetting) if low < a < high]
    if not inside:
        return _finding("mixup", "not reproduced", f"no alpha between {low:g} and {high:g}", values)
    peak, at = max(inside)
    margin = peak - max(ends)
    values["peak_alpha"] = at
    measured = (f"largest forgetting between the ends {peak / POINTS:.1f} points at alpha = {at:g}; at the ends "
                f"{', '.join(f'{f / POINTS:.1f}' for f in ends)} points (margin {margin / POINTS:.1f})")
    verdict = "reproduced" if margin > 2 * POINTS else ("partly" if margin > 0 else "not reproduced")
    return _finding("mixup", verdict, measured, values)


JUDGES: dict[str, Callable[[Data], dict[str, Any]]] = {
    "freeze": judge_freeze, "cka": judge_cka, "reset": judge_reset, "subspace": judge_subspace,
    "mitigation": judge_mitigation, "mixup": judge_mixup,
}


def judge(name: str, data: Data | None) -> dict[str, Any]:
    """The finding judged from analysis ``name``'s per-seed data; ``"not run"`` without data."""
    if name not in FINDINGS:
        raise ConfigError(
            f"The 'name' parameter must be one of {', '.join(map(repr, FINDINGS))}. Got {name!r} instead."
            f"{did_you_mean(name, FINDINGS)}"
        )
    if not data:
        return _finding(name, "not run", "the analysis was not run", {})
    return JUDGES[name](data)


def summarize(
    results: Mapping[str, Data], *, profile: str, seeds: int, convergence: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The reproduction's summary (``forgetlab reproduce anatomy --json``): ``profile``,
    ``seeds``, ``task1_accuracy`` (the plain run's task-1 accuracy after task 1, mean over
    seeds; ``None`` if no analysis that records it ran), ``convergence`` (as given: the
    convergence check's ``{"epochs", "accuracy", "epochs_2x", "accuracy_2x"}`` or ``None``)
    and the six ``findings`` in SPEC order. ``results``: analysis name -> per-seed data dicts.
    """
    task1 = next((seed_mean(results[n], "task1_before_task2") for n in ("freeze", "reset", "cka")
                  if results.get(n) and "task1_before_task2" in results[n][0]), None)
    return _clean({
        "profile": profile, "seeds": seeds, "task1_accuracy": task1,
        "convergence": dict(convergence) if convergence is not None else None,
        "findings": [judge(name, results.get(name)) for name in FINDINGS],
    })
