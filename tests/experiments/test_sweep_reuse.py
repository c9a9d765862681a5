"""Sweep expansion, prefix reuse (counting task trainings) and resume after an interruption."""

from __future__ import annotations

import numpy as np
import pytest

import forgetlab.engine.train as engine_train
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.errors import ConfigError
from forgetlab.experiments import execute, expand, parse_grid, prefix_key, prefix_source, reproduce_anatomy
from forgetlab.experiments.profiles import PROFILES
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore

BASE = apply_overrides(
    RunConfig(),
    ["train.epochs=1", "stream.train_per_task=120", "stream.test_per_task=50", "model.width=16", "model.depth=3"],
)


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records one entry ("task i/T") per task actually trained by the engine."""
    seen: list[str] = []
    original = engine_train._progress

    def spy(total: int, description: str, enabled: bool, unit: str = "step"):
        if unit == "step":  # a training bar (evaluation bars have unit "task")
            seen.append(description)
        return original(total, description, enabled, unit)

    monkeypatch.setattr(engine_train, "_progress", spy)
    return seen



def test_grid_options_parse_into_the_grid_expand_takes():
    grid = parse_grid(["method.name=freeze", "method.n_blocks= 0, 2"])
    assert [c.method.params.n_blocks for c in expand(RunConfig(), grid)] == [0, 2]
    with pytest.raises(ConfigError, match=r"--grid option must look like KEY=V1,V2,\.\.\. .*Got 'train.seed='"):
        parse_grid(["train.seed="])
    with pytest.raises(ConfigError, match=r"--grid key 'train.seed' is given twice"):
        parse_grid(["train.seed=0", "train.seed=1"])

def test_expand_is_the_row_major_product():
    configs = expand(BASE, {"method.name": ["ewc"], "method.lam": [1, 10], "train.seed": [0, 1]})
    assert [(c.method.params.lam, c.train.seed) for c in configs] == [(1.0, 0), (1.0, 1), (10.0, 0), (10.0, 1)]


def test_expand_rejects_a_scalar_grid_value():
    with pytest.raises(ConfigError, match="must be a non-empty list"):
        expand(BASE, {"train.seed": 3})


def test_prefix_key_ignores_neutral_methods_only():
    ewc = apply_overrides(BASE, ["method.name=ewc", "method.lam=5"])
    si = apply_overrides(BASE, ["method.name=si"])
    assert prefix_key(ewc) == prefix_key(BASE) != prefix_key(si)
    assert prefix_source(si) is None and prefix_source(ewc).method.name == "naive"


def test_freeze_sweep_trains_task_one_once(tmp_path, trainings):
    store = ResultStore(tmp_path)
    configs = expand(BASE, {"method.name": ["freeze"], "method.n_blocks": [0, 1, 2, 3]})
    results = execute([BASE, *configs], store)
    assert trainings.count("task 1/2") == 1
    assert trainings.count("task 2/2") == 5
    assert all(store.reuse_source(r.run_id) is not None for r in results[1:])
    assert store.reuse_source(results[0].run_id) is None
    # finished runs are never recomputed
    trainings.clear()
    execute(configs, store)
    assert trainings == []


@pytest.mark.parametrize("method", [["method.name=freeze", "method.n_blocks=2"], ["method.name=ewc", "method.lam=50"]])
def test_reused_prefix_gives_the_same_run_as_training_it(tmp_path, method):
    config = apply_overrides(BASE, method)
    reused = execute([config], ResultStore(tmp_path / "a"))[0]
    straight = execute([config], ResultStore(tmp_path / "b"), reuse_prefix=False)[0]
    np.testing.assert_allclose(reused.accuracy_matrix, straight.accuracy_matrix, atol=0)


def test_interrupted_reproduction_resumes_without_recomputing(tmp_path, monkeypatch, trainings):
    original = engine_train._progress
    calls = {"n": 0}

    def interrupt(total: int, description: str, enabled: bool, unit: str = "step"):
        if unit == "step":
            calls["n"] += 1
        if calls["n"] == 4:  # task 1 of the naive run, task 2 of it, of freeze-0, then stop in freeze-1
            raise KeyboardInterrupt
        return original(total, description, enabled, unit)

    with monkeypatch.context() as patch:
        patch.setattr(engine_train, "_progress", interrupt)
        with pytest.raises(KeyboardInterrupt):
            reproduce_anatomy("tiny", store=tmp_path / "s", only="freeze", report=False)
    trainings.clear()
    resumed = reproduce_anatomy("tiny", store=tmp_path / "s", only="freeze", report=False)
    n_blocks = len(resumed.results["freeze"][0]["data"]["blocks"])
    # only the freeze runs not yet finished train (their task 2 only); nothing else
    assert trainings == ["task 2/2"] * (n_blocks + 1 - 1)
    straight = reproduce_anatomy(PROFILES["tiny"], store=tmp_path / "t", only="freeze", report=False)
    a, b = resumed.results["freeze"][0]["data"], straight.results["freeze"][0]["data"]
    assert a["task1_accuracy"] == b["task1_accuracy"] and a["task2_accuracy"] == b["task2_accuracy"]
    trainings.clear()
    again = reproduce_anatomy("tiny", store=tmp_path / "s", only="freeze", report=False)
    assert trainings == [] and again.computed == []


def test_a_sweep_compares_methods_each_with_its_own_hyperparameters():
    configs = expand(BASE, {"method.name": ["naive", "ewc", "si"], "method.lam": [1, 10], "method.c": [0.5],
                            "train.seed": [0, 1]})
    cells = [(c.method.name, getattr(c.method.params, "lam", None), getattr(c.method.params, "c", None), c.train.seed)
             for c in configs]
    assert cells == [("naive", None, None, 0), ("naive", None, None, 1),
                     ("ewc", 1.0, None, 0), ("ewc", 1.0, None, 1), ("ewc", 10.0, None, 0), ("ewc", 10.0, None, 1),
                     ("si", None, 0.5, 0), ("si", None, 0.5, 1)]
    assert len({resolve(c).run_id() for c in configs}) == len(configs)
    with pytest.raises(ConfigError, match=r"'method.lamda' is a hyperparameter of none of the sweep's methods \(ewc, naive\)"):
        expand(BASE, {"method.name": ["naive", "ewc"], "method.lamda": [1]})
    with pytest.raises(ConfigError, match=r"'lam' parameter of EWC must be >= 0"):  # values are still checked
        expand(BASE, {"method.name": ["naive", "ewc"], "method.lam": [-1]})
