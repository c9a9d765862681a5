"""The training loop: task by task, evaluating every task after every epoch.

The loop is deliberately plain (index a uint8 tensor, prepare the batch on the device,
forward, loss, backward, step) so that its cost is that of a hand-written PyTorch loop
(``benchmarks/bench_engine.py`` measures the ratio).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from forgetlab.analysis.activations import eval_mode
from forgetlab.config import TrainConfig
from forgetlab.data.augment import BatchTransform
from forgetlab.data.streams import Task, TaskStream
from forgetlab.engine.checkpoint import checkpoint_path, resume_checkpoint, save_checkpoint
from forgetlab.engine.device import mixed_precision
from forgetlab.engine.loggers import TrainLogger
from forgetlab.errors import ConfigError, DivergedError, IncompatibleError
from forgetlab.strategies.base import Batch, Naive, Strategy, StrategyContext


@dataclass(frozen=True)
class CurvePoint:
    """Accuracy on every task at one moment of training.

    Attributes:
        task_index: the task being trained (0-based).
        epoch: epochs completed within that task (fractional with ``eval_every_steps``).
        step: optimizer steps completed since the start of the stream.
        accuracies: test accuracy on each task, in stream order.
    """

    task_index: int
    epoch: float
    step: int
    accuracies: tuple[float, ...]


@dataclass
class TrainResult:
    """What :func:`train_stream` returns.

    Attributes:
        accuracy_matrix: ``R``, ``(T, T)``; ``R[i, j]`` = accuracy on task j after task i.
        initial_accuracy: ``(T,)`` accuracy of the untrained model on each task (a
            baseline for forward transfer).
        curves: learning curves, in time order.
        train_seconds: wall time spent training (evaluation excluded).
        eval_seconds: wall time spent evaluating.
        resumed_from: task boundary the run resumed from (number of tasks already
            done), or 0.
    """

    accuracy_matrix: np.ndarray
    initial_accuracy: np.ndarray
    curves: list[CurvePoint] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    resumed_from: int = 0


def make_optimizer(
    model: nn.Module, config: TrainConfig, params: list[nn.Parameter] | None = None
) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over ``params`` (default: the model's trainable parameters)."""
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


ONECYCLE_WARMUP = 0.2  # train.lr_schedule=onecycle: the fraction of a task's steps spent warming up


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` of a task of ``total_steps``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if schedule == "step":
        return 0.1 ** ((step >= 0.5 * total_steps) + (step >= 0.75 * total_steps))
    if schedule == "onecycle":
        warmup = max(1, round(ONECYCLE_WARMUP * total_steps))
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(total_steps - warmup, 1))
    return 1.0


@torch.no_grad()
def evaluate_task(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, head_index: int, transform: BatchTransform, batch_size: int
) -> float:
    """Accuracy of ``model`` (in eval mode) on uint8 inputs ``x`` with labels ``y``.

    Labels may be per token (``y`` ``(N, T)`` for logits ``(N, K, T)``: a language model's
    next tokens); negative labels (``-100``, padding) are not counted.
    Every submodule's train/eval mode is restored afterwards (a strategy may keep some
    submodules, e.g. frozen BatchNorm layers, in eval mode while training).
    """
    correct = total = 0
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            logits = model(transform(x[start : start + batch_size], train=False), head_index)
            labels = y[start : start + batch_size]
            valid = labels >= 0
            correct += int(((logits.argmax(1) == labels) & valid).sum())
            total += int(valid.sum())
    return correct / max(total, 1)


def _progress(total: int, description: str, enabled: bool, unit: str = "step") -> Any:
    """A tqdm bar (a context manager), silent unless ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, unit=unit, disable=not enabled)


def train_stream(
    model: nn.Module,
    stream: TaskStream,
    config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    strategy: Strategy | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool = False,
    n_learned_tasks: int = 0,
    prefix_checkpoint: dict[str, Any] | None = None,
    loggers: Sequence[TrainLogger] = (),
) -> TrainResult:
    """Train ``model`` on every task of ``stream`` in order; evaluate all tasks as it goes.

    ``strategy`` (default: naive fine-tuning) is called as ``forgetlab.strategies.base``
    documents. Where training starts is one of three steps:

    - :func:`_resume`: ``checkpoint_dir`` already holds this run's ``task-{i}.pt``: go on
      after the last good one (same result as an uninterrupted run; a bad or foreign one
      is quarantined, see :func:`resume_checkpoint`).
    - :func:`_adopt_prefix`: else, with ``prefix_checkpoint`` (the payload of *another*
      run's task-boundary checkpoint, see :func:`read_checkpoint`), take over that run's
      trained tasks. Exact for a *prefix-neutral* method (one that does nothing during
      those tasks but ``after_task``; see ``Strategy.prefix_neutral``) and a naive
      source, or for another method and a source of the same method that differs only in
      ``Strategy.first_task_free`` hyperparameters; either trained with the same model
      and training config, and the same stream or one that differs in later tasks only
      (``StreamKind.later_tasks_only``).
    - :func:`_start_fresh`: else evaluate the untrained model; the first
      ``n_learned_tasks`` tasks count as already learned by ``model`` (e.g. a user's
      trained model whose old task is given as data): not trained, only the strategy's
      ``before_task`` and ``after_task`` run on them, and their rows of ``R`` are the
      initial accuracies.

    With ``checkpoint_dir``, writes ``task-{i}.pt`` (``checkpoint_extra`` included, and
    the strategy's state and generator) after each task. ``loggers``
    (:mod:`forgetlab.engine.loggers`) receive every step's loss and every evaluation.

    Example:
        >>> import forgetlab
        >>> from forgetlab.config import RunConfig, apply_overrides
        >>> from forgetlab.resolve import resolve
        >>> from forgetlab.api import build_stream_for
        >>> from forgetlab.models import build_model
        >>> cfg = resolve(apply_overrides(RunConfig(), ["train.epochs=2"]))
        >>> stream = build_stream_for(cfg)
        >>> model = build_model(cfg.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes)
        >>> result = train_stream(model, stream, cfg.train)
        >>> result.accuracy_matrix.shape
        (2, 2)
    """
    if not 0 <= n_learned_tasks < stream.n_tasks:
        raise ConfigError(
            f"The 'n_learned_tasks' parameter must be in [0, {stream.n_tasks - 1}]. Got {n_learned_tasks}."
        )
    strategy = strategy or Naive()
    loop = _Loop(model, stream, config, torch.device(device), strategy, progress, checkpoint_dir, checkpoint_extra)
    loop.loggers = list(loggers)
    config_dict = loop.checkpoint_extra.get("config")
    own = None if checkpoint_dir is None else resume_checkpoint(checkpoint_dir, stream.n_tasks, config_dict)
    if own is not None:
        first_task = _resume(loop, own)
    elif prefix_checkpoint is not None:
        first_task = _adopt_prefix(loop, prefix_checkpoint)
    else:
        first_task = _start_fresh(loop, n_learned_tasks)

    for task_index in range(first_task, stream.n_tasks):
        context = loop.context(task_index)
        strategy.before_task(model, context)
        if loop.optimizer is None or config.reset_optimizer:
            loop.optimizer = make_optimizer(model, config)
        _train_task(loop, loop.optimizer, context)  # epochs of steps, every task evaluated after each
        strategy.after_task(model, context)
        loop.R[task_index] = loop.accuracies_now(task_index)
        loop.save(task_index)
    return loop.result(resumed_from=first_task)


class _Loop:
    """What one :func:`train_stream` call carries from task to task: the model and its
    optimizer, the generators, ``R``, the curves, the counters and the clocks (all of it
    is in a task-boundary checkpoint)."""

    def __init__(
        self, model: nn.Module, stream: TaskStream, config: TrainConfig, device: torch.device, strategy: Strategy,
        progress: bool, checkpoint_dir: Path | None, checkpoint_extra: dict[str, Any] | None,
    ) -> None:
        channels_last = config.memory_format == "channels_last"
        model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
        model.train()
        self.model, self.stream, self.config, self.device, self.strategy = model, stream, config, device, strategy
        self.progress, self.checkpoint_dir, self.checkpoint_extra = progress, checkpoint_dir, checkpoint_extra or {}
        self.loggers: list[TrainLogger] = []
        self.transform = BatchTransform(stream.mean, stream.std, augment=stream.augment, device=device,
                                        channels_last=channels_last)
        self.test_sets = [(t.test_x.to(device), t.test_y.to(device), t.head_index) for t in stream.tasks]
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.augment_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.strategy_generator = torch.Generator().manual_seed(config.seed + 2)
        self.autocast, self.scaler = mixed_precision(config.precision, device)
        self.optimizer: torch.optim.Optimizer | None = None
        self.R = np.zeros((stream.n_tasks, stream.n_tasks))
        self.initial = np.zeros(stream.n_tasks)
        self.curves: list[CurvePoint] = []
        self.global_step = 0
        self.eval_seconds = 0.0
        self.start_time = time.perf_counter()

    def context(self, task_index: int) -> StrategyContext:
        return StrategyContext(
            self.stream, task_index, self.device, self.transform, self.strategy_generator, self.augment_generator,
            label_smoothing=self.config.label_smoothing,
        )

    def evaluate_all(self) -> tuple[float, ...]:
        """Test accuracy on every task now, in stream order."""
        tick = time.perf_counter()
        accuracies = []
        with _progress(len(self.test_sets), "evaluating", self.progress, unit="task") as bar:
            for x, y, head in self.test_sets:
                accuracies.append(evaluate_task(self.model, x, y, head, self.transform, self.config.eval_batch_size))
                bar.update()
        self.eval_seconds += time.perf_counter() - tick
        return tuple(accuracies)

    def record_curve(self, task_index: int, epoch: float) -> None:
        self.curves.append(CurvePoint(task_index, epoch, self.global_step, self.evaluate_all()))
        for logger in self.loggers:
            logger.log_eval(task_index, self.global_step, epoch, self.curves[-1].accuracies)

    def accuracies_now(self, task_index: int) -> tuple[float, ...]:
        """The last curve point's accuracies when it was taken at this step of this task, else a new evaluation."""
        last = self.curves[-1] if self.curves else None
        if last is not None and last.task_index == task_index and last.step == self.global_step:
            return last.accuracies
        return self.evaluate_all()

    def save(self, task_index: int) -> None:
        """Write the checkpoint of the boundary after task ``task_index`` (with a ``checkpoint_dir``)."""
        if self.checkpoint_dir is None:
            return
        assert self.optimizer is not None  # built before the first task trains, or restored
        save_checkpoint(
            checkpoint_path(self.checkpoint_dir, task_index),
            {
                **self.checkpoint_extra,
                "task_index": task_index,
                "global_step": self.global_step,
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "optimizer_params": _optimizer_params(self.model, self.optimizer),
                "strategy_state": self.strategy.state_dict(),
                "accuracy_matrix": self.R.tolist(),
                "initial_accuracy": self.initial.tolist(),
                "curves": [dataclasses.asdict(point) for point in self.curves],
                "rng": {
                    "data": self.data_generator.get_state(),
                    "augment": self.augment_generator.get_state(),
                    "strategy": self.strategy_generator.get_state(),
                    "torch": torch.get_rng_state(),
                },
                "eval_seconds": self.eval_seconds,
                "elapsed_seconds": time.perf_counter() - self.start_time,
            },
        )

    def restore(self, payload: dict[str, Any]) -> None:
        """Optimizer, generators, ``R``, curves, counters and clocks from a checkpoint payload.

        The optimizer is rebuilt over the parameters it held when saved (by name): a
        strategy may have frozen some for that task (``freeze``) and thawed them since."""
        names = payload.get("optimizer_params")
        named = dict(self.model.named_parameters())
        self.optimizer = make_optimizer(self.model, self.config, None if names is None else [named[n] for n in names])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        rng = payload["rng"]
        self.data_generator.set_state(rng["data"])
        self.augment_generator.set_state(rng["augment"])
        if "strategy" in rng:
            self.strategy_generator.set_state(rng["strategy"])
        torch.set_rng_state(rng["torch"])
        self.R = np.array(payload["accuracy_matrix"], dtype=np.float64)
        self.initial = np.array(payload["initial_accuracy"], dtype=np.float64)
        self.curves = [CurvePoint(**{**point, "accuracies": tuple(point["accuracies"])}) for point in payload["curves"]]
        self.global_step = int(payload["global_step"])
        self.eval_seconds = float(payload.get("eval_seconds", 0.0))
        self.start_time -= float(payload.get("elapsed_seconds", 0.0))

    def result(self, resumed_from: int) -> TrainResult:
        total = time.perf_counter() - self.start_time
        return TrainResult(
            accuracy_matrix=self.R,
            initial_accuracy=self.initial,
            curves=self.curves,
            train_seconds=total - self.eval_seconds,
            eval_seconds=self.eval_seconds,
            resumed_from=resumed_from,
        )


def _optimizer_params(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the parameters ``optimizer`` updates, in its order."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _resume(loop: _Loop, payload: dict[str, Any]) -> int:
    """Go on from this run's own last checkpoint ``payload``; returns the next task index."""
    loop.model.load_state_dict(payload["model_state"])
    loop.strategy.load_state_dict(payload["strategy_state"])
    loop.restore(payload)
    return int(payload["task_index"]) + 1


def _adopt_prefix(loop: _Loop, payload: dict[str, Any]) -> int:
    """Take over another run's trained tasks from its checkpoint ``payload``. Returns the next task index.

    The strategy's state after the prefix: a prefix-neutral method computes its own
    (the source is naive: its ``after_task`` is a no-op, so this strategy's end-of-task
    step runs on the last adopted task; EWC computes its Fisher, replay fills its
    buffer); any other method (SI: its path integral is summed during task 1) takes the
    source's, written by the same method (as a resume would).

    A source whose stream differs (in fields that change later tasks only, e.g. another
    ``mixup_alpha``) is adopted through task 1 only. Its numbers on this run's other tasks
    are not this run's: the initial accuracies are evaluated on the untrained model (the
    one passed in, built from the same seed), ``R[0]`` on the adopted model, and of task
    1's learning curve only the point at the boundary is kept, with ``R[0]``'s accuracies
    (the points before it held the source's other tasks). The boundary checkpoint is then
    saved as this run's own."""
    last = int(payload["task_index"])
    source = payload.get("config") or {}
    other_stream = source.get("stream") != (loop.checkpoint_extra.get("config") or {}).get("stream")
    if other_stream and last != 0:
        raise IncompatibleError(
            f"A prefix checkpoint of a run with another stream can be adopted after task 1 only; this one "
            f"ends after task {last + 1}."
        )
    source_method = (source.get("method") or {}).get("name")
    if not loop.strategy.prefix_neutral and source_method != loop.strategy.name:
        raise IncompatibleError(
            f"Method {loop.strategy.name!r} learns during the first tasks, so it can adopt a prefix checkpoint "
            f"of the same method only; this one was written by {source_method!r}."
        )
    initial = np.array(loop.evaluate_all()) if other_stream else None
    loop.model.load_state_dict(payload["model_state"])
    eval_seconds = loop.eval_seconds
    loop.restore(payload)
    if initial is not None:
        loop.eval_seconds += eval_seconds
        loop.initial = initial
        loop.R[last] = loop.evaluate_all()
        boundary = [p for p in loop.curves if p.task_index == last and p.step == loop.global_step]
        loop.curves = [dataclasses.replace(p, accuracies=tuple(loop.R[last])) for p in boundary]
    if loop.strategy.prefix_neutral:
        loop.strategy.after_task(loop.model, loop.context(last))
    else:
        loop.strategy.load_state_dict(payload["strategy_state"])
    loop.save(last)
    return last + 1


def _start_fresh(loop: _Loop, n_learned_tasks: int) -> int:
    """Evaluate the untrained model; run the strategy's ``before_task`` and ``after_task`` on
    each of the first ``n_learned_tasks`` tasks (already learned: not trained, their rows
    of ``R`` are the initial accuracies). Returns the first task to train."""
    loop.initial = np.array(loop.evaluate_all())
    for task_index in range(n_learned_tasks):
        context = loop.context(task_index)
        loop.strategy.before_task(loop.model, context)
        loop.strategy.after_task(loop.model, context)
        loop.R[task_index] = loop.initial
    return n_learned_tasks


def _train_task(loop: _Loop, optimizer: torch.optim.Optimizer, context: StrategyContext) -> None:
    """Train on task ``context.task_index`` for ``train.epochs`` epochs (or ``train.steps``
    steps); every task is evaluated into ``loop.curves`` after each epoch, or every
    ``train.eval_every_steps`` steps."""
    config, task_index = loop.config, context.task_index
    task: Task = loop.stream.tasks[task_index]
    # Every task's schedule starts from train.lr, also with a kept optimizer (whose groups
    # still hold the previous task's decayed rate).
    base_lrs = [config.lr for _ in optimizer.param_groups]
    x_train, y_train = task.train_x.to(loop.device), task.train_y.to(loop.device)
    batch_size = min(config.batch_size, task.n_train)
    steps_per_epoch = math.ceil(task.n_train / batch_size)
    if task.n_train % batch_size == 1 and steps_per_epoch > 1:
        steps_per_epoch -= 1  # never a batch of one (BatchNorm cannot train on it)
    total_steps = config.steps or config.epochs * steps_per_epoch
    step = 0
    masked = active_class_mask(loop.model, loop.stream, task_index) if config.active_classes else contextlib.nullcontext()
    with masked, _progress(total_steps, f"task {task_index + 1}/{loop.stream.n_tasks}", loop.progress) as bar:
        while step < total_steps:
            order = torch.randperm(task.n_train, generator=loop.data_generator).to(loop.device, non_blocking=True)
            for batch_start in range(0, steps_per_epoch * batch_size, batch_size):
                if config.lr_schedule != "constant":
                    factor = lr_factor(config.lr_schedule, step, total_steps)
                    for group, base_lr in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base_lr * factor
                index = order[batch_start : batch_start + batch_size]
                raw = x_train[index]
                inputs = loop.transform(raw, train=True, generator=loop.augment_generator)
                loss = _step(loop, optimizer, Batch(raw, inputs, y_train[index], task.head_index), context)
                step += 1
                loop.global_step += 1
                bar.update()
                if loop.loggers:
                    value = float(loss.detach())
                    for logger in loop.loggers:
                        logger.log_step(task_index, loop.global_step, value)
                if loop.progress and step % 20 == 0:  # the running loss on the bar (a sync every 20 steps only)
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
                if config.eval_every_steps and step % config.eval_every_steps == 0:
                    _check_finite(loss, task_index, step)
                    loop.record_curve(task_index, step / steps_per_epoch)
                if step >= total_steps:
                    break
            _check_finite(loss, task_index, step)
            if not config.eval_every_steps:
                loop.record_curve(task_index, step / steps_per_epoch)


MASKED_LOGIT = -1e4  # softmax weight exactly 0 in fp32 / bf16 / fp16, yet finite (MSE-on-logits losses stay finite)


@contextlib.contextmanager
def active_class_mask(model: nn.Module, stream: TaskStream, task_index: int) -> Iterator[None]:
    """``train.active_classes``: while it is open, every head's logits for the classes that
    no task up to ``task_index`` has used are set to :data:`MASKED_LOGIT` in training mode
    (``masked_fill``, so no gradient reaches them); eval-mode passes (evaluation, Fisher)
    see every logit. The hooks are removed on exit.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace as NS
        >>> from forgetlab.models import create_model
        >>> model = create_model("mlp", input_shape=(1, 2, 2), head_sizes=(4,), width=4, depth=1)
        >>> stream = NS(tasks=[NS(head_index=0, train_y=torch.tensor([0, 1]))])
        >>> with active_class_mask(model, stream, 0):
        ...     (model(torch.zeros(1, 1, 2, 2), 0)[0, 2:] == MASKED_LOGIT).tolist()
        [True, True]
    """
    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleList):
        raise IncompatibleError("train.active_classes=true needs a model with a 'heads' ModuleList (forgetlab's models have one).")
    seen: dict[int, set[int]] = {}
    for task in stream.tasks[: task_index + 1]:
        seen.setdefault(task.head_index, set()).update(torch.unique(task.train_y).tolist())

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return output.masked_fill(~active.to(output.device), MASKED_LOGIT) if module.training else output

    handles = []
    try:
        for head, labels in seen.items():
            active = torch.zeros(heads[head].out_features, dtype=torch.bool)
            active[sorted(labels)] = True
            if not bool(active.all()):
                handles.append(heads[head].register_forward_hook(functools.partial(hook, active=active)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _step(loop: _Loop, optimizer: torch.optim.Optimizer, batch: Batch, context: StrategyContext) -> torch.Tensor:
    """One optimizer step on ``batch`` (loss + the strategy's penalty, under autocast); returns the loss."""
    model, strategy, scaler = loop.model, loop.strategy, loop.scaler
    with loop.autocast:
        loss = strategy.batch_loss(model, batch, context)
        extra = strategy.penalty(model, context)
        if extra is not None:
            loss = loss + extra
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        strategy.after_backward(model, batch, context)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # strategies see true gradients
        strategy.after_backward(model, batch, context)
        scaler.step(optimizer)
        scaler.update()
    strategy.after_step(model, context)
    return loss


def _check_finite(loss: torch.Tensor, task_index: int, step: int) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise DivergedError(
            f"Training diverged on task {task_index + 1} at step {step}: loss is {value}. "
            f"Lower train.lr or use train.lr_schedule=cosine."
        )


@torch.no_grad()
def per_class_accuracy(
    model: nn.Module, task: Task, transform: BatchTransform, batch_size: int = 1000
) -> dict[int, float]:
    """Test accuracy of ``model`` on ``task``, per source class: ``{class: accuracy}``.

    Classes are ``task.test_source_y`` (indices into the stream's ``class_names``, e.g.
    the fine classes behind a superclass label, or the classes of a class-pairs task);
    where a task has none (CelebA attributes) its labels are used. Inputs go to the
    model's device; ``transform`` must live there too. Train/eval modes are restored.

    Example:
        >>> import forgetlab
        >>> from forgetlab.config import RunConfig, StreamConfig
        >>> from forgetlab.resolve import resolve
        >>> from forgetlab.api import build_stream_for
        >>> from forgetlab.models import build_model
        >>> cfg = resolve(RunConfig(stream=StreamConfig(stream="class-pairs", class_sets=("0+1", "2+3"))))
        >>> stream = build_stream_for(cfg)
        >>> model = build_model(cfg.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes)
        >>> prepare = BatchTransform(stream.mean, stream.std, augment=False)
        >>> sorted(per_class_accuracy(model, stream.tasks[1], prepare))
        [2, 3]
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    predictions = []
    with eval_mode(model):
        for start in range(0, task.n_test, batch_size):
            inputs = transform(task.test_x[start : start + batch_size].to(device), train=False)
            predictions.append(model(inputs, task.head_index).argmax(1).cpu())
    correct = torch.cat(predictions) == task.test_y if predictions else torch.zeros(0, dtype=torch.bool)
    groups = task.test_source_y if task.test_source_y is not None else task.test_y
    return {int(c): float(correct[groups == c].double().mean()) for c in torch.unique(groups).tolist()}
