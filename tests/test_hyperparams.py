"""The hyperparameter registry (below the config) and the strategy registry agree."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from forgetlab.errors import ConfigError
from forgetlab.hyperparams import PARAMS, params_type
from forgetlab.strategies import STRATEGIES, Strategy, strategy_class


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_uses_the_registered_params(name):
    cls = STRATEGIES[name]
    assert cls.params_type is PARAMS[name]
    # The flag the config uses to refuse two loss-replacing members is the strategy's truth.
    assert cls.params_type.replaces_batch_loss == (cls.batch_loss is not Strategy.batch_loss)


def test_the_registries_hold_the_same_methods():
    assert set(PARAMS) == set(STRATEGIES)


def test_composite_params_match_the_composite_strategy():
    params = params_type("replay+ewc")
    assert strategy_class("replay+ewc").params_type is params
    assert [f.name for f in dataclasses.fields(params)] == ["replay", "ewc"]
    value = params(ewc=PARAMS["ewc"](lam=3.0))
    assert pickle.loads(pickle.dumps(value)) == value


@pytest.mark.parametrize(
    ("name", "match"),
    [("replay+lwf", "each replace the batch loss"), ("ewc+ewc", "two or more different"), ("ewc+", "two or more"),
     ("ewk", "Did you mean 'ewc'")],
)
def test_bad_method_names_are_refused_by_the_config_layer(name, match):
    with pytest.raises(ConfigError, match=match):
        params_type(name)
