"""The training loop: task by task, evaluating every task after every epoch.

The loop is deliberately plain (index a uint8 tensor, prepare the batch on the device,
forward, loss, backward, step) so that its cost is that of a hand-written PyTorch loop
(``benchmarks/bench_engine.py`` measures the ratio).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forgetlab.config import TrainConfig
from forgetlab.data.augment import BatchTransform
from forgetlab.data.streams import Task, TaskStream
from forgetlab.engine.checkpoint import checkpoint_path, latest_checkpoint, read_checkpoint, save_checkpoint
from forgetlab.errors import ConfigError, DivergedError
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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` of a task of ``total_steps``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    if schedule == "step":
        return 0.1 ** ((step >= 0.5 * total_steps) + (step >= 0.75 * total_steps))
    return 1.0


@torch.no_grad()
def evaluate_task(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, head_index: int, transform: BatchTransform, batch_size: int
) -> float:
    """Accuracy of ``model`` (in eval mode) on uint8 inputs ``x`` with labels ``y``.

    Every submodule's train/eval mode is restored afterwards (a strategy may keep some
    submodules, e.g. frozen BatchNorm layers, in eval mode while training).
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            logits = model(transform(x[start : start + batch_size], train=False), head_index)
            correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    finally:
        for module, mode in modes:
            module.training = mode
    return correct / max(int(x.shape[0]), 1)


class _Bar:
    """A tqdm bar (or nothing, when disabled) usable as a context manager."""

    def __init__(self, total: int, description: str, enabled: bool, unit: str) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, unit=unit)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def wrap(self, items: list[Any]) -> Any:
        for item in items:
            yield item
            self.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _progress(total: int, description: str, enabled: bool, unit: str = "step") -> _Bar:
    return _Bar(total, description, enabled, unit)


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
    start_task: int = 0,
    start_from: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on every task of ``stream`` in order; evaluate all tasks as it goes.

    With ``checkpoint_dir``, writes ``task-{i}.pt`` after each task and, if checkpoints
    are already there, resumes after the last one (same result as an uninterrupted run).
    ``strategy`` (default: naive fine-tuning) is called as ``forgetlab.strategies.base``
    documents; its state and its generator are part of every checkpoint.

    ``start_task`` > 0 declares the first ``start_task`` tasks already learned by
    ``model`` (e.g. a user's trained model whose old task is given as data): they are
    not trained; the strategy's ``before_task`` and ``after_task`` run on each of them
    in order (so it builds its anchors, importances or buffers from their data and the
    model as it is), their rows of ``R`` are the initial accuracies, and training
    starts at task ``start_task``.

    ``start_from`` (a checkpoint payload of *another* run, see :func:`read_checkpoint`)
    adopts that run's trained prefix when ``checkpoint_dir`` holds no checkpoint yet:
    model, optimizer, RNG states, accuracy rows and curves are loaded, the strategy's
    ``after_task`` is called for the adopted last task (EWC computes its Fisher, replay
    fills its buffer) and training continues with the next task. It is only exact for
    a *prefix-neutral* method (one that does nothing during those tasks but
    ``after_task``; see :data:`forgetlab.strategies.PREFIX_NEUTRAL`) and a source
    trained with the same stream, model and training config by a strategy without state.

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
    device = torch.device(device)
    strategy = strategy or Naive()
    n_tasks = stream.n_tasks
    model.to(device)
    model.train()
    transform = BatchTransform(stream.mean, stream.std, augment=stream.augment, device=device)
    test_sets = [(t.test_x.to(device), t.test_y.to(device), t.head_index) for t in stream.tasks]

    data_generator = torch.Generator().manual_seed(config.seed)
    augment_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    strategy_generator = torch.Generator().manual_seed(config.seed + 2)
    autocast, scaler = mixed_precision(config.precision, device)
    R = np.zeros((n_tasks, n_tasks))
    curves: list[CurvePoint] = []
    eval_seconds = 0.0
    start_time = time.perf_counter()
    global_step = 0
    first_task = 0
    optimizer: torch.optim.Optimizer | None = None

    def evaluate_all() -> tuple[float, ...]:
        nonlocal eval_seconds
        tick = time.perf_counter()
        with _progress(len(test_sets), "evaluating", progress, unit="task") as bar:
            accuracies = tuple(
                evaluate_task(model, x, y, head, transform, config.eval_batch_size) for x, y, head in bar.wrap(test_sets)
            )
        eval_seconds += time.perf_counter() - tick
        return accuracies

    found = latest_checkpoint(checkpoint_dir, n_tasks) if checkpoint_dir is not None else None
    adopted = found is None and start_from is not None
    if found is not None or adopted:
        payload = read_checkpoint(found[1]) if found is not None else start_from
        if adopted:
            found = (int(payload["task_index"]), None)
        model.load_state_dict(payload["model_state"])
        if not adopted:
            strategy.load_state_dict(payload["strategy_state"])
        optimizer = make_optimizer(model, config)
        optimizer.load_state_dict(payload["optimizer_state"])
        data_generator.set_state(payload["rng"]["data"])
        augment_generator.set_state(payload["rng"]["augment"])
        if "strategy" in payload["rng"]:
            strategy_generator.set_state(payload["rng"]["strategy"])
        torch.set_rng_state(payload["rng"]["torch"])
        R = np.array(payload["accuracy_matrix"], dtype=np.float64)
        initial = np.array(payload["initial_accuracy"], dtype=np.float64)
        curves = [CurvePoint(**{**point, "accuracies": tuple(point["accuracies"])}) for point in payload["curves"]]
        global_step = int(payload["global_step"])
        first_task = found[0] + 1
        eval_seconds = float(payload.get("eval_seconds", 0.0))
        start_time -= float(payload.get("elapsed_seconds", 0.0))
    else:
        initial = np.array(evaluate_all())
        if not 0 <= start_task < n_tasks:
            raise ConfigError(f"The 'start_task' parameter must be in [0, {n_tasks - 1}]. Got {start_task}.")
        for task_index in range(start_task):
            context = StrategyContext(stream, task_index, device, transform, strategy_generator, augment_generator)
            strategy.before_task(model, context)
            strategy.after_task(model, context)
            R[task_index] = initial
        first_task = start_task

    def save(task_index: int) -> None:
        if checkpoint_dir is None:
            return
        assert optimizer is not None
        save_checkpoint(
            checkpoint_path(checkpoint_dir, task_index),
            {
                **(checkpoint_extra or {}),
                "task_index": task_index,
                "global_step": global_step,
                "model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "strategy_state": strategy.state_dict(),
                "accuracy_matrix": R.tolist(),
                "initial_accuracy": initial.tolist(),
                "curves": [dataclasses.asdict(point) for point in curves],
                "rng": {
                    "data": data_generator.get_state(),
                    "augment": augment_generator.get_state(),
                    "strategy": strategy_generator.get_state(),
                    "torch": torch.get_rng_state(),
                },
                "eval_seconds": eval_seconds,
                "elapsed_seconds": time.perf_counter() - start_time,
            },
        )

    if adopted:
        # The adopted prefix ends with the source's after_task (a no-op for a stateless
        # source); run this strategy's own end-of-task step, then checkpoint as our own.
        last = first_task - 1
        strategy.after_task(model, StrategyContext(stream, last, device, transform, strategy_generator, augment_generator))
        save(last)

    for task_index in range(first_task, n_tasks):
        task: Task = stream.tasks[task_index]
        context = StrategyContext(stream, task_index, device, transform, strategy_generator, augment_generator)
        strategy.before_task(model, context)
        if optimizer is None or config.reset_optimizer:
            optimizer = make_optimizer(model, config)
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        x_train = task.train_x.to(device)
        y_train = task.train_y.to(device)
        n_train = task.n_train
        batch_size = min(config.batch_size, n_train)
        steps_per_epoch = math.ceil(n_train / batch_size)
        if n_train % batch_size == 1 and steps_per_epoch > 1:
            steps_per_epoch -= 1  # never a batch of one (BatchNorm cannot train on it)
        total_steps = config.steps or config.epochs * steps_per_epoch
        head = task.head_index
        bar = _progress(total_steps, f"task {task_index + 1}/{n_tasks}", progress)
        step = 0
        try:
            while step < total_steps:
                order = torch.randperm(n_train, generator=data_generator).to(device, non_blocking=True)
                for batch_start in range(0, steps_per_epoch * batch_size, batch_size):
                    if config.lr_schedule != "constant":
                        factor = lr_factor(config.lr_schedule, step, total_steps)
                        for group, base_lr in zip(optimizer.param_groups, base_lrs):
                            group["lr"] = base_lr * factor
                    index = order[batch_start : batch_start + batch_size]
                    raw = x_train[index]
                    batch = Batch(raw, transform(raw, train=True, generator=augment_generator), y_train[index], head)
                    with autocast:
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
                    step += 1
                    global_step += 1
                    bar.update()
                    if config.eval_every_steps and step % config.eval_every_steps == 0:
                        _check_finite(loss, task_index, step)
                        curves.append(CurvePoint(task_index, step / steps_per_epoch, global_step, evaluate_all()))
                    if step >= total_steps:
                        break
                _check_finite(loss, task_index, step)
                if not config.eval_every_steps:
                    curves.append(CurvePoint(task_index, step / steps_per_epoch, global_step, evaluate_all()))
        finally:
            bar.close()
        strategy.after_task(model, context)
        if curves and curves[-1].task_index == task_index and curves[-1].step == global_step:
            R[task_index] = curves[-1].accuracies
        else:
            R[task_index] = evaluate_all()
        save(task_index)
    total = time.perf_counter() - start_time
    return TrainResult(
        accuracy_matrix=R,
        initial_accuracy=initial,
        curves=curves,
        train_seconds=total - eval_seconds,
        eval_seconds=eval_seconds,
        resumed_from=first_task,
    )


def mixed_precision(precision: str, device: torch.device) -> tuple[Any, Any]:
    """``(autocast context, gradient scaler or None)`` for ``train.precision``.

    ``fp32`` autocasts nothing; ``bf16`` autocasts to bfloat16 (no scaler: bfloat16 has
    float32's range); ``fp16`` autocasts to float16 with a ``GradScaler`` and needs CUDA.
    """
    if precision == "fp32":
        return contextlib.nullcontext(), None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision='fp16' needs a CUDA device (this run is on {device.type}). "
            f"Use train.precision=bf16 on a CPU."
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    autocast = torch.autocast(device_type=device.type, dtype=dtype)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return autocast, scaler


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
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        predictions = []
        for start in range(0, task.n_test, batch_size):
            inputs = transform(task.test_x[start : start + batch_size].to(device), train=False)
            predictions.append(model(inputs, task.head_index).argmax(1).cpu())
    finally:
        for module, mode in modes:
            module.training = mode
    correct = torch.cat(predictions) == task.test_y if predictions else torch.zeros(0, dtype=torch.bool)
    groups = task.test_source_y if task.test_source_y is not None else task.test_y
    return {int(c): float(correct[groups == c].double().mean()) for c in torch.unique(groups).tolist()}
