"""The Python entry point: ``forgetlab.run(config)``.

Example:
    >>> import forgetlab, tempfile
    >>> result = forgetlab.run(forgetlab.RunConfig(), store=tempfile.mkdtemp())
    >>> result.accuracy_matrix.shape, 0.0 <= result.metrics["acc"] <= 1.0
    ((2, 2), True)
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import forgetlab
from forgetlab.config import RunConfig, resolve
from forgetlab.data.streams import TaskStream, build_stream, load_stream_data
from forgetlab.engine.checkpoint import latest_checkpoint, read_checkpoint
from forgetlab.engine.train import CurvePoint, DivergedError, mixed_precision, train_stream
from forgetlab.errors import ConfigError
from forgetlab.metrics import summary
from forgetlab.models import BlockModel, create_model
from forgetlab.store import ResultStore, default_store_dir
from forgetlab.strategies import Strategy, create_strategy

DEVICES = ("auto", "cpu", "cuda")


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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise ConfigError(f"The 'device' parameter must be one of {', '.join(DEVICES)}. Got {device!r} instead.")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("The 'device' parameter is 'cuda' but no CUDA device is available. Use --device cpu or auto.")
    return torch.device(device)


def build_stream_for(config: RunConfig, *, data_dir: str | Path | None = None, download: bool = False) -> TaskStream:
    """Load the config's dataset and cut it into its task stream."""
    data = load_stream_data(config.stream, data_dir=data_dir, download=download)
    return build_stream(config.stream, data, seed=config.train.seed)


def build_model_for(config: RunConfig, stream: TaskStream) -> BlockModel:
    """Create the config's model for a stream (input shape, one head per head size)."""
    config = resolve(config)
    assert config.model.name is not None  # resolve() fills it
    return create_model(
        config.model.name,
        input_shape=stream.input_shape,
        head_sizes=stream.head_sizes,
        width=config.model.width,
        depth=config.model.depth,
        batch_norm=config.model.batch_norm,
    )


def build_strategy_for(config: RunConfig) -> Strategy:
    """A fresh strategy (no learned state) for the config's ``method`` section.

    Example:
        >>> from forgetlab.config import MethodConfig
        >>> build_strategy_for(RunConfig(method=MethodConfig("si"))).name
        'si'
    """
    return create_strategy(config.method.name, config.method.params)


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


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
) -> RunResult:
    """Train ``config`` task by task (or read it back from the store) and return the result.

    A finished run with the same resolved config is returned from the store without
    training again (``rerun=True`` trains anew). An interrupted run resumes from its last
    task-boundary checkpoint.

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
    """
    resolved = resolve(config)
    run_id = resolved.run_id()
    if not isinstance(store, ResultStore):
        store = ResultStore(store if store is not None else default_store_dir())
    stored = store.get(run_id)
    if stored is not None and stored.status == "finished" and not rerun:
        return RunResult(
            run_id=run_id,
            config=resolved,
            accuracy_matrix=np.array(stored.accuracy_matrix),
            initial_accuracy=np.array(stored.initial_accuracy),
            curves=[
                CurvePoint(c["task_index"], c["epoch"], c["step"], tuple(c["accuracies"])) for c in stored.curves
            ],
            metrics=dict(stored.metrics),
            run_dir=store.run_dir(run_id),
            from_store=True,
            device=stored.device or "",
            wall_seconds=stored.wall_seconds or 0.0,
            train_seconds=stored.train_seconds or 0.0,
        )
    torch_device = resolve_device(device)
    mixed_precision(resolved.train.precision, torch_device)  # fp16 without CUDA: an error before any work
    stream = build_stream_for(resolved, data_dir=data_dir, download=download)
    run_dir = store.begin(run_id, resolved.to_dict(), forgetlab.__version__)
    checkpoint_dir = run_dir / "checkpoints"
    if rerun:
        for old in checkpoint_dir.glob("task-*.pt"):
            old.unlink()
    source_payload = None
    if start_from is not None and latest_checkpoint(checkpoint_dir, stream.n_tasks) is None:
        source_payload = read_checkpoint(start_from)
        store.record_reuse(run_id, str(Path(start_from)), int(source_payload["task_index"]) + 1)
    torch.manual_seed(resolved.train.seed)
    model = build_model_for(resolved, stream)
    start = time.perf_counter()
    try:
        result = train_stream(
            model,
            stream,
            resolved.train,
            device=torch_device,
            strategy=build_strategy_for(resolved),
            checkpoint_dir=checkpoint_dir,
            checkpoint_extra={
                "config": resolved.to_dict(),
                "model_spec": {
                    "input_shape": list(stream.input_shape),
                    "head_sizes": list(stream.head_sizes),
                    "mean": list(stream.mean),  # the input normalisation the model was trained with
                    "std": list(stream.std),
                },
            },
            progress=progress,
            start_from=source_payload,
        )
    except DivergedError as exc:
        store.fail(run_id, str(exc))
        raise
    except KeyboardInterrupt:
        store.fail(run_id, "interrupted")
        raise
    wall = time.perf_counter() - start
    metrics = summary(result.accuracy_matrix)
    store.finish(
        run_id,
        accuracy_matrix=result.accuracy_matrix.tolist(),
        initial_accuracy=result.initial_accuracy.tolist(),
        metrics=metrics,
        curves=[{"task_index": c.task_index, "epoch": c.epoch, "step": c.step, "accuracies": list(c.accuracies)} for c in result.curves],
        device=str(torch_device),
        wall_seconds=wall,
        train_seconds=result.train_seconds,
        peak_memory_bytes=_peak_memory_bytes(torch_device),
    )
    return RunResult(
        run_id=run_id,
        config=resolved,
        accuracy_matrix=result.accuracy_matrix,
        initial_accuracy=result.initial_accuracy,
        curves=result.curves,
        metrics=metrics,
        run_dir=run_dir,
        device=str(torch_device),
        wall_seconds=wall,
        train_seconds=result.train_seconds,
    )
