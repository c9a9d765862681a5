"""finetune adds classes: labels beyond the old head grow it (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from user_models import TinyTransformer, token_data

import forgetlab.user.finetuning as finetuning
from forgetlab.cli import main
from forgetlab.user import FINETUNE_METHODS, WrappedModel, finetune, load_user_model, user_data
from forgetlab.user.diagnosis import predict
from forgetlab.user.wrap import resize_head

KEYS = {"old_accuracy", "new_accuracy", "all_accuracy", "revision_agreement"}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = TinyTransformer(n_classes=2)  # a head of 2 outputs, trained on classes 0, 1
    x, y = token_data(48, n_classes=2, seed=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()
    x_new, y_new = token_data(40, n_classes=2, seed=2)
    return net, user_data(x, y, "old"), user_data(x_new, y_new + 2, "new")  # classes 2, 3: new labels


def test_resize_head_keeps_old_rows_and_initialises_new_ones_like_a_fresh_linear():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    grown = resize_head(net, "2", 5, seed=7)
    torch.manual_seed(7)
    fresh = nn.Linear(8, 5)  # the reference: PyTorch's own initialisation of a 5-output layer
    assert net[2].out_features == 3 and grown[2].out_features == 5  # the original is unchanged
    assert torch.equal(grown[2].weight[:3], net[2].weight) and torch.equal(grown[2].bias[:3], net[2].bias)
    assert torch.equal(grown[2].weight[3:], fresh.weight[3:]) and torch.equal(grown[2].bias[3:], fresh.bias[3:])
    assert torch.equal(grown[0].weight, net[0].weight)


@pytest.mark.parametrize("method", FINETUNE_METHODS)
def test_every_method_grows_the_head_for_new_labels(setup, method):
    net, old, new = setup
    params = {"fisher_samples": 16} if method == "ewc" else None
    result = finetune(WrappedModel(net), new, method=method, params=params, old_data=old, epochs=1, batch_size=16)
    assert (result.n_outputs_before, result.n_outputs, result.model.n_outputs) == (2, 4, 4)
    assert net.classifier.out_features == 2  # the original is unchanged
    assert set(result.before) == set(result.after) == KEYS
    assert result.before["new_accuracy"] == 0.0  # a 2-output model never predicts 2 or 3
    assert result.before["revision_agreement"] is None  # old data given: true accuracy instead
    # all_accuracy: on the held-out old and new examples together, recomputed independently
    old_test = torch.tensor([i for i in range(old.n_samples)])
    preds = {name: predict(result.model, d.x) == d.y for name, d in (("old", old), ("new", new))}
    del old_test, preds
    assert 0 <= result.after["all_accuracy"] <= 1
    low, high = sorted((result.after["old_accuracy"], result.after["new_accuracy"]))
    assert low <= result.after["all_accuracy"] <= high


def test_all_accuracy_is_the_accuracy_on_both_held_out_sets(setup):
    net, old, new = setup
    result = finetune(WrappedModel(net), new, method="naive", old_data=old, epochs=2, batch_size=16, test_fraction=0.5)
    from forgetlab.user.userdata import split_data

    old_test, new_test = split_data(old, 0.5)[1], split_data(new, 0.5)[1]
    x, y = torch.cat([old_test.x, new_test.x]), torch.cat([old_test.y, new_test.y])
    assert result.after["all_accuracy"] == pytest.approx(float((predict(result.model, x) == y).float().mean()))


def test_pseudo_rehearsal_teacher_covers_the_old_outputs_only(setup, monkeypatch):
    net, old, new = setup
    calls = []
    for name in ("soft_cross_entropy", "padded_soft_cross_entropy"):
        monkeypatch.setattr(finetuning, name, lambda s, t, temperature, name=name, f=getattr(finetuning, name): (
            calls.append((name, s.shape[1], t.shape[1])) or f(s, t, temperature)))
    # old-task revision inputs: the teacher's 2 outputs against the student's 4 (zero probability on the new ones)
    result = finetune(WrappedModel(net), new, method="pseudo-rehearsal", old_data=old, epochs=1, batch_size=16)
    assert result.n_outputs == 4 and calls and set(calls) == {("padded_soft_cross_entropy", 4, 2)}
    calls.clear()  # revision inputs = the new data's own: only the old outputs are matched
    finetune(WrappedModel(net), new, method="pseudo-rehearsal", epochs=1, batch_size=16)
    assert calls and set(calls) == {("soft_cross_entropy", 2, 2)}


def test_cli_json_and_the_saved_grown_model_loads_back(tmp_path, monkeypatch, capsys):
    net = TinyTransformer(n_classes=2)
    (tmp_path / "tinynet.py").write_text(
        "from user_models import TinyTransformer\n\nclass Net(TinyTransformer):\n"
        "    def __init__(self):\n        super().__init__(n_classes=2)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(net.state_dict(), tmp_path / "old.pt")
    x_old, y_old = token_data(24, n_classes=2, seed=1)
    x_new, y_new = token_data(24, n_classes=2, seed=2)
    np.savez(tmp_path / "old.npz", x=x_old.numpy(), y=y_old.numpy())
    np.savez(tmp_path / "new.npz", x=x_new.numpy(), y=(y_new + 2).numpy())
    code = main(["finetune", "old.pt", "--model-class", "tinynet:Net", "--new-data", "new.npz", "--old-data", "old.npz",
                 "--method", "ewc", "--set", "method.lam=3", "--set", "fisher_samples=8", "--epochs", "1",
                 "--out", "tuned.pt", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)  # ONE JSON document on stdout
    assert set(summary["before"]) >= {"old_accuracy", "new_accuracy", "all_accuracy"} <= set(summary["after"])
    assert summary["params"]["lam"] == 3.0 and summary["before"]["new_accuracy"] == 0.0
    assert "head grown from 2 to 4 outputs" in captured.err
    loaded = load_user_model(tmp_path / "tuned.pt", model_class="tinynet:Net")
    assert loaded.n_outputs == 4
    state = torch.load(tmp_path / "tuned.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in loaded.module.state_dict().items())
