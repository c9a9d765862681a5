from __future__ import annotations

import pytest
import torch
from torch import nn
from user_models import ScaledOutput, TinyTransformer

from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.models import create_model
from forgetlab.user import WrappedModel, wrap_model


def _no_hooks(module: nn.Module) -> bool:
    return all(not m._forward_hooks for m in module.modules())


def test_wrap_defaults_and_outputs():
    torch.manual_seed(0)
    net = TinyTransformer()
    model = WrappedModel(net)
    assert model.block_names == ("embed", "block1", "block2", "classifier")
    assert model.head_name == "classifier" and model.n_outputs == 4
    x = torch.randn(5, 6, 4)
    torch.testing.assert_close(model(x), net(x))
    torch.testing.assert_close(model.heads[0](model.features(x)), net(x))
    logits, acts = model(x, 0, return_activations=True)
    assert list(acts) == list(model.block_names)
    assert tuple(acts["block1"].shape) == (5, 6, 8)
    assert _no_hooks(net)


def test_state_dict_is_not_duplicated():
    model = WrappedModel(TinyTransformer())
    assert all(key.startswith("module.") for key in model.state_dict())
    assert len(list(model.parameters())) == len(list(model.module.parameters()))


def test_head_index_other_than_zero_is_refused():
    with pytest.raises(IncompatibleError, match="head_index must be 0 .* Got 1"):
        WrappedModel(TinyTransformer())(torch.randn(2, 6, 4), 1)


def test_head_that_is_not_the_last_operation_is_refused():
    model = WrappedModel(ScaledOutput(), blocks=["fc"])
    with pytest.raises(IncompatibleError, match="not the last operation"):
        model.features(torch.randn(3, 3))


def test_head_must_be_a_linear():
    with pytest.raises(ConfigError, match="must name an nn.Linear .* 'block1', a AttentionBlock"):
        WrappedModel(TinyTransformer(), head="block1")


def test_unknown_block_is_refused_with_suggestion():
    with pytest.raises(ConfigError, match="Unknown block 'blok1'.*Did you mean 'block1'"):
        WrappedModel(TinyTransformer(), blocks=["blok1"])


def test_input_shape_mismatch_names_both_shapes_and_hooks_are_removed():
    net = TinyTransformer()
    model = WrappedModel(net, input_shape=(6, 4))
    with pytest.raises(IncompatibleError, match=r"shape \(2, 5, 4\) .* expects \(batch, 6, 4\)"):
        model(torch.randn(2, 5, 4), return_activations=True)
    unknown = WrappedModel(net)
    with pytest.raises(IncompatibleError, match=r"cannot take inputs of shape \(2, 6, 3\)"):
        unknown(torch.randn(2, 6, 3), return_activations=True)
    assert _no_hooks(net)


def test_wrap_block_model_uses_its_blocks_and_first_head():
    net = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=8)
    model = wrap_model(net)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model(x), net(x, 0))
    assert model.input_shape == (1, 8, 8)
    torch.testing.assert_close(model.heads[0](model.features(x)), net(x, 0))
