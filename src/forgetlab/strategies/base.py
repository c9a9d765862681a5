"""The strategy contract: how a mitigation method plugs into the training loop.

A strategy is a small object. Its constructor stores its hyperparameters (one frozen
dataclass, ``params``) and nothing else; everything it learns (anchors, importances,
buffers) is created by its hooks, in attributes whose names end in ``_`` (declared on
the class with a default), and that is its state: :meth:`Strategy.state_dict` /
:meth:`Strategy.load_state_dict` derive it from those attributes, so that it lives in
every task-boundary checkpoint. Transient objects (teachers, bound terms) start with ``_``. Hooks receive what they need as
arguments (the model, the current :class:`Batch`, a :class:`StrategyContext` with the
stream, the device, the batch transform and a seeded generator) and return their
result; no hook reads globals.

Call order, for every task ``task_index`` of a stream (:func:`forgetlab.engine.train_stream`)::

    context = StrategyContext(stream, task_index, device, transform, generator, augment_generator)
    strategy.before_task(model, context)      # anchors, teachers, freezing, moving state to the device
    optimizer = make_optimizer(model)         # built AFTER before_task: frozen parameters are left out
    for every step:
        batch = Batch(raw, inputs, targets, head_index)           # the current task's batch
        loss = strategy.batch_loss(model, batch, context)         # default: cross-entropy on the batch's head
        extra = strategy.penalty(model, context)                  # None = no extra term
        loss = loss + extra                                       # (when not None)
        optimizer.zero_grad(); loss.backward()
        strategy.after_backward(model, batch, context)            # may rewrite p.grad (gradient projection)
        optimizer.step()
        strategy.after_step(model, context)                       # sees the parameter update (SI)
    strategy.after_task(model, context)       # importances, buffers; undo temporary changes to the model
    checkpoint <- strategy.state_dict()

On resume, a fresh strategy (same hyperparameters) receives ``load_state_dict(state)``
from the last checkpoint, then ``before_task`` of the next task. Transient objects built
in ``before_task`` (teachers, parameter lists) are therefore never saved.

The only hooks that change the model are ``before_task`` / ``after_task`` (a strategy
that changes the model temporarily, e.g. freezing, restores it in ``after_task``) and
``after_backward`` (which may rewrite gradients). The stream's tensors are never changed.

Example:
    >>> import torch
    >>> from forgetlab.models import create_model
    >>> model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5,), width=16)
    >>> batch = Batch(None, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 0)
    >>> context = StrategyContext(None, 0, torch.device("cpu"), None, torch.Generator())
    >>> Naive().batch_loss(model, batch, context).shape
    torch.Size([])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from forgetlab.errors import ConfigError, IncompatibleError
from forgetlab.hyperparams import HyperParams, NaiveParams

if TYPE_CHECKING:
    from forgetlab.data.augment import BatchTransform
    from forgetlab.data.streams import Task, TaskStream


class Batch(NamedTuple):
    """One training batch of the current task.

    Attributes:
        raw: the uint8 inputs ``(B, C, H, W)`` as stored in the task (what buffers keep).
        inputs: the prepared float inputs ``(B, C, H, W)`` (normalised, maybe augmented).
        targets: int64 labels ``(B,)`` in the head's label space.
        head_index: the head this task trains.
    """

    raw: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    head_index: int


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may use besides the model, for one task of a stream.

    Attributes:
        stream: the task stream (read only).
        task_index: the task being trained (0-based).
        device: where the model and the batches live.
        transform: uint8 -> normalised float batches (``transform(x, train=True, generator=...)``).
        generator: seeded CPU generator for the strategy's sampling (saved in checkpoints).
        augment_generator: the generator of the transform's augmentation (on ``device``).
        label_smoothing: ``train.label_smoothing``, for every cross-entropy on hard
            labels a strategy computes (:meth:`cross_entropy`).
    """

    stream: TaskStream
    task_index: int
    device: torch.device
    transform: BatchTransform
    generator: torch.Generator
    augment_generator: torch.Generator | None = None
    label_smoothing: float = 0.0

    @property
    def task(self) -> Task:
        """The task being trained."""
        return self.stream.tasks[self.task_index]

    def prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """Training-time preparation (normalisation + the stream's augmentation) of stored inputs."""
        return self.transform(raw.to(self.device), train=True, generator=self.augment_generator)

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean training cross-entropy on hard labels, with ``label_smoothing``."""
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


# ---------------------------------------------------------------- hyperparameters -----

# ---------------------------------------------------------------- the contract -----

class Strategy:
    """Base class with no-op hooks: plain sequential fine-tuning ("naive").

    Subclasses set ``name`` (registry key), ``title`` (one line for ``forgetlab list``),
    ``params_type`` (their :class:`HyperParams` dataclass), ``prefix_neutral``: True
    when the method does nothing during the first task except in ``after_task`` (checked
    hook by hook), so that its task-1 training equals a naive run's and a sweep may start
    it from the naive run's task-1 checkpoint (:func:`forgetlab.experiments.execute`), and
    ``first_task_free``: for a method that is not prefix-neutral (it learns during task 1,
    e.g. SI's path integral), the hyperparameters that act only from task 2 on: runs that
    differ only in them train task 1 identically and end it with the same state, so a
    sweep trains task 1 once for all of them and the others adopt that run's task-1
    checkpoint, strategy state included.
    """

    name: ClassVar[str] = "naive"
    title: ClassVar[str] = "plain fine-tuning, task after task (the baseline that forgets)"
    params_type: ClassVar[type[HyperParams]] = NaiveParams
    prefix_neutral: ClassVar[bool] = False
    first_task_free: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: HyperParams | None = None) -> None:
        if params is None:
            params = self.params_type()
        if type(params) is not self.params_type:
            raise ConfigError(
                f"The 'params' argument of {type(self).__name__} must be a {self.params_type.__name__}. "
                f"Got {params!r} instead."
            )
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    def before_task(self, model: nn.Module, context: StrategyContext) -> None:
        """Called before training on ``context.task_index`` (and before the optimizer is built)."""

    def batch_loss(self, model: nn.Module, batch: Batch, context: StrategyContext) -> torch.Tensor:
        """The loss of one training step; default: cross-entropy of the batch on its head."""
        return context.cross_entropy(model(batch.inputs, batch.head_index), batch.targets)

    def penalty(self, model: nn.Module, context: StrategyContext) -> torch.Tensor | None:
        """An extra term added to every step's loss, or ``None``."""
        return None

    def after_backward(self, model: nn.Module, batch: Batch, context: StrategyContext) -> None:
        """Called after ``backward()`` and before the optimizer step; may rewrite ``p.grad``."""

    def after_step(self, model: nn.Module, context: StrategyContext) -> None:
        """Called after every optimizer step."""

    def after_task(self, model: nn.Module, context: StrategyContext) -> None:
        """Called after training on ``context.task_index`` (importances, buffers)."""

    def state_dict(self) -> dict[str, Any]:
        """Learned state, for checkpoints: every attribute ``x_`` this strategy has set, as ``"x"``."""
        return {name[:-1]: value for name, value in vars(self).items() if _is_state(name)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (``{}`` = nothing learnt yet)."""
        expected = sorted(name[:-1] for name in dir(type(self)) if _is_state(name))
        if state and sorted(state) != expected:
            raise IncompatibleError(
                f"The checkpoint's strategy state has keys {sorted(state)}; {type(self).__name__} "
                f"expects {expected or 'none (it keeps no state)'}. Was it written by another method?"
            )
        for key, value in state.items():
            setattr(self, key + "_", value)

    def move_state(self, device: torch.device) -> None:
        """Put the learned state's tensors on ``device`` (new containers: a state dict taken
        earlier is left as it was)."""
        for name, value in list(vars(self).items()):
            if _is_state(name):
                setattr(self, name, _moved(value, device))


def _is_state(name: str) -> bool:
    return name.endswith("_") and not name.startswith("_")


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(item, device) for item in value)
    return value


class Naive(Strategy):
    """Plain fine-tuning on each task in turn: the baseline that forgets.

    Example:
        >>> Naive().params
        NaiveParams()
    """

    prefix_neutral = True


# ---------------------------------------------------------------- helpers -----

def trained_heads(stream: TaskStream, task_index: int) -> list[int]:
    """Heads trained by the tasks before ``task_index``, sorted.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> trained_heads(NS(tasks=[NS(head_index=0), NS(head_index=1), NS(head_index=2)]), 2)
        [0, 1]
    """
    return sorted({stream.tasks[j].head_index for j in range(task_index)})


def penalised_parameters(model: nn.Module, heads: list[int]) -> dict[str, nn.Parameter]:
    """Trainable parameters a weight penalty applies to: all but the heads not in ``heads``
    (a head no task has trained yet has no old value worth keeping).

    Example:
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(5, 5), width=4, depth=1)
        >>> list(penalised_parameters(model, [0]))
        ['blocks.fc1.1.weight', 'blocks.fc1.1.bias', 'heads.0.weight', 'heads.0.bias']
    """
    skip = tuple(f"heads.{h}." for h in range(len(getattr(model, "heads", ()))) if h not in heads)
    return {
        name: p for name, p in model.named_parameters() if p.requires_grad and not (skip and name.startswith(skip))
    }


def snapshot(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies of named tensors."""
    return {name: p.detach().clone() for name, p in parameters.items()}
