"""Methods with an episodic memory of old examples: experience replay, A-GEM, DER++; and
joint training (every old example kept), the upper bound.

Buffer items keep their raw uint8 input, label and head index (and, for DER++, the
logits the model gave when the item was stored); they are prepared (normalised,
augmented) like any training batch when replayed. In multi-head streams every replayed
item is scored by its own head, with one ``model.features`` pass over the whole batch
(:func:`~forgetlab.strategies.losses.grouped_cross_entropy`).

Example:
    >>> import torch
    >>> agem_project(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from forgetlab.hyperparams import AGEMParams, DERppParams, JointParams, ReplayParams
from forgetlab.strategies.base import Batch, Strategy, StrategyContext
from forgetlab.strategies.losses import grouped_cross_entropy
from forgetlab.strategies.memory import (
    buffer_length,
    class_balanced_update,
    reservoir_update,
    sample_indices,
)


class _BufferStrategy(Strategy):
    """Shared buffer handling: device moves, end-of-task filling."""

    buffer_: dict[str, torch.Tensor] | None = None
    n_seen_: int = 0

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        self.move_state(context.device)

    def fill_from_task(self, context: StrategyContext) -> None:
        """Offer the finished task's training examples to the buffer (``params.buffer`` rule)."""
        task = context.task
        order = torch.randperm(task.n_train, generator=context.generator)
        new = {
            "x": task.train_x[order].to(context.device),
            "y": task.train_y[order].to(context.device),
            "head": torch.full((task.n_train,), task.head_index, dtype=torch.long, device=context.device),
        }
        if self.params.buffer == "class-balanced":
            self.buffer_ = class_balanced_update(
                self.buffer_ or {}, new, capacity=self.params.buffer_size, generator=context.generator
            )
        else:
            self.buffer_ = reservoir_update(
                self.buffer_ or {}, new, n_seen=self.n_seen_, capacity=self.params.buffer_size,
                generator=context.generator,
            )
        self.n_seen_ += task.n_train

    def draw(self, n: int, context: StrategyContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` random buffer items: their indices, prepared inputs, labels, head indices."""
        assert self.buffer_ is not None
        index = sample_indices(buffer_length(self.buffer_), n, context.generator).to(self.buffer_["y"].device)
        return index, context.prepare(self.buffer_["x"][index]), self.buffer_["y"][index], self.buffer_["head"][index]


# -------------------------------------------------------------------- replay -----

class Replay(_BufferStrategy):
    """Experience replay: a batch of B new examples gets ``round(B r / (1 - r))`` buffer
    examples, so that they are the fraction ``r`` of the combined batch; the loss is the
    mean cross-entropy over all of them, each on its own head. The buffer is filled from
    each task's training set when the task ends.

    Example:
        >>> Replay(ReplayParams(buffer="class-balanced")).params.buffer_size
        1000
    """

    name = "replay"
    title = "experience replay from a buffer of old examples"
    params_type = ReplayParams
    prefix_neutral = True

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        if not self.buffer_ or self.params.fraction == 0:
            return super().batch_loss(model, batch, context)
        n = batch.targets.shape[0]
        n_memory = max(1, round(n * self.params.fraction / (1 - self.params.fraction)))
        _, x, y, heads = self.draw(n_memory, context)
        current = torch.full((n,), batch.head_index, dtype=torch.long, device=heads.device)
        features = model.features(torch.cat([batch.inputs, x]))
        targets, example_heads = torch.cat([batch.targets, y]), torch.cat([current, heads])
        return grouped_cross_entropy(features, targets, example_heads, model, context.label_smoothing)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        self.fill_from_task(context)


# --------------------------------------------------------------------- A-GEM -----

def agem_project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection (Chaudhry et al. 2019): if ``g . g_ref < 0``, return
    ``g - (g . g_ref / g_ref . g_ref) g_ref``, else ``g`` unchanged (flat vectors)."""
    # The projection is invariant to the scale of g_ref: rescale it to max |.| = 1 first, so
    # that a tiny reference (its squared norm underflowing to 0) cannot produce inf / nan.
    largest = reference.abs().max()
    if not largest > 0:
        return gradient
    reference = reference / largest
    dot = torch.dot(gradient, reference)
    if dot >= 0:
        return gradient
    return gradient - (dot / torch.dot(reference, reference)) * reference


class AGEM(_BufferStrategy):
    """Averaged Gradient Episodic Memory: after ``backward()``, the gradient is projected so
    that it does not increase the loss on a random batch of buffer examples (to first order).

    Example:
        >>> AGEM().params.memory_batch_size
        256
    """

    name = "agem"
    title = "Averaged GEM: project gradients that would raise the memory loss"
    params_type = AGEMParams
    prefix_neutral = True

    def after_backward(self, model: nn.Module, batch: Batch, context: StrategyContext) -> None:
        if not self.buffer_:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        _, x, y, heads = self.draw(self.params.memory_batch_size, context)
        memory_loss = grouped_cross_entropy(model.features(x), y, heads, model, context.label_smoothing)
        reference = torch.autograd.grad(memory_loss, params, allow_unused=True)
        flat_grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        flat_ref = torch.cat([(r if r is not None else torch.zeros_like(p)).flatten() for p, r in zip(params, reference)])
        projected = agem_project(flat_grad, flat_ref)
        if projected is flat_grad:
            return
        offset = 0
        for p in params:
            p.grad = projected[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        self.fill_from_task(context)


# ---------------------------------------------------------------------- DER++ -----

def logit_mse(model: nn.Module, features: torch.Tensor, stored: torch.Tensor, heads: torch.Tensor, head_sizes: tuple[int, ...]) -> torch.Tensor:
    """Mean squared error between each item's current logits (its own head) and the
    ``stored`` logits (padded to the widest head), over all real logit entries."""
    total, count = features.new_zeros(()), 0
    for head in heads.unique().tolist():
        mask = heads == head
        size = head_sizes[head]
        total = total + F.mse_loss(model.heads[head](features[mask]), stored[mask, :size], reduction="sum")
        count += int(mask.sum()) * size
    return total / count


class DERpp(_BufferStrategy):
    """Dark Experience Replay++ (Buzzega et al. 2020):
    ``L + alpha MSE(f(x'), z') + beta CE(f(x''), y'')`` with ``(x', z')`` and ``(x'', y'')``
    two independent buffer batches; the buffer is a reservoir over every training example
    seen, stored with the logits ``z`` the model gave it at that step.

    Example:
        >>> DERpp().params.alpha
        0.5
    """

    name = "derpp"
    title = "Dark Experience Replay++ (replay logits and labels)"
    params_type = DERppParams

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        n = batch.targets.shape[0]
        head_sizes = context.stream.head_sizes
        if not self.buffer_:
            logits = model(batch.inputs, batch.head_index)
            loss = context.cross_entropy(logits, batch.targets)
        else:
            m = self.params.memory_batch_size
            index1, x1, _, heads1 = self.draw(m, context)
            _, x2, y2, heads2 = self.draw(m, context)
            features = model.features(torch.cat([batch.inputs, x1, x2]))
            logits = model.heads[batch.head_index](features[:n])
            loss = (
                context.cross_entropy(logits, batch.targets)
                + self.params.alpha * logit_mse(model, features[n : n + m], self.buffer_["logits"][index1], heads1, head_sizes)
                + self.params.beta * grouped_cross_entropy(features[n + m :], y2, heads2, model, context.label_smoothing)
            )
        stored = logits.detach().new_zeros((n, max(head_sizes)))
        stored[:, : logits.shape[1]] = logits.detach()
        new = {
            "x": batch.raw, "y": batch.targets, "logits": stored,
            "head": torch.full((n,), batch.head_index, dtype=torch.long, device=batch.targets.device),
        }
        self.buffer_ = reservoir_update(
            self.buffer_ or {}, new, n_seen=self.n_seen_, capacity=self.params.buffer_size, generator=context.generator
        )
        self.n_seen_ += n
        return loss


# --------------------------------------------------------------------- joint -----

class Joint(Strategy):
    """Joint training, the upper bound: at task t every batch is drawn uniformly (without
    replacement within the batch) from the union of the training sets of tasks 1..t, each
    example scored on its own head; the current task's batch is not used, the number of
    steps per task is the configured one. After the last task the model has trained on
    all tasks at once. This is van de Ven & Tolias 2019's "Offline" row (their
    ``train.py``: ``ConcatDataset(train_datasets[:task])`` at every task in domain- and
    class-IL; in task-IL one replayed batch of ``ceil(B / t)`` per task instead, the mean
    of the t losses: the same expected loss when the tasks are the same size).

    Example:
        >>> Joint().params
        JointParams()
    """

    name = "joint"
    title = "joint training: every task trains on all tasks' data so far (the upper bound)"
    params_type = JointParams

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        tasks = context.stream.tasks[: context.task_index + 1]
        self._x = torch.cat([task.train_x for task in tasks]).to(context.device)
        self._y = torch.cat([task.train_y for task in tasks]).to(context.device)
        self._heads = torch.cat([torch.full((task.n_train,), task.head_index) for task in tasks]).to(context.device)

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        index = sample_indices(self._x.shape[0], batch.targets.shape[0], context.generator).to(context.device)
        features = model.features(context.prepare(self._x[index]))
        return grouped_cross_entropy(features, self._y[index], self._heads[index], model, context.label_smoothing)

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        self._x = self._y = self._heads = None
