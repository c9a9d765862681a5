from __future__ import annotations

import copy

import pytest
import torch
from user_models import BNNet, TinyTransformer, token_data

from forgetlab.errors import IncompatibleError
from forgetlab.user import WrappedModel, accuracy, diagnose, predict, reset_analysis, user_data, weight_change, write_report


def _train(net, x, y, steps=40, seed=0):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    x_old, y_old = token_data(64, seed=1)
    x_new, y_new = token_data(64, offset=2, seed=2)  # the same inputs' rule, labels shifted: conflicts
    old = _train(TinyTransformer(), x_old, y_old)
    new = _train(copy.deepcopy(old), x_new, y_new, steps=25)
    return old, new, user_data(x_old, y_old, "old"), user_data(x_new, y_new, "new")


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_diagnose_user_transformer(pair, tmp_path):
    old, new, data, new_data = pair
    before_old, before_new = _state(old), _state(new)
    result = diagnose(old, new, data, new_data, k=3)
    assert [b.block for b in result.blocks] == ["embed", "block1", "block2", "classifier"]
    assert result.old_task["old"] > 0.8 > result.old_task["new"]
    assert result.new_task["new"] > result.new_task["old"]
    for row in result.blocks:
        assert row.weight_change > 0 and -0.2 <= row.cka_debiased <= 1.0 and 0 <= row.cka <= 1.0
        assert 1 <= row.subspace_k <= 3
    # neither model changed; no hook left; both still in eval mode
    for net, state in ((old, before_old), (new, before_new)):
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
        assert all(not m._forward_hooks for m in net.modules()) and not net.training
    text = result.format_table()
    assert "block1" in text and "old acc if reset" in text and "bottom-up 2 (embed..block1)" in text
    report = write_report(result, tmp_path / "report")
    page = report.read_text()
    assert page.count("<img") == 3 and "block2" in page
    for stem in ("similarity", "weight_change", "reset"):
        assert (tmp_path / "report" / f"{stem}.png").stat().st_size > 0 and (tmp_path / "report" / f"{stem}.svg").is_file()


def test_identical_models_have_no_change(pair):
    old, _, data, _ = pair
    result = diagnose(old, copy.deepcopy(old), data, k=2)
    for row in result.blocks:
        assert row.weight_change == 0.0
        assert row.cka == pytest.approx(1.0, abs=1e-6) and row.subspace_similarity == pytest.approx(1.0, abs=1e-6)
        assert row.old_accuracy_after_reset == result.old_task["old"]


def test_rewinding_every_block_recovers_old_predictions(pair):
    old, new, data, new_data = pair
    resets = reset_analysis(old, new, data, new_data)
    full = [r for r in resets if len(r.blocks) == 4]
    assert len(full) == 1
    assert full[0].old_accuracy == accuracy(WrappedModel(old), data)
    assert full[0].new_accuracy == accuracy(WrappedModel(old), new_data)


def test_reset_copies_batchnorm_buffers():
    torch.manual_seed(0)
    old = BNNet()
    x = torch.randn(40, 5) * 3 + 1
    old.train()
    old(x)  # running statistics move
    old.eval()
    new = copy.deepcopy(old)
    new.fc[1].reset_running_stats()  # NEW differs from OLD only in its BatchNorm buffers
    y = predict(old, x)
    data = user_data(x, y)
    assert accuracy(WrappedModel(new), data) < 1.0
    resets = {r.blocks: r for r in reset_analysis(old, new, data)}
    assert resets[("fc",)].old_accuracy == 1.0
    assert weight_change(old, new)["fc"] == 0.0


def test_mismatched_architectures_are_refused(pair):
    old, _, data, _ = pair
    with pytest.raises(IncompatibleError, match=r"same architecture.*classifier.weight: \(4, 8\) vs \(3, 8\)"):
        diagnose(old, TinyTransformer(n_classes=3), data)


def test_wrong_data_shape_is_refused(pair):
    old, new, _, _ = pair
    with pytest.raises(IncompatibleError, match=r"bad: inputs of shape \(6, 5\) do not fit the model"):
        diagnose(old, new, user_data(torch.zeros(8, 6, 5), torch.zeros(8, dtype=torch.long), "bad"))


def test_weight_change_matches_an_independent_computation():
    import numpy as np

    torch.manual_seed(3)
    a = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    change = weight_change(a, b)
    for name in ("0", "2"):
        old = np.concatenate([p.detach().numpy().ravel() for p in a.get_submodule(name).parameters()])
        new = np.concatenate([p.detach().numpy().ravel() for p in b.get_submodule(name).parameters()])
        assert change[name] == pytest.approx(np.linalg.norm(new - old) / np.linalg.norm(old), rel=1e-6)
    assert change["1"] is None  # ReLU: no parameters
    data = user_data(torch.randn(30, 3), torch.arange(30) % 2)
    table = diagnose(a, b, data, k=2).format_table()
    assert any(line.startswith("1 ") and " - " in line for line in table.splitlines())


def test_sample_counts_are_true_and_small_files_are_refused_in_user_words(pair):
    from forgetlab.errors import DataError

    old, new, data, new_data = pair
    result = diagnose(old, new, data, new_data, k=2, max_samples=5)
    table = result.format_table()
    assert f"old-task accuracy (old, n = {data.n_samples})" in table and data.n_samples != 5  # accuracy: all of them
    assert f"new-task accuracy (new, n = {new_data.n_samples})" in table
    assert "on the first 5 old-task inputs (n = 5)" in table and result.n_samples == 5
    assert result.to_dict()["n_examples"] == {"old_task": data.n_samples, "new_task": new_data.n_samples}
    tiny = user_data(data.x[:3], data.y[:3], "three.npz")
    with pytest.raises(DataError, match=r"^diagnose needs at least 4 examples for debiased CKA; the file three.npz has 3\.$"):
        diagnose(old, new, tiny)


def test_conclusion_states_the_drop_the_best_rewind_and_the_most_changed_block(pair, tmp_path):
    old, new, data, new_data = pair
    result = diagnose(old, new, data, new_data, k=2)
    # the expected numbers, from the model outputs directly (not from the diagnosis)
    acc_old, acc_new = accuracy(WrappedModel(old), data), accuracy(WrappedModel(new), data)
    rewound = {}
    for name in ("embed", "block1", "block2", "classifier"):
        model = copy.deepcopy(new)
        model.get_submodule(name).load_state_dict(old.get_submodule(name).state_dict())
        rewound[name] = accuracy(WrappedModel(model), data)
    best = max(rewound, key=rewound.get)
    recovered = (rewound[best] - acc_new) / (acc_old - acc_new)
    with torch.no_grad():
        change = {n: float(torch.cat([(b - a).flatten() for a, b in zip(old.get_submodule(n).parameters(), new.get_submodule(n).parameters())]).norm()
                           / torch.cat([a.flatten() for a in old.get_submodule(n).parameters()]).norm()) for n in rewound}
    most = max(change, key=change.get)
    text = result.conclusion
    assert text.startswith(f"NEW lost {100 * (acc_old - acc_new):.1f} points on the old task (OLD {100 * acc_old:.1f}%, "
                           f"NEW {100 * acc_new:.1f}%; n = {data.n_samples})")
    assert f"Rewinding `{best}` alone to OLD recovers {100 * recovered:.0f} % of the loss" in text
    assert f"Most change is in `{most}` (relative weight change {change[most]:.3f}" in text
    table = result.format_table()
    assert table.startswith("Conclusion: NEW lost") and result.to_dict()["conclusion"] == text
    page = write_report(result, tmp_path / "report").read_text()
    assert "<b>Conclusion.</b> NEW lost" in page and page.index("Conclusion.") < page.index("<h2>Accuracy</h2>")
    kept = diagnose(old, copy.deepcopy(old), data, k=2).conclusion
    assert kept.startswith("NEW kept the old task") and "Rewinding" not in kept


def test_a_new_model_with_a_head_grown_by_finetune_is_diagnosed(pair):
    from forgetlab.user import finetune

    old, _, data, _ = pair  # a 4-output TinyTransformer on classes 0-3
    x_new, y_new = token_data(48, n_classes=2, seed=5)
    added = user_data(x_new, y_new + 4, "added")  # classes 4, 5: beyond OLD's head
    grown = finetune(WrappedModel(old), added, method="naive", epochs=2, batch_size=16).model
    assert grown.n_outputs == 6
    result = diagnose(old, grown, data, added, k=2)
    assert set(result.skipped) == {"classifier"} and "grew from 4 to 6 outputs" in result.skipped["classifier"]
    assert all("classifier" not in r.blocks for r in result.resets) and result.resets
    assert {r.blocks[0] for r in result.resets if r.kind == "block"} == {"embed", "block1", "block2"}
    # NEW's old-task accuracy: the argmax over all 6 outputs, computed here directly
    with torch.no_grad():
        expected = float((grown.module(data.x).argmax(1) == data.y).double().mean())
    assert result.old_task["new"] == pytest.approx(expected) and result.new_task["old"] == 0.0
    head = {row.block: row for row in result.blocks}["classifier"]
    w_old, b_old = old.classifier.weight.detach(), old.classifier.bias.detach()
    w_new, b_new = grown.module.classifier.weight.detach()[:4], grown.module.classifier.bias.detach()[:4]
    diff = torch.cat([(w_new - w_old).flatten(), b_new - b_old]).norm() / torch.cat([w_old.flatten(), b_old]).norm()
    assert head.weight_change == pytest.approx(float(diff), rel=1e-5)  # over the old rows
    assert head.old_accuracy_after_reset is None and head.subspace_similarity is None
    assert "not rewound: classifier: the head 'classifier' grew from 4 to 6 outputs" in result.format_table()
    assert "Not rewound (shapes differ): `classifier`." in result.conclusion
