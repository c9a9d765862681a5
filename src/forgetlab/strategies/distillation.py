"""Methods that keep the old model's outputs: LwF and pseudo-rehearsal.

Both take a *teacher* in ``before_task``: a deep copy of the model as it is before the
new task, in eval mode, with ``requires_grad=False``; nothing ever updates it. The
teacher is rebuilt from the model at every task start, so it is not part of the
checkpointed state.

Example:
    >>> from forgetlab.models import create_model
    >>> teacher = frozen_copy(create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=8))
    >>> teacher.training, any(p.requires_grad for p in teacher.parameters())
    (False, False)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from forgetlab.hyperparams import LwFParams, PseudoRehearsalParams
from forgetlab.data.custom import load_revision_inputs
from forgetlab.strategies.base import Batch, Strategy, StrategyContext, trained_heads
from forgetlab.strategies.losses import old_outputs, soft_cross_entropy
from forgetlab.strategies.memory import reservoir_update, sample_indices


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with no trainable parameter and no gradients."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
        p.grad = None
    return teacher


# ----------------------------------------------------------------------- LwF -----

class LwF(Strategy):
    """Learning without Forgetting (Li & Hoiem 2016): ``L + lam sum_h KD_T(f_old,h(x), f_h(x))``
    on the new task's own inputs ``x``, for every old head ``h``, restricted to the outputs
    (classes) the old tasks used: all of an old head's outputs in multi-head streams, the
    old classes of the shared head in single-head streams. ``KD_T`` =
    :func:`~forgetlab.strategies.losses.soft_cross_entropy`.

    ``distill_classes=seen``: on a head the new task shares, the student's softmax covers
    the new task's classes too, where the teacher's probability is 0. ``weighting=vandeven2019``:
    ``(1/t) CE + (1 - 1/t) lam mean_h T^2 KD'_h`` at task t (1-based), ``KD'`` = the
    soft-target cross-entropy summed over outputs, divided by the number of outputs, mean
    over examples (``loss_fn_kd`` of van de Ven's code at the 2019 preprint, whose
    ``.mean()`` averages over outputs as well).

    Example:
        >>> LwF().params
        LwFParams(lam=1.0, temperature=2.0, weighting='sum', distill_classes='old')
    """

    name = "lwf"
    title = "Learning without Forgetting (distillation on the new task's inputs)"
    params_type = LwFParams
    prefix_neutral = True
    _teacher: nn.Module | None = None

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._teacher = frozen_copy(model) if context.task_index > 0 else None
        current = context.task.head_index, torch.unique(context.task.train_y).tolist()
        self._outputs = []  # (head, the old outputs, the student's outputs: old ones first)
        for head, labels in old_outputs(context.stream, context.task_index).items():
            new = [c for c in current[1] if c not in labels] if head == current[0] and self.params.distill_classes == "seen" else []
            self._outputs.append((head, torch.tensor(labels, device=context.device), torch.tensor(labels + new, device=context.device)))

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        if self._teacher is None:
            return super().batch_loss(model, batch, context)
        features = model.features(batch.inputs)
        logits = {batch.head_index: model.heads[batch.head_index](features)}
        loss = context.cross_entropy(logits[batch.head_index], batch.targets)
        with torch.no_grad():
            teacher_features = self._teacher.features(batch.inputs)
        temperature, terms = self.params.temperature, []
        for head, old, outputs in self._outputs:
            student = logits[head] if head in logits else model.heads[head](features)
            teacher = self._teacher.heads[head](teacher_features)
            terms.append(padded_soft_cross_entropy(student[:, outputs], teacher[:, old], temperature))
        if self.params.weighting == "sum":
            return loss + self.params.lam * sum(terms)
        t = context.task_index + 1
        scaled = [term * temperature**2 / len(outputs) for term, (_, _, outputs) in zip(terms, self._outputs)]
        return loss / t + (1 - 1 / t) * self.params.lam * sum(scaled) / len(scaled)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._teacher = None


def padded_soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """:func:`~forgetlab.strategies.losses.soft_cross_entropy` where the student has more
    outputs than the teacher (``(B, K + k)`` vs ``(B, K)``): the teacher's softmax is padded
    with zero probabilities for the student's last k outputs.

    Example:
        >>> s = torch.zeros(1, 4); t = torch.tensor([[0.0, 100.0]])
        >>> round(padded_soft_cross_entropy(s, t, temperature=1.0).item(), 4)  # -log(1/4)
        1.3863
    """
    n_teacher = teacher_logits.shape[1]
    if student_logits.shape[1] == n_teacher:
        return soft_cross_entropy(student_logits, teacher_logits, temperature)
    targets = F.softmax(teacher_logits / temperature, dim=1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=1)[:, :n_teacher]).sum(1).mean()


# ---------------------------------------------------------- pseudo-rehearsal -----



class PseudoRehearsal(Strategy):
    """Pseudo-rehearsal (Robins 1995; spaCy's ``rehearse``): on revision inputs, match the
    teacher's (the model before this task) outputs on every head trained so far.

    ``mix``: each batch of B labelled examples gets ``n = round(B r / (1 - r))`` revision
    inputs; loss = ``(B * CE + n * R) / (B + n)`` with ``R`` = the revision loss (mean over
    trained heads of soft-target CE at T, or MSE on logits). ``alternate``: odd steps
    train on the labelled batch, even steps on B revision inputs alone (so the new task
    gets half the steps). Revision targets cover each trained head's full output.

    Example:
        >>> PseudoRehearsal(PseudoRehearsalParams(revision_source="noise")).params.mode
        'mix'
    """

    name = "pseudo-rehearsal"
    title = "pseudo-rehearsal: a frozen copy gives soft targets on revision inputs"
    params_type = PseudoRehearsalParams
    _teacher: nn.Module | None = None
    inputs_: dict[str, torch.Tensor] | None = None
    n_seen_: int = 0

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._step = 0
        self._teacher = None
        self._pool: torch.Tensor | None = None
        self.move_state(context.device)
        if context.task_index == 0:
            return
        self._teacher = frozen_copy(model)
        self._heads = trained_heads(context.stream, context.task_index)
        source = self.params.revision_source
        if source == "old-inputs":
            self._pool = self.inputs_["x"] if self.inputs_ else None
        elif source == "new-inputs":
            self._pool = context.task.train_x
        elif source == "user":
            self._pool = load_revision_inputs(self.params.revision_path, context.stream.input_shape).to(context.device)

    def revision_inputs(self, n: int, context: StrategyContext) -> torch.Tensor:
        """``n`` prepared revision inputs drawn from the configured source."""
        if self.params.revision_source == "noise":
            shape = (n, *context.stream.input_shape)
            raw = torch.randint(0, 256, shape, generator=context.generator, dtype=torch.uint8)
            return context.transform(raw.to(context.device), train=False)
        assert self._pool is not None  # before_task set it for every other source
        return context.prepare(self._pool[sample_indices(self._pool.shape[0], n, context.generator).to(self._pool.device)])

    def revision_loss(self, model: nn.Module, features: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Mean over trained heads of the distance between the model's and the teacher's
        outputs on ``inputs`` (``features`` = the model's features of ``inputs``)."""
        assert self._teacher is not None
        with torch.no_grad():
            teacher_features = self._teacher.features(inputs)
        total = features.new_zeros(())
        for head in self._heads:
            student, teacher = model.heads[head](features), self._teacher.heads[head](teacher_features)
            if self.params.loss == "mse":
                total = total + F.mse_loss(student, teacher)
            else:
                total = total + soft_cross_entropy(student, teacher, self.params.temperature)
        return total / len(self._heads)

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        if self._teacher is None or (self.params.revision_source == "old-inputs" and self._pool is None):
            return super().batch_loss(model, batch, context)
        n = batch.targets.shape[0]
        if self.params.mode == "alternate":
            self._step += 1
            if self._step % 2 == 1:
                return super().batch_loss(model, batch, context)
            inputs = self.revision_inputs(n, context)
            return self.revision_loss(model, model.features(inputs), inputs)
        fraction = self.params.revision_fraction
        n_revision = max(1, round(n * fraction / (1 - fraction)))
        inputs = self.revision_inputs(n_revision, context)
        features = model.features(torch.cat([batch.inputs, inputs]))
        task_loss = context.cross_entropy(model.heads[batch.head_index](features[:n]), batch.targets)
        revision = self.revision_loss(model, features[n:], inputs)
        return (n * task_loss + n_revision * revision) / (n + n_revision)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._teacher, self._pool = None, None
        if self.params.revision_source != "old-inputs":
            return
        task = context.task
        order = torch.randperm(task.n_train, generator=context.generator)
        self.inputs_ = reservoir_update(
            self.inputs_ or {}, {"x": task.train_x[order].to(context.device)},
            n_seen=self.n_seen_, capacity=self.params.revision_size, generator=context.generator,
        )
        self.n_seen_ += task.n_train
