"""Composite methods (``replay+ewc``): config keys per member, hooks in order, penalties
summed, state per member. (Training and resume of composites: test_strategy_contract.py.)"""

from __future__ import annotations

import pickle

import pytest
import torch
from strategy_helpers import make_context, tiny_model

from forgetlab.resolve import resolve
from forgetlab.config import RunConfig, TrainConfig, apply_overrides, load_config
from forgetlab.engine import train_stream
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.strategies import EWC, Replay, Strategy, create_strategy, format_params, strategy_class

TRAIN = TrainConfig(optimizer="adam", lr=0.005, steps=10, batch_size=32, seed=0)


def test_each_member_gets_its_own_settings_from_set_and_toml(tmp_path):
    by_set = apply_overrides(
        RunConfig(), ["method.name=replay+ewc", "method.ewc.lam=5", "method.replay.buffer_size=200"]
    )
    path = tmp_path / "run.toml"
    path.write_text('[method]\nname = "replay+ewc"\n[method.ewc]\nlam = 5\n[method.replay]\nbuffer_size = 200\n')
    assert load_config(path) == by_set
    assert by_set.method.to_dict() == {
        "name": "replay+ewc",
        "replay": {"buffer_size": 200, "fraction": 0.5, "buffer": "reservoir"},
        "ewc": {"lam": 5.0, "fisher": "empirical", "mode": "separate", "gamma": 1.0, "fisher_samples": 1000},
    }
    assert RunConfig.from_dict(by_set.to_dict()) == by_set
    assert resolve(by_set).run_id() != resolve(apply_overrides(RunConfig(), ["method.name=replay+ewc"])).run_id()
    replay, ewc = create_strategy(by_set.method.name, by_set.method.params).members
    assert type(replay) is Replay and replay.params.buffer_size == 200
    assert type(ewc) is EWC and ewc.params.lam == 5.0
    assert format_params(by_set.method.params).startswith("replay.buffer_size=200 replay.fraction=0.5")


def test_params_pickle_to_the_same_class():
    """Worker processes send configs back pickled; the composite's classes are made at run time."""
    params = strategy_class("replay+ewc").params_type()
    again = pickle.loads(pickle.dumps(params))
    assert type(again) is strategy_class("replay+ewc").params_type and again == params


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["method.name=replay+ewcc"], ConfigError, r"Unknown method 'ewcc'. Did you mean 'ewc'\?"),
        (["method.name=replay+ewc", "method.replay.lam=1"], ConfigError,
         r"Unknown config key 'method.replay.lam'.*Method 'replay' has hyperparameters: buffer_size, fraction, buffer"),
        (["method.name=replay+ewc", "method.lam=1"], ConfigError,
         r"Unknown config key 'method.lam'. Did you mean 'method.ewc.lam'\?"),
        (["method.name=replay+ewc", "method.ewc.lam=-1"], ConfigError, r"The 'lam' parameter of EWC must be >= 0"),
        (["method.name=replay+ewc", "method.ewc.lam=x"], ConfigError, r"The 'method.ewc.lam' parameter must be a number"),
        (["method.name=replay+ewc", "method.ewc=1"], ConfigError, r"'method.ewc' is a method's section"),
        (["method.name=ewc+ewc"], ConfigError, r"two or more different methods joined by '\+'"),
        (["method.name=replay+lwf"], ConfigError, r"combines replay and lwf, which each replace the batch loss"),
    ],
)
def test_composite_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        apply_overrides(RunConfig(), overrides)


def test_single_method_keys_are_unchanged():
    cfg = apply_overrides(RunConfig(), ["method.name=ewc", "method.lam=100"])
    assert cfg.method.to_dict() == {
        "name": "ewc", "lam": 100.0, "fisher": "empirical", "mode": "separate", "gamma": 1.0, "fisher_samples": 1000,
    }


def test_class_properties():
    assert strategy_class("replay+ewc").prefix_neutral  # both do nothing in task 1 but after_task
    assert not strategy_class("replay+si").prefix_neutral  # SI integrates its path in task 1
    assert strategy_class("ewc+replay").loss_member == 1 and strategy_class("l2+ewc").loss_member is None


def test_penalties_are_summed_and_state_is_per_member(tiny_streams):
    stream = tiny_streams["multi"]
    model = tiny_model(stream, width=8)
    both = create_strategy("l2+ewc")
    l2, ewc = create_strategy("l2"), create_strategy("ewc")
    for strategy in (both, l2, ewc):
        strategy.after_task(model, make_context(stream, 0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    for strategy in (both, l2, ewc):
        strategy.before_task(model, make_context(stream, 1))
    torch.testing.assert_close(both.penalty(model, None), l2.penalty(model, None) + ewc.penalty(model, None))
    state = both.state_dict()
    assert set(state) == {"l2", "ewc"} and set(state["l2"]) == {"anchor"} and set(state["ewc"]) == {"terms"}
    fresh = create_strategy("l2+ewc")
    fresh.load_state_dict(state)
    assert fresh.members[0].anchor_ is state["l2"]["anchor"] and fresh.members[1].terms_ is state["ewc"]["terms"]
    with pytest.raises(IncompatibleError, match=r"expects member states among \['l2', 'ewc'\]"):
        create_strategy("l2+ewc").load_state_dict({"replay": {}})
    with pytest.raises(IncompatibleError, match="expects"):
        create_strategy("l2+ewc").load_state_dict({"l2": {"buffer": {}}})


class _Recorder(Strategy):
    """Records every hook it sees, by name."""

    def __init__(self, tag, log):
        super().__init__()
        self._tag, self._log = tag, log

    def before_task(self, model, context):
        self._log.append((self._tag, "before_task"))

    def after_backward(self, model, batch, context):
        self._log.append((self._tag, "after_backward"))

    def after_step(self, model, context):
        self._log.append((self._tag, "after_step"))

    def after_task(self, model, context):
        self._log.append((self._tag, "after_task"))


def test_hooks_run_in_the_members_order(tiny_streams):
    stream = tiny_streams["multi"]
    log = []
    both = create_strategy("l2+ewc")
    both._members = (_Recorder("a", log), _Recorder("b", log))  # the hooks only: no params needed
    train_stream(tiny_model(stream), stream, TrainConfig(optimizer="sgd", lr=0.01, steps=1, batch_size=8), strategy=both)
    per_task = [("a", "before_task"), ("b", "before_task"), ("a", "after_backward"), ("b", "after_backward"),
                ("a", "after_step"), ("b", "after_step"), ("a", "after_task"), ("b", "after_task")]
    assert log == per_task * 2


def test_cli_runs_a_composite(tmp_path, capsys):
    from forgetlab.cli import main

    store = tmp_path / "store"
    args = ["run", "--method", "replay+ewc", "--set", "method.ewc.lam=10", "--set", "method.replay.buffer_size=50",
            "--set", "stream.train_per_task=100", "--set", "train.steps=5", "--store", str(store)]
    assert main(args) == 0
    assert "method replay+ewc" in capsys.readouterr().out
    assert main(["run", "--method", "replay+ewc", "--set", "method.replay.lam=1", "--store", str(store)]) == 2
    assert "Unknown config key 'method.replay.lam'" in capsys.readouterr().err
