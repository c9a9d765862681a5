"""The Python entry point: ``forgetlab.run(config)``: resolve the config once, then
build the stream, model and strategy, train, and record the outcome in the store.

Example:
    >>> import forgetlab, tempfile
    >>> result = forgetlab.run(forgetlab.RunConfig(), store=tempfile.mkdtemp())
    >>> result.accuracy_matrix.shape, 0.0 <= result.metrics["acc"] <= 1.0
    ((2, 2), True)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgetlab._version import __version__
from forgetlab.config import RunConfig
from forgetlab.data.streams import TaskStream, build_stream, load_stream_data
from forgetlab.engine.checkpoint import latest_checkpoint, read_checkpoint
from forgetlab.engine.device import mixed_precision, peak_memory_bytes, reset_peak_memory, resolve_device
from forgetlab.engine.loggers import check_loggers, make_loggers
from forgetlab.engine.train import CurvePoint, train_stream
from forgetlab.errors import ConfigError, DataError, ForgetlabError, StoreError, disk_full_error, is_disk_full
from forgetlab.metrics import summary
from forgetlab.models import build_model
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore, default_store_dir, run_lock
from forgetlab.strategies import create_strategy


@dataclass
class RunResult:
    """A finished run.

    Attributes:
        run_id: hash of the resolved config; the key in the result store.
        config: the resolved config (no ``None`` left).
        accuracy_matrix: ``R`` as a ``(T, T)`` array of fractions in [0, 1].
        initial_accuracy: ``(T,)`` accuracy of the untrained model per task.
        curves: learning curves (every task's accuracy after every epoch).
        metrics: ``acc``, ``bwt``, ``forgetting``.
        run_dir: the run's folder (config, checkpoints).
        from_store: True when the result was read back instead of trained.
        device: where it was trained.
        wall_seconds, train_seconds: total time and training time (evaluation excluded).
    """

    run_id: str
    config: RunConfig
    accuracy_matrix: np.ndarray
    initial_accuracy: np.ndarray
    curves: list[CurvePoint]
    metrics: dict[str, float]
    run_dir: Path
    from_store: bool = False
    device: str = "cpu"
    wall_seconds: float = 0.0
    train_seconds: float = 0.0


def build_stream_for(config: RunConfig, *, data_dir: str | Path | None = None, download: bool = False) -> TaskStream:
    """Load the config's dataset and cut it into its task stream (seeded by ``train.seed``)."""
    data = load_stream_data(config.stream, data_dir=data_dir, download=download)
    return build_stream(config.stream, data, seed=config.train.seed)


@dataclass(frozen=True)
class RunOutcome:
    """What training one run produces, before it is recorded: plain, picklable values, so
    that a worker process or a Ray task can return it to the one process that writes the
    store.

    Attributes:
        run_id: the run's key.
        accuracy_matrix, initial_accuracy: ``R`` and the untrained accuracies, as lists.
        curves: learning-curve points as dicts (``task_index``, ``epoch``, ``step``, ``accuracies``).
        metrics: ``acc``, ``bwt``, ``forgetting``.
        device: where it was trained (``cpu``, ``cuda:0``).
        wall_seconds, train_seconds: total and training-only time of this execution.
        peak_memory_bytes: peak resident memory (CPU) or CUDA allocator peak of the run.
        reused: ``(source checkpoint, tasks adopted)`` when it started from another run's prefix.
    """

    run_id: str
    accuracy_matrix: list[list[float]]
    initial_accuracy: list[float]
    curves: list[dict[str, Any]]
    metrics: dict[str, float]
    device: str
    wall_seconds: float
    train_seconds: float
    peak_memory_bytes: int
    reused: tuple[str, int] | None = None


@dataclass(frozen=True)
class RunFailure:
    """A run that did not finish; the store holds it as ``failed`` with ``error``.

    Attributes:
        run_id: the run's key.
        config: the resolved config.
        error: the reason, one line (e.g. ``Training diverged on task 2 at step 40: loss is nan. ...``).
        kind: ``diverged`` (NaN or infinite loss), ``interrupted`` or ``error`` (anything else).
    """

    run_id: str
    config: RunConfig
    error: str
    kind: str = "error"


def train_run(
    config: RunConfig,
    run_dir: Path,
    *,
    device: torch.device,
    data_dir: str | Path | None = None,
    download: bool = False,
    progress: bool = False,
    rerun: bool = False,
    start_from: str | Path | None = None,
    log: Sequence[str] = (),
) -> RunOutcome:
    """Train one resolved ``config`` (:func:`~forgetlab.resolve.resolve`) with its
    checkpoints in ``run_dir/checkpoints`` and return its outcome. Writes only files of this run's folder, never the database: the
    caller records the outcome (:func:`record_outcome`), so that runs can train in worker
    processes while one process writes the store.

    Resumes after the last task-boundary checkpoint in the folder; ``rerun`` deletes them
    first; ``start_from`` as in :func:`run`. Holds the folder's lock (:func:`run_lock`): a
    second process training the same run waits, then resumes from the first's last
    checkpoint (nothing left to train). ``log`` names the training logs to write into
    ``run_dir`` (:mod:`forgetlab.engine.loggers`: ``csv``, ``tensorboard``).
    """
    run_id = config.run_id()  # an unresolved config stops here, before any work
    with run_lock(run_dir):
        return _train_run_locked(config, run_dir, run_id, device, data_dir, download, progress, rerun, start_from, log)


def _train_run_locked(
    config: RunConfig, run_dir: Path, run_id: str, device: torch.device, data_dir: str | Path | None,
    download: bool, progress: bool, rerun: bool, start_from: str | Path | None, log: Sequence[str],
) -> RunOutcome:
    reset_peak_memory(device)
    start = time.perf_counter()
    stream = build_stream_for(config, data_dir=data_dir, download=download)
    checkpoint_dir = run_dir / "checkpoints"
    for partial in checkpoint_dir.glob("task-*.tmp"):  # a write cut short by a kill
        partial.unlink(missing_ok=True)
    if rerun:
        for old in [*checkpoint_dir.glob("task-*.pt"), *checkpoint_dir.glob("task-*.pt.sha256"), run_dir / "reuse.json"]:
            old.unlink(missing_ok=True)
    source_payload = None
    reused = None
    reuse_file = run_dir / "reuse.json"  # the adopted prefix, remembered across a kill and resume
    has_own = latest_checkpoint(checkpoint_dir, stream.n_tasks) is not None
    if has_own and reuse_file.is_file():
        try:
            source, n_tasks = json.loads(reuse_file.read_text())
            reused = (str(source), int(n_tasks))
        except (OSError, TypeError, ValueError):
            reused = None
    if start_from is not None and not has_own:
        try:
            source_payload = read_checkpoint(start_from)
            reused = (str(Path(start_from)), int(source_payload["task_index"]) + 1)
        except (DataError, KeyError, TypeError, ValueError) as exc:  # a bad source: train those tasks instead
            warnings.warn(f"Prefix checkpoint {str(start_from)!r} not used: {exc}", stacklevel=2)
            source_payload = None
        else:
            try:
                reuse_file.write_text(json.dumps(list(reused)))
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full_error("file", reuse_file, exc, "Free space or choose another store (--store).") from None
                raise StoreError(f"Cannot write {str(reuse_file)!r}: {exc.strerror or exc}.") from None
    check_model_fits(config, device, stream)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, input_shape=stream.input_shape, head_sizes=stream.head_sizes)
    loggers = make_loggers(log, run_dir, stream.n_tasks)
    try:
        result = train_stream(
            model,
            stream,
            config.train,
            device=device,
            strategy=create_strategy(config.method.name, config.method.params),
            checkpoint_dir=checkpoint_dir,
            checkpoint_extra={
                "config": config.to_dict(),
                "model_spec": {
                    "input_shape": list(stream.input_shape),
                    "head_sizes": list(stream.head_sizes),
                    "mean": list(stream.mean),  # the input normalisation the model was trained with
                    "std": list(stream.std),
                },
            },
            progress=progress,
            prefix_checkpoint=source_payload,
            loggers=loggers,
        )
    finally:
        for logger in loggers:
            logger.close()
    return RunOutcome(
        run_id=run_id,
        accuracy_matrix=result.accuracy_matrix.tolist(),
        initial_accuracy=result.initial_accuracy.tolist(),
        curves=[dataclasses.asdict(point) for point in result.curves],
        metrics=summary(result.accuracy_matrix),
        device=str(device),
        wall_seconds=time.perf_counter() - start,
        train_seconds=result.train_seconds,
        peak_memory_bytes=peak_memory_bytes(device),
        reused=reused,
    )


def check_model_fits(config: RunConfig, device: torch.device, stream: TaskStream | None = None) -> None:
    """Refuse, before allocating it, a model whose parameters, gradients and optimizer state
    (4 float32 copies) exceed the device's memory (CUDA: free memory; CPU: physical memory).
    The model is built on the ``meta`` device: no memory is used. Without ``stream`` (before
    any data is read: :func:`run` and sweeps check so before they register the run) the
    smallest model the config can give is checked: a 1 x 1 single-channel input, one head of one class.

    Example:
        >>> from forgetlab.config import apply_overrides
        >>> check_model_fits(resolve(apply_overrides(RunConfig(), ["model.width=1000000"])), torch.device("cpu"))
        Traceback (most recent call last):
        ...
        forgetlab.errors.ConfigError: The model (mlp, model.width=1000000, model.depth=2) has 1,000,004,000,001 parameters: about 14901.2 GiB for weights, gradients and optimizer state, more than the ... Lower model.width or model.depth.
    """
    input_shape, head_sizes = ((1, 1, 1), (1,)) if stream is None else (stream.input_shape, stream.head_sizes)
    with torch.device("meta"):
        model = build_model(config.model, input_shape=input_shape, head_sizes=head_sizes)
    n_params = sum(p.numel() for p in model.parameters())
    need = 4 * 4 * n_params
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # not POSIX: no estimate
            return
    if need > available:
        raise ConfigError(
            f"The model ({config.model.name}, model.width={config.model.width}, model.depth={config.model.depth}) has "
            f"{n_params:,} parameters: about {need / 2**30:.1f} GiB for weights, gradients and optimizer state, more "
            f"than the {available / 2**30:.1f} GiB of {device.type} memory. Lower model.width or model.depth."
        )


def record_outcome(store: ResultStore, config: RunConfig, outcome: RunOutcome) -> RunResult:
    """Write a finished run's outcome to the store (one transaction) and return its result;
    ``config`` is the run's resolved config."""
    if outcome.reused is not None:
        store.record_reuse(outcome.run_id, *outcome.reused)
    store.finish(
        outcome.run_id,
        accuracy_matrix=outcome.accuracy_matrix,
        initial_accuracy=outcome.initial_accuracy,
        metrics=outcome.metrics,
        curves=outcome.curves,
        device=outcome.device,
        wall_seconds=outcome.wall_seconds,
        train_seconds=outcome.train_seconds,
        peak_memory_bytes=outcome.peak_memory_bytes,
    )
    return _result(store, config, outcome.run_id, outcome)


def stored_result(store: ResultStore, config: RunConfig) -> RunResult | None:
    """The finished run of the resolved ``config`` read back from the store, or ``None``."""
    run_id = config.run_id()
    stored = store.get(run_id)
    if stored is None or stored.status != "finished":
        return None
    return _result(store, config, run_id, stored, from_store=True)


def _result(store: ResultStore, config: RunConfig, run_id: str, source: Any, *, from_store: bool = False) -> RunResult:
    """The RunResult of a run outcome or a stored run (both carry R, curves, metrics, timings)."""
    return RunResult(
        run_id=run_id,
        config=config,
        accuracy_matrix=np.array(source.accuracy_matrix),
        initial_accuracy=np.array(source.initial_accuracy),
        curves=[CurvePoint(c["task_index"], c["epoch"], c["step"], tuple(c["accuracies"])) for c in source.curves],
        metrics=dict(source.metrics),
        run_dir=store.run_dir(run_id),
        from_store=from_store,
        device=source.device or "",
        wall_seconds=source.wall_seconds or 0.0,
        train_seconds=source.train_seconds or 0.0,
    )


def failure_reason(exc: BaseException) -> str:
    """One line for the store's ``error`` column."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code > 128:
        import signal

        try:
            return f"terminated ({signal.Signals(exc.code - 128).name})"
        except ValueError:
            pass
    if isinstance(exc, ForgetlabError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def mark_failed(store: ResultStore, run_ids: Sequence[str], reason: str) -> None:
    """Mark runs ``failed`` with ``reason``, as far as the store can be written: where it
    cannot (a full disk) they stay ``running``, and the next ``run`` or sweep resumes them
    like any unfinished run; the error that stopped them is what the caller raises."""
    for run_id in run_ids:
        try:
            store.fail(run_id, reason)
        except StoreError:
            return


def open_store(store: str | Path | ResultStore | None) -> ResultStore:
    """A store object from a folder, an object, or ``None`` (the default folder)."""
    if isinstance(store, ResultStore):
        return store
    return ResultStore(store if store is not None else default_store_dir())


def run(
    config: RunConfig,
    *,
    device: str = "auto",
    data_dir: str | Path | None = None,
    download: bool = False,
    store: str | Path | ResultStore | None = None,
    rerun: bool = False,
    progress: bool = False,
    start_from: str | Path | None = None,
    log: Sequence[str] = (),
) -> RunResult:
    """Train ``config`` task by task (or read it back from the store) and return the result.

    A finished run with the same resolved config is returned from the store without
    training again (``rerun=True`` trains anew). An interrupted run resumes from its last
    task-boundary checkpoint. A run that raises (a :class:`~forgetlab.engine.DivergedError` for a NaN loss,
    Ctrl-C, anything else) is marked ``failed`` in the store with its reason, then the
    exception propagates. Sweeps: :func:`forgetlab.experiments.execute`.

    Args:
        config: what to run.
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir: folder with the dataset files (else ``$FORGETLAB_DATA``, else the cache).
        download: allow downloading missing dataset files from their official URLs.
        store: result store folder or object (default ``$FORGETLAB_STORE`` or ``./forgetlab-results``).
        rerun: train even if the store holds a finished result.
        progress: show progress bars.
        start_from: a task-boundary checkpoint of another run with the same stream, model
            and training config whose tasks so far this run would have trained identically
            (prefix reuse: see :func:`forgetlab.engine.train.train_stream`); used only
            when this run has no checkpoint of its own yet, and recorded in the store
            (:meth:`ResultStore.reuse_source`). The caller vouches for the equivalence;
            :func:`forgetlab.experiments.execute` finds and checks sources itself.
        log: training logs written into the run folder while it trains: ``csv``
            (``train-log.csv``), ``tensorboard`` (event files; the ``tensorboard`` extra).
    """
    resolved = resolve(config)
    run_id = resolved.run_id()
    log = check_loggers(log)
    store = open_store(store)
    torch_device = resolve_device(device)  # a bad device is an error, also for a stored result
    if not rerun:
        stored = stored_result(store, resolved)
        if stored is not None:
            return stored
    mixed_precision(resolved.train.precision, torch_device)  # fp16 without CUDA: an error before any work
    check_model_fits(resolved, torch_device)  # a model that cannot fit: refused before the run is registered
    run_dir = store.begin(run_id, resolved.to_dict(), __version__)
    try:
        outcome = train_run(
            resolved, run_dir, device=torch_device, data_dir=data_dir, download=download, progress=progress,
            rerun=rerun, start_from=start_from, log=log,
        )
        return record_outcome(store, resolved, outcome)
    except BaseException as exc:
        mark_failed(store, [run_id], failure_reason(exc))
        raise
