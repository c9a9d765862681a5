"""LwF and pseudo-rehearsal: soft targets, revision sources, and a teacher that never changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from strategy_helpers import make_context, tiny_model

from forgetlab.config import TrainConfig
from forgetlab.engine import train_stream
from forgetlab.errors import ConfigError, DataError
from forgetlab.strategies import LwF, LwFParams, PseudoRehearsal, PseudoRehearsalParams
from forgetlab.strategies.base import Batch
from forgetlab.strategies.distillation import load_revision_inputs
from forgetlab.strategies.losses import old_outputs, soft_cross_entropy
from forgetlab.strategies.memory import sample_indices

TRAIN = TrainConfig(optimizer="adam", lr=0.01, steps=8, batch_size=32, seed=0)


def test_soft_cross_entropy_by_hand():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2.0 * np.log(3.0), 0.0]])  # at T=2: softmax = (3/4, 1/4)
    expected = -(0.75 * np.log(0.5) + 0.25 * np.log(0.5))
    assert soft_cross_entropy(student, teacher, 2.0).item() == pytest.approx(expected)


def test_old_outputs_multi_and_single_head(tiny_streams):
    assert old_outputs(tiny_streams["multi"], 1) == {0: [0, 1, 2, 3, 4]}
    assert old_outputs(tiny_streams["single"], 1) == {0: [0, 1, 2, 3, 4]}  # old classes of the shared head
    assert old_outputs(tiny_streams["single"], 0) == {}


@pytest.mark.parametrize("head", ["multi", "single"])
def test_lwf_loss_is_ce_plus_distillation_on_old_outputs(head, tiny_streams):
    stream = tiny_streams[head]
    model = tiny_model(stream)
    strategy = LwF(LwFParams(lam=0.7, temperature=3.0))
    context = make_context(stream, 1)
    strategy.before_task(model, context)
    teacher = strategy._teacher
    with torch.no_grad():  # the model moves away from the teacher
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    task = stream.tasks[1]
    batch = Batch(task.train_x[:9], context.transform(task.train_x[:9], train=False), task.train_y[:9], task.head_index)
    got = strategy.batch_loss(model, batch, context)
    old = [0, 1, 2, 3, 4]
    expected = F.cross_entropy(model(batch.inputs, task.head_index), batch.targets) + 0.7 * soft_cross_entropy(
        model(batch.inputs, 0)[:, old], teacher(batch.inputs, 0)[:, old], 3.0
    )
    torch.testing.assert_close(got, expected)


class _WatchedPseudoRehearsal(PseudoRehearsal):
    """Checks the teacher at every step: frozen, in eval mode, unchanged, not sharing memory."""

    def before_task(self, model, context):
        super().before_task(model, context)
        self.checks_ = 0
        if self._teacher is not None:
            self.frozen_ = {k: v.clone() for k, v in self._teacher.state_dict().items()}

    def batch_loss(self, model, batch, context):
        loss = super().batch_loss(model, batch, context)
        if self._teacher is not None:
            assert not self._teacher.training
            assert all(not p.requires_grad and p.grad is None for p in self._teacher.parameters())
            model_memory = {p.data_ptr() for p in model.parameters()}
            assert not model_memory & {p.data_ptr() for p in self._teacher.parameters()}
            for key, value in self._teacher.state_dict().items():
                assert torch.equal(value, self.frozen_[key]), key
            self.checks_ += 1
        return loss

    def after_task(self, model, context):
        if self._teacher is not None:
            self.model_moved_ = any(
                not torch.equal(v, self.frozen_[k]) for k, v in model.state_dict().items()
            )
        super().after_task(model, context)


@pytest.mark.parametrize("mode", ["mix", "alternate"])
def test_pseudo_rehearsal_teacher_is_never_updated(mode, tiny_streams):
    stream = tiny_streams["single"]
    strategy = _WatchedPseudoRehearsal(PseudoRehearsalParams(mode=mode))
    train_stream(tiny_model(stream), stream, TRAIN, strategy=strategy)
    assert strategy.checks_ == TRAIN.steps and strategy.model_moved_


def test_old_inputs_are_kept_without_labels_and_revised(tiny_streams):
    stream = tiny_streams["multi"]
    model = tiny_model(stream)
    strategy = PseudoRehearsal(PseudoRehearsalParams(revision_size=30, revision_fraction=0.5))
    context = make_context(stream, 0)
    strategy.before_task(model, context)
    strategy.after_task(model, context)
    assert set(strategy.state_dict()) == {"inputs", "n_seen"} and set(strategy.inputs_) == {"x"}
    kept = strategy.inputs_["x"]
    assert kept.shape == (30, 1, 8, 8) and kept.dtype == torch.uint8
    rows = {tuple(r.flatten().tolist()) for r in stream.tasks[0].train_x}
    assert all(tuple(r.flatten().tolist()) in rows for r in kept)

    # mix: B labelled + B r / (1 - r) revision inputs, loss (B CE + n R) / (B + n)
    context = make_context(stream, 1, seed=4)
    strategy.before_task(model, context)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    task = stream.tasks[1]
    batch = Batch(task.train_x[:10], context.transform(task.train_x[:10], train=False), task.train_y[:10], 1)
    got = strategy.batch_loss(model, batch, context)
    index = sample_indices(30, 10, torch.Generator().manual_seed(4))
    revision = context.transform(kept[index], train=False)
    teacher = strategy._teacher
    distill = soft_cross_entropy(model(revision, 0), teacher(revision, 0), 2.0)  # head 0: the only trained head
    expected = (10 * F.cross_entropy(model(batch.inputs, 1), batch.targets) + 10 * distill) / 20
    torch.testing.assert_close(got, expected)


def test_alternate_mode_revises_on_every_other_step_only(tiny_streams):
    stream = tiny_streams["single"]
    model = tiny_model(stream)
    strategy = PseudoRehearsal(PseudoRehearsalParams(revision_source="noise", mode="alternate", loss="mse"))
    context = make_context(stream, 1)
    strategy.before_task(model, context)
    task = stream.tasks[1]
    batch = Batch(task.train_x[:8], context.transform(task.train_x[:8], train=False), task.train_y[:8], 0)
    labelled = F.cross_entropy(model(batch.inputs, 0), batch.targets)
    torch.testing.assert_close(strategy.batch_loss(model, batch, context), labelled)  # step 1
    state = context.generator.get_state()
    revision_step = strategy.batch_loss(model, batch, context)  # step 2: noise revision batch of 8
    generator = torch.Generator()
    generator.set_state(state)
    noise = torch.randint(0, 256, (8, 1, 8, 8), generator=generator, dtype=torch.uint8)
    x = context.transform(noise, train=False)
    torch.testing.assert_close(revision_step, F.mse_loss(model(x, 0), strategy._teacher(x, 0)))
    torch.testing.assert_close(strategy.batch_loss(model, batch, context), labelled)  # step 3


def test_new_inputs_source_revises_on_the_current_task(tiny_streams):
    stream = tiny_streams["multi"]
    strategy = PseudoRehearsal(PseudoRehearsalParams(revision_source="new-inputs"))
    context = make_context(stream, 1)
    model = tiny_model(stream)
    strategy.before_task(model, context)
    inputs = strategy.revision_inputs(6, make_context(stream, 1, seed=2))
    index = sample_indices(stream.tasks[1].n_train, 6, torch.Generator().manual_seed(2))
    torch.testing.assert_close(inputs, context.transform(stream.tasks[1].train_x[index], train=False))
    strategy.after_task(model, context)
    assert strategy.state_dict() == {}  # nothing to keep


def test_user_inputs_from_npz_and_pt(tiny_streams, tmp_path):
    stream = tiny_streams["single"]
    pixels = np.random.default_rng(0).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", x=pixels)
    loaded = load_revision_inputs(tmp_path / "inputs.npz", (1, 8, 8))
    assert loaded.shape == (12, 1, 8, 8) and torch.equal(loaded[:, 0], torch.from_numpy(pixels))
    torch.save(torch.from_numpy(pixels[:, None]).float() / 255, tmp_path / "inputs.pt")  # floats in [0, 1]
    torch.testing.assert_close(load_revision_inputs(tmp_path / "inputs.pt", (1, 8, 8)), loaded.float())
    channels_last = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", channels_last)
    assert load_revision_inputs(tmp_path / "rgb.npy", (3, 4, 4)).shape == (2, 3, 4, 4)

    strategy = PseudoRehearsal(
        PseudoRehearsalParams(revision_source="user", revision_path=str(tmp_path / "inputs.npz"))
    )
    result = train_stream(tiny_model(stream), stream, TRAIN, strategy=strategy)
    assert result.accuracy_matrix.shape == (2, 2)


def test_revision_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"The 'revision_path' parameter of PseudoRehearsal must be a file"):
        PseudoRehearsalParams(revision_source="user")
    with pytest.raises(ConfigError, match=r"The 'revision_source' parameter .* Did you mean 'noise'\?"):
        PseudoRehearsalParams(revision_source="nois")
    with pytest.raises(ConfigError, match=r"The 'revision_fraction' parameter of PseudoRehearsal must be in \(0, 1\)"):
        PseudoRehearsalParams(revision_fraction=1.0)
    with pytest.raises(DataError, match="does not exist"):
        load_revision_inputs(tmp_path / "missing.npz", (1, 8, 8))
    np.save(tmp_path / "bad.npy", np.zeros((3, 7, 7), dtype=np.uint8))
    with pytest.raises(DataError, match=r"have shape \(3, 1, 7, 7\); the stream's inputs are \(N, 1, 8, 8\)"):
        load_revision_inputs(tmp_path / "bad.npy", (1, 8, 8))
    np.savez(tmp_path / "two.npz", a=np.zeros(1), b=np.zeros(1))
    with pytest.raises(DataError, match="name the inputs 'x'"):
        load_revision_inputs(tmp_path / "two.npz", (1, 8, 8))
