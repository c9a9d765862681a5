"""Buffers, replay losses, A-GEM's projection and DER++ against hand computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from strategy_helpers import make_context, tiny_model

from forgetlab.strategies import AGEM, DERpp, Replay, AGEMParams, DERppParams, ReplayParams
from forgetlab.strategies.base import Batch
from forgetlab.strategies.losses import grouped_cross_entropy
from forgetlab.strategies.memory import class_balanced_update, reservoir_slots, reservoir_update, sample_indices
from forgetlab.strategies.rehearsal import agem_project, logit_mse


def _sequential_reservoir(n_seen, capacity, draws):
    """Vitter's algorithm R, one item at a time, with the given uniforms: slot -> new item."""
    owner = {}
    for i, u in enumerate(draws.tolist()):
        k = n_seen + i
        slot = k if k < capacity else int(u * (k + 1))
        if slot < capacity:
            owner[slot] = i
    return owner


@given(n_seen=st.integers(0, 30), capacity=st.integers(1, 12), n_new=st.integers(0, 40), seed=st.integers(0, 999))
@settings(max_examples=60, deadline=None)
def test_reservoir_slots_equal_the_sequential_algorithm(n_seen, capacity, n_new, seed):
    slots, sources = reservoir_slots(n_seen, capacity, n_new, torch.Generator().manual_seed(seed))
    draws = torch.rand(n_new, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert dict(zip(slots.tolist(), sources.tolist())) == _sequential_reservoir(n_seen, capacity, draws)


def test_reservoir_keeps_a_uniform_sample():
    """Over many streams of 20 items into 5 slots, every item is kept with probability 1/4."""
    kept = torch.zeros(20)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2000):
        buffer = {}
        for start in range(0, 20, 7):  # offered in three batches
            new = {"i": torch.arange(start, min(start + 7, 20))}
            buffer = reservoir_update(buffer, new, n_seen=start, capacity=5, generator=generator)
        kept[buffer["i"]] += 1
    assert (kept / 2000 - 0.25).abs().max() < 0.04


def test_class_balanced_buffer_keeps_equal_groups_and_old_items():
    generator = torch.Generator().manual_seed(0)
    first = {"x": torch.arange(30), "y": torch.tensor([0] * 20 + [1] * 10), "head": torch.zeros(30, dtype=torch.long)}
    buffer = class_balanced_update({}, first, capacity=8, generator=generator)
    assert sorted(buffer["y"].tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    second = {"x": torch.arange(100, 130), "y": torch.tensor([0] * 15 + [1] * 15), "head": torch.ones(30, dtype=torch.long)}
    buffer = class_balanced_update(buffer, second, capacity=8, generator=generator)
    groups = list(zip(buffer["head"].tolist(), buffer["y"].tolist()))
    assert sorted(groups) == [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)]
    old = buffer["x"][buffer["head"] == 0]
    assert (old < 30).all(), "old groups keep items from the old buffer"


def test_sample_indices_without_then_with_replacement():
    generator = torch.Generator().manual_seed(1)
    assert sorted(sample_indices(5, 5, generator).tolist()) == [0, 1, 2, 3, 4]
    assert sample_indices(2, 9, generator).max() <= 1


def test_grouped_cross_entropy_equals_per_head_losses(tiny_streams):
    model = tiny_model(tiny_streams["multi"])
    x = torch.randn(7, 1, 8, 8)
    targets = torch.tensor([0, 4, 1, 2, 3, 0, 1])
    heads = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    got = grouped_cross_entropy(model.features(x), targets, heads, model)
    total = sum(
        F.cross_entropy(model(x[heads == h], h), targets[heads == h], reduction="sum") for h in (0, 1)
    )
    torch.testing.assert_close(got, total / 7)


def test_agem_projection_by_hand():
    g, ref = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, 0.0])
    # g.ref = -1 < 0: g - (-1 / 1) ref = (0, 1)
    torch.testing.assert_close(agem_project(g, ref), torch.tensor([0.0, 1.0]))
    g2 = torch.tensor([1.0, 2.0])
    assert agem_project(g2, torch.tensor([1.0, 0.0])) is g2  # no conflict: unchanged
    assert agem_project(g2, torch.zeros(2)) is g2


@given(st.lists(st.floats(-10, 10), min_size=6, max_size=6))
@settings(max_examples=50, deadline=None)
def test_agem_projection_never_conflicts_with_the_reference(values):
    g, ref = torch.tensor(values[:3], dtype=torch.float64), torch.tensor(values[3:], dtype=torch.float64)
    projected = agem_project(g, ref)
    assert torch.dot(projected, ref) >= -1e-9 * (1 + ref.norm() ** 2 * g.norm())


def _buffer_from(stream, task_index, n):
    task = stream.tasks[task_index]
    return {
        "x": task.train_x[:n].clone(), "y": task.train_y[:n].clone(),
        "head": torch.full((n,), task.head_index, dtype=torch.long),
    }


def test_agem_after_backward_projects_the_gradient(tiny_streams):
    stream = tiny_streams["multi"]
    model = tiny_model(stream, width=8)
    task = stream.tasks[1]
    # memory items that conflict with the batch: the same inputs with other labels
    conflicting = {"x": task.train_x[:20].clone(), "y": (task.train_y[:20] + 1) % 5, "head": torch.ones(20, dtype=torch.long)}
    strategy = AGEM(AGEMParams(memory_batch_size=10))
    strategy.load_state_dict({"buffer": conflicting, "n_seen": 20})
    context = make_context(stream, 1, seed=5)
    strategy.before_task(model, context)
    x = context.transform(task.train_x[:20], train=False)
    F.cross_entropy(model(x, 1), task.train_y[:20]).backward()
    params = [p for p in model.parameters() if p.grad is not None]  # head 0 takes no part
    g = torch.cat([p.grad.flatten() for p in params])

    # the reference gradient, computed here on the same buffer items (same generator state)
    index = sample_indices(20, 10, torch.Generator().manual_seed(5))
    loss = F.cross_entropy(model(context.transform(conflicting["x"][index], train=False), 1), conflicting["y"][index])
    ref = torch.cat([r.flatten() for r in torch.autograd.grad(loss, params)])
    dot = torch.dot(g, ref)
    assert dot < 0, "the setup must exercise the projection"
    strategy.after_backward(model, None, context)
    got = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(got, g - dot / torch.dot(ref, ref) * ref)
    assert abs(torch.dot(got, ref).item()) < 1e-5
    assert model.heads[0].weight.grad is None or model.heads[0].weight.grad.abs().sum() == 0


def test_replay_mixes_buffer_items_scored_by_their_own_head(tiny_streams):
    stream = tiny_streams["multi"]
    model = tiny_model(stream)
    strategy = Replay(ReplayParams(fraction=0.25))  # 12 new + 4 replayed
    strategy.load_state_dict({"buffer": _buffer_from(stream, 0, 30), "n_seen": 30})
    context = make_context(stream, 1, seed=3)
    strategy.before_task(model, context)
    task = stream.tasks[1]
    batch = Batch(task.train_x[:12], context.transform(task.train_x[:12], train=False), task.train_y[:12], 1)
    got = strategy.batch_loss(model, batch, context)
    index = sample_indices(30, 4, torch.Generator().manual_seed(3))
    memory = strategy.buffer_
    x_old = context.transform(memory["x"][index], train=False)
    expected = (
        F.cross_entropy(model(batch.inputs, 1), batch.targets, reduction="sum")
        + F.cross_entropy(model(x_old, 0), memory["y"][index], reduction="sum")
    ) / 16
    torch.testing.assert_close(got, expected)


def test_replay_fills_its_buffer_after_each_task(tiny_streams):
    stream = tiny_streams["single"]
    strategy = Replay(ReplayParams(buffer_size=50, buffer="class-balanced"))
    model = tiny_model(stream)
    for task_index in range(2):
        context = make_context(stream, task_index)
        strategy.before_task(model, context)
        strategy.after_task(model, context)
    assert strategy.buffer_["y"].bincount().tolist() == [5] * 10
    assert strategy.n_seen_ == sum(t.n_train for t in stream.tasks)


def test_logit_mse_by_hand(tiny_streams):
    model = tiny_model(tiny_streams["multi"], width=4)
    features = torch.randn(3, 4)
    stored = torch.zeros(3, 5)
    heads = torch.tensor([0, 1, 0])
    logits0 = model.heads[0](features[[0, 2]])
    logits1 = model.heads[1](features[[1]])
    expected = (logits0.square().sum() + logits1.square().sum()) / 15
    torch.testing.assert_close(logit_mse(model, features, stored, heads, (5, 5)), expected)


def test_derpp_stores_the_logits_it_trained_with_and_uses_them(tiny_streams):
    stream = tiny_streams["single"]
    model = tiny_model(stream)
    strategy = DERpp(DERppParams(buffer_size=8, memory_batch_size=4, alpha=0.3, beta=0.7))
    context = make_context(stream, 0)
    strategy.before_task(model, context)
    task = stream.tasks[0]
    batch = Batch(task.train_x[:6], context.transform(task.train_x[:6], train=False), task.train_y[:6], 0)
    first = strategy.batch_loss(model, batch, context)
    logits = model(batch.inputs, 0)
    torch.testing.assert_close(first, F.cross_entropy(logits, batch.targets))  # empty buffer: plain CE
    torch.testing.assert_close(strategy.buffer_["logits"], logits.detach())
    assert torch.equal(strategy.buffer_["x"], batch.raw) and strategy.n_seen_ == 6

    # second step: CE + alpha * MSE(stored logits) + beta * CE(buffer labels), two draws
    state = context.generator.get_state()
    memory = {key: value.clone() for key, value in strategy.buffer_.items()}  # before this step adds items
    second = strategy.batch_loss(model, batch, context)
    generator = torch.Generator()
    generator.set_state(state)
    i1, i2 = sample_indices(6, 4, generator), sample_indices(6, 4, generator)
    x1 = context.transform(memory["x"][i1], train=False)
    x2 = context.transform(memory["x"][i2], train=False)
    expected = (
        F.cross_entropy(model(batch.inputs, 0), batch.targets)
        + 0.3 * F.mse_loss(model(x1, 0), memory["logits"][i1])
        + 0.7 * F.cross_entropy(model(x2, 0), memory["y"][i2])
    )
    torch.testing.assert_close(second, expected)
    assert strategy.n_seen_ == 12 and strategy.buffer_["x"].shape[0] == 8
