"""Task streams: a dataset cut into an ordered sequence of tasks (SPEC §1).

A task holds its train and test split (uint8 inputs, labels in its head's label
space) and the index of the head it trains. ``R[i, j]`` is the test accuracy on task
``j`` after training through task ``i``. ``STREAMS`` maps every stream name to a
:class:`StreamKind`; ``forgetlab list`` prints their descriptions.

Example:
    >>> from forgetlab.config import StreamConfig
    >>> from forgetlab.data.sources import load_source
    >>> stream = build_stream(StreamConfig(dataset="digits", n_tasks=2), load_source("digits"))
    >>> [task.classes for task in stream.tasks], stream.head_sizes
    ([(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)], (5, 5))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from forgetlab.config import RANDOM_ORDER, StreamConfig, parse_class_sets
from forgetlab.data.custom import ArrayLike, check_tasks, load_task_paths
from forgetlab.data.sources import SOURCES, ImageData, _channel_stats, dataset_defaults, load_source
from forgetlab.errors import ConfigError, DataError, did_you_mean, unknown_name


@dataclass(frozen=True)
class Task:
    """One task of a stream.

    Attributes:
        name: e.g. ``"task1: 0,1,2,3,4"``.
        train_x, test_x: uint8 ``(N, C, H, W)``.
        train_y, test_y: int64 ``(N,)`` labels in the head's label space.
        head_index: which model head this task trains and is evaluated on.
        classes: source class indices (into the stream's ``class_names``) this task
            draws from (``one-vs-rest``: the positive class only); empty where the source
            has no classes (CelebA attributes).
        label_names: the name of every label of the task's head (index = label).
        test_source_y: int64 ``(N_test,)`` source class of every test example (e.g. the
            fine class behind a superclass label), for per-class accuracy; ``None``
            where the source has no classes.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    head_index: int
    classes: tuple[int, ...]
    label_names: tuple[str, ...] = ()
    test_source_y: torch.Tensor | None = None

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


Built = tuple[list[Task], tuple[int, ...]]  # what a stream builder returns: the tasks and the head sizes


# ---------------------------------------------------------------- helpers ----

def _select(
    x: torch.Tensor, y: torch.Tensor, classes: Sequence[int], labels: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Examples of ``classes``, relabelled ``classes[k] -> labels[k]``, in dataset order,
    with their source classes."""
    size = max(int(y.max()) if y.numel() else 0, max(classes, default=0)) + 1
    lookup = torch.full((size,), -1, dtype=torch.int64)
    lookup[torch.tensor(list(classes), dtype=torch.int64)] = torch.tensor(list(labels), dtype=torch.int64)
    new_y = lookup[y]
    keep = torch.nonzero(new_y >= 0).flatten()
    return x.index_select(0, keep), new_y[keep], y[keep]


def _subsample(y: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor | None:
    """Indices of a class-balanced random subset of at most ``limit`` examples, sorted;
    ``None`` = keep everything (no copy)."""
    if limit <= 0 or limit >= y.shape[0]:
        return None
    labels = torch.unique(y)
    per_class = max(1, limit // len(labels))
    chosen = []
    for label in labels.tolist():
        members = torch.nonzero(y == label).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def _task(
    index: int,
    title: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    head_index: int,
    classes: Sequence[int],
    label_names: Sequence[str],
    test_source_y: torch.Tensor | None,
    train_per_task: int,
    generator: torch.Generator,
    test_per_task: int = 0,
) -> Task:
    train_x, train_y = train
    keep = _subsample(train_y, train_per_task, generator)
    if keep is not None:
        train_x, train_y = train_x[keep], train_y[keep]
    test_x, test_y = test
    keep_test = _subsample(test_y, test_per_task, generator)
    if keep_test is not None:
        test_x, test_y = test_x[keep_test], test_y[keep_test]
        test_source_y = test_source_y[keep_test] if test_source_y is not None else None
    return Task(
        name=f"task{index + 1}: {title}",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        head_index=head_index,
        classes=tuple(int(c) for c in classes),
        label_names=tuple(label_names),
        test_source_y=test_source_y,
    )


def _class_task(
    index: int, title: str, data: ImageData, classes: Sequence[int], labels: Sequence[int],
    config: StreamConfig, generator: torch.Generator, label_names: Sequence[str],
) -> Task:
    """A task of the examples of ``classes`` (labelled ``labels``) of both splits."""
    train_x, train_y, _ = _select(data.train_x, data.train_y, classes, labels)
    test_x, test_y, test_source = _select(data.test_x, data.test_y, classes, labels)
    return _task(
        index, title, (train_x, train_y), (test_x, test_y),
        head_index=index if config.head == "multi" else 0, classes=classes, label_names=label_names,
        test_source_y=test_source, train_per_task=config.train_per_task, generator=generator,
        test_per_task=config.test_per_task,
    )


def _check_classes(values: tuple[int, ...], n_classes: int, key: str) -> None:
    bad = [c for c in values if not 0 <= c < n_classes]
    if bad:
        raise ConfigError(
            f"The '{key}' parameter must hold class indices in [0, {n_classes - 1}]. Got {list(values)} "
            f"(invalid: {bad})."
        )


def _check_n_tasks(config: StreamConfig, expected: int, what: str) -> None:
    if config.n_tasks != expected:
        raise ConfigError(
            f"The 'stream.n_tasks' parameter must equal {what} ({expected}) for the {config.stream} stream. "
            f"Got {config.n_tasks} instead; set stream.n_tasks={expected}."
        )


def _shown(names: Sequence[str], limit: int = 20) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _resolve_name(token: str, names: Sequence[str], key: str, what: str) -> int:
    """Index of ``token`` in ``names``: a name, or a decimal index."""
    if token in names:
        return list(names).index(token)
    if token.isdigit():
        if int(token) < len(names):
            return int(token)
        raise ConfigError(
            f"The '{key}' parameter must name {what} or give an index in [0, {len(names) - 1}]. Got {token!r} instead."
        )
    raise ConfigError(
        f"The '{key}' parameter must name {what}; {token!r} is not one.{did_you_mean(token, names)} "
        f"Valid names: {_shown(names)}."
    )


def _require_classes(data: ImageData, stream: str) -> None:
    if data.n_classes < 2:
        raise ConfigError(
            f"Dataset {data.name!r} has no classes, so the {stream!r} stream cannot use it"
            + (" (use stream.stream='celeba-attributes')." if data.attribute_names else ".")
        )


def _resolve_class_sets(config: StreamConfig, data: ImageData, entries: Sequence[str]) -> list[tuple[int, ...]]:
    """Class sets given by name or index -> class indices; they must not overlap."""
    what = f"classes of dataset {data.name!r}"
    sets = [
        tuple(_resolve_name(token, data.class_names, "stream.class_sets", what) for token in members)
        for members in parse_class_sets(entries)
    ]
    owner: dict[int, int] = {}
    for index, members in enumerate(sets):
        for c in members:
            if c in owner:
                where = "twice in set" if owner[c] == index else f"in sets {owner[c] + 1} and"
                raise ConfigError(
                    f"The 'stream.class_sets' parameter must hold disjoint class sets; class "
                    f"{data.class_names[c]!r} is {where} {index + 1}. Got {tuple(entries)!r} instead."
                )
            owner[c] = index
    return sets


# ----------------------------------------------------------- split, 1-vs-rest ----

def _split_stream(config: StreamConfig, data: ImageData) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], tuple[int, ...]]:
    order = config.class_order or tuple(range(data.n_classes))
    _check_classes(order, data.n_classes, "stream.class_order")
    if config.n_tasks > len(order):
        raise ConfigError(
            f"The 'stream.n_tasks' parameter must be <= the number of classes ({len(order)}). "
            f"Got {config.n_tasks} instead."
        )
    groups = [tuple(int(c) for c in g) for g in np.array_split(np.array(order), config.n_tasks)]
    single = [index + 1 for index, group in enumerate(groups) if len(group) < 2]
    if single:
        raise ConfigError(
            f"The 'stream.class_order' parameter must give every task at least 2 classes when split into "
            f"stream.n_tasks={config.n_tasks} groups (a task with one class has nothing to tell apart); task {single[0]} "
            f"gets {len(groups[single[0] - 1])}. Got {len(order)} classes {list(order)}: list more classes or lower stream.n_tasks."
        )
    tasks = []
    if config.head in ("multi", "shared"):  # task k's classes labelled 0, 1, ... on its own or the one head
        for group in groups:
            tasks.append((group, tuple(range(len(group)))))
        return tasks, tuple(len(g) for g in groups) if config.head == "multi" else (max(map(len, groups)),)
    position = {c: k for k, c in enumerate(order)}
    for group in groups:
        tasks.append((group, tuple(position[c] for c in group)))
    return tasks, (len(order),)


def _build_split(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    _require_classes(data, config.stream)
    specs, head_sizes = _split_stream(config, data)
    order = config.class_order or tuple(range(data.n_classes))
    tasks = []
    for index, (classes, labels) in enumerate(specs):
        label_names = [data.class_names[c] for c in (classes if config.head == "multi" else order)]
        if config.head == "shared":  # label k = the k-th class of every task
            label_names = ["/".join(data.class_names[g[k]] for g, _ in specs if k < len(g)) for k in range(head_sizes[0])]
        title = ",".join(data.class_names[c] for c in classes)
        tasks.append(_class_task(index, title, data, classes, labels, config, generator, label_names))
    return tasks, head_sizes


def _one_vs_rest_split(
    x: torch.Tensor, y: torch.Tensor, positive: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All examples of ``positive`` (label 1) plus as many random others (label 0)."""
    pos = torch.nonzero(y == positive).flatten()
    neg_pool = torch.nonzero(y != positive).flatten()
    neg = neg_pool[torch.randperm(neg_pool.numel(), generator=generator)[: pos.numel()]]
    index = torch.sort(torch.cat([pos, neg])).values
    return x[index], (y[index] == positive).long(), y[index]


def _build_one_vs_rest(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    _require_classes(data, config.stream)
    _check_classes(config.positive_classes, data.n_classes, "stream.positive_classes")
    _check_n_tasks(config, len(config.positive_classes), "the number of positive_classes")
    tasks = []
    for index, positive in enumerate(config.positive_classes):
        train_x, train_y, _ = _one_vs_rest_split(data.train_x, data.train_y, positive, generator)
        test_x, test_y, test_source = _one_vs_rest_split(data.test_x, data.test_y, positive, generator)
        name = data.class_names[positive]
        tasks.append(
            _task(
                index, f"is it {name}?", (train_x, train_y), (test_x, test_y),
                head_index=index if config.head == "multi" else 0, classes=(positive,),
                label_names=(f"not {name}", name) if config.head == "multi" else ("no", "yes"),
                test_source_y=test_source, train_per_task=config.train_per_task, generator=generator,
        test_per_task=config.test_per_task,
            )
        )
    return tasks, (2,) * (len(tasks) if config.head == "multi" else 1)


# ---------------------------------------------------------------- permuted ----

def permutations(config: StreamConfig, n_pixels: int) -> list[torch.Tensor | None]:
    """The pixel permutation of every task of a ``permuted`` stream (``None`` = identity).

    Permutation ``i`` is the ``i``-th draw of a generator seeded with
    ``permutation_seed``, so a task's permutation does not depend on ``permute_first``.

    Example:
        >>> perms = permutations(StreamConfig(stream="permuted", n_tasks=3), 64)
        >>> perms[0] is None, sorted(perms[1].tolist()) == list(range(64))
        (True, True)
    """
    generator = torch.Generator().manual_seed(config.permutation_seed)
    drawn = [torch.randperm(n_pixels, generator=generator) for _ in range(config.n_tasks)]
    return [None if index == 0 and not config.permute_first else perm for index, perm in enumerate(drawn)]


def _permute(x: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    if perm is None:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)


def _build_permuted(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    _require_classes(data, config.stream)
    _, height, width = data.input_shape
    classes = tuple(range(data.n_classes))
    tasks = []
    for index, perm in enumerate(permutations(config, height * width)):
        title = "identity" if perm is None else f"permutation {index + 1} (seed {config.permutation_seed})"
        tasks.append(
            _task(
                index, title, (_permute(data.train_x, perm), data.train_y), (_permute(data.test_x, perm), data.test_y),
                head_index=index if config.head == "multi" else 0, classes=classes, label_names=data.class_names,
                test_source_y=data.test_y, train_per_task=config.train_per_task, generator=generator,
        test_per_task=config.test_per_task,
            )
        )
    return tasks, (data.n_classes,) * (len(tasks) if config.head == "multi" else 1)


# ------------------------------------------------------------- class-pairs ----

PAIRS_TASK1 = {"two": "ship+truck", "four": "deer+dog+ship+truck"}
PAIRS_TASK2 = {"similar": "airplane+automobile", "dissimilar": "cat+horse"}


def _build_class_pairs(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    _require_classes(data, config.stream)
    if config.class_sets:
        sets = _resolve_class_sets(config, data, config.class_sets)
    else:
        if data.name != "cifar10":
            raise ConfigError(
                "The class-pairs presets (stream.pairs_task1 / stream.pairs_task2) name CIFAR-10 classes: use "
                f"stream.dataset='cifar10', or give your own stream.class_sets. Got dataset {data.name!r} instead."
            )
        sets = _resolve_class_sets(config, data, (PAIRS_TASK1[config.pairs_task1], PAIRS_TASK2[config.pairs_task2]))
    _check_n_tasks(config, len(sets), "the number of class sets")
    for index, members in enumerate(sets):
        if len(members) < 2:
            raise ConfigError(
                f"The 'stream.class_sets' parameter must give every task at least 2 classes; set {index + 1} "
                f"has {len(members)}. Got {config.class_sets!r} instead."
            )
    union = [c for members in sets for c in members]
    tasks = []
    for index, members in enumerate(sets):
        if config.head == "multi":
            labels, label_names = range(len(members)), [data.class_names[c] for c in members]
        else:
            labels, label_names = [union.index(c) for c in members], [data.class_names[c] for c in union]
        title = ",".join(data.class_names[c] for c in members)
        tasks.append(_class_task(index, title, data, members, list(labels), config, generator, label_names))
    return tasks, tuple(len(s) for s in sets) if config.head == "multi" else (len(union),)


# ---------------------------------------------------------- mixup-fraction ----

MIXUP_DEFAULT_SETS = ("0+1", "2+3")


def mix_images(x: torch.Tensor, partner: torch.Tensor, alpha: float) -> torch.Tensor:
    """``round((1 - alpha) * x + alpha * partner)`` of uint8 images, computed in float32.

    Example:
        >>> mix_images(torch.tensor([0, 100], dtype=torch.uint8), torch.tensor([255, 200], dtype=torch.uint8), 0.5)
        tensor([128, 150], dtype=torch.uint8)
    """
    mixed = x.float()
    mixed.lerp_(partner.float(), alpha)  # x + alpha (partner - x): exact at alpha 0 and 1
    return mixed.round_().to(torch.uint8)


def _mixed_split(
    x: torch.Tensor, y: torch.Tensor, pairs: Sequence[tuple[int, int]], alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each (primary, partner) pair k: every primary image mixed with a random partner
    image (a seeded permutation of the partner class, cycled), labelled k."""
    xs, ys, sources = [], [], []
    for label, (primary, partner) in enumerate(pairs):
        base = x[y == primary]
        others = x[y == partner]
        if len(base) == 0 or len(others) == 0:
            raise ConfigError(f"The mixup-fraction stream needs examples of classes {primary} and {partner} in every split.")
        order = torch.randperm(len(others), generator=generator)
        chosen = order[torch.arange(len(base)) % len(others)]
        xs.append(mix_images(base, others[chosen], alpha))
        ys.append(torch.full((len(base),), label, dtype=torch.int64))
        sources.append(torch.full((len(base),), primary, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys), torch.cat(sources)


def _build_mixup(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    _require_classes(data, config.stream)
    entries = config.class_sets or MIXUP_DEFAULT_SETS
    if len(entries) != 2 or any(len(members) != 2 for members in parse_class_sets(entries)):
        raise ConfigError(
            "The 'stream.class_sets' parameter must be two pairs 'a+b,c+d' for the mixup-fraction stream "
            f"(task 1: a vs b; task 2: a mixed with c vs b mixed with d). Got {config.class_sets!r} instead."
        )
    (a, b), (c, d) = _resolve_class_sets(config, data, entries)
    _check_n_tasks(config, 2, "2 (task 1 pure, task 2 mixed)")
    names = data.class_names
    first = _class_task(0, f"{names[a]} vs {names[b]}", data, (a, b), (0, 1), config, generator, (names[a], names[b]))
    alpha = config.mixup_alpha
    train_x, train_y, _ = _mixed_split(data.train_x, data.train_y, [(a, c), (b, d)], alpha, generator)
    test_x, test_y, test_source = _mixed_split(data.test_x, data.test_y, [(a, c), (b, d)], alpha, generator)
    label_names = (f"{names[a]}~{names[c]}", f"{names[b]}~{names[d]}")
    second = _task(
        1, f"alpha={alpha:g}: {names[a]}+{names[c]} vs {names[b]}+{names[d]}", (train_x, train_y), (test_x, test_y),
        head_index=1 if config.head == "multi" else 0, classes=(a, b, c, d), label_names=label_names,
        test_source_y=test_source, train_per_task=config.train_per_task, generator=generator,
        test_per_task=config.test_per_task,
    )
    return [first, second], (2, 2) if config.head == "multi" else (2,)


# ------------------------------------------------------------ shift streams ----

CIFAR10_SUPERCLASSES = {
    "vehicle": ("airplane", "automobile", "ship", "truck"),
    "animal": ("bird", "cat", "deer", "dog", "frog", "horse"),
}


def _fine_to_coarse(data: ImageData) -> np.ndarray:
    """The superclass of every fine class, from the dataset's own label pairs (-1 = none)."""
    if data.train_coarse_y is None or not data.coarse_names:
        raise ConfigError(f"Dataset {data.name!r} has no superclasses (coarse labels).")
    mapping = np.full(data.n_classes, -1, dtype=np.int64)
    fine = torch.cat([data.train_y, data.test_y]).numpy()
    test_coarse = data.test_coarse_y if data.test_coarse_y is not None else data.train_coarse_y[:0]
    coarse = torch.cat([data.train_coarse_y, test_coarse]).numpy()
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    counts = np.bincount(pairs[:, 0], minlength=data.n_classes)
    if (counts > 1).any():
        bad = int(np.flatnonzero(counts > 1)[0])
        raise DataError(f"Dataset {data.name!r}: fine class {data.class_names[bad]!r} appears under several superclasses.")
    mapping[pairs[:, 0]] = pairs[:, 1]
    return mapping


def _shift_tasks(
    config: StreamConfig, data: ImageData, fine_to_coarse: np.ndarray, coarse_names: Sequence[str],
    default_n: int | None, generator: torch.Generator,
) -> Built:
    """Labels = superclasses; task t sees fine classes ``fine_order[t*f:(t+1)*f]`` of each."""
    what = f"superclasses of dataset {data.name!r}"
    if config.superclasses:
        chosen = [_resolve_name(token, coarse_names, "stream.superclasses", what) for token in config.superclasses]
        if len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"The 'stream.superclasses' parameter must not name a superclass twice. Got {config.superclasses!r} instead."
            )
        if config.n_superclasses not in (0, len(chosen)):
            raise ConfigError(
                f"The 'stream.n_superclasses' parameter must be 0 or the number of stream.superclasses "
                f"({len(chosen)}). Got {config.n_superclasses} instead."
            )
    else:
        n = config.n_superclasses or default_n or len(coarse_names)
        if n > len(coarse_names):
            raise ConfigError(
                f"The 'stream.n_superclasses' parameter must be <= the number of {what} ({len(coarse_names)}). "
                f"Got {n} instead."
            )
        chosen = list(range(n))
    if len(chosen) < 2:
        raise ConfigError(f"The {config.stream} stream needs at least 2 superclasses to tell apart. Got {len(chosen)}.")
    per_task = config.fine_per_task
    needed = config.n_tasks * per_task
    if config.fine_order and len(config.fine_order) < needed:
        raise ConfigError(
            f"The 'stream.fine_order' parameter must list at least n_tasks x fine_per_task = {needed} positions. "
            f"Got {config.fine_order!r} instead."
        )
    taken = []
    for s in chosen:
        fines = np.flatnonzero(fine_to_coarse == s).tolist()
        order = config.fine_order or tuple(range(len(fines)))
        if len(fines) < needed or any(p >= len(fines) for p in order[:needed]):
            raise ConfigError(
                f"Superclass {coarse_names[s]!r} has {len(fines)} fine classes, but n_tasks x fine_per_task = "
                f"{config.n_tasks} x {per_task} = {needed} are needed"
                + (f" (and stream.fine_order uses position {max(order[:needed])})" if config.fine_order else "")
                + ". Lower stream.n_tasks or stream.fine_per_task, or choose other stream.superclasses."
            )
        taken.append([fines[p] for p in order[:needed]])
    label_names = tuple(coarse_names[s] for s in chosen)
    tasks = []
    for index in range(config.n_tasks):
        classes, labels, parts = [], [], []
        for label, (s, fines) in enumerate(zip(chosen, taken)):
            group = fines[index * per_task : (index + 1) * per_task]
            classes += group
            labels += [label] * len(group)
            parts.append(f"{coarse_names[s]}({','.join(data.class_names[c] for c in group)})")
        tasks.append(_class_task(index, " ".join(parts), data, classes, labels, config, generator, label_names))
    k = len(chosen)
    return tasks, (k,) * config.n_tasks if config.head == "multi" else (k,)


def _build_cifar100_shift(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    return _shift_tasks(config, data, _fine_to_coarse(data), data.coarse_names, 5, generator)


def _build_imagenet_superclass(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    return _shift_tasks(config, data, _fine_to_coarse(data), data.coarse_names, None, generator)


def _build_cifar10_shift(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    missing = [n for names in CIFAR10_SUPERCLASSES.values() for n in names if n not in data.class_names]
    if missing:
        raise ConfigError(f"The cifar10-shift stream needs the CIFAR-10 classes; dataset {data.name!r} lacks {missing}.")
    mapping = np.full(data.n_classes, -1, dtype=np.int64)
    for k, names in enumerate(CIFAR10_SUPERCLASSES.values()):
        mapping[[data.class_names.index(n) for n in names]] = k
    return _shift_tasks(config, data, mapping, tuple(CIFAR10_SUPERCLASSES), None, generator)


# -------------------------------------------------------- celeba-attributes ----

def _build_celeba_attributes(config: StreamConfig, data: ImageData, generator: torch.Generator) -> Built:
    if not data.attribute_names or data.train_attributes is None or data.test_attributes is None:
        raise ConfigError(
            f"The celeba-attributes stream needs a dataset with attributes (stream.dataset='celeba'). Got {data.name!r}."
        )
    if not config.attributes:
        raise ConfigError("The 'stream.attributes' parameter must name at least one CelebA attribute. Got () instead.")
    what = f"attributes of dataset {data.name!r}"
    columns = []
    for name in config.attributes:
        if name not in data.attribute_names:
            raise ConfigError(
                f"The 'stream.attributes' parameter must name {what}; {name!r} is not one.{did_you_mean(name, data.attribute_names)} "
                f"Valid names: {', '.join(data.attribute_names)}."
            )
        columns.append(data.attribute_names.index(name))
    _check_n_tasks(config, len(columns), "the number of attributes")
    tasks = []
    for index, column in enumerate(columns):
        name = data.attribute_names[column]
        tasks.append(
            _task(
                index, name, (data.train_x, data.train_attributes[:, column].long()),
                (data.test_x, data.test_attributes[:, column].long()),
                head_index=index if config.head == "multi" else 0, classes=(),
                label_names=(f"not {name}", name) if config.head == "multi" else ("no", "yes"),
                test_source_y=None, train_per_task=config.train_per_task, generator=generator,
        test_per_task=config.test_per_task,
            )
        )
    return tasks, (2,) * (len(tasks) if config.head == "multi" else 1)


# ------------------------------------------------------------------ custom ----

# Files and arrays are read and checked by forgetlab.data.custom; this builds the stream from them.

def custom_stream(
    tasks: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    *,
    head: str = "multi",
    label_names: Sequence[Sequence[str]] | None = None,
    task_names: Sequence[str] | None = None,
    augment: bool = False,
    train_per_task: int = 0,
    seed: int = 0,
) -> TaskStream:
    """A stream from your own data: one ``(x_train, y_train, x_test, y_test)`` per task.

    Images are uint8 (or float in [0, 1], stored as uint8) of shape ``(N, C, H, W)`` or
    ``(N, H, W)``, the same ``(C, H, W)`` for every task; labels are integers >= 0.
    ``head="multi"`` gives task ``i`` its own head of ``max label + 1`` classes;
    ``"single"`` one shared head over the largest label. ``label_names[i]`` names task
    ``i``'s labels (default: the numbers). Normalisation statistics come from all
    training images. ``train_per_task`` > 0 keeps a class-balanced subsample
    (seeded by ``seed``).

    Example:
        >>> x = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8)
        >>> y = torch.arange(20) % 2
        >>> stream = custom_stream([(x, y, x, y), (x, 1 - y, x, 1 - y)])
        >>> stream.n_tasks, stream.head_sizes, stream.input_shape
        (2, (2, 2), (1, 8, 8))
    """
    if head not in ("multi", "single"):
        raise ConfigError(
            f"The 'head' parameter must be one of 'multi', 'single'. Got {head!r} instead."
            f"{did_you_mean(head, ('multi', 'single'))}"
        )
    prepared = check_tasks(tasks, task_names)
    sizes = [int(max(t[1].max(), t[3].max())) + 1 for t in prepared]
    head_sizes = tuple(sizes) if head == "multi" else (max(sizes),)
    if label_names is not None and len(label_names) != len(prepared):
        raise ConfigError(f"The 'label_names' parameter must hold one list per task ({len(prepared)}). Got {len(label_names)}.")
    names = [
        tuple(label_names[i]) if label_names is not None else tuple(str(k) for k in range(sizes[i]))
        for i in range(len(prepared))
    ]
    for index, (size, task_labels) in enumerate(zip(sizes, names)):
        if len(task_labels) < size:
            raise ConfigError(
                f"The 'label_names' parameter must name every label of task {index + 1} (0..{size - 1}). "
                f"Got {list(task_labels)}."
            )
    generator = torch.Generator().manual_seed(seed)
    out, offset = [], 0
    for index, (train_x, train_y, test_x, test_y) in enumerate(prepared):
        present = sorted(set(torch.cat([train_y, test_y]).tolist()))
        title = task_names[index] if task_names else ",".join(names[index][k] for k in present)
        out.append(
            _task(
                index, title, (train_x, train_y), (test_x, test_y),
                head_index=index if head == "multi" else 0, classes=[offset + k for k in present],
                label_names=names[index], test_source_y=offset + test_y, train_per_task=train_per_task, generator=generator,
            )
        )
        offset += len(names[index])
    mean, std = _pooled_channel_stats([t[0] for t in prepared])
    shape = prepared[0][0].shape[1:]  # (C, H, W), the same in every task (checked)
    return TaskStream(
        name="custom", tasks=tuple(out), head_sizes=head_sizes, input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        mean=mean, std=std, augment=augment, class_names=tuple(n for task_labels in names for n in task_labels),
    )


def _pooled_channel_stats(images: Sequence[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over several uint8 image tensors, without concatenating."""
    if len(images) == 1:
        return _channel_stats(images[0])
    counts = sum(
        torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])]).double()
        for x in images
    )
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    mean = (counts * levels).sum(1) / counts.sum(1)
    var = (counts * (levels[None] - mean[:, None]) ** 2).sum(1) / counts.sum(1)
    return tuple(float(m) for m in mean), tuple(float(s) for s in var.sqrt())


def _build_custom(config: StreamConfig, seed: int) -> TaskStream:
    if not config.custom_paths:
        raise ConfigError(
            "The 'stream.custom_paths' parameter must list one .npz file or image folder per task for the "
            "custom stream. Got () instead."
        )
    _check_n_tasks(config, len(config.custom_paths), "the number of custom_paths")
    loaded = load_task_paths(config.custom_paths, config.image_size)
    return custom_stream(
        [arrays for arrays, _ in loaded],
        head=config.head,
        label_names=[names for _, names in loaded],
        augment=config.augment == "on",
        train_per_task=config.train_per_task,
        seed=seed,
    )


# ---------------------------------------------------------------- registry ----

StreamBuilder = Callable[[StreamConfig, ImageData, torch.Generator], Built]


@dataclass(frozen=True)
class StreamKind:
    """A registered stream.

    Attributes:
        description: one line for ``forgetlab list``.
        build: ``build(config, data, generator) -> (tasks, head_sizes)``.
        datasets: the datasets it needs; empty = any dataset with classes.
        default_head: what ``head='auto'`` means for it.
        augment: what ``augment='auto'`` means for it; ``None`` = the dataset's default.
        build_own: for streams that read their own files (``custom``):
            ``build_own(config, seed) -> TaskStream``; ``build`` is then unused.
        later_tasks_only: stream fields that change tasks 2, 3, ... only: task 1's data
            (drawn first from the stream's generator), the heads' sizes and the
            normalisation statistics (the dataset's, task 1's or none; never pooled over
            tasks) stay the same, so runs that differ only in them train task 1
            identically (prefix reuse, :func:`forgetlab.experiments.prefix_source`).
    """

    description: str
    build: StreamBuilder | None = None
    datasets: tuple[str, ...] = ()
    default_head: str = "multi"
    augment: bool | None = None
    build_own: Callable[[StreamConfig, int], TaskStream] | None = None
    later_tasks_only: tuple[str, ...] = ()


STREAMS: dict[str, StreamKind] = {
    "split": StreamKind(
        "classes split into `n_tasks` groups (in `class_order`); multi-head (task-incremental) "
        "or single-head (class-incremental)",
        _build_split,
    ),
    "one-vs-rest": StreamKind(
        "task i: 'is it class positive_classes[i]?' (positives + as many random negatives)",
        _build_one_vs_rest,
    ),
    "permuted": StreamKind(
        "every task all classes under a fixed pixel permutation (`permutation_seed`; task 1 identity); shared head",
        _build_permuted,
        default_head="single",
        augment=False,
    ),
    "class-pairs": StreamKind(
        "CIFAR-10 semantic probes: {ship,truck} or {deer,dog,ship,truck}, then {airplane,automobile} or "
        "{cat,horse} (`pairs_task1`, `pairs_task2`, or `class_sets`)",
        _build_class_pairs,
        later_tasks_only=("pairs_task2",),
    ),
    "mixup-fraction": StreamKind(
        "task 1 a vs b; task 2 (1-alpha)a+alpha c vs (1-alpha)b+alpha d (`mixup_alpha`, `class_sets`); shared binary head",
        _build_mixup,
        default_head="single",
        later_tasks_only=("mixup_alpha",),
    ),
    "cifar10-shift": StreamKind(
        "vehicle vs animal, shared head: task 1 airplane,automobile/bird,cat; task 2 ship,truck/deer,dog",
        _build_cifar10_shift,
        datasets=("cifar10",),
        default_head="single",
    ),
    "cifar100-shift": StreamKind(
        "labels = K CIFAR-100 superclasses (`superclasses`), each task new fine classes (`fine_per_task`); shared head",
        _build_cifar100_shift,
        datasets=("cifar100",),
        default_head="single",
    ),
    "imagenet-superclass": StreamKind(
        "like cifar100-shift over your ImageNet folders and a superclass->wnid mapping (`superclass_map`)",
        _build_imagenet_superclass,
        datasets=("imagenet",),
        default_head="single",
    ),
    "celeba-attributes": StreamKind(
        "one binary CelebA attribute per task (`attributes`, default Male then Smiling); one head per task",
        _build_celeba_attributes,
        datasets=("celeba",),
    ),
    "custom": StreamKind(
        "your own tasks: one .npz file or class-per-subfolder image folder per task (`custom_paths`)",
        datasets=("custom",),
        build_own=_build_custom,
    ),
}


def list_streams() -> dict[str, str]:
    """Registered stream names mapped to a one-line description.

    Example:
        >>> "permuted" in list_streams()
        True
    """
    return {name: kind.description for name, kind in STREAMS.items()}


def check_pairing(dataset: str, stream: str) -> None:
    """Raise :class:`ConfigError` unless ``stream`` can be built from ``dataset``.

    Example:
        >>> check_pairing("cifar10", "cifar100-shift")
        Traceback (most recent call last):
        ...
        forgetlab.errors.ConfigError: The 'cifar100-shift' stream needs stream.dataset='cifar100'. Got 'cifar10' instead.
    """
    if stream not in STREAMS:
        raise unknown_name("stream", stream, STREAMS)
    if dataset not in SOURCES:
        raise unknown_name("dataset", dataset, SOURCES)
    kind = STREAMS[stream]
    if kind.datasets and dataset not in kind.datasets:
        raise ConfigError(
            f"The {stream!r} stream needs stream.dataset={kind.datasets[0]!r}. Got {dataset!r} instead."
        )
    source = SOURCES[dataset]
    if source.streams and stream not in source.streams:
        raise ConfigError(
            f"Dataset {dataset!r} works only with stream.stream={source.streams[0]!r}"
            f"{' (it has attributes, not classes)' if dataset == 'celeba' else ''}. Got {stream!r} instead."
        )


def resolve_stream_config(config: StreamConfig) -> StreamConfig:
    """Check the dataset suits the stream and fill ``head='auto'`` with the stream's default
    (the stream part of :func:`forgetlab.resolve.resolve`; :func:`build_stream` applies it
    too, so that it takes a stream config as written).

    Example:
        >>> resolve_stream_config(StreamConfig(stream="permuted")).head
        'single'
    """
    check_pairing(config.dataset, config.stream)
    if config.head == "shared" and config.stream != "split":
        raise ConfigError(
            f"The 'stream.head' parameter 'shared' (one head every task reuses) needs stream 'split'. "
            f"Got stream {config.stream!r}; use head 'multi' or 'single'."
        )
    if config.head == "auto":
        return replace(config, head=STREAMS[config.stream].default_head)
    return config


def load_stream_data(config: StreamConfig, *, data_dir: str | Path | None = None, download: bool = False) -> ImageData | None:
    """The dataset a stream is cut from (``None`` for streams that read their own files).

    Example:
        >>> load_stream_data(StreamConfig(dataset="digits")).name
        'digits'
    """
    check_pairing(config.dataset, config.stream)
    if STREAMS[config.stream].build_own is not None:
        return None
    return load_source(
        config.dataset, data_dir=data_dir, download=download,
        image_size=config.image_size, superclass_map=config.superclass_map or None,
    )


def random_class_order(n_classes: int, seed: int) -> tuple[int, ...]:
    """``stream.class_order = random``: van de Ven & Tolias' 2019 split (their ``data.py``
    relabels class ``c`` as ``p[c]``, ``p = numpy.random.permutation(10)`` right after
    ``numpy.random.seed(seed)``, and gives task k the new labels 2k, 2k+1); the class order
    is therefore ``argsort(p)``. (Their seed 0 is the exception that keeps the natural order;
    here every seed, 0 included, draws its permutation.)

    Example:
        >>> random_class_order(10, 1)
        (4, 6, 0, 5, 3, 9, 2, 7, 8, 1)
    """
    permutation = np.random.RandomState(seed).permutation(n_classes)
    return tuple(int(c) for c in np.argsort(permutation))


def build_stream(config: StreamConfig, data: ImageData | None, *, seed: int = 0) -> TaskStream:
    """Cut ``data`` into tasks as ``config`` says; ``seed`` drives any sampling.

    ``data`` is ignored (may be ``None``) for streams that read their own files
    (``custom``); :func:`load_stream_data` loads the right dataset for the others.
    """
    if config.stream not in STREAMS:
        raise unknown_name("stream", config.stream, STREAMS)
    kind = STREAMS[config.stream]
    if kind.build_own is not None:
        check_pairing(config.dataset, config.stream)
        stream = kind.build_own(resolve_stream_config(config), seed)
        _check_two_labels(stream.tasks, config.stream)
        return _normalized(stream, config.normalize)
    if data is None:
        raise ConfigError(f"The {config.stream!r} stream needs a dataset: pass load_stream_data(config) as data.")
    check_pairing(data.name, config.stream)
    config = resolve_stream_config(replace(config, dataset=data.name))
    if config.class_order == RANDOM_ORDER:
        config = replace(config, class_order=random_class_order(data.n_classes, seed))
    generator = torch.Generator().manual_seed(seed)
    assert kind.build is not None  # every registered stream has build or build_own
    tasks, head_sizes = kind.build(config, data, generator)
    for task in tasks:
        if task.n_train == 0 or task.n_test == 0:
            raise ConfigError(f"Stream {config.stream!r} produced an empty split for {task.name!r}.")
    _check_two_labels(tasks, config.stream)
    default_augment = kind.augment if kind.augment is not None else dataset_defaults(data.name).augment
    return _normalized(TaskStream(
        name=config.stream,
        tasks=tuple(tasks),
        head_sizes=head_sizes,
        input_shape=data.input_shape,
        mean=data.mean,
        std=data.std,
        augment={"on": True, "off": False}.get(config.augment, default_augment),
        class_names=data.class_names,
    ), config.normalize)


def _check_two_labels(tasks: Sequence[Task], stream: str) -> None:
    """Every task must train on at least 2 labels (one-vs-rest tasks do: yes and no)."""
    for index, task in enumerate(tasks):
        labels = torch.unique(task.train_y).tolist()
        if len(labels) < 2:
            where = " (stream.custom_paths: that task's file)" if stream == "custom" else ""
            raise ConfigError(
                f"Every task of a stream must have at least 2 classes (a task with one class has nothing to tell apart); "
                f"task {index + 1} of stream {stream!r}{where} has 1: label {labels[0] if labels else '(none)'} ({task.name!r})."
            )


def _normalized(stream: TaskStream, normalize: str) -> TaskStream:
    """``stream.normalize``: ``standard`` keeps the stream's statistics (the dataset's
    training images; a custom stream's: all its tasks' training images); ``first-task``
    takes them from the first task's training images only (no later task's data is used);
    ``none``: mean 0 and std 1 per channel, so inputs are pixels / 255.

    Example:
        >>> from forgetlab.data.sources import load_source
        >>> cfg = StreamConfig(stream="mixup-fraction", normalize="first-task")
        >>> a = build_stream(replace(cfg, mixup_alpha=0.2), load_source("digits"))
        >>> b = build_stream(replace(cfg, mixup_alpha=0.9), load_source("digits"))
        >>> a.mean == b.mean != load_source("digits").mean
        True
    """
    if normalize == "standard":
        return stream
    if normalize == "first-task":
        mean, std = _channel_stats(stream.tasks[0].train_x)
        return replace(stream, mean=mean, std=std)
    return replace(stream, mean=(0.0,) * len(stream.mean), std=(1.0,) * len(stream.std))
