"""Task streams: a dataset cut into an ordered sequence of tasks (SPEC §1).

A task holds its train and test split (uint8 inputs, labels in its head's label
space) and the index of the head it trains. ``R[i, j]`` is the test accuracy on task
``j`` after training through task ``i``.

Example:
    >>> from forgetlab.config import StreamConfig
    >>> from forgetlab.data.sources import load_source
    >>> stream = build_stream(StreamConfig(dataset="digits", n_tasks=2), load_source("digits"))
    >>> [task.classes for task in stream.tasks], stream.head_sizes
    ([(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)], (5, 5))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from forgetlab.config import StreamConfig
from forgetlab.data.sources import ImageData, dataset_defaults
from forgetlab.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class Task:
    """One task of a stream.

    Attributes:
        name: e.g. ``"task1: 0,1,2,3,4"``.
        train_x, test_x: uint8 ``(N, C, H, W)``.
        train_y, test_y: int64 ``(N,)`` labels in the head's label space.
        head_index: which model head this task trains and is evaluated on.
        classes: source class indices this task draws from.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    head_index: int
    classes: tuple[int, ...]

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])


@dataclass(frozen=True)
class TaskStream:
    """An ordered sequence of tasks plus what a model and the input pipeline need.

    Attributes:
        name: stream name.
        tasks: the tasks, in training order.
        head_sizes: classes per head (one entry per head; single-head: one entry).
        input_shape: ``(C, H, W)``.
        mean, std: per-channel normalisation statistics in [0, 1] pixel units.
        augment: crop + flip training batches.
        class_names: names of the source classes.
    """

    name: str
    tasks: tuple[Task, ...]
    head_sizes: tuple[int, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    class_names: tuple[str, ...]

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)


def _select(x: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...], labels: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples of ``classes``, relabelled ``classes[k] -> labels[k]``, in dataset order."""
    lookup = torch.full((int(y.max()) + 1 if y.numel() else 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes, dtype=torch.int64)] = torch.tensor(labels, dtype=torch.int64)
    new_y = lookup[y]
    keep = new_y >= 0
    return x[keep], new_y[keep]


def _subsample(y: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of a class-balanced random subset of at most ``limit`` examples, sorted."""
    if limit <= 0 or limit >= y.shape[0]:
        return torch.arange(y.shape[0])
    labels = torch.unique(y)
    per_class = max(1, limit // len(labels))
    chosen = []
    for label in labels.tolist():
        members = torch.nonzero(y == label).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def _check_classes(values: tuple[int, ...], n_classes: int, key: str) -> None:
    bad = [c for c in values if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(
            f"The '{key}' parameter must hold class indices in [0, {n_classes - 1}]. Got {list(values)} "
            f"(invalid: {bad})."
        )


def _split_stream(config: StreamConfig, data: ImageData) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], tuple[int, ...]]:
    order = config.class_order or tuple(range(data.n_classes))
    _check_classes(order, data.n_classes, "stream.class_order")
    if config.n_tasks > len(order):
        raise ConfigError(
            f"The 'stream.n_tasks' parameter must be <= the number of classes ({len(order)}). "
            f"Got {config.n_tasks} instead."
        )
    groups = [tuple(int(c) for c in g) for g in np.array_split(np.array(order), config.n_tasks)]
    tasks = []
    if config.head == "multi":
        for group in groups:
            tasks.append((group, tuple(range(len(group)))))
        return tasks, tuple(len(g) for g in groups)
    position = {c: k for k, c in enumerate(order)}
    for group in groups:
        tasks.append((group, tuple(position[c] for c in group)))
    return tasks, (len(order),)


def _build_split(config: StreamConfig, data: ImageData, generator: torch.Generator) -> tuple[list[Task], tuple[int, ...]]:
    specs, head_sizes = _split_stream(config, data)
    tasks = []
    for index, (classes, labels) in enumerate(specs):
        train_x, train_y = _select(data.train_x, data.train_y, classes, labels)
        test_x, test_y = _select(data.test_x, data.test_y, classes, labels)
        keep = _subsample(train_y, config.train_per_task, generator)
        keep_test = _subsample(test_y, config.test_per_task, generator)
        tasks.append(
            Task(
                name=f"task{index + 1}: " + ",".join(data.class_names[c] for c in classes),
                train_x=train_x[keep],
                train_y=train_y[keep],
                test_x=test_x[keep_test],
                test_y=test_y[keep_test],
                head_index=index if config.head == "multi" else 0,
                classes=classes,
            )
        )
    return tasks, head_sizes


def _one_vs_rest_split(x: torch.Tensor, y: torch.Tensor, positive: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """All examples of ``positive`` (label 1) plus as many random others (label 0)."""
    pos = torch.nonzero(y == positive).flatten()
    neg_pool = torch.nonzero(y != positive).flatten()
    neg = neg_pool[torch.randperm(neg_pool.numel(), generator=generator)[: pos.numel()]]
    index = torch.sort(torch.cat([pos, neg])).values
    return x[index], (y[index] == positive).long()


def _build_one_vs_rest(config: StreamConfig, data: ImageData, generator: torch.Generator) -> tuple[list[Task], tuple[int, ...]]:
    _check_classes(config.positive_classes, data.n_classes, "stream.positive_classes")
    if config.n_tasks != len(config.positive_classes):
        raise ConfigError(
            f"The 'stream.n_tasks' parameter must equal the number of positive_classes "
            f"({len(config.positive_classes)}) for the one-vs-rest stream. Got {config.n_tasks} instead."
        )
    tasks = []
    for index, positive in enumerate(config.positive_classes):
        train_x, train_y = _one_vs_rest_split(data.train_x, data.train_y, positive, generator)
        test_x, test_y = _one_vs_rest_split(data.test_x, data.test_y, positive, generator)
        keep = _subsample(train_y, config.train_per_task, generator)
        keep_test = _subsample(test_y, config.test_per_task, generator)
        tasks.append(
            Task(
                name=f"task{index + 1}: is it {data.class_names[positive]}?",
                train_x=train_x[keep],
                train_y=train_y[keep],
                test_x=test_x[keep_test],
                test_y=test_y[keep_test],
                head_index=index if config.head == "multi" else 0,
                classes=(positive,),
            )
        )
    return tasks, (2,) * (len(tasks) if config.head == "multi" else 1)


StreamBuilder = Callable[[StreamConfig, ImageData, torch.Generator], tuple[list[Task], tuple[int, ...]]]

STREAMS: dict[str, tuple[str, StreamBuilder]] = {
    "split": (
        "classes split into `n_tasks` groups (in `class_order`); multi-head (task-incremental) "
        "or single-head (class-incremental)",
        _build_split,
    ),
    "one-vs-rest": (
        "task i: 'is it class positive_classes[i]?' (positives + as many random negatives)",
        _build_one_vs_rest,
    ),
}


def list_streams() -> dict[str, str]:
    """Registered stream names mapped to a one-line description."""
    return {name: description for name, (description, _) in STREAMS.items()}


def build_stream(config: StreamConfig, data: ImageData, *, seed: int = 0) -> TaskStream:
    """Cut ``data`` into tasks as ``config`` says; ``seed`` drives any sampling."""
    if config.stream not in STREAMS:
        raise unknown_name("stream", config.stream, STREAMS)
    generator = torch.Generator().manual_seed(seed)
    tasks, head_sizes = STREAMS[config.stream][1](config, data, generator)
    for task in tasks:
        if task.n_train == 0 or task.n_test == 0:
            raise ConfigError(f"Stream {config.stream!r} produced an empty split for {task.name!r}.")
    augment = {"on": True, "off": False}.get(config.augment, dataset_defaults(data.name).augment)
    return TaskStream(
        name=config.stream,
        tasks=tuple(tasks),
        head_sizes=head_sizes,
        input_shape=data.input_shape,
        mean=data.mean,
        std=data.std,
        augment=augment,
        class_names=data.class_names,
    )

