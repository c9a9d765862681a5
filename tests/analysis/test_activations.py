from __future__ import annotations

import pytest
import torch
from torch import nn

from forgetlab.analysis import batch_activations, collect_activations, iter_activations, resolve_blocks
from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.models import create_model, list_models


def _snapshot(model: nn.Module):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    return state, modes


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _unchanged(model, snapshot) -> bool:
    state, modes = snapshot
    same_state = all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    return same_state and modes == [m.training for m in model.modules()] and _hooks(model) == 0


@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_registered_model_yields_its_blocks(name):
    model = create_model(name, input_shape=(3, 8, 8), head_sizes=(2, 3))
    model.train()
    snap = _snapshot(model)
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    batches = list(iter_activations(model, x, batch_size=4))
    assert len(batches) == 3 and [b[model.block_names[0]].shape[0] for b in batches] == [4, 4, 2]
    assert list(batches[0]) == list(model.block_names)
    # Equal to the model's own return_activations (in eval mode), flattened.
    model.eval()
    _, reference = model(x[:4].float() / 255, return_activations=True)
    model.train()
    for block, value in reference.items():
        assert torch.allclose(batches[0][block], value.flatten(1), atol=1e-6)
    pooled = collect_activations(model, x, pool=True, batch_size=4)
    for block, value in reference.items():
        expected = value.mean(dim=(2, 3)) if value.dim() == 4 else value
        assert torch.allclose(pooled[block][:4], expected, atol=1e-6)
    assert _unchanged(model, snap)  # BN running stats untouched, train flags restored


def test_plain_sequential_with_dotted_paths_and_prepare():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Flatten()), nn.Linear(72, 3))
    net[1].train()
    net[2].eval()  # mixed modes are restored per submodule
    snap = _snapshot(net)
    assert resolve_blocks(net) == ("0", "1", "2")
    x = torch.rand(5, 1, 8, 8)
    acts = collect_activations(net, x, ["1.0", "2"], prepare=lambda b: b * 2 - 1)
    with torch.no_grad():
        assert torch.allclose(acts["2"], net(x * 2 - 1))
        assert torch.allclose(acts["1.0"], torch.relu(net[0](x * 2 - 1)).flatten(1))
    assert _unchanged(net, snap)


def test_iterable_batches_and_early_stop_leave_nothing_attached():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    loader = [(torch.randn(6, 4), torch.zeros(6)) for _ in range(3)]
    stream = iter_activations(net, loader)
    first = next(stream)
    assert tuple(first["0"].shape) == (6, 3)
    assert _hooks(net) == 0 and net.training  # nothing attached between yields
    assert torch.is_grad_enabled()  # no_grad does not leak into the caller
    del stream


def test_hooks_removed_and_modes_restored_on_error():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), Boom())
    net.train()
    snap = _snapshot(net)
    with pytest.raises(RuntimeError, match="boom"):
        collect_activations(net, torch.randn(8, 4), ["0", "1"])
    assert _unchanged(net, snap)


def test_errors():
    from collections import OrderedDict

    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    named = nn.Sequential(OrderedDict(lin=nn.Linear(4, 4), relu=nn.ReLU()))
    with pytest.raises(ConfigError, match=r"Unknown block 'relu1'.*Did you mean 'relu'.*Valid blocks: lin, relu"):
        collect_activations(named, torch.randn(3, 4), ["relu1"])
    with pytest.raises(ConfigError, match="'batch_size' parameter must be an integer >= 1. Got 0"):
        collect_activations(net, torch.randn(3, 4), batch_size=0)
    with pytest.raises(ConfigError, match="must not repeat"):
        resolve_blocks(net, ["0", "0"])
    shared = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = shared

        def forward(self, x):
            return self.layer(self.layer(x))

    with pytest.raises(IncompatibleError, match="ran 2 times"):
        batch_activations(Twice(), torch.randn(2, 4), ["layer"])
    assert _hooks(shared) == 0
