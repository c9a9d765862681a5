"""Issue 14's protocol options (van de Ven & Tolias 2019), each against an independent
computation: input normalisation, the per-seed class order, the shared head, the
predicted-label Fisher, SI's total-loss gradient, LwF's 2019 weighting, active classes,
joint training; and the shipped config files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgetlab.analysis.fisher import diagonal_fisher
from forgetlab.config import RunConfig, StreamConfig, apply_overrides, load_config
from forgetlab.data.augment import BatchTransform
from forgetlab.data.streams import build_stream, random_class_order
from forgetlab.engine.train import MASKED_LOGIT, active_class_mask
from forgetlab.errors import ConfigError
from forgetlab.hyperparams import LwFParams, SIParams
from forgetlab.models import create_model
from forgetlab.resolve import resolve
from forgetlab.strategies import SI, Joint, LwF
from forgetlab.strategies.base import Batch, StrategyContext

ROOT = Path(__file__).resolve().parents[1]


def test_normalize_none_gives_pixels_over_255(digits_data):
    raw = digits_data.train_x[:4]
    standard = build_stream(StreamConfig(), digits_data)
    plain = build_stream(StreamConfig(normalize="none"), digits_data)
    as_01 = BatchTransform(plain.mean, plain.std, augment=False)(raw, train=False)
    assert torch.allclose(as_01, raw.float() / 255)
    mean, std = torch.tensor(standard.mean).view(1, -1, 1, 1), torch.tensor(standard.std).view(1, -1, 1, 1)
    z = BatchTransform(standard.mean, standard.std, augment=False)(raw, train=False)
    assert torch.allclose(z, (raw.float() / 255 - mean) / std, atol=1e-5)
    with pytest.raises(ConfigError, match=r"'stream.normalize' parameter must be one of 'standard', 'none'"):
        StreamConfig(normalize="raw")


def test_random_class_order_follows_the_documented_recipe(digits_data):
    orders = [random_class_order(10, seed) for seed in (1, 2, 3)]
    for seed, order in zip((1, 2, 3), orders):
        assert sorted(order) == list(range(10))
        np.random.seed(seed)  # van de Ven's data.py, by hand: relabel c -> p[c], task k = new labels 2k, 2k+1
        p = np.random.permutation(list(range(10)))
        assert [[c for c in range(10) if p[c] in (2 * k, 2 * k + 1)] for k in range(5)] == [
            sorted(order[2 * k : 2 * k + 2]) for k in range(5)]
    assert len(set(orders)) == 3
    config = apply_overrides(RunConfig(), ["stream.class_order=random", "stream.n_tasks=5", "train.seed=2"])
    stream = build_stream(config.stream, digits_data, seed=config.train.seed)
    assert [tuple(t.classes) for t in stream.tasks] == [orders[1][2 * k : 2 * k + 2] for k in range(5)]
    with pytest.raises(ConfigError, match=r"'stream.class_order' parameter must be a list of class indices or 'random'"):
        StreamConfig(class_order="shuffled")


def test_shared_head_labels_every_task_zero_one(digits_data):
    stream = build_stream(StreamConfig(n_tasks=5, head="shared"), digits_data)
    assert stream.head_sizes == (2,) and {t.head_index for t in stream.tasks} == {0}
    for k, task in enumerate(stream.tasks):
        source = digits_data.train_y[torch.isin(digits_data.train_y, torch.tensor([2 * k, 2 * k + 1]))]
        assert sorted(torch.unique(task.train_y).tolist()) == [0, 1]
        assert int((task.train_y == 1).sum()) == int((source == 2 * k + 1).sum())
    with pytest.raises(ConfigError, match=r"'shared'.*needs stream 'split'"):
        build_stream(StreamConfig(stream="permuted", head="shared"), digits_data)


def test_fisher_predicted_uses_the_argmax_label():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x, wrong = torch.randn(6, 3), torch.zeros(6, dtype=torch.long)
    fisher = diagonal_fisher(net, x, wrong, kind="predicted")
    expected = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    for xi in x:  # independent: one backward per example on its argmax label
        net.zero_grad()
        logits = net(xi[None])
        F.cross_entropy(logits, logits.argmax(1)).backward()
        for name, p in net.named_parameters():
            expected[name] += p.grad.square() / len(x)
    assert all(torch.allclose(fisher[n], expected[n], atol=1e-6) for n in expected)
    empirical = diagonal_fisher(net, x, wrong, kind="empirical")
    assert not torch.allclose(empirical["2.weight"], fisher["2.weight"])


def _context(stream, task_index, generator=None):
    return StrategyContext(stream, task_index, torch.device("cpu"), BatchTransform(stream.mean, stream.std, augment=False),
                           generator or torch.Generator().manual_seed(0))


def _si_omega(gradient, digits_stream):
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=digits_stream.head_sizes, width=4, depth=1)
    si = SI(SIParams(c=5.0, gradient=gradient))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = {}
    for task_index in (0, 1):
        context = _context(digits_stream, task_index)
        si.before_task(model, context)
        task = digits_stream.tasks[task_index]
        for step in range(3):
            inputs = context.prepare(task.train_x[step * 8 : step * 8 + 8])
            batch = Batch(None, inputs, task.train_y[step * 8 : step * 8 + 8], task.head_index)
            loss = si.batch_loss(model, batch, context)
            penalty = si.penalty(model, context)
            total = loss + penalty if penalty is not None else loss
            optimizer.zero_grad()
            total.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            si.after_backward(model, batch, context)
            optimizer.step()
            si.after_step(model, context)
            if task_index == 1:  # independent path integral over the total loss's gradient
                for n, g in grads.items():
                    reference[n] = reference.get(n, 0) - g * (model.state_dict()[n] - before[n])
        omega = dict(si._omega) if task_index == 1 else None
        si.after_task(model, context) if task_index == 0 else None
    return omega, reference


def test_si_total_gradient_includes_the_penalty(digits_data):
    stream = build_stream(StreamConfig(), digits_data)
    total, reference = _si_omega("total", stream)
    task, _ = _si_omega("task", stream)
    name = "blocks.fc1.1.weight"
    assert torch.allclose(total[name], reference[name], atol=1e-7)
    assert not torch.allclose(task[name], total[name])


def test_lwf_vandeven_weighting_on_a_tiny_example(digits_data):
    stream = build_stream(StreamConfig(n_tasks=2, head="single"), digits_data)
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(10,), width=6, depth=1)
    context = _context(stream, 1)
    lwf = LwF(LwFParams(temperature=2.0, weighting="vandeven2019", distill_classes="seen", lam=1.0))
    lwf.before_task(model, context)
    with torch.no_grad():
        model.heads[0].weight.add_(0.3)  # the student drifts from the teacher
    task = stream.tasks[1]
    x, y = context.prepare(task.train_x[:5]), task.train_y[:5]
    got = lwf.batch_loss(model, Batch(None, x, y, 0), context)
    student, teacher = model(x, 0), lwf._teacher(x, 0)
    old, seen = list(range(5)), list(range(10))
    targets = torch.cat([F.softmax(teacher[:, old] / 2, 1), torch.zeros(5, 5)], 1)
    kd = (-targets * F.log_softmax(student[:, seen] / 2, 1)).mean() * 4  # loss_fn_kd @86802a8
    expected = 0.5 * F.cross_entropy(student, y) + 0.5 * kd  # task t = 2: 1/t and 1 - 1/t
    assert torch.allclose(got, expected, atol=1e-6)


def test_active_classes_give_no_gradient_to_unseen_logits():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 2, 2), head_sizes=(6,), width=5, depth=1)
    from types import SimpleNamespace as NS
    stream = NS(tasks=[NS(head_index=0, train_y=torch.tensor([0, 1])), NS(head_index=0, train_y=torch.tensor([2, 3]))])
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([2, 3, 2, 3])
    with active_class_mask(model, stream, 1):
        logits = model(x, 0)
        logits.retain_grad()
        F.cross_entropy(logits, y).backward()
        with torch.no_grad():
            model.eval()
            assert not bool((model(x, 0) == MASKED_LOGIT).any())  # evaluation sees every logit
            model.train()
    assert bool((logits[:, 4:] == MASKED_LOGIT).all())
    assert bool((model.heads[0].weight.grad[4:] == 0).all()) and bool((model.heads[0].weight.grad[:4] != 0).any())
    seen_only = F.cross_entropy(logits.detach()[:, :4], y)  # the loss over the 4 seen classes only
    assert torch.isclose(F.cross_entropy(logits.detach(), y), seen_only)
    assert not model.heads[0]._forward_hooks


def test_joint_trains_on_every_task_so_far(digits_data, monkeypatch):
    import forgetlab.strategies.rehearsal as rehearsal

    stream = build_stream(StreamConfig(n_tasks=3), digits_data)
    joint, model = Joint(), create_model("mlp", input_shape=(1, 8, 8), head_sizes=stream.head_sizes, width=4, depth=1)
    seen = []
    monkeypatch.setattr(rehearsal, "grouped_cross_entropy", lambda f, y, heads, m, smoothing: seen.append(heads) or f.sum() * 0)
    for task_index in (0, 1):
        joint.before_task(model, _context(stream, task_index))
        for _ in range(5):
            joint.batch_loss(model, Batch(None, None, torch.zeros(64, dtype=torch.long), task_index), _context(stream, task_index))
        assert joint._x.shape[0] == sum(stream.tasks[j].n_train for j in range(task_index + 1))
        joint.after_task(model, _context(stream, task_index))
    assert set(torch.cat(seen[:5]).tolist()) == {0}  # task 1: task 1's data only
    assert set(torch.cat(seen[5:]).tolist()) == {0, 1}  # task 2: tasks 1 and 2, never task 3
    assert all(len(h) == 64 for h in seen)


def test_new_options_keep_existing_run_ids():
    assert resolve(RunConfig()).run_id() == "5a21174bbb31b316"
    defaults = ["stream.normalize=standard", "train.active_classes=false", "train.label_smoothing=0"]
    assert resolve(apply_overrides(RunConfig(), defaults)).run_id() == "5a21174bbb31b316"
    si = resolve(apply_overrides(RunConfig(), ["method.name=si"]))
    assert "gradient" not in si.identity_dict()["method"] and si.to_dict()["method"]["gradient"] == "task"
    for option in ("stream.normalize=none", "train.active_classes=true", "stream.class_order=random", "train.label_smoothing=0.1"):
        assert resolve(apply_overrides(RunConfig(), [option])).run_id() != "5a21174bbb31b316"


CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.toml") if p.name != "published.toml")  # published values, not a run


def test_every_config_file_parses_resolves_and_is_listed():
    readme = (ROOT / "configs" / "README.md").read_text()
    assert len(CONFIGS) >= 21
    for path in CONFIGS:
        config = resolve(load_config(path))
        assert config.run_id()
        relative = path.relative_to(ROOT).as_posix()
        assert relative in readme, f"{relative} is not listed in configs/README.md"
    listed = set(re.findall(r"configs/[\w/.-]+\.toml", readme))
    assert listed <= {p.relative_to(ROOT).as_posix() for p in CONFIGS}
