"""Run configuration: frozen, validated dataclasses.

A :class:`RunConfig` holds everything that decides a run's *result* (stream, model,
training, mitigation method); its hash is the run id. Where a run happens (device, data folder, store)
is not part of it. File keys (TOML) and ``--set`` keys map one-to-one onto fields::

    [stream]
    dataset = "cifar10"
    [train]
    epochs = 2
    [method]
    name = "ewc"
    lam = 100

    forgetlab run --set train.lr=0.01 --set stream.class_order=9,8,7,6,5,4,3,2,1,0
    forgetlab run --method ewc --set method.lam=100

Fields typed ``X | None`` default to ``None``, meaning "the dataset's (or model
family's) default"; :func:`forgetlab.resolve.resolve` fills them in, and the resolved
config is what is hashed (:meth:`RunConfig.run_id`), stored and trained.

Example:
    >>> cfg = apply_overrides(RunConfig(), ["train.lr=0.01", "stream.n_tasks=5"])
    >>> cfg.train.lr, cfg.stream.n_tasks
    (0.01, 5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from forgetlab.errors import ConfigError, did_you_mean
from forgetlab.hyperparams import ID_WHEN_SET, PARAMS
from forgetlab.hyperparams import params_type as method_params_type

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_VERSION = 1

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine", "step", "onecycle")
PRECISIONS = ("fp32", "bf16", "fp16")
MEMORY_FORMATS = ("contiguous", "channels_last")
HEADS = ("auto", "multi", "single", "shared")
NORMALIZE = ("standard", "none", "first-task")
RANDOM_ORDER = "random"  # stream.class_order = random: a per-seed permutation (forgetlab.data.streams)
AUGMENT = ("auto", "on", "off")
PAIRS_TASK1 = ("two", "four")
PAIRS_TASK2 = ("similar", "dissimilar")


def _check(condition: bool, section: str, name: str, rule: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"The '{section}.{name}' parameter must be {rule}. Got {value!r} instead.")


def _check_choice(section: str, name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(
            f"The '{section}.{name}' parameter must be one of {', '.join(map(repr, choices))}. "
            f"Got {value!r} instead.{did_you_mean(value, choices)}"
        )


@dataclass(frozen=True)
class StreamConfig:
    """Which data, cut into which tasks (SPEC §1). ``forgetlab list`` names the streams.

    Attributes:
        dataset: a data source name (``forgetlab list``).
        stream: how the dataset is cut into tasks (``split``, ``one-vs-rest``, ``permuted``,
            ``class-pairs``, ``mixup-fraction``, ``cifar10-shift``, ``cifar100-shift``,
            ``imagenet-superclass``, ``celeba-attributes``, ``custom``).
        n_tasks: number of tasks. ``split`` and ``permuted`` take any number; the other
            streams check it against their parameters (e.g. one task per attribute).
        class_order: ``split``: order of the classes before splitting; empty = natural order;
            ``random`` = a permutation per training seed, the one van de Ven & Tolias' 2019
            code draws: ``p = numpy.random.RandomState(train.seed).permutation(n_classes)``
            relabels class ``c`` as ``p[c]`` and task k takes the new labels ``2k, 2k+1``, so
            the order is ``numpy.argsort(p)`` (:func:`forgetlab.data.streams.random_class_order`).
        head: ``multi`` (one head per task, task-incremental), ``single`` (one shared head
            over all classes, class-incremental), ``shared`` (``split`` only: one head of
            ``n_classes / n_tasks`` outputs that every task reuses, task k's classes labelled
            0, 1, ...: domain-incremental, van de Ven & Tolias 2019) or ``auto`` (the
            stream's default: shared for ``permuted``, ``mixup-fraction`` and the shift
            streams, one per task elsewhere).
        normalize: ``standard`` (inputs standardised with the dataset's per-channel mean
            and std), ``first-task`` (with the mean and std of the first task's training
            images only: no data of a later task is used, the continual-learning
            choice) or ``none`` (pixels / 255, in [0, 1], as van de Ven & Tolias 2019).
        positive_classes: ``one-vs-rest``: task i asks "is it class positive_classes[i]?".
        train_per_task: keep at most this many training examples per task (0 = all),
            a class-balanced, seeded subsample.
        test_per_task: likewise for each task's test split (0 = all).
        augment: ``auto`` (the dataset's default: crop + flip for CIFAR, CelebA and
            ImageNet, none for digits / MNIST and for ``permuted``), ``on`` or ``off``.
        superclasses: shift streams: the superclasses whose label the head predicts, as
            names or indices; empty = the first ``n_superclasses``.
        n_superclasses: shift streams: how many superclasses when ``superclasses`` is
            empty; 0 = the stream's default (5 for ``cifar100-shift``, all otherwise).
        fine_per_task: shift streams: fine classes of every superclass per task.
        fine_order: shift streams: positions (0 = the superclass's first fine class by
            index) in the order tasks take them, ``fine_per_task`` at a time; empty = 0, 1, ...
        superclass_map: ``imagenet``: path of a superclass -> WordNet-id mapping file;
            empty = the packaged default (10 animal and 10 artifact superclasses).
        attributes: ``celeba-attributes``: one CelebA attribute per task.
        image_size: ``celeba`` / ``imagenet`` / ``custom`` image folders: side of the
            square images (centre crop, then resize; decoded once and cached).
            ``auto`` = 64 for CelebA and ImageNet, the files' own size for folders.
        class_sets: ``class-pairs``: one class set per task, class names (or indices)
            joined by ``+`` (e.g. ``ship+truck,cat+horse``); empty = the preset chosen by
            ``pairs_task1`` / ``pairs_task2``. ``mixup-fraction``: two pairs ``a+b,c+d``;
            empty = ``0+1,2+3``.
        pairs_task1: ``class-pairs`` preset, task 1: ``two`` = {ship, truck}, ``four`` =
            {deer, dog, ship, truck}.
        pairs_task2: ``class-pairs`` preset, task 2: ``similar`` = {airplane, automobile},
            ``dissimilar`` = {cat, horse}.
        mixup_alpha: ``mixup-fraction``: task 2 inputs are ``(1-alpha) x_a + alpha x_c``
            (label 0) and ``(1-alpha) x_b + alpha x_d`` (label 1); in [0, 1].
        permutation_seed: ``permuted``: seed of the pixel permutations (independent of
            the training seed, so every training seed sees the same tasks).
        permute_first: ``permuted``: permute task 1 too (default: task 1 = identity).
        custom_paths: ``custom``: one path per task, a ``.npz`` file (arrays ``x_train``,
            ``y_train``, ``x_test``, ``y_test``) or an image folder with one subfolder per
            class (optionally under ``train/`` and ``test/``).
    """

    dataset: str = "digits"
    stream: str = "split"
    n_tasks: int = 2
    class_order: tuple[int, ...] | str = ()
    head: str = "auto"
    positive_classes: tuple[int, ...] = (5, 4)
    train_per_task: int = 0
    test_per_task: int = 0
    augment: str = "auto"
    superclasses: tuple[str, ...] = ()
    n_superclasses: int = 0
    fine_per_task: int = 2
    fine_order: tuple[int, ...] = ()
    superclass_map: str = ""
    attributes: tuple[str, ...] = ("Male", "Smiling")
    image_size: int | None = None
    class_sets: tuple[str, ...] = ()
    pairs_task1: str = "two"
    pairs_task2: str = "similar"
    mixup_alpha: float = 0.5
    permutation_seed: int = 0
    permute_first: bool = False
    custom_paths: tuple[str, ...] = ()
    normalize: str = field(default="standard", metadata=ID_WHEN_SET)

    def __post_init__(self) -> None:
        _check(self.n_tasks >= 1, "stream", "n_tasks", ">= 1", self.n_tasks)
        _check_choice("stream", "head", self.head, HEADS)
        _check_choice("stream", "normalize", self.normalize, NORMALIZE)
        _check(
            not isinstance(self.class_order, str) or self.class_order == RANDOM_ORDER,
            "stream", "class_order", f"a list of class indices or {RANDOM_ORDER!r}", self.class_order,
        )
        _check_choice("stream", "augment", self.augment, AUGMENT)
        _check(self.train_per_task >= 0, "stream", "train_per_task", ">= 0 (0 = all)", self.train_per_task)
        _check(self.test_per_task >= 0, "stream", "test_per_task", ">= 0 (0 = all)", self.test_per_task)
        _check(
            isinstance(self.class_order, str) or len(set(self.class_order)) == len(self.class_order),
            "stream", "class_order", "a list without repeats", self.class_order,
        )
        _check(
            len(set(self.positive_classes)) == len(self.positive_classes) and len(self.positive_classes) >= 1,
            "stream", "positive_classes", "a non-empty list without repeats", self.positive_classes,
        )
        _check(
            len(set(self.superclasses)) == len(self.superclasses) and all(self.superclasses),
            "stream", "superclasses", "a list of names or indices without repeats", self.superclasses,
        )
        _check(self.n_superclasses >= 0, "stream", "n_superclasses", ">= 0 (0 = the stream's default)", self.n_superclasses)
        _check(self.fine_per_task >= 1, "stream", "fine_per_task", ">= 1", self.fine_per_task)
        _check(
            len(set(self.fine_order)) == len(self.fine_order) and all(p >= 0 for p in self.fine_order),
            "stream", "fine_order", "a list of positions >= 0 without repeats", self.fine_order,
        )
        _check(
            len(set(self.attributes)) == len(self.attributes) and all(self.attributes),
            "stream", "attributes", "a list of attribute names without repeats", self.attributes,
        )
        if self.image_size is not None:
            _check(self.image_size >= 1, "stream", "image_size", ">= 1 (or 'auto')", self.image_size)
        parse_class_sets(self.class_sets)
        _check_choice("stream", "pairs_task1", self.pairs_task1, PAIRS_TASK1)
        _check_choice("stream", "pairs_task2", self.pairs_task2, PAIRS_TASK2)
        _check(0.0 <= self.mixup_alpha <= 1.0, "stream", "mixup_alpha", "in [0, 1]", self.mixup_alpha)
        _check(self.permutation_seed >= 0, "stream", "permutation_seed", ">= 0", self.permutation_seed)
        _check(all(self.custom_paths), "stream", "custom_paths", "a list of non-empty paths", self.custom_paths)


def parse_class_sets(class_sets: Iterable[str], key: str = "stream.class_sets") -> list[tuple[str, ...]]:
    """Split ``("ship+truck", "cat+horse")`` into ``[("ship", "truck"), ("cat", "horse")]``,
    checking that no set is empty and that the sets do not overlap (by name).

    Example:
        >>> parse_class_sets(["ship+truck", "cat + horse"])
        [('ship', 'truck'), ('cat', 'horse')]
    """
    sets = [tuple(token.strip() for token in entry.split("+")) for entry in class_sets]
    rule = "one class set per task, class names or indices joined by '+' (e.g. 'ship+truck,cat+horse')"
    for index, members in enumerate(sets):
        if not all(members):
            raise ConfigError(
                f"The '{key}' parameter must list {rule}; set {index + 1} is empty or has an empty name. "
                f"Got {tuple(class_sets)!r} instead."
            )
    seen: dict[str, int] = {}
    for index, members in enumerate(sets):
        for member in members:
            if member in seen:
                where = "twice in set" if seen[member] == index else f"in sets {seen[member] + 1} and"
                raise ConfigError(
                    f"The '{key}' parameter must hold disjoint class sets without repeats; {member!r} is "
                    f"{where} {index + 1}. Got {tuple(class_sets)!r} instead."
                )
            seen[member] = index
    return sets


@dataclass(frozen=True)
class ModelConfig:
    """Which network (SPEC §2). ``None`` = the dataset's / family's default.

    Attributes:
        name: a registered model (``mlp``, ``vgg``, ``resnet``, ``densenet``).
        width: family-specific width (units or channels; see ``forgetlab list``).
        depth: family-specific depth (number of blocks or layers per block).
        batch_norm: use batch normalisation (conv families default to yes, MLP to no).
    """

    name: str | None = None
    width: int | None = None
    depth: int | None = None
    batch_norm: bool | None = None

    def __post_init__(self) -> None:
        if self.width is not None:
            _check(1 <= self.width <= 2**20, "model", "width", "in [1, 2**20]", self.width)
        if self.depth is not None:
            _check(0 <= self.depth <= 1000, "model", "depth", "in [0, 1000]", self.depth)


@dataclass(frozen=True)
class TrainConfig:
    """How each task is trained. ``None`` = the dataset's default.

    Attributes:
        optimizer: ``sgd`` (with ``momentum``) or ``adam``.
        lr: learning rate at the start of every task.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 weight decay of the optimizer.
        lr_schedule: within each task: ``constant``, ``cosine`` (to 0), ``step``
            (x0.1 at 50% and 75% of the task's steps), or ``onecycle`` (the triangular
            one-cycle of the CIFAR speed-training recipes, e.g. airbench: linear warm-up
            to ``lr`` over the first 20% of the task's steps, then linear decay to 0).
        epochs: epochs per task (ignored when ``steps`` > 0).
        steps: optimizer steps per task; 0 = use ``epochs``.
        batch_size: training batch size.
        eval_batch_size: batch size of evaluation passes.
        eval_every_steps: evaluate every task this often (in steps) for the learning
            curves; 0 = at the end of every epoch. The accuracy matrix always uses the
            evaluation at the end of each task.
        reset_optimizer: start every task with a fresh optimizer state.
        active_classes: while training, mask the logits of the classes no task so far has
            used (a single-head stream's later classes) to a large negative value, so that
            the loss (cross-entropy, and any method's loss on the head) covers the classes
            seen so far only: van de Ven & Tolias 2019's "active classes" in class-IL.
            Evaluation always uses every logit (after the last task all classes are seen,
            so the final row of R is the same either way). No effect on heads whose every
            class has been seen (multi-head, ``shared``).
        precision: ``fp32``; or mixed precision, ``bf16`` (CPU or GPU) or ``fp16`` (GPU
            only, with loss scaling): forward passes and losses run under
            ``torch.autocast``, weights, optimizer state and evaluation stay float32.
        memory_format: ``contiguous`` (NCHW) or ``channels_last`` (NHWC) for the model's
            conv weights and every batch while training and evaluating. The same numbers
            up to float rounding; on a CPU with oneDNN, ``channels_last`` (with ``bf16``
            especially) trains conv nets ~2x faster (``benchmarks/RESULTS.md``, "Training
            speed"). Checkpoints hold the same weights either way.
        label_smoothing: epsilon of label smoothing in every cross-entropy on hard labels
            that training computes (the current task's, replayed examples', A-GEM's
            reference loss): the target is ``1 - epsilon`` on the label plus
            ``epsilon / K`` on each of the head's K outputs (``F.cross_entropy``'s
            ``label_smoothing``). 0 = off. Part of the CIFAR speed-training recipes
            (e.g. airbench uses 0.2). Distillation targets, Fisher estimates and
            evaluation never use it.
        seed: seeds model initialisation, data order, subsampling and augmentation.
    """

    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    epochs: int | None = None
    steps: int = 0
    batch_size: int = 128
    eval_batch_size: int = 1000
    eval_every_steps: int = 0
    reset_optimizer: bool = True
    precision: str = "fp32"
    seed: int = 0
    active_classes: bool = field(default=False, metadata=ID_WHEN_SET)
    memory_format: str = field(default="contiguous", metadata=ID_WHEN_SET)
    label_smoothing: float = field(default=0.0, metadata=ID_WHEN_SET)

    def __post_init__(self) -> None:
        _check_choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train", "memory_format", self.memory_format, MEMORY_FORMATS)
        _check_choice("train", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("train", "precision", self.precision, PRECISIONS)
        if self.lr is not None:
            _check(0 < self.lr <= 1e30, "train", "lr", "in (0, 1e30] (the optimizer computes in float32)", self.lr)
        _check(0 <= self.momentum < 1, "train", "momentum", "in [0, 1)", self.momentum)
        _check(0 <= self.weight_decay <= 1e30, "train", "weight_decay", "in [0, 1e30] (float32)", self.weight_decay)
        if self.epochs is not None:
            _check(self.epochs >= 1, "train", "epochs", ">= 1", self.epochs)
        _check(self.steps >= 0, "train", "steps", ">= 0 (0 = use epochs)", self.steps)
        _check(self.batch_size >= 1, "train", "batch_size", ">= 1", self.batch_size)
        _check(self.eval_batch_size >= 1, "train", "eval_batch_size", ">= 1", self.eval_batch_size)
        _check(self.eval_every_steps >= 0, "train", "eval_every_steps", ">= 0", self.eval_every_steps)
        _check(0 <= self.seed < 2**32, "train", "seed", "in [0, 2**32)", self.seed)
        _check(0 <= self.label_smoothing < 1, "train", "label_smoothing", "in [0, 1) (0 = off)", self.label_smoothing)


@dataclass(frozen=True)
class MethodConfig:
    """Which mitigation method (SPEC §4) and its hyperparameters.

    Attributes:
        name: a registered method (``forgetlab list``); ``naive`` = plain fine-tuning.
        params: the method's own frozen hyperparameter dataclass (e.g. ``EWCParams``);
            ``None`` = that method's defaults.

    In files and ``--set`` the hyperparameters sit beside ``name`` (``[method]`` with
    ``name = "ewc"`` and ``lam = 100``; ``--method ewc --set method.lam=100``); each key
    is checked against the chosen method's hyperparameters. Changing ``name`` resets
    the hyperparameters to the new method's defaults (``--set method.name=...`` is
    applied before the other ``method.*`` keys).

    Example:
        >>> MethodConfig.from_dict({"name": "ewc", "lam": 10}).params.lam
        10.0
        >>> MethodConfig().to_dict()
        {'name': 'naive'}
    """

    name: str = "naive"
    params: Any = None

    def __post_init__(self) -> None:
        params_type = method_params_type(self.name)
        if self.params is None:
            object.__setattr__(self, "params", params_type())
        elif type(self.params) is not params_type:
            raise ConfigError(
                f"The 'method.params' parameter of method {self.name!r} must be a {params_type.__name__}. "
                f"Got {self.params!r} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., <hyperparameter>: <value>, ...}``: the ``[method]`` table."""
        return {"name": self.name, **_to_plain(dataclasses.asdict(self.params))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodConfig:
        """Build from a ``[method]`` table; keys other than ``name`` are the method's hyperparameters."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"The 'method' section must be a table. Got {data!r} instead.")
        name = _coerce(data.get("name", "naive"), str, "method.name")
        method = cls(name=name)
        values = {key: value for key, value in data.items() if key != "name"}
        return method.with_params(values) if values else method

    def with_value(self, key: str, value: Any) -> MethodConfig:
        """A copy with ``name`` or one hyperparameter set (``value`` coerced to its type)."""
        if key == "name":
            name = _coerce(value, str, "method.name")
            return self if name == self.name else MethodConfig(name=name)
        return self.with_params({key: value})

    def with_params(self, values: Mapping[str, Any]) -> MethodConfig:
        """A copy with several hyperparameters set at once (checked together, so that
        e.g. ``revision_source=user`` and its ``revision_path`` can come in any order).
        A composite's (``replay+ewc``) come per member: ``ewc.lam`` or an ``ewc`` table."""
        return MethodConfig(name=self.name, params=_with_params(self.params, values, self.name, "method."))


def _with_params(params: Any, values: Mapping[str, Any], method: str, prefix: str) -> Any:
    hints = typing.get_type_hints(type(params))
    names = [item.name for item in fields(params)]
    plain: dict[str, Any] = {}
    members: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        member, dot, rest = key.partition(".")
        member = member.replace("-", "_")  # pseudo-rehearsal's field is pseudo_rehearsal
        if member in names and dataclasses.is_dataclass(hints[member]):  # a composite's member
            if not dot and not isinstance(value, Mapping):
                raise ConfigError(f"'{prefix}{key}' is a method's section; set one of its fields, e.g. '{prefix}{key}.<field>'.")
            members.setdefault(member, {}).update({rest: value} if dot else value)
        elif key in names:
            plain[key] = value
        else:  # a composite's valid keys are its members' (ewc.lam, ...)
            keys = [f"{n}.{f.name}" for n in names if dataclasses.is_dataclass(hints[n]) for f in fields(hints[n])]
            raise _unknown_method_key(method, key, keys or names, prefix)
    coerced = {key: _coerce(value, hints[key], f"{prefix}{key}") for key, value in plain.items()}
    for member, table in members.items():
        coerced[member] = _with_params(getattr(params, member), table, member, f"{prefix}{member}.")
    return replace(params, **coerced)


def _unknown_method_key(method: str, key: str, names: list[str], prefix: str = "method.") -> ConfigError:
    owners = [other for other, params in PARAMS.items() if key in {f.name for f in fields(params)}]
    elsewhere = f" ({key!r} is a hyperparameter of: {', '.join(owners)}.)" if owners else ""
    if not names:
        return ConfigError(
            f"Unknown config key '{prefix}{key}': method {method!r} has no hyperparameters. "
            f"Choose a method first (method.name / --method).{elsewhere}"
        )
    return ConfigError(
        f"Unknown config key '{prefix}{key}'.{did_you_mean(prefix + key, [prefix + n for n in names])} "
        f"Method {method!r} has hyperparameters: {', '.join(names)}.{elsewhere}"
    )


@dataclass(frozen=True)
class RunConfig:
    """One run: a stream, a model, how to train it, and the mitigation method.

    Example:
        >>> RunConfig().stream.dataset
        'digits'
        >>> RunConfig(method=MethodConfig("l2")).to_dict()["method"]
        {'name': 'l2', 'lam': 0.01}
    """

    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    # Content fingerprints of the files the run reads ((config key, fingerprint), sorted),
    # filled by forgetlab.resolve.resolve: a changed file is a new run. Never set by hand.
    inputs: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), the form written to files; the method's
        hyperparameters sit beside its name; ``inputs`` (only when the run reads files) maps
        each file key to its content fingerprint."""
        data = _to_plain(dataclasses.asdict(self))
        data["method"] = self.method.to_dict()
        if self.inputs:
            data["inputs"] = dict(self.inputs)
        else:
            data.pop("inputs")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a nested mapping; unknown keys raise with the close match."""
        return _from_mapping(cls, data, "")

    def run_id(self) -> str:
        """Hash of this resolved config (:func:`forgetlab.resolve.resolve`): the run's key
        in the result store. An unresolved config has no run id (its defaults are not known
        here): ``resolve(config).run_id()``.

        Example:
            >>> from forgetlab.resolve import resolve
            >>> resolve(RunConfig()).run_id()
            '5a21174bbb31b316'
            >>> RunConfig().run_id()
            Traceback (most recent call last):
            ...
            forgetlab.errors.ConfigError: RunConfig.run_id() needs a resolved config; model.name, ... are still 'auto'. ...
        """
        unresolved = [
            f"{section}.{item.name}"
            for section in ("model", "train")
            for item in fields(getattr(self, section))
            if getattr(getattr(self, section), item.name) is None
        ] + (["stream.head"] if self.stream.head == "auto" else [])
        if unresolved:
            raise ConfigError(
                f"RunConfig.run_id() needs a resolved config; {', '.join(unresolved)} "
                f"{'is' if len(unresolved) == 1 else 'are'} still 'auto'. Use forgetlab.resolve.resolve(config).run_id()."
            )
        payload = json.dumps({"version": CONFIG_VERSION, "config": self.identity_dict()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def identity_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields added after version 1 (marked ``ID_WHEN_SET``)
        that hold their default: what the run id hashes, so that existing run ids stay."""
        data = self.to_dict()
        for section in ("stream", "model", "train"):
            _drop_defaults(getattr(self, section), data[section])
        _drop_defaults(self.method.params, data["method"])
        return data


def _drop_defaults(obj: Any, data: dict[str, Any]) -> None:
    for item in fields(obj):
        value = getattr(obj, item.name)
        if dataclasses.is_dataclass(value) and isinstance(data.get(item.name), dict):  # a composite's member
            _drop_defaults(value, data[item.name])
        elif item.metadata.get("run_id") == ID_WHEN_SET["run_id"] and value == item.default:
            data.pop(item.name, None)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- parsing -----

def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _type_name(hint: Any) -> str:
    base, optional = _unwrap_optional(hint)
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # tuple[int, ...] | str
        return f"{_type_name(_sequence_of(base))} or {RANDOM_ORDER!r}"
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        name = {int: "a list of integers", float: "a list of numbers", str: "a list of strings"}[item]
    else:
        name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))
    return name + (" (or 'auto')" if optional else "")


def _sequence_of(union: Any) -> Any:
    return next(arg for arg in typing.get_args(union) if typing.get_origin(arg) is tuple)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a TOML value or a ``--set`` string into the field's type."""
    base, optional = _unwrap_optional(hint)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "none", ""))):
        return None
    bad = ConfigError(f"The '{key}' parameter must be {_type_name(hint)}. Got {value!r} instead.")
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # tuple[int, ...] | str: a list or a word
        if isinstance(value, str) and value.strip().isalpha():
            return value.strip().lower()
        return _coerce(value, _sequence_of(base), key)
    if typing.get_origin(base) is tuple:
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            items: list[Any] = [v for v in (p.strip() for p in text.split(",")) if v]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise bad
        item_type = typing.get_args(base)[0]
        if item_type is str:  # TOML: superclasses = [0, 3] means indices "0", "3"
            items = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
        try:
            return tuple(_coerce_scalar(v, item_type) for v in items)
        except (TypeError, ValueError):
            raise bad from None
    try:
        return _coerce_scalar(value, base)
    except (TypeError, ValueError):
        raise bad from None


def _coerce_scalar(value: Any, base: Any) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(value)
    if base is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(value)
    if base is float:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            out = float(value.strip())
        else:
            raise ValueError(value)
        if out != out or out in (float("inf"), float("-inf")):
            raise ValueError(value)
        return out
    if base is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value.strip()
    raise TypeError(base)


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"The '{prefix.rstrip('.') or 'config'}' section must be a table. Got {data!r} instead.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"Unknown config key '{prefix}{key}'.{did_you_mean(prefix + key, [prefix + n for n in names])} "
                f"Valid keys here: {', '.join(prefix + n for n in names)}."
            )
        hint = hints[key]
        if cls is RunConfig and key == "inputs":
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in [*value, *value.values()]):
                raise ConfigError(f"The 'inputs' entry must map file keys to fingerprints. Got {value!r} instead.")
            kwargs[key] = tuple(sorted(value.items()))
        elif hint is MethodConfig:
            kwargs[key] = MethodConfig.from_dict(value)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = _from_mapping(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def apply_overrides(config: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Apply ``section.field=value`` strings (the CLI's ``--set``) to a config, in order,
    except that ``method.name`` goes first and the method's hyperparameters are then set
    together (they belong to the chosen method and are validated as one set)."""
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. train.lr=0.01). Got {item!r} instead.")
        key, value = (part.strip() for part in item.split("=", 1))
        pairs.append((key, value))
    method_params = {k.removeprefix("method."): v for k, v in pairs if k.startswith("method.") and k != "method.name"}
    for key, value in sorted(pairs, key=lambda pair: pair[0] != "method.name"):
        if key == "method.name" or not key.startswith("method."):
            config = set_field(config, key, value)
    if method_params:
        config = replace(config, method=config.method.with_params(method_params))
    return config


def _section_keys(config: Any, name: str, hint: Any, prefix: str) -> list[str]:
    if isinstance(getattr(config, name, None), MethodConfig):
        method = getattr(config, name)
        return [f"{prefix}{name}.name", *(f"{prefix}{name}.{f.name}" for f in fields(method.params))]
    if dataclasses.is_dataclass(hint):
        return [f"{prefix}{name}.{sub.name}" for sub in fields(hint)]
    return [f"{prefix}{name}"]


def set_field(config: Any, key: str, value: Any, _prefix: str = "") -> Any:
    """Return a copy of ``config`` with the dotted ``key`` set to ``value`` (coerced)."""
    head, _, rest = key.partition(".")
    hints = typing.get_type_hints(type(config))
    if head not in hints:
        valid = [key for name, hint in hints.items() for key in _section_keys(config, name, hint, _prefix)]
        full = _prefix + key
        same_leaf = [v for v in valid if v.rsplit(".", 1)[-1] == key]
        hint_text = f" Did you mean {same_leaf[0]!r}?" if same_leaf else did_you_mean(full, valid)
        raise ConfigError(f"Unknown config key '{full}'.{hint_text} Valid keys: {', '.join(valid)}.")
    hint = hints[head]
    if type(config) is RunConfig and head == "inputs":
        raise ConfigError("'inputs' holds the content fingerprints of the run's files, filled by resolution; it cannot be set.")
    if hint is MethodConfig:
        if not rest:
            raise ConfigError(f"'{_prefix}{key}' is a section; set one of its fields, e.g. '{_prefix}{key}.name'.")
        return replace(config, **{head: getattr(config, head).with_value(rest, value)})
    if dataclasses.is_dataclass(hint):
        if not rest:
            raise ConfigError(
                f"'{_prefix}{key}' is a section; set one of its fields, e.g. '{_prefix}{key}.{fields(hint)[0].name}'."
            )
        return replace(config, **{head: set_field(getattr(config, head), rest, value, f"{_prefix}{head}.")})
    if rest:
        raise ConfigError(f"Unknown config key '{_prefix}{key}': '{_prefix}{head}' has no fields.")
    return replace(config, **{head: _coerce(value, hint, _prefix + key)})


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML config file (sections ``[stream]``, ``[model]``, ``[train]``, ``[method]``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {str(path)!r}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not a UTF-8 TOML text file ({exc.reason} at byte {exc.start}).") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid TOML: {exc}.") from None
    return RunConfig.from_dict(data)
