"""The Anatomy of Catastrophic Forgetting experiments (SPEC §3, §6), one function per analysis.

Every analysis is a sweep of runs expanded from one base config (:func:`base_config`),
executed through :func:`forgetlab.experiments.execute` (finished runs come from the
result store; prefix-neutral runs reuse the naive run's task-1 checkpoint), followed by
measurements on the runs' task-boundary checkpoints. Each returns a JSON-ready dict that
:func:`reproduce_anatomy` stores in the result store's ``analyses`` table, so a finished
analysis is never recomputed and :func:`forgetlab.report.build_report` rebuilds the
report from the store alone.

Choices (documented in ``docs/REPRODUCTION.md``):

- Representations are measured on task 1's test inputs (the stream's ``test_per_task``
  subsample), in eval mode, conv maps flattened unless the profile says ``pool``.
- The task-2-only model of the subspace analysis is a one-task run on task 2's classes
  (``split`` streams: ``class_order`` = task 2's classes, ``n_tasks=1``).
- Reset sweep: blocks are rewound to their post-task-1 weights (BatchNorm statistics too,
  unless ``rewind_bn_stats=False``); heads are never rewound (task 1's head is untouched
  by task 2 in a multi-head model; a shared head keeps its post-task-2 weights).
- Mixup: both trace overlaps (Fisher, Gram) of the task-1 model, through task 1's head;
  ``profile.mixup_head`` = ``shared`` or ``separate`` (task 2 on a fresh head).
- The six findings are judged from the stored results by
  :mod:`forgetlab.report.verdicts` (``Reproduction.summary``).

Example:
    >>> import tempfile
    >>> from forgetlab.store import ResultStore
    >>> out = reproduce_anatomy("tiny", store=ResultStore(tempfile.mkdtemp()), only=["freeze"], report=False)
    >>> sorted(out.results)
    ['freeze']
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from forgetlab.api import RunFailure, build_stream_for, open_store, stored_result
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.data.augment import BatchTransform
from forgetlab.data.streams import TaskStream
from forgetlab.engine.checkpoint import checkpoint_path, load_model
from forgetlab.engine.device import native_bf16, resolve_device
from forgetlab.engine.train import evaluate_task, per_class_accuracy
from forgetlab.errors import ConfigError, IncompatibleError, did_you_mean
from forgetlab.experiments.profiles import AnatomyProfile, get_profile
from forgetlab.experiments.executors import ExecutorConfig
from forgetlab.experiments.sweep import execute, expand, require_finished
from forgetlab.models import build_model
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore

ANALYSES = ("freeze", "reset", "cka", "subspace", "mitigation", "class_pairs", "mixup")
ANALYSIS_VERSION = 1
# Analyses whose stored results were computed wrongly before: a new version, recomputed
# from the stored runs. mixup 2: trace overlaps on random samples of each task (version 1
# took each task's first examples, one class only for the mixup task 2).
ANALYSIS_VERSIONS = {"mixup": 2}
# The training sweep logs every 10th finished run, the last, and any run that finishes
# this many seconds or more after the previous progress line.
PROGRESS_LINE_SECONDS = 60.0

# --dataset value -> (data source, stream)
DATASETS: dict[str, tuple[str, str]] = {
    "cifar10": ("cifar10", "split"),
    "cifar10-shift": ("cifar10", "cifar10-shift"),
    "cifar100-shift": ("cifar100", "cifar100-shift"),
    "fashion-mnist": ("fashion-mnist", "split"),
    "mnist": ("mnist", "split"),
    "digits": ("digits", "split"),
}


@dataclass
class AnatomyContext:
    """Where and how the analyses run: the profile, the dataset and model choice, the store."""

    profile: AnatomyProfile
    store: ResultStore
    dataset: str
    model: str
    device: str = "auto"
    data_dir: str | Path | None = None
    progress: bool = False
    executor: ExecutorConfig | None = None
    _streams: dict[str, TaskStream] = field(default_factory=dict)

    _failures: dict[str, Any] = field(default_factory=dict)  # run id -> RunFailure of this call (not retried)

    def execute_allowing_failures(self, configs: Sequence[RunConfig], on_done: Callable[[Any], None] | None = None) -> list[Any]:
        """Run (or read back) configs on the sweep executor: a RunResult or RunFailure each.
        A run that failed earlier in this reproduction is not trained again."""
        resolved = [resolve(c) for c in configs]
        todo = [c for c in resolved if c.run_id() not in self._failures]
        results = iter(execute(todo, self.store, executor=self.executor, device=self.device, data_dir=self.data_dir,
                               progress=self.progress, on_done=on_done) if todo else [])
        out = [self._failures.get(c.run_id()) or next(results) for c in resolved]
        self._failures.update((c.run_id(), r) for c, r in zip(resolved, out) if isinstance(r, RunFailure))
        return out

    def execute(self, configs: Sequence[RunConfig]) -> list[Any]:
        """Run (or read back) configs; a ForgetlabError if any of them failed."""
        return require_finished(self.execute_allowing_failures(configs))

    def stream(self, config: RunConfig) -> TaskStream:
        """The resolved config's task stream (cached per stream config and seed)."""
        key = json.dumps([config.to_dict()["stream"], config.train.seed], sort_keys=True)
        if key not in self._streams:
            self._streams[key] = build_stream_for(config, data_dir=self.data_dir)
        return self._streams[key]

    def model_after(self, result: Any, task_index: int) -> torch.nn.Module:
        """The run's model at the end of task ``task_index`` (0-based), in eval mode, on the CPU."""
        model, _ = load_model(checkpoint_path(result.run_dir / "checkpoints", task_index))
        return model


def base_config(profile: AnatomyProfile, seed: int, *, dataset: str | None = None, model: str | None = None) -> RunConfig:
    """The naive two-task run every analysis starts from.

    Example:
        >>> from forgetlab.experiments.profiles import PROFILES
        >>> cfg = base_config(PROFILES["tiny"], seed=1)
        >>> cfg.stream.dataset, cfg.model.name, cfg.train.seed
        ('digits', 'mlp', 1)
    """
    dataset = dataset or profile.dataset
    if dataset not in DATASETS:
        raise ConfigError(
            f"The 'dataset' parameter must be one of {', '.join(map(repr, DATASETS))}. "
            f"Got {dataset!r} instead.{did_you_mean(dataset, DATASETS)}"
        )
    source, stream = DATASETS[dataset]
    model = model or profile.model
    same_family = model == profile.model
    overrides = [
        f"stream.dataset={source}", f"stream.stream={stream}", "stream.n_tasks=2",
        f"stream.train_per_task={profile.train_per_task}", f"stream.test_per_task={profile.test_per_task}",
        f"model.name={model}", f"train.epochs={profile.epochs}", f"train.batch_size={profile.batch_size}",
        f"train.lr_schedule={profile.lr_schedule}", f"train.seed={seed}",
        f"train.eval_every_steps={profile.eval_every_steps}",
    ]
    if same_family and profile.width is not None:
        overrides.append(f"model.width={profile.width}")
    if same_family and profile.depth is not None:
        overrides.append(f"model.depth={profile.depth}")
    if profile.batch_norm is not None:
        overrides.append(f"model.batch_norm={str(profile.batch_norm).lower()}")
    if profile.lr is not None:
        overrides.append(f"train.lr={profile.lr}")
    defaults = AnatomyProfile(name="defaults")
    for key, field_name in (("stream.augment", "augment"), ("stream.normalize", "normalize"),
                            ("train.precision", "precision"), ("train.memory_format", "memory_format")):
        if getattr(profile, field_name) != getattr(defaults, field_name):  # defaults: the run ids of before
            overrides.append(f"{key}={getattr(profile, field_name)}")
    return resolve(apply_overrides(RunConfig(), overrides))


def _prepare(stream: TaskStream) -> Callable[[torch.Tensor], torch.Tensor]:
    transform = BatchTransform(stream.mean, stream.std, augment=False)
    return lambda x: transform(x, train=False)


# ---------------------------------------------------------------- the analyses -----

def freeze_sweep(ctx: AnatomyContext, seed: int) -> dict[str, Any]:
    """Freeze blocks 1..k after task 1 (k = 0..L), train task 2: task-2 and task-1 accuracy vs k.

    Task 1 is trained once (the naive run); every freeze run starts from its checkpoint.
    """
    naive, *results = ctx.execute(analysis_runs(ctx, "freeze", seed))
    blocks = list(ctx.model_after(naive, 0).block_names)
    return {
        "blocks": blocks,
        "k": list(range(len(blocks) + 1)),
        "task2_accuracy": [r.accuracy_matrix[1, 1].item() for r in results],
        "task1_accuracy": [r.accuracy_matrix[1, 0].item() for r in results],
        "task1_before_task2": float(naive.accuracy_matrix[0, 0]),
        "naive_task2_accuracy": float(naive.accuracy_matrix[1, 1]),
        "run_ids": [naive.run_id, *(r.run_id for r in results)],
    }


def freeze_configs(base: RunConfig, n_blocks: int) -> list[RunConfig]:
    """The freeze runs: blocks 1..k frozen after task 1, k = 0..``n_blocks``."""
    return expand(base, {"method.name": ["freeze"], "method.n_blocks": list(range(n_blocks + 1))})


def reset_blocks(after: torch.nn.Module, before: torch.nn.Module, blocks: Sequence[str], *, rewind_bn_stats: bool = True) -> torch.nn.Module:
    """A copy of ``after`` whose named ``blocks`` hold ``before``'s weights (and BatchNorm
    running statistics when ``rewind_bn_stats``). Neither model is changed.

    Example:
        >>> from forgetlab.models import create_model
        >>> a = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(2,), width=4, depth=2)
        >>> b = create_model("mlp", input_shape=(1, 8, 8), head_sizes=(2,), width=4, depth=2)
        >>> m = reset_blocks(a, b, ["fc2"])
        >>> new, old = m.blocks["fc2"].state_dict(), b.blocks["fc2"].state_dict()
        >>> all(torch.equal(new[k], old[k]) for k in new)
        True
    """
    model = copy.deepcopy(after)
    for name in blocks:
        if name not in model.blocks:
            raise IncompatibleError(f"Unknown block {name!r}. The model's blocks: {', '.join(model.blocks)}.")
        state = before.blocks[name].state_dict()
        if not rewind_bn_stats:
            keep = model.blocks[name].state_dict()
            state = {k: (keep[k] if k.endswith(("running_mean", "running_var", "num_batches_tracked")) else v)
                     for k, v in state.items()}
        model.blocks[name].load_state_dict(state)
    return model


def reset_sweep(ctx: AnatomyContext, seed: int, *, rewind_bn_stats: bool = True) -> dict[str, Any]:
    """After task 2, rewind N consecutive blocks (N = 1..L) to their post-task-1 weights,
    top-down (head side first) and bottom-up; task-1 accuracy vs N. No training beyond the
    naive run."""
    base = base_config(ctx.profile, seed, dataset=ctx.dataset, model=ctx.model)
    (naive,) = ctx.execute([base])
    stream = ctx.stream(base)
    before, after = ctx.model_after(naive, 0), ctx.model_after(naive, 1)
    blocks = list(after.block_names)
    task = stream.tasks[0]
    transform = BatchTransform(stream.mean, stream.std, augment=False)

    def accuracy(model: torch.nn.Module) -> float:
        return evaluate_task(model, task.test_x, task.test_y, task.head_index, transform, 500)

    n_values = list(range(1, len(blocks) + 1))
    return {
        "blocks": blocks,
        "n": n_values,
        "top_down": [accuracy(reset_blocks(after, before, blocks[len(blocks) - n:], rewind_bn_stats=rewind_bn_stats)) for n in n_values],
        "bottom_up": [accuracy(reset_blocks(after, before, blocks[:n], rewind_bn_stats=rewind_bn_stats)) for n in n_values],
        "task1_before_task2": accuracy(before),
        "task1_after_task2": accuracy(after),
        "rewind_bn_stats": rewind_bn_stats,
        "run_ids": [naive.run_id],
    }


def cka_analysis(ctx: AnatomyContext, seed: int) -> dict[str, Any]:
    """Linear CKA per block, task-1 model vs task-1-then-2 model, on task-1 test inputs
    (debiased and biased), and the full block x block CKA matrix (debiased)."""
    from forgetlab.analysis import cka_matrix, cka_table

    base = base_config(ctx.profile, seed, dataset=ctx.dataset, model=ctx.model)
    (naive,) = ctx.execute([base])
    stream = ctx.stream(base)
    before, after = ctx.model_after(naive, 0), ctx.model_after(naive, 1)
    inputs, prepare = stream.tasks[0].test_x, _prepare(stream)
    rows = cka_table(before, after, inputs, condition="task1 vs task1_then_2", pool=ctx.profile.pool, prepare=prepare)
    matrix = cka_matrix(before, after, inputs, pool=ctx.profile.pool, prepare=prepare)
    blocks = list(before.block_names)
    return {
        "blocks": blocks,
        "cka_debiased": [r.value for r in rows if r.measure == "linear_cka_debiased"],
        "cka_biased": [r.value for r in rows if r.measure == "linear_cka"],
        "matrix": matrix.values.tolist(),
        "matrix_measure": matrix.measure,
        "n_samples": rows[0].n_samples,
        "task1_before_task2": float(naive.accuracy_matrix[0, 0]),
        "run_ids": [naive.run_id],
    }


def one_task_config(config: RunConfig, task_index: int, *, purpose: str) -> RunConfig:
    """A one-task run on the classes of task ``task_index`` (0 or 1) of a 2-task ``split``
    stream: the task-2-only model (subspace analysis), task 1 alone (convergence check).

    Example:
        >>> one_task_config(resolve(RunConfig()), 1, purpose="the task-2-only model").stream.class_order
        (5, 6, 7, 8, 9)
    """
    import numpy as np

    if config.stream.stream != "split" or config.stream.n_tasks != 2:
        raise IncompatibleError(
            f"{purpose[0].upper()}{purpose[1:]} is defined for 2-task 'split' streams. Got stream "
            f"{config.stream.stream!r} with {config.stream.n_tasks} tasks; use --dataset cifar10 (or another split dataset)."
        )
    order = config.stream.class_order or tuple(range({"cifar100": 100}.get(config.stream.dataset, 10)))
    classes = tuple(int(c) for c in np.array_split(np.array(order), 2)[task_index])
    return replace(config, stream=replace(config.stream, class_order=classes, n_tasks=1))


def task2_only_config(config: RunConfig) -> RunConfig:
    """A one-task run on task 2's classes only (``split`` streams), for the task-2-only model.

    Example:
        >>> cfg = task2_only_config(resolve(RunConfig()))
        >>> cfg.stream.class_order, cfg.stream.n_tasks
        ((5, 6, 7, 8, 9), 1)
    """
    return one_task_config(config, 1, purpose="the task-2-only model")


def first_task_config(config: RunConfig, epochs: int) -> RunConfig:
    """A one-task run on task 1's classes only (``split`` streams), for ``epochs`` epochs:
    what the convergence check trains.

    Example:
        >>> cfg = first_task_config(resolve(RunConfig()), epochs=8)
        >>> cfg.stream.class_order, cfg.stream.n_tasks, cfg.train.epochs
        ((0, 1, 2, 3, 4), 1, 8)
    """
    one = one_task_config(config, 0, purpose="the convergence check")
    return replace(one, train=replace(one.train, epochs=epochs))


def convergence_check(ctx: AnatomyContext, seed: int = 0) -> dict[str, Any]:
    """Is task 1 trained to convergence? Task 1 alone for the profile's ``epochs`` and for
    ``convergence_factor`` times as many; passes when the longer training gains less than
    ``convergence_threshold`` test accuracy (SPEC: a converged network; issue 19: 1.5 points)."""
    profile = ctx.profile
    epochs, longer = profile.epochs, profile.epochs * profile.convergence_factor
    short_run, long_run = ctx.execute(analysis_runs(ctx, "convergence", seed))
    accuracy, accuracy_long = float(short_run.accuracy_matrix[0, 0]), float(long_run.accuracy_matrix[0, 0])
    return {
        "epochs": epochs, "accuracy": accuracy, "epochs_2x": longer, "accuracy_2x": accuracy_long,
        "gain": accuracy_long - accuracy, "threshold": profile.convergence_threshold,
        "passed": accuracy_long - accuracy < profile.convergence_threshold,
        "seed": seed, "run_ids": [short_run.run_id, long_run.run_id],
    }


def subspace_analysis(ctx: AnatomyContext, seed: int) -> dict[str, Any]:
    """Top-k subspace similarity per block in the paper's three conditions: (task 1,
    task-2-only), (task 1, task 1 then 2), (task-2-only, task 1 then 2), on task-1 test inputs."""
    from forgetlab.analysis import subspace_conditions

    base = base_config(ctx.profile, seed, dataset=ctx.dataset, model=ctx.model)
    naive, only2 = ctx.execute([base, task2_only_config(base)])
    stream = ctx.stream(base)
    rows = subspace_conditions(
        ctx.model_after(naive, 0), ctx.model_after(only2, 0), ctx.model_after(naive, 1), stream.tasks[0].test_x,
        ctx.profile.subspace_k, pool=ctx.profile.pool, prepare=_prepare(stream), batch_size=250,
    )
    conditions: dict[str, list[float]] = {}
    for row in rows:
        conditions.setdefault(row.condition, []).append(row.value)
    return {
        "blocks": list(dict.fromkeys(row.block for row in rows)),
        "k": ctx.profile.subspace_k,
        "conditions": conditions,
        "task2_only_accuracy": float(only2.accuracy_matrix[0, 0]),
        "run_ids": [naive.run_id, only2.run_id],
    }


def mitigation_point(ctx: AnatomyContext, result: Any, stream: TaskStream) -> dict[str, Any]:
    """One two-task run's point of the mitigation analysis: task-1 and task-2 accuracy after
    task 2, and per-block CKA (debiased and biased) between the run's own networks after
    task 1 and after task 2, on ``stream``'s task-1 test inputs."""
    from forgetlab.analysis import cka_table

    rows = cka_table(ctx.model_after(result, 0), ctx.model_after(result, 1), stream.tasks[0].test_x,
                     pool=ctx.profile.pool, prepare=_prepare(stream))
    return {
        "task1_accuracy": float(result.accuracy_matrix[1, 0]),
        "task2_accuracy": float(result.accuracy_matrix[1, 1]),
        "cka_debiased": [r.value for r in rows if r.measure == "linear_cka_debiased"],
        "cka_biased": [r.value for r in rows if r.measure == "linear_cka"],
    }


def mitigation_analysis(ctx: AnatomyContext, seed: int) -> dict[str, Any]:
    """Grids of EWC lambda, SI c and replay r: task-1 accuracy after task 2 and per-block
    CKA (debiased and biased) between each run's own task-1 and task-2 checkpoints."""
    profile = ctx.profile
    base = base_config(profile, seed, dataset=ctx.dataset, model=ctx.model)
    (naive,) = ctx.execute([base])
    stream = ctx.stream(base)
    out: dict[str, Any] = {"methods": {}, "run_ids": [naive.run_id]}

    naive_measures = mitigation_point(ctx, naive, stream)
    out["blocks"] = list(ctx.model_after(naive, 0).block_names)
    out["naive"] = naive_measures
    nan = float("nan")
    diverged = {"task1_accuracy": nan, "task2_accuracy": nan, "cka_debiased": [nan] * len(out["blocks"]),
                "cka_biased": [nan] * len(out["blocks"]), "diverged": True}
    for method, (key, values, configs) in mitigation_grids(profile, base).items():
        points = []
        for result in ctx.execute_allowing_failures(configs):
            if isinstance(result, RunFailure):
                if result.kind != "diverged":
                    require_finished([result])
                points.append(dict(diverged))  # too strong a penalty for the learning rate: a point, not a crash
                continue
            points.append(mitigation_point(ctx, result, stream))
            out["run_ids"].append(result.run_id)
        out["methods"][method] = {"parameter": key, "values": [float(v) for v in values], "points": points}
    return out


def mitigation_grids(profile: AnatomyProfile, base: RunConfig) -> dict[str, tuple[str, tuple[float, ...], list[RunConfig]]]:
    """The mitigation runs: method -> (its strength parameter, the profile's values, one config each)."""
    grids = {
        "ewc": ("lam", profile.ewc_lams, [f"method.fisher_samples={profile.fisher_samples}"]),
        "si": ("c", profile.si_cs, []),
        "replay": ("fraction", profile.replay_fractions, [f"method.buffer_size={profile.replay_buffer}"]),
    }
    return {
        method: (key, values, expand(apply_overrides(base, [f"method.name={method}", *extra]), {f"method.{key}": list(values)}))
        for method, (key, values, extra) in grids.items()
    }


CLASS_PAIR_PRESETS = (
    ("{ship,truck} -> {plane,car} (similar)", "two", "similar"),
    ("{ship,truck} -> {cat,horse} (dissimilar)", "two", "dissimilar"),
    ("{deer,dog,ship,truck} -> {plane,car}", "four", "similar"),
    ("{deer,dog,ship,truck} -> {cat,horse}", "four", "dissimilar"),
)


def class_pair_variants(profile: AnatomyProfile, base: RunConfig) -> list[tuple[str, RunConfig]]:
    """The class-pairs runs: (label, config) per task-2 choice (the profile's, else the CIFAR-10 presets)."""
    pairs_base = apply_overrides(base, ["stream.stream=class-pairs", "stream.head=auto"])
    if profile.class_pair_variants:
        return [(label, resolve(apply_overrides(pairs_base, ["stream.class_sets=" + ",".join(sets)])))
                for label, sets in profile.class_pair_variants]
    if pairs_base.stream.dataset != "cifar10":
        raise IncompatibleError(
            "The class-pairs presets name CIFAR-10 classes; with another dataset give the profile's class_pair_variants."
        )
    return [(label, resolve(apply_overrides(pairs_base, [f"stream.pairs_task1={task1}", f"stream.pairs_task2={task2}"])))
            for label, task1, task2 in CLASS_PAIR_PRESETS]


def class_pairs_analysis(ctx: AnatomyContext, seed: int) -> dict[str, Any]:
    """Class-pairs semantics: per-class task-1 accuracy after task 1 and after task 2 (and
    their difference, the per-class forgetting) for each task-2 choice."""
    base = base_config(ctx.profile, seed, dataset=ctx.dataset, model=ctx.model)
    variants = class_pair_variants(ctx.profile, base)
    results = ctx.execute([cfg for _, cfg in variants])
    out: dict[str, Any] = {"variants": [], "run_ids": [r.run_id for r in results]}
    for (label, cfg), result in zip(variants, results):
        stream = ctx.stream(cfg)
        transform = BatchTransform(stream.mean, stream.std, augment=False)
        task = stream.tasks[0]
        before = per_class_accuracy(ctx.model_after(result, 0), task, transform)
        after = per_class_accuracy(ctx.model_after(result, 1), task, transform)
        names = [stream.class_names[c] for c in before]
        out["variants"].append({
            "label": label,
            "task2": stream.tasks[1].name,
            "classes": names,
            "before": [before[c] for c in before],
            "after": [after[c] for c in before],
            "forgetting": [before[c] - after[c] for c in before],
            "task1_accuracy": [float(result.accuracy_matrix[0, 0]), float(result.accuracy_matrix[1, 0])],
        })
    return out


_STREAM_HEADS = {"shared": "single", "separate": "multi"}  # profile.mixup_head -> stream.head


def mixup_configs(profile: AnatomyProfile, base: RunConfig) -> list[RunConfig]:
    """The mixup-fraction runs, one per alpha of the profile (task 2 on a shared or a fresh head)."""
    source = {"cifar100": "cifar100"}.get(base.stream.dataset, base.stream.dataset)
    mix_base = apply_overrides(base, [f"stream.dataset={source}", "stream.stream=mixup-fraction",
                                      f"stream.head={_STREAM_HEADS[profile.mixup_head]}"])
    return [resolve(c) for c in expand(mix_base, {"stream.mixup_alpha": list(profile.mixup_alphas)})]


def mixup_analysis(ctx: AnatomyContext, seed: int) -> dict[str, Any]:
    """Mixup-fraction sweep: forgetting of task 1 vs alpha, with two trace overlaps of the
    task-1 model on task 1 vs task 2 data next to it (SPEC §3): its diagonal Fisher
    (``trace_overlap_fisher``) and the second moment of its penultimate features
    (``trace_overlap_gram``).

    ``profile.mixup_head``: ``shared`` (default) trains both tasks on one binary head;
    ``separate`` (Lee, Goldt & Saxe, ICML 2021) gives task 2 a fresh head, so task 1's head
    keeps its post-task-1 weights (no gradient reaches it during task 2). Both overlaps are
    taken through task 1's head (task 2's head is untrained at that point).
    """
    from forgetlab.analysis import task_similarity

    profile = ctx.profile
    configs = mixup_configs(profile, base_config(profile, seed, dataset=ctx.dataset, model=ctx.model))
    results = ctx.execute(configs)
    overlaps: dict[str, list[float]] = {"fisher": [], "gram": []}
    n = profile.fisher_samples
    for cfg, result in zip(configs, results):
        stream = ctx.stream(cfg)
        t1, t2 = stream.tasks[0], stream.tasks[1]
        model = ctx.model_after(result, 0)
        # A seeded random sample of each task's training set: a task's examples may be stored
        # grouped by label (the mixup task 2 is), so its first n would be one class only.
        generator = torch.Generator().manual_seed(seed)
        pick1, pick2 = (torch.randperm(t.n_train, generator=generator)[:n] for t in (t1, t2))
        for form, values in overlaps.items():
            values.append(task_similarity(
                model, t1.train_x[pick1], t2.train_x[pick2], targets_a=t1.train_y[pick1], targets_b=t2.train_y[pick2],
                form=form, head_indices=(t1.head_index, t1.head_index), prepare=_prepare(stream),
            ))
    return {
        "alpha": [float(a) for a in profile.mixup_alphas],
        "head": profile.mixup_head,
        "forgetting": [float(r.accuracy_matrix[0, 0] - r.accuracy_matrix[1, 0]) for r in results],
        "trace_overlap_fisher": overlaps["fisher"],
        "trace_overlap_gram": overlaps["gram"],
        "task1_after_task2": [float(r.accuracy_matrix[1, 0]) for r in results],
        "task1_before_task2": [float(r.accuracy_matrix[0, 0]) for r in results],
        "run_ids": [r.run_id for r in results],
    }


ANALYSIS_FUNCTIONS: dict[str, Callable[[AnatomyContext, int], dict[str, Any]]] = {
    "freeze": freeze_sweep,
    "reset": reset_sweep,
    "cka": cka_analysis,
    "subspace": subspace_analysis,
    "mitigation": mitigation_analysis,
    "class_pairs": class_pairs_analysis,
    "mixup": mixup_analysis,
}


def analysis_runs(ctx: AnatomyContext, name: str, seed: int) -> list[RunConfig]:
    """Every run analysis ``name`` trains for ``seed`` (the same configs, hence run ids, as the
    analysis function's): :func:`reproduce_anatomy` trains those of all analyses and seeds in
    one sweep first, so the workers stay busy across analyses and seeds."""
    profile = ctx.profile
    base = base_config(profile, seed, dataset=ctx.dataset, model=ctx.model)
    if name == "freeze":
        stream = ctx.stream(base)
        with torch.device("meta"):  # the block count without allocating or training anything
            n_blocks = len(build_model(base.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes).block_names)
        return [base, *freeze_configs(base, n_blocks)]
    if name == "subspace":
        return [base, task2_only_config(base)]
    if name == "mitigation":
        return [base, *(c for _, _, configs in mitigation_grids(profile, base).values() for c in configs)]
    if name == "class_pairs":
        return [cfg for _, cfg in class_pair_variants(profile, base)]
    if name == "mixup":
        return mixup_configs(profile, base)
    if name == "convergence":
        return [first_task_config(base, profile.epochs), first_task_config(base, profile.epochs * profile.convergence_factor)]
    return [base]  # reset, cka: the naive run only


# ---------------------------------------------------------------- orchestration -----

@dataclass
class Reproduction:
    """What :func:`reproduce_anatomy` returns.

    Attributes:
        results: analysis name -> list of per-seed results (the stored JSON values).
        computed: ``(analysis, seed)`` pairs computed in this call (others came from the store).
        report: path of the HTML report, or ``None``.
        wall_seconds: time of this call.
        summary: the six findings judged (:func:`forgetlab.report.verdicts.summarize`):
            what ``forgetlab reproduce anatomy --json`` prints.
        convergence: the convergence check (:func:`convergence_check`) when asked for
            (``check_convergence``), else ``None``.
    """

    results: dict[str, list[dict[str, Any]]]
    computed: list[tuple[str, int]]
    report: Path | None
    wall_seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, Any] | None = None


def parse_only(only: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"freeze,reset"`` -> ``("freeze", "reset")`` checked against :data:`ANALYSES`; ``None`` = all.

    Example:
        >>> parse_only("reset, freeze")
        ('freeze', 'reset')
    """
    if only is None or only == "" or only == ():
        return ANALYSES
    names = [n.strip().replace("-", "_") for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    for name in names:
        if name not in ANALYSES:
            raise ConfigError(
                f"The 'only' parameter must list analyses among {', '.join(ANALYSES)}. "
                f"Got {name!r} instead.{did_you_mean(name, ANALYSES)}"
            )
    return tuple(a for a in ANALYSES if a in names)


# Profile fields added after ANALYSIS_VERSION 1, with their defaults: a field at its
# default stays out of the key, so analyses stored before it existed are still found.
_KEY_OMITTED_DEFAULTS = {
    name: getattr(AnatomyProfile(name="defaults"), name)
    for name in ("mixup_head", "augment", "normalize", "precision", "memory_format", "convergence_factor",
                 "convergence_threshold")
}


def analysis_key(name: str, profile: AnatomyProfile, dataset: str, model: str, seed: int | None) -> str:
    """Store key of one analysis result (``seed=None``: the group of all seeds)."""
    fields = {k: v for k, v in dataclasses.asdict(profile).items()
              if not (k in _KEY_OMITTED_DEFAULTS and v == _KEY_OMITTED_DEFAULTS[k])}
    payload = json.dumps(
        {"v": ANALYSIS_VERSIONS.get(name, ANALYSIS_VERSION), "analysis": name, "profile": fields, "dataset": dataset,
         "model": model, "seed": seed},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def reproduce_anatomy(
    profile: str | AnatomyProfile = "quick",
    *,
    store: str | Path | ResultStore | None = None,
    only: str | Sequence[str] | None = None,
    model: str | None = None,
    dataset: str | None = None,
    seeds: int | None = None,
    mixup_head: str | None = None,
    precision: str | None = None,
    memory_format: str | None = None,
    batch_norm: bool | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    executor: ExecutorConfig | None = None,
    progress: bool = False,
    report: bool = True,
    report_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    check_convergence: bool = False,
) -> Reproduction:
    """Run the Anatomy analyses (all, or ``only`` some) for ``seeds`` seeds, store every run
    and every analysis result, and (with ``report``) write figures + one HTML report.

    Finished analyses and runs are read back from the store; an interrupted call resumes
    when called again. ``report_dir`` defaults to ``<store>/reports/anatomy``. With
    ``check_convergence``, task 1 is also trained alone for the profile's epochs and twice
    as many (:func:`convergence_check`, seed 0, stored like an analysis). The runs
    train on ``executor`` (default: in this process; see
    :class:`~forgetlab.experiments.ExecutorConfig` for worker processes and Ray).
    ``mixup_head`` (``shared`` / ``separate``), ``precision`` (``fp32`` / ``bf16`` /
    ``fp16``) and ``memory_format`` (``contiguous`` / ``channels_last``) override the
    profile's (e.g. ``precision="fp32", memory_format="contiguous"``: the quick profile in
    plain float32, ~2x slower on a CPU; a bf16 profile runs in fp32 on a CPU without native
    bf16 kernels unless ``precision="bf16"`` is given); ``batch_norm`` (``True`` / ``False``) the
    profile's ``model.batch_norm`` (``False``: the BN-free check of the reset finding);
    ``epochs`` and ``batch_size`` the epochs per task and the training batch size of every
    run (with ``check_convergence``: are that many epochs enough for this model and data?).
    The returned ``summary`` judges the six findings from the results (``"not run"`` for
    the analyses left out by ``only``).
    """
    start = time.perf_counter()
    profile = get_profile(profile) if isinstance(profile, str) else profile
    for name, value in (("mixup_head", mixup_head), ("precision", precision), ("memory_format", memory_format),
                        ("batch_norm", batch_norm), ("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            profile = replace(profile, **{name: value})
    store = open_store(store)
    names = parse_only(only)
    dataset = dataset or profile.dataset
    model = model or profile.model
    n_seeds = seeds if seeds is not None else profile.n_seeds
    if n_seeds < 1:
        raise ConfigError(f"The 'seeds' parameter must be >= 1. Got {n_seeds} instead.")
    base_config(profile, 0, dataset=dataset, model=model)  # validate early
    where = resolve_device(device)  # a missing GPU is reported before any work starts
    if precision is None and profile.precision == "bf16" and not native_bf16(where):
        # emulated bf16 is an order of magnitude slower than fp32 (native_bf16's docstring)
        profile = replace(profile, precision="fp32")
        if log:
            log("this CPU has no native bf16 kernels (oneDNN): training in fp32 instead of the profile's bf16 "
                "(other run ids; --precision bf16 forces it)")
    ctx = AnatomyContext(profile, store, dataset, model, device=device, data_dir=data_dir, progress=progress,
                         executor=executor)
    results: dict[str, list[dict[str, Any]]] = {}
    computed: list[tuple[str, int]] = []
    threads = torch.get_num_threads()
    convergence = None
    try:
        # Training uses the profile's threads per run; the measurements after it (CKA,
        # Fisher, ...) run in this process alone and keep the machine's threads.
        if profile.torch_threads:
            torch.set_num_threads(profile.torch_threads)
        wanted = [*((["convergence"] if check_convergence else [])), *names]
        _train_all(ctx, [(name, seed) for name in wanted for seed in ([0] if name == "convergence" else range(n_seeds))], log)
        torch.set_num_threads(threads)
        if check_convergence:
            convergence = _stored(ctx, "convergence", 0, lambda: convergence_check(ctx, 0), computed, log)["data"]
        _run_analyses(ctx, names, n_seeds, results, computed, log)
    finally:
        torch.set_num_threads(threads)
    path = None
    if report:
        from forgetlab.report import build_report

        groups = {analysis_key(n, profile, dataset, model, None) for n in names}
        path = build_report(store, report_dir or store.root / "reports" / "anatomy", groups=groups)
    from forgetlab.report.verdicts import summarize

    summary = summarize({n: [v["data"] for v in values] for n, values in results.items()}, profile=profile.name,
                        seeds=n_seeds, convergence=convergence)
    return Reproduction(results, computed, path, time.perf_counter() - start, summary, convergence)


def _stored(
    ctx: AnatomyContext, name: str, seed: int, compute: Callable[[], dict[str, Any]],
    computed: list[tuple[str, int]], log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """The stored record of analysis ``name`` for ``seed``; computed (and stored) if absent."""
    profile, store, dataset, model = ctx.profile, ctx.store, ctx.dataset, ctx.model
    key = analysis_key(name, profile, dataset, model, seed)
    stored = _stored_analysis(ctx, name, seed)
    if stored is None:
        tick = time.perf_counter()
        if log:
            log(f"{name} (seed {seed}) ...")
        data = compute()
        stored = {
            "analysis": name, "version": ANALYSIS_VERSIONS.get(name, ANALYSIS_VERSION), "seed": seed,
            "group": analysis_key(name, profile, dataset, model, None),
            "profile": dataclasses.asdict(profile), "dataset": dataset, "model": model,
            "seconds": time.perf_counter() - tick, "data": data,
        }
        store.put_analysis(f"anatomy/{name}", key, stored)
        computed.append((name, seed))
        if log:
            log(f"{name} (seed {seed}) done in {stored['seconds']:.0f} s")
    return stored


def _stored_analysis(ctx: AnatomyContext, name: str, seed: int) -> dict[str, Any] | None:
    """The stored record of analysis ``name`` for ``seed``, or ``None``."""
    return ctx.store.get_analysis(f"anatomy/{name}", analysis_key(name, ctx.profile, ctx.dataset, ctx.model, seed))


def _train_all(ctx: AnatomyContext, wanted: Sequence[tuple[str, int]], log: Callable[[str], None] | None) -> None:
    """Train, in one sweep, every run of the ``(analysis, seed)`` pairs not yet in the store
    (finished runs are read back; a failed one is kept in ``ctx`` and reported by its analysis)."""
    missing = [(name, seed) for name, seed in wanted if _stored_analysis(ctx, name, seed) is None]
    configs = list({c.run_id(): c for name, seed in missing for c in analysis_runs(ctx, name, seed)}.values())
    todo = [c for c in configs if stored_result(ctx.store, c) is None]
    if not todo:
        return
    tick = time.perf_counter()
    count, last_line = [0], [tick]

    def done(result: Any) -> None:
        # every 10th run, the last, and any run a minute or more after the previous line
        # (a cifar run takes minutes: a background log should not stay silent for an hour)
        count[0] += 1
        now = time.perf_counter()
        if log and (count[0] % 10 == 0 or count[0] == len(todo) or now - last_line[0] >= PROGRESS_LINE_SECONDS):
            last_line[0] = now
            what = "failed" if isinstance(result, RunFailure) else f"ACC {100 * result.metrics['acc']:.1f}%"
            log(f"  {count[0]} / {len(todo)} runs done ({now - tick:.0f} s; run {result.run_id}: {what})")

    if log:
        log(f"training {len(todo)} runs for {len(missing)} analyses x seeds ({len(configs) - len(todo)} already stored) ...")
    ctx.execute_allowing_failures(todo, on_done=done)


def _run_analyses(
    ctx: AnatomyContext, names: Sequence[str], n_seeds: int, results: dict[str, list[dict[str, Any]]],
    computed: list[tuple[str, int]], log: Callable[[str], None] | None,
) -> None:
    for name in names:
        for seed in range(n_seeds):
            stored = _stored(ctx, name, seed, lambda: ANALYSIS_FUNCTIONS[name](ctx, seed), computed, log)
            results.setdefault(name, []).append(stored)
