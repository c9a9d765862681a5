"""Sweeps: grids of run configs, and the one function that executes them.

A sweep is a list of :class:`~forgetlab.config.RunConfig`. :func:`expand` builds one
from a base config and a grid of ``--set``-style keys (:func:`parse_grid` reads the
command line's ``--grid KEY=V1,V2``); :func:`execute` resolves each config once and runs the list on an
executor (:mod:`forgetlab.experiments.executors`: in-process, local worker processes or
Ray) and returns finished runs from the result store without training again.

Prefix reuse: a run whose method is *prefix-neutral*
(``Strategy.prefix_neutral``: it does nothing during task 1 but its
``after_task``) trains task 1 exactly as the naive run with the same stream, model and
training config. :func:`execute` therefore runs that naive run first (its :func:`prefix_key`
is the same) and starts the other run from the naive run's ``task-1.pt``: a freeze sweep
over k = 0..L trains task 1 once. Two more cases share task 1 (:func:`prefix_source`):
runs of a method that learns during task 1 and differ only in its hyperparameters that
act from task 2 on (``Strategy.first_task_free``: SI's ``c`` and ``gradient``), which
adopt one of them, its strategy state included; and runs that differ only in stream
fields that change later tasks only (``StreamKind.later_tasks_only``: the mixup-fraction
stream's ``mixup_alpha``, class-pairs' ``pairs_task2``), which re-evaluate their own
tasks at the boundary. The store records the reuse
(:meth:`~forgetlab.store.ResultStore.reuse_source`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from forgetlab._version import __version__
from forgetlab.config import MethodConfig, RunConfig, apply_overrides
from forgetlab.errors import ConfigError, ForgetlabError
from forgetlab.experiments.executors import ExecutorConfig, RunJob, open_backend
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore


def expand(base: RunConfig, grid: Mapping[str, Sequence[Any]]) -> list[RunConfig]:
    """The cartesian product of ``grid`` (``{"method.lam": [1, 10], "train.seed": [0, 1]}``)
    applied to ``base``, in row-major order (the last key varies fastest).

    A method hyperparameter (``method.lam``) applies to the methods that have it: with
    ``{"method.name": ["naive", "ewc"], "method.lam": [1, 10]}`` the sweep holds naive once
    and EWC twice (a key that no method of the sweep has is an error).

    Example:
        >>> configs = expand(RunConfig(), {"method.name": ["freeze"], "method.n_blocks": [0, 1, 2]})
        >>> [c.method.params.n_blocks for c in configs]
        [0, 1, 2]
        >>> [c.method.name for c in expand(RunConfig(), {"method.name": ["naive", "ewc"], "method.lam": [1, 10]})]
        ['naive', 'ewc', 'ewc']
    """
    keys = list(grid)
    for key in keys:
        if isinstance(grid[key], (str, bytes)) or not isinstance(grid[key], Sequence) or not grid[key]:
            raise ConfigError(f"The grid value of {key!r} must be a non-empty list. Got {grid[key]!r} instead.")
    configs: list[RunConfig] = []
    used: set[str] = set()
    for values in itertools.product(*(grid[key] for key in keys)):
        chosen = dict(zip(keys, values))
        name = str(chosen.get("method.name", base.method.name))
        kept = {k: v for k, v in chosen.items() if not _other_methods_parameter(k, name)}
        used.update(kept)
        config = apply_overrides(base, [f"{key}={_text(value)}" for key, value in kept.items()])
        if config not in configs:
            configs.append(config)
    unused = [key for key in keys if key not in used]
    if unused:
        methods = sorted({c.method.name for c in configs})
        raise ConfigError(
            f"The grid key {unused[0]!r} is a hyperparameter of none of the sweep's methods "
            f"({', '.join(methods)}); `forgetlab list` names each method's hyperparameters."
        )
    return configs


def _other_methods_parameter(key: str, method: str) -> bool:
    """True for ``method.<param>`` when ``method`` has no such hyperparameter (another method of the sweep may)."""
    section, _, rest = key.partition(".")
    if section != "method" or rest == "name" or not rest:
        return False
    from forgetlab.hyperparams import params_type

    try:
        fields = {f.name for f in dataclasses.fields(params_type(method))}
    except ConfigError:
        return False  # an unknown method: apply_overrides names it
    return rest.partition(".")[0] not in fields


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["method.lam=1,10", "train.seed=0,1"]`` (the ``--grid`` options) as the grid
    :func:`expand` takes; a key given twice or an item without values is an error.

    Example:
        >>> parse_grid(["method.lam=1, 10", "train.seed=0"])
        {'method.lam': ['1', '10'], 'train.seed': ['0']}
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"The --grid option must look like KEY=V1,V2,... (e.g. method.lam=1,10). Got {item!r}.")
        if key in grid:
            raise ConfigError(f"The --grid key {key!r} is given twice; list all its values in one --grid.")
        grid[key] = [value.strip() for value in values.split(",")]
    return grid


def prefix_source(config: RunConfig, sweep: Sequence[RunConfig] = ()) -> RunConfig | None:
    """The config whose task-1 checkpoint ``config`` may start from, or ``None`` (train task
    1 itself): runs with the same :func:`prefix_key` share one task-1 training.

    - A prefix-neutral method (EWC, replay, freeze, ...) starts from a naive run: the first
      naive config of ``sweep`` with its prefix key, else its naive twin (which
      :func:`execute` runs first if needed).
    - Naive, or a method with ``first_task_free`` hyperparameters (SI), starts from the
      first config of ``sweep`` with the same method and prefix key, if that is not
      ``config`` itself. Never from a config outside ``sweep``: such a source would be an
      extra run (two tasks trained) to save one.

    The prefix key ignores later-task stream fields (a mixup-fraction sweep over alpha
    trains task 1 once) and a method's ``first_task_free`` hyperparameters. Exact: an
    adopter's ``R`` equals its straight run's (``execute(..., reuse_prefix=False)``).

    Example:
        >>> from forgetlab.config import MethodConfig
        >>> prefix_source(RunConfig(method=MethodConfig("ewc"))).method.name
        'naive'
        >>> si = [apply_overrides(RunConfig(), ["method.name=si", f"method.c={c}"]) for c in (0.1, 10)]
        >>> prefix_source(si[1], si).method.params.c, prefix_source(si[0], si)
        (0.1, None)
    """
    from forgetlab.strategies import strategy_class

    cls = strategy_class(config.method.name)
    if config.stream.n_tasks < 2 or not (cls.prefix_neutral or cls.first_task_free):
        return None
    method = "naive" if cls.prefix_neutral else config.method.name
    form = _prefix_form(config)
    for other in sweep:
        if other.method.name == method and _prefix_form(other) == form:
            return None if other == config else other
    return replace(config, method=MethodConfig()) if method != config.method.name else None


def _prefix_form(config: RunConfig) -> RunConfig:
    """``config`` with what does not act during task 1 set to a fixed value: the method
    (naive) if it is prefix-neutral, else its ``first_task_free`` hyperparameters (their
    defaults), and the stream's ``later_tasks_only`` fields (their defaults)."""
    from forgetlab.config import StreamConfig
    from forgetlab.data.streams import STREAMS
    from forgetlab.strategies import strategy_class

    cls = strategy_class(config.method.name)
    if cls.prefix_neutral:
        method = MethodConfig()
    else:
        defaults = cls.params_type()
        free = {name: getattr(defaults, name) for name in cls.first_task_free}
        method = replace(config.method, params=replace(config.method.params, **free))
    kind = STREAMS.get(config.stream.stream)
    later = {name: getattr(StreamConfig(), name) for name in (kind.later_tasks_only if kind else ())}
    return replace(config, method=method, stream=replace(config.stream, **later))


def prefix_key(config: RunConfig) -> str:
    """Hash of "trained through task 1": stream (without its later-task fields), model,
    train, and the method (without its ``first_task_free`` hyperparameters) unless it is
    prefix-neutral. Runs with equal keys train task 1 identically; a prefix-neutral
    method's state after task 1 comes from its own ``after_task`` on that model.

    Example:
        >>> from forgetlab.config import MethodConfig
        >>> prefix_key(RunConfig(method=MethodConfig("ewc"))) == prefix_key(RunConfig())
        True
        >>> mixup = apply_overrides(RunConfig(), ["stream.stream=mixup-fraction"])
        >>> prefix_key(mixup) == prefix_key(apply_overrides(mixup, ["stream.mixup_alpha=0.9"]))
        True
    """
    data = _prefix_form(resolve(config)).identity_dict()  # like the run id: options left at their default do not count
    payload = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def execute(
    configs: Sequence[RunConfig],
    store: ResultStore,
    *,
    executor: ExecutorConfig | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    download: bool = False,
    progress: bool = False,
    reuse_prefix: bool = True,
    on_done: Callable[[Any], None] | None = None,
    log: Sequence[str] = (),
) -> list[Any]:
    """Run every config (finished ones come from the store) on ``executor`` (default: in
    this process, one after another) and return, in order, each one's
    :class:`~forgetlab.api.RunResult`, or its :class:`~forgetlab.api.RunFailure` if it
    failed: a run whose loss diverges (or that crashes) is marked ``failed`` in the store
    with its reason and the sweep goes on. A mistake common to every run (a bad config,
    missing data, an unwritable store) raises a :class:`~forgetlab.errors.ForgetlabError`.

    ``on_done`` is called with each run's result or failure as soon as it is recorded
    (runs read back from the store are not reported), e.g. to log a long sweep.

    Only this process writes the store's database; workers write their runs' checkpoint
    files. Each finished run records its device, wall time and peak memory. A config that
    appears twice is run once.

    With ``reuse_prefix`` a run starts from the task-1 checkpoint of its
    :func:`prefix_source` (executed first, in parallel with the others; a naive twin
    that the sweep lacks is added). An interrupted call (Ctrl-C, kill -9) resumes when called again: runs
    restart from their task-boundary checkpoints and finished runs are read back.

    Example:
        >>> import tempfile
        >>> from forgetlab.store import ResultStore
        >>> store = ResultStore(tempfile.mkdtemp())
        >>> base = apply_overrides(RunConfig(), ["train.epochs=1"])
        >>> results = execute(expand(base, {"method.name": ["freeze"], "method.n_blocks": [0, 1]}), store)
        >>> [store.reuse_source(r.run_id) is not None for r in results]
        [True, True]
    """
    from forgetlab.api import RunOutcome, check_model_fits, failure_reason, mark_failed, record_outcome, stored_result
    from forgetlab.engine.checkpoint import checkpoint_path, latest_checkpoint
    from forgetlab.engine.device import mixed_precision, resolve_device

    executor = executor or ExecutorConfig()
    from forgetlab.engine.loggers import check_loggers

    log = check_loggers(log)  # a bad name: an error before any work
    resolved = [resolve(config) for config in configs]
    ids = [config.run_id() for config in resolved]
    torch_device = None  # on Ray the workers' devices decide
    if executor.resolved_name != "ray":
        torch_device = resolve_device(device)  # a bad device is an error before any work
        for config in resolved:
            mixed_precision(config.train.precision, torch_device)
    done: dict[str, Any] = {}
    todo: dict[str, RunConfig] = {}
    for run_id, config in zip(ids, resolved):
        if run_id in done or run_id in todo:
            continue
        stored = stored_result(store, config)
        if stored is not None:
            done[run_id] = stored
        else:
            if torch_device is not None:
                check_model_fits(config, torch_device)  # a model that cannot fit: refused before any run is registered
            todo[run_id] = config

    # Prefix reuse: a run waits for its source's task-1 checkpoint unless it has its own.
    ready: list[tuple[RunConfig, str | None]] = []
    waiting: dict[str, list[RunConfig]] = {}
    for run_id, config in list(todo.items()):
        source = prefix_source(config, resolved) if reuse_prefix else None
        has_own = latest_checkpoint(store.run_dir(run_id) / "checkpoints", config.stream.n_tasks) is not None
        if source is None or has_own:
            ready.append((config, None))
            continue
        source_id = source.run_id()  # a config of the sweep, or the naive twin of one: resolved too
        if stored_result(store, source) is not None:
            ready.append((config, str(checkpoint_path(store.run_dir(source_id) / "checkpoints", 0))))
            continue
        waiting.setdefault(source_id, []).append(config)
        if source_id not in todo:
            todo[source_id] = source
            ready.append((source, None))

    in_process = executor.resolved_name == "inprocess"
    threads = executor.threads if in_process else executor.threads_per_run()

    def job_for(config: RunConfig, start_from: str | None) -> RunJob:
        run_id, data = config.run_id(), config.to_dict()
        return RunJob(
            run_id=run_id, config=data, run_dir=str(store.begin(run_id, data, __version__)), device=device,
            data_dir=None if data_dir is None else str(data_dir), download=download, start_from=start_from,
            threads=threads, progress=progress and in_process, log=tuple(log),
        )

    bar = _bar(len(todo), progress)
    recording: list[RunJob] = []  # a job done but not yet recorded: still unfinished for the store
    with open_backend(executor, device) as backend:
        try:
            for config, start_from in ready:
                backend.submit(job_for(config, start_from))
            while backend.n_pending:
                job, outcome = backend.next_done()
                recording = [job]
                if isinstance(outcome, RunOutcome):
                    done[job.run_id] = record_outcome(store, todo[job.run_id], outcome)
                    source_checkpoint = str(checkpoint_path(Path(job.run_dir) / "checkpoints", 0))
                else:
                    store.fail(job.run_id, outcome.error)
                    done[job.run_id] = outcome
                    source_checkpoint = None  # the source failed: its dependents train task 1 themselves
                recording = []
                for dependent in waiting.pop(job.run_id, []):
                    backend.submit(job_for(dependent, source_checkpoint))
                bar.update()
                if on_done is not None:
                    on_done(done[job.run_id])
        except BaseException as exc:  # queued runs too: the store keeps no run 'running' (where it can be written)
            mark_failed(store, [job.run_id for job in [*recording, *backend.unfinished()]], failure_reason(exc))
            raise
        finally:
            bar.close()
    return [done[run_id] for run_id in ids]


def require_finished(results: Sequence[Any]) -> list[Any]:
    """``results`` of :func:`execute` if every run finished, else a ForgetlabError naming the failures.

    Example:
        >>> from forgetlab.api import RunFailure
        >>> require_finished([RunFailure("abc", RunConfig(), "Training diverged on task 2 at step 3: loss is nan.")])
        Traceback (most recent call last):
        ...
        forgetlab.errors.ForgetlabError: 1 of 1 runs failed; run abc: Training diverged on task 2 at step 3: loss is nan.
    """
    from forgetlab.api import RunFailure

    failures = [r for r in results if isinstance(r, RunFailure)]
    if failures:
        first = failures[0]
        raise ForgetlabError(f"{len(failures)} of {len(results)} runs failed; run {first.run_id}: {first.error}")
    return list(results)


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="runs", disable=not enabled, leave=False, dynamic_ncols=True, unit="run")
