"""The [method] config section, --set method.*, the run hash, the CLI, and resume through the API."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

import forgetlab
from forgetlab.cli import main
from forgetlab.config import (
    MethodConfig,
    ModelConfig,
    RunConfig,
    StreamConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from forgetlab.errors import ConfigError
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore
from forgetlab.strategies import STRATEGIES, EWCParams


def test_set_and_toml_give_the_same_method(tmp_path):
    by_set = apply_overrides(RunConfig(), ["method.name=ewc", "method.lam=100", "method.mode=online"])
    path = tmp_path / "run.toml"
    path.write_text('[method]\nname = "ewc"\nlam = 100\nmode = "online"\n')
    by_file = load_config(path)
    assert by_set == by_file
    assert by_set.method.params == EWCParams(lam=100.0, mode="online")
    # name first, whatever the order on the command line
    assert apply_overrides(RunConfig(), ["method.lam=100", "method.name=ewc", "method.mode=online"]) == by_set


def test_method_hyperparameters_are_checked_together():
    overrides = ["method.name=pseudo-rehearsal", "method.revision_source=user", "method.revision_path=x.npz"]
    cfg = apply_overrides(RunConfig(), overrides)
    assert (cfg.method.params.revision_source, cfg.method.params.revision_path) == ("user", "x.npz")
    with pytest.raises(ConfigError, match="The 'revision_path' parameter of PseudoRehearsal must be a file"):
        apply_overrides(RunConfig(), overrides[:2])


def test_changing_the_method_resets_its_hyperparameters():
    cfg = apply_overrides(RunConfig(), ["method.name=ewc", "method.lam=5"])
    assert apply_overrides(cfg, ["method.name=ewc"]).method.params.lam == 5.0  # same name: kept
    assert apply_overrides(cfg, ["method.name=l2"]).method == MethodConfig("l2")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.name=ewc", "method.lamda=1"],
         r"Unknown config key 'method.lamda'. Did you mean 'method.lam'\? Method 'ewc' has hyperparameters: "
         r"lam, fisher, mode, gamma, fisher_samples."),
        (["method.lam=1"],
         r"Unknown config key 'method.lam': method 'naive' has no hyperparameters. Choose a method first .* "
         r"\('lam' is a hyperparameter of: l2, ewc, mas, lwf.\)"),
        (["method.name=l2", "method.fisher=true"], r"Method 'l2' has hyperparameters: lam. \('fisher' is a hyperparameter of: ewc.\)"),
        (["method.name=ewcc"], r"Unknown method 'ewcc'. Did you mean 'ewc'\? Valid methods: agem, derpp, ewc,"),
        (["method.name=ewc", "method.lam=-1"], r"The 'lam' parameter of EWC must be >= 0. Got -1.0 instead."),
        (["method.name=ewc", "method.lam=x"], r"The 'method.lam' parameter must be a number. Got 'x' instead."),
        (["method=ewc"], r"'method' is a section; set one of its fields, e.g. 'method.name'."),
        (["lam=1"], r"Unknown config key 'lam'.* Valid keys: .*method.name"),
    ],
)
def test_method_key_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), overrides)


def test_toml_unknown_method_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[method]\nname = "replay"\nbuffer_sise = 10\n')
    with pytest.raises(ConfigError, match=r"Did you mean 'method.buffer_size'\?"):
        load_config(path)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_to_dict_from_dict_round_trip(name):
    cfg = RunConfig(stream=StreamConfig(n_tasks=5), method=MethodConfig(name))
    data = cfg.to_dict()
    assert data["method"]["name"] == name
    assert set(data["method"]) == {"name"} | {f.name for f in dataclasses.fields(STRATEGIES[name].params_type)}
    assert RunConfig.from_dict(json.loads(json.dumps(data))) == cfg


def test_run_id_covers_the_method_and_all_its_hyperparameters():
    base = resolve(RunConfig())
    ewc = resolve(RunConfig(method=MethodConfig("ewc")))
    assert len({base.run_id(), ewc.run_id(), resolve(RunConfig(method=MethodConfig("l2"))).run_id()}) == 3
    assert ewc.run_id() == resolve(RunConfig(method=MethodConfig("ewc", EWCParams(lam=100.0)))).run_id()  # defaults explicit
    assert ewc.run_id() != resolve(RunConfig(method=MethodConfig("ewc", EWCParams(gamma=0.9)))).run_id()


def test_run_id_of_a_config_without_method_only_gains_naive():
    """The hash is the one of the old payload (stream, model, train) plus method = naive."""
    cfg = RunConfig(stream=StreamConfig(n_tasks=3), train=TrainConfig(seed=4))
    resolved = resolve(cfg)
    old_sections = {name: dataclasses.asdict(getattr(resolved, name)) for name in ("stream", "model", "train")}
    old_sections["stream"]["class_order"] = list(old_sections["stream"]["class_order"])
    old_sections["stream"]["positive_classes"] = list(old_sections["stream"]["positive_classes"])
    old_sections["stream"].pop("normalize")  # added later; in the hash only when set (issue 14)
    old_sections["train"].pop("active_classes")
    old_sections["train"].pop("memory_format")  # added later (issue 19), likewise
    old_sections["train"].pop("label_smoothing")  # likewise
    payload = {"version": 1, "config": {**old_sections, "method": {"name": "naive"}}}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert resolved.run_id() == expected


def test_method_config_errors():
    with pytest.raises(ConfigError, match=r"The 'method.params' parameter of method 'l2' must be a L2Params"):
        MethodConfig("l2", EWCParams())
    with pytest.raises(ConfigError, match=r"The 'method' section must be a table"):
        RunConfig.from_dict({"method": "ewc"})


def test_cli_run_with_method_and_list(tmp_path, capsys):
    store = tmp_path / "store"
    argv = [
        "run", "--method", "ewc", "--set", "method.lam=100", "--set", "stream.train_per_task=100",
        "--set", "train.steps=5", "--store", str(store), "--quiet", "--json",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "method ewc" in captured.err
    run_id = json.loads(captured.out)["run_id"]
    stored = ResultStore(store).get(run_id)
    assert stored.status == "finished"
    assert stored.config["method"] == {"name": "ewc", "lam": 100.0, "fisher": "empirical", "mode": "separate",
                                       "gamma": 1.0, "fisher_samples": 1000}

    assert main(["run", "--method", "ewc", "--set", "method.lamda=1", "--store", str(store)]) == 2
    assert "Did you mean 'method.lam'?" in capsys.readouterr().err

    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "methods:" in listing
    line = next(l for l in listing.splitlines() if l.strip().startswith("ewc "))
    assert "lam=100.0 fisher=empirical mode=separate gamma=1.0 fisher_samples=1000" in line
    assert all(any(l.strip().startswith(name + " ") for l in listing.splitlines()) for name in STRATEGIES)


@pytest.mark.parametrize("method", ["ewc", "replay"])
def test_resume_after_interruption_gives_the_straight_result(method, tmp_path, monkeypatch):
    cfg = RunConfig(
        stream=StreamConfig(n_tasks=3, train_per_task=120),
        model=ModelConfig(width=32),
        train=TrainConfig(optimizer="adam", lr=0.005, steps=15, batch_size=32, seed=1),
        method=MethodConfig(method),
    )
    straight = forgetlab.run(cfg, store=tmp_path / "a", device="cpu")

    cls = STRATEGIES[method]
    original = cls.before_task

    def interrupt_at_task_3(self, model, context):
        if context.task_index == 2:
            raise KeyboardInterrupt
        return original(self, model, context)

    monkeypatch.setattr(cls, "before_task", interrupt_at_task_3)
    with pytest.raises(KeyboardInterrupt):
        forgetlab.run(cfg, store=tmp_path / "b", device="cpu")
    store = ResultStore(tmp_path / "b")
    assert store.get(straight.run_id).status == "failed"
    assert (store.run_dir(straight.run_id) / "checkpoints" / "task-2.pt").is_file()
    monkeypatch.setattr(cls, "before_task", original)

    resumed = forgetlab.run(cfg, store=tmp_path / "b", device="cpu")
    assert not resumed.from_store
    np.testing.assert_array_equal(resumed.accuracy_matrix, straight.accuracy_matrix)
    assert [c.accuracies for c in resumed.curves] == [c.accuracies for c in straight.curves]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_method_and_hyperparameter_is_documented(name):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "METHODS.md").read_text()
    heading = next(line for line in text.splitlines() if line.startswith(f"## {name}"))
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    for item in dataclasses.fields(STRATEGIES[name].params_type):
        assert item.name in section, f"{name}.{item.name} is not documented in docs/METHODS.md"
