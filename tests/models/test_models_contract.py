"""The model contract, checked over every registered model (timm-style)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from forgetlab.errors import ConfigError, IncompatibleError, unknown_name
from forgetlab.models import MODELS, BlockModel, create_model, default_options, list_models

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
HEADS = [(10,), (5, 5), (2, 3, 4)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize("head_sizes", HEADS)
def test_forward_blocks_and_activations(name, input_shape, head_sizes):
    torch.manual_seed(0)
    model = create_model(name, input_shape=input_shape, head_sizes=head_sizes, width=4, depth=2)
    model.eval()
    x = torch.randn(3, *input_shape)
    assert isinstance(model, BlockModel)
    assert len(model.block_names) >= 2
    assert list(model.block_names) == list(model.blocks.keys())
    assert model.n_heads == len(head_sizes)

    # independent check of the activations: forward hooks on each named block
    seen = {}
    handles = [
        block.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, out))
        for key, block in model.blocks.items()
    ]
    try:
        for head_index, n_classes in enumerate(head_sizes):
            logits, activations = model(x, head_index, return_activations=True)
            assert logits.shape == (3, n_classes)
            assert list(activations) == list(model.block_names)
            for key in model.block_names:
                assert activations[key].shape[0] == 3
                torch.testing.assert_close(activations[key], seen[key])
            torch.testing.assert_close(model(x, head_index), logits)
    finally:
        for handle in handles:
            handle.remove()

    # the heads read the penultimate features
    features = model.features(x)
    assert features.shape == (3, model.feature_dim)
    torch.testing.assert_close(model.heads[0](features), model(x, 0))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_step_changes_every_block(name):
    torch.manual_seed(0)
    model = create_model(name, input_shape=(3, 16, 16), head_sizes=(5, 5), width=4, depth=2)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16), 1), torch.randint(0, 5, (8,)))
    loss.backward()
    optimizer.step()
    for block_name, block in model.blocks.items():
        params = [n for n, p in block.named_parameters()]
        if not params:
            continue
        changed = any(
            not torch.equal(before[f"blocks.{block_name}.{n}"], model.state_dict()[f"blocks.{block_name}.{n}"])
            for n in params
        )
        assert changed, f"block {block_name} of {name} did not train"
    # head 0 got no gradient from a head-1 loss
    assert torch.equal(before["heads.0.weight"], model.state_dict()["heads.0.weight"])


def test_registry_descriptions_and_defaults():
    assert set(list_models()) == set(MODELS)
    for name in MODELS:
        options = default_options(name)
        assert set(options) == {"width", "depth", "batch_norm"}


def test_batch_norm_flag():
    with_bn = create_model("vgg", input_shape=(3, 8, 8), head_sizes=(2,), batch_norm=True)
    without = create_model("vgg", input_shape=(3, 8, 8), head_sizes=(2,), batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())


def test_user_errors():
    with pytest.raises(ConfigError, match="Unknown model 'resnt'. Did you mean 'resnet'"):
        create_model("resnt", input_shape=(1, 8, 8), head_sizes=(2,))
    with pytest.raises(ConfigError, match="'width' parameter of model 'mlp' must be >= 1. Got 0"):
        create_model("mlp", input_shape=(1, 8, 8), head_sizes=(2,), width=0)
    with pytest.raises(ConfigError, match="head_sizes"):
        create_model("mlp", input_shape=(1, 8, 8), head_sizes=())
    model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(2, 2))
    with pytest.raises(IncompatibleError, match=r"head_index must be in \[0, 1\].*Got 2"):
        model(torch.zeros(1, 1, 8, 8), 2)
    with pytest.raises(IncompatibleError, match=r"\(4, 3, 8, 8\).*\(batch, 1, 8, 8\)"):
        model(torch.zeros(4, 3, 8, 8))
    assert "Valid models" in str(unknown_name("model", "x", MODELS))
