"""Checkpoints: model + optimizer + strategy state + config + counters, at task boundaries.

A checkpoint file is a dict saved with ``torch.save``; it carries the resolved run
config, so :func:`load_model` can rebuild the model without any other file.

Example:
    >>> import forgetlab, tempfile
    >>> config = forgetlab.RunConfig(train=forgetlab.TrainConfig(epochs=1))
    >>> result = forgetlab.run(config, store=tempfile.mkdtemp())
    >>> model, config = load_model(result.run_dir / "checkpoints" / "task-1.pt")
    >>> config.model.name, model.head_sizes
    ('mlp', (5, 5))
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from forgetlab.config import RunConfig
from forgetlab.errors import DataError, IncompatibleError, StoreError
from forgetlab.models import BlockModel, build_model

CHECKPOINT_FORMAT = "forgetlab-checkpoint"
CHECKPOINT_VERSION = 1


def checkpoint_path(directory: Path, task_index: int) -> Path:
    """File of the checkpoint written after task ``task_index`` (0-based): ``task-{i+1}.pt``."""
    return directory / f"task-{task_index + 1}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise StoreError(
            f"Cannot write checkpoint {str(path)!r}: {reason}. Free space or choose another store (--store)."
        ) from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a forgetlab checkpoint file, with ``torch.load(weights_only=True)``: a
    checkpoint holds only tensors and plain types, so nothing in the file can run code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        name = pickled_global(exc)
        if name is not None:
            raise DataError(
                f"Checkpoint {str(path)!r} holds pickled Python objects besides tensors and plain types (it names "
                f"{name}): not a forgetlab checkpoint, or tampered with; refused, since loading it could run code."
            ) from None
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"Checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: {detail}).") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{str(path)!r} is not a forgetlab checkpoint (no 'format' marker).")
    return payload


def pickled_global(exc: BaseException) -> str | None:
    """The Python object a ``torch.load(weights_only=True)`` refused (``io.open``,
    ``mynet.Net``): the file pickles code, not only tensors; ``None`` for any other error."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    return found.group(1) if found else None


def latest_checkpoint(directory: Path, n_tasks: int) -> tuple[int, Path] | None:
    """The last task boundary with a checkpoint in ``directory``: ``(task_index, path)``."""
    for task_index in reversed(range(n_tasks)):
        path = checkpoint_path(directory, task_index)
        if path.is_file():
            return task_index, path
    return None


def load_model(path: str | Path) -> tuple[BlockModel, RunConfig]:
    """Rebuild the model saved in a forgetlab checkpoint; returns ``(model, config)``."""
    payload = read_checkpoint(path)
    return checkpoint_model(payload, path), RunConfig.from_dict(payload["config"])


def checkpoint_model(payload: dict[str, Any], path: str | Path) -> BlockModel:
    """The model of a checkpoint read by :func:`read_checkpoint` (``path`` names it in
    errors), built from its own model spec, in eval mode."""
    config = RunConfig.from_dict(payload["config"])
    spec = payload["model_spec"]
    model = build_model(config.model, input_shape=spec["input_shape"], head_sizes=spec["head_sizes"])
    missing, unexpected = model.load_state_dict(payload["model_state"], strict=False)
    if missing or unexpected:
        raise IncompatibleError(
            f"Checkpoint {str(path)!r} does not match its model: missing keys {list(missing)}, "
            f"unexpected keys {list(unexpected)}."
        )
    model.eval()
    return model
