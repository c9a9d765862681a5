"""One contract, checked for every registered strategy (STYLE: scikit-learn's check_estimator).

For each method (and two composites), single-head and multi-head, on two tiny digits tasks:
- the constructor stores its hyperparameters and nothing else;
- training runs, and learned state lives in attributes ending in ``_``;
- the strategy's state round-trips through a checkpoint: a run resumed after task 1 with
  a fresh strategy ends with exactly the weights and accuracy matrix of a straight run;
- the caller's stream is not mutated, and the model's trainable flags and train/eval
  modes are as they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from strategy_helpers import tiny_model

from forgetlab.config import TrainConfig
from forgetlab.engine import train_stream
from forgetlab.engine.checkpoint import checkpoint_path
from forgetlab.errors import ConfigError
from forgetlab.models import create_model
from forgetlab.strategies import STRATEGIES, HyperParams, Strategy, create_strategy, list_methods, strategy_class

TRAIN = TrainConfig(optimizer="adam", lr=0.005, steps=10, batch_size=32, seed=0)
# two composites: replay + a penalty; a path-integral penalty + a loss-replacing method with a '-' in its name
NAMES = [*sorted(STRATEGIES), "replay+ewc", "si+pseudo-rehearsal"]


def _equal_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal_state, a, b))
    return a == b


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_complete(name):
    cls = strategy_class(name)
    assert issubclass(cls, Strategy) and cls.name == name and cls.title and isinstance(cls.prefix_neutral, bool)
    assert dataclasses.is_dataclass(cls.params_type) and issubclass(cls.params_type, HyperParams)
    params = cls.params_type()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.__setattr__("x", 1)
    assert cls.__doc__ and ">>>" in cls.__doc__, "every strategy documents a runnable example"
    assert name in list_methods() or "+" in name


@pytest.mark.parametrize("name", NAMES)
def test_constructor_stores_hyperparameters_only(name):
    cls = strategy_class(name)
    strategy = cls()
    assert vars(strategy) == {"params": cls.params_type()}
    assert create_strategy(name).params == strategy.params
    other = next(c for c in STRATEGIES.values() if c.params_type is not cls.params_type)
    with pytest.raises(ConfigError, match=f"The 'params' argument of {cls.__name__} must be a {cls.params_type.__name__}"):
        cls(other.params_type())


@pytest.mark.parametrize("head", ["multi", "single"])
@pytest.mark.parametrize("name", NAMES)
def test_two_tasks_train_resume_and_leave_inputs_alone(name, head, tiny_streams, tmp_path):
    stream = tiny_streams[head]
    originals = [(t.train_x.clone(), t.train_y.clone(), t.test_x.clone(), t.test_y.clone()) for t in stream.tasks]

    model = tiny_model(stream)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    strategy = create_strategy(name)
    straight = train_stream(model, stream, TRAIN, strategy=strategy, checkpoint_dir=tmp_path / "straight")
    assert straight.accuracy_matrix.shape == (2, 2)
    assert straight.accuracy_matrix[0, 0] > 0.3, "task 1 is learnt (chance is 0.2 / 0.1)"
    assert any(not torch.equal(initial[k], v) for k, v in model.state_dict().items())

    # learned state: public attributes end in "_"; the state dict survives a reload
    public = {key for key in vars(strategy) if not key.startswith("_")}
    assert all(key == "params" or key.endswith("_") for key in public), public
    state = strategy.state_dict()
    if "+" in name:  # a composite's state: each member's, under its name (so resume restores every member)
        assert set(state) == set(name.split("+")) and all(state.values())
    fresh = create_strategy(name, strategy.params)
    fresh.load_state_dict(state)
    assert _equal_state(fresh.state_dict(), state)

    # resume from the task-1 checkpoint with a fresh model and strategy = straight run
    checkpoint_path(tmp_path / "straight", 1).unlink()
    resumed_model = tiny_model(stream, seed=123)
    resumed = train_stream(
        resumed_model, stream, TRAIN, strategy=create_strategy(name), checkpoint_dir=tmp_path / "straight"
    )
    assert resumed.resumed_from == 1
    np.testing.assert_array_equal(resumed.accuracy_matrix, straight.accuracy_matrix)
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key

    # the caller's objects are as they were
    for task, (train_x, train_y, test_x, test_y) in zip(stream.tasks, originals):
        assert torch.equal(task.train_x, train_x) and torch.equal(task.train_y, train_y)
        assert torch.equal(task.test_x, test_x) and torch.equal(task.test_y, test_y)
    assert all(p.requires_grad for p in model.parameters())
    assert all(module.training for module in model.modules())


OTHER_VALUES = {"c": 1000.0, "gradient": "total"}  # a value far from the default, per first_task_free field


@pytest.mark.parametrize("name", [name for name, cls in STRATEGIES.items() if cls.first_task_free])
def test_first_task_free_hyperparameters_change_nothing_in_task_one(name, tiny_streams):
    """What a sweep relies on to share one task-1 training among them (see Strategy)."""
    cls = strategy_class(name)
    assert not cls.prefix_neutral and set(cls.first_task_free) <= {f.name for f in dataclasses.fields(cls.params_type)}
    stream = tiny_streams["multi"]
    first = dataclasses.replace(stream, tasks=stream.tasks[:1])
    ends = []
    for params in (cls.params_type(), dataclasses.replace(cls.params_type(), **{k: OTHER_VALUES[k] for k in cls.first_task_free})):
        model, strategy = tiny_model(stream), create_strategy(name, params)
        train_stream(model, first, TRAIN, strategy=strategy)
        ends.append((model.state_dict(), strategy.state_dict()))
    assert _equal_state(ends[0][0], ends[1][0]) and _equal_state(ends[0][1], ends[1][1]) and ends[0][1]


def test_unknown_state_is_refused():
    with pytest.raises(Exception, match="checkpoint"):
        create_strategy("naive").load_state_dict({"buffer": {}})
    with pytest.raises(Exception, match="expects"):
        create_strategy("ewc").load_state_dict({"buffer": {}, "n_seen": 0})
    with pytest.raises(Exception, match="expects"):
        create_strategy("replay+ewc").load_state_dict({"si": {}})


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_learns_as_contiguous_does(name, tiny_streams):
    """train.memory_format=channels_last (NHWC conv weights and batches) is a layout, not a
    different computation: every method trains a conv net to the same accuracies (up to a
    few test examples flipped by float rounding), and the saved weights are the same values."""
    stream = tiny_streams["multi"]
    results, states = {}, {}
    for layout in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        model = create_model("vgg", input_shape=stream.input_shape, head_sizes=stream.head_sizes, width=4, depth=2,
                             batch_norm=True)
        config = dataclasses.replace(TRAIN, memory_format=layout)
        results[layout] = train_stream(model, stream, config, strategy=create_strategy(name)).accuracy_matrix
        states[layout] = model.state_dict()
    conv = next(v for k, v in states["channels_last"].items() if v.dim() == 4 and v.shape[1] > 1)
    assert not conv.is_contiguous()  # NHWC: not the NCHW layout
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(results["channels_last"] - results["contiguous"]).max() <= 0.05, results
    for key, value in states["contiguous"].items():
        torch.testing.assert_close(states["channels_last"][key].float(), value.float(), atol=2e-3, rtol=1e-3)
