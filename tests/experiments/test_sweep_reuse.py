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

pytestmark = pytest.mark.usefixtures("one_torch_thread")

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


def test_prefix_key_ignores_neutral_methods_and_first_task_free_hyperparameters():
    ewc = apply_overrides(BASE, ["method.name=ewc", "method.lam=5"])
    si = apply_overrides(BASE, ["method.name=si"])
    si_c = apply_overrides(si, ["method.c=10", "method.gradient=total"])
    si_xi = apply_overrides(si, ["method.xi=0.5"])  # xi is in the Omega after task 1
    assert prefix_key(ewc) == prefix_key(BASE) != prefix_key(si) == prefix_key(si_c) != prefix_key(si_xi)
    assert prefix_source(si) is None and prefix_source(ewc).method.name == "naive"
    assert prefix_source(si_c, [si_xi, si, si_c]) == si and prefix_source(si_xi, [si_xi, si, si_c]) is None


def _straight(configs, store):
    """Each config run alone, without prefix reuse."""
    return execute(configs, store, reuse_prefix=False)


SMALL = apply_overrides(BASE, ["train.epochs=2", "train.batch_size=16", "train.lr=0.1", "model.depth=2",
                              "stream.train_per_task=100"])  # a few dozen steps per task: SI's c visibly acts


def test_si_sweep_over_c_trains_task_one_once_with_each_runs_result(tmp_path, trainings):
    store = ResultStore(tmp_path / "a")
    configs = expand(SMALL, {"method.name": ["si"], "method.c": [0.1, 100], "method.gradient": ["task", "total"]})
    results = execute(configs, store)
    assert trainings.count("task 1/2") == 1 and trainings.count("task 2/2") == 4
    assert store.reuse_source(results[0].run_id) is None
    assert all(store.reuse_source(r.run_id) is not None for r in results[1:])
    straight = _straight(configs, ResultStore(tmp_path / "b"))
    for reused, alone in zip(results, straight):
        np.testing.assert_array_equal(reused.accuracy_matrix, alone.accuracy_matrix)
        assert reused.curves == alone.curves
    # c acts on task 2 through the state learnt in task 1: an adopter without it would differ from its straight run
    assert straight[2].accuracy_matrix[1][0] > straight[0].accuracy_matrix[1][0]


@pytest.mark.parametrize(("normalize", "methods"), [("first-task", ["naive", "ewc", "si"]), ("standard", ["naive"])])
def test_mixup_sweep_over_alpha_trains_task_one_once_with_each_runs_result(tmp_path, trainings, normalize, methods):
    base = apply_overrides(SMALL, ["stream.stream=mixup-fraction", "stream.class_sets=0+1,2+3", "stream.train_per_task=60",
                                   f"stream.normalize={normalize}"])
    configs = expand(base, {"method.name": methods, "stream.mixup_alpha": [0.0, 0.4, 1.0]})
    results = execute(configs, ResultStore(tmp_path / "a"))
    assert trainings.count("task 1/2") == (1 if methods == ["naive"] else 2)  # SI shares with SI only
    assert trainings.count("task 2/2") == len(configs)
    straight = _straight(configs, ResultStore(tmp_path / "b"))
    for reused, alone in zip(results, straight):
        np.testing.assert_array_equal(reused.accuracy_matrix, alone.accuracy_matrix)
        np.testing.assert_array_equal(reused.initial_accuracy, alone.initial_accuracy)
    # the untrained model and R[0] on task 2 differ across alpha: re-evaluated, not copied
    assert len({r.accuracy_matrix[0][1] for r in straight[:3]}) == 3
    assert len({r.initial_accuracy[1] for r in straight[:3]}) > 1
    assert results[0].curves == straight[0].curves and len([c for c in straight[1].curves if c.task_index == 0]) == 2
    for reused, alone in zip(results[1:3], straight[1:3]):  # of task 1's curve an adopter keeps the boundary point
        assert reused.curves == alone.curves[1:]


def test_a_method_that_learns_in_task_one_refuses_a_naive_prefix(tmp_path):
    from forgetlab.api import run
    from forgetlab.engine.checkpoint import checkpoint_path
    from forgetlab.errors import IncompatibleError

    naive = execute([BASE], ResultStore(tmp_path))[0]
    with pytest.raises(IncompatibleError, match="can adopt a prefix checkpoint of the same method only"):
        run(apply_overrides(BASE, ["method.name=si"]), store=tmp_path,
            start_from=checkpoint_path(naive.run_dir / "checkpoints", 0))


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
