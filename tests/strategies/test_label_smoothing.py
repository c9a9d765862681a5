"""``train.label_smoothing``: every hard-label cross-entropy of training smooths its
targets, checked against the formula by hand, for every registered strategy, and from
the config through the engine."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from strategy_helpers import make_context, tiny_model

from forgetlab.config import TrainConfig
from forgetlab.engine import train_stream
from forgetlab.strategies import STRATEGIES, Naive, StrategyContext, create_strategy
from forgetlab.strategies.losses import grouped_cross_entropy
from forgetlab.strategies.base import Batch

TRAIN = TrainConfig(optimizer="adam", lr=0.005, steps=10, batch_size=32, seed=0)


def smoothed_by_hand(logits: torch.Tensor, targets: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Per example: -(1 - eps) log p_y - eps / K sum_k log p_k (logits of one head, K outputs)."""
    log_p = logits.double() - torch.logsumexp(logits.double(), dim=1, keepdim=True)
    k = logits.shape[1]
    return -(1 - epsilon) * log_p[torch.arange(len(targets)), targets] - epsilon / k * log_p.sum(1)


def test_grouped_cross_entropy_smooths_over_each_examples_own_head(tiny_streams):
    model = tiny_model(tiny_streams["multi"])
    model.heads[1] = torch.nn.Linear(model.heads[0].in_features, 3)  # heads of different sizes: K = 5 and 3
    x = torch.randn(7, 1, 8, 8)
    targets = torch.tensor([0, 2, 1, 4, 0, 3, 1])
    heads = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    with torch.no_grad():
        got = grouped_cross_entropy(model.features(x), targets, heads, model, label_smoothing=0.3)
        plain = grouped_cross_entropy(model.features(x), targets, heads, model)
    with torch.no_grad():
        per_example = torch.cat([smoothed_by_hand(model(x[heads == h], h), targets[heads == h], 0.3) for h in (0, 1)])
    torch.testing.assert_close(got.double(), per_example.mean(), atol=1e-6, rtol=1e-6)
    assert abs(got.item() - plain.item()) > 1e-3


def test_naive_step_loss_is_the_smoothed_cross_entropy(tiny_streams):
    stream = tiny_streams["multi"]
    model = tiny_model(stream)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    context = dataclasses.replace(make_context(stream, 0), label_smoothing=0.2)
    got = Naive().batch_loss(model, Batch(None, x, y, 0), context)
    with torch.no_grad():
        expected = smoothed_by_hand(model(x, 0), y, 0.2).mean()
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", [*sorted(STRATEGIES), "replay+ewc"])
def test_every_strategy_smooths_its_task_two_loss(name, tiny_streams):
    """After two tasks of training (buffers, teachers, anchors in place), the task-2 step
    loss with label smoothing 0.5 differs from the one without: no strategy computes a
    hard-label loss that ignores the option (same batch, same random draws)."""
    stream = tiny_streams["multi"]
    model = tiny_model(stream)
    strategy = create_strategy(name)
    train_stream(model, stream, TRAIN, strategy=strategy)
    task = stream.tasks[1]
    raw, y = task.train_x[:16], task.train_y[:16]

    def step_loss(epsilon: float) -> float:
        fresh = copy.deepcopy(strategy)  # batch_loss may update state (DER++'s buffer): both calls start alike
        context = dataclasses.replace(make_context(stream, 1, seed=3), label_smoothing=epsilon)
        fresh.before_task(model, context)
        batch = Batch(raw, context.transform(raw, train=False), y, task.head_index)
        losses = [fresh.batch_loss(model, batch, context).item() for _ in range(2)]  # 2 steps: alternating methods
        fresh.after_task(model, context)
        return sum(losses)

    assert abs(step_loss(0.5) - step_loss(0.0)) > 1e-4


def test_the_engine_passes_the_configs_label_smoothing_to_the_strategy(tiny_streams):
    seen = []

    class Recording(Naive):
        def before_task(self, model, context: StrategyContext) -> None:
            seen.append(context.label_smoothing)

    stream = tiny_streams["multi"]
    train_stream(tiny_model(stream), stream, dataclasses.replace(TRAIN, label_smoothing=0.25), strategy=Recording())
    train_stream(tiny_model(stream), stream, TRAIN, strategy=Recording())
    assert seen == [0.25, 0.25, 0.0, 0.0]


@pytest.mark.parametrize("name", ["replay", "agem", "derpp", "joint"])
def test_replayed_losses_get_the_configs_label_smoothing(name, tiny_streams, monkeypatch):
    """The multi-head losses of replayed examples (A-GEM's reference gradient included)
    receive ``train.label_smoothing`` when the engine trains the method."""
    from forgetlab.strategies import rehearsal

    seen, original = [], rehearsal.grouped_cross_entropy

    def recording(features, targets, heads, model, label_smoothing=0.0):
        seen.append(label_smoothing)
        return original(features, targets, heads, model, label_smoothing)

    monkeypatch.setattr(rehearsal, "grouped_cross_entropy", recording)
    stream = tiny_streams["multi"]
    train_stream(tiny_model(stream), stream, dataclasses.replace(TRAIN, label_smoothing=0.3), strategy=create_strategy(name))
    assert seen and set(seen) == {0.3}
