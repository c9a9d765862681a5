"""Checkpoints: model + optimizer + strategy state + config + counters, at task boundaries.

A checkpoint file is a dict saved with ``torch.save``; it carries the resolved run
config, so :func:`load_model` can rebuild the model without any other file. Beside each
``task-{i}.pt`` a ``task-{i}.pt.sha256`` holds the SHA-256 of its bytes, written with it
and checked whenever it is read (a garbled or replaced file is refused). Checkpoints are
read with ``torch.load(weights_only=True)``: nothing in them can run code.

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
import warnings
from pathlib import Path
from typing import Any

import torch

from forgetlab.config import RunConfig
from forgetlab.errors import DataError, IncompatibleError, StoreError, disk_full_error, is_disk_full
from forgetlab.models import BlockModel, build_model
from forgetlab.store.sqlite import file_sha256 as content_hash

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
        hash_file(path).unlink(missing_ok=True)  # a kill before the new one is written: unverified, never wrong
        digest = content_hash(Path(tmp))
        os.replace(tmp, path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=hash_file(path).name, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(digest + "\n")
        os.replace(tmp, hash_file(path))
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError ("unexpected pos")
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error("checkpoint", path, exc, "Free space or choose another store (--store).") from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise StoreError(
            f"Cannot write checkpoint {str(path)!r}: {reason}. Free space or choose another store (--store)."
        ) from None


def hash_file(path: Path) -> Path:
    """The file beside checkpoint ``path`` that holds its content hash: ``task-1.pt.sha256``."""
    return path.with_name(path.name + ".sha256")


def recorded_hash(path: Path) -> str | None:
    """The hash written with checkpoint ``path``, or ``None`` (none written: an older
    forgetlab, or a file from elsewhere)."""
    try:
        return hash_file(path).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a forgetlab checkpoint file, with ``torch.load(weights_only=True)``: a
    checkpoint holds only tensors and plain types, so nothing in the file can run code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Checkpoint {str(path)!r} does not exist.")
    expected = recorded_hash(path)
    if expected is not None and content_hash(path) != expected:
        raise DataError(
            f"Checkpoint {str(path)!r} does not match the content hash written with it "
            f"({hash_file(path).name}): it was corrupted or replaced."
        )
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


def resume_checkpoint(directory: Path, n_tasks: int, config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The payload of the last good task boundary in ``directory``, or ``None``.

    A checkpoint that cannot be read, fails its content hash, holds another boundary, or
    (with ``config``, a run's resolved config dict) belongs to another run is quarantined:
    renamed to ``task-{i}.pt.quarantined`` with a warning naming it, and the boundary
    before it is tried."""
    for task_index in reversed(range(n_tasks)):
        path = checkpoint_path(directory, task_index)
        if not path.is_file():
            continue
        try:
            payload = read_checkpoint(path)
            if payload.get("task_index") != task_index:
                raise DataError(f"Checkpoint {str(path)!r} holds task_index {payload.get('task_index')!r}.")
            if config is not None and _run_id(payload.get("config")) != _run_id(config):
                raise DataError(f"Checkpoint {str(path)!r} belongs to another run (its config differs).")
        except DataError as exc:
            aside = path.with_name(path.name + ".quarantined")
            os.replace(path, aside)
            hash_file(path).unlink(missing_ok=True)
            warnings.warn(f"{exc} Moved aside to {str(aside)!r}; going on from the boundary before.", stacklevel=2)
            continue
        return payload
    return None


def _run_id(config: Any) -> str | None:
    try:
        return RunConfig.from_dict(config).run_id()
    except Exception:  # noqa: BLE001 - any malformed config is "not this run's"
        return None


def _field(payload: dict[str, Any], key: str, path: str | Path) -> Any:
    if key not in payload:
        raise DataError(
            f"Checkpoint {str(path)!r} has no {key!r} entry: it was not written by forgetlab's training "
            "(forgetlab.run or the forgetlab command)."
        )
    return payload[key]


def load_model(path: str | Path) -> tuple[BlockModel, RunConfig]:
    """Rebuild the model saved in a forgetlab checkpoint; returns ``(model, config)``."""
    payload = read_checkpoint(path)
    return checkpoint_model(payload, path), RunConfig.from_dict(_field(payload, "config", path))


def checkpoint_model(payload: dict[str, Any], path: str | Path) -> BlockModel:
    """The model of a checkpoint read by :func:`read_checkpoint` (``path`` names it in
    errors), built from its own model spec, in eval mode."""
    config = RunConfig.from_dict(_field(payload, "config", path))
    spec = _field(payload, "model_spec", path)
    model = build_model(config.model, input_shape=spec["input_shape"], head_sizes=spec["head_sizes"])
    missing, unexpected = model.load_state_dict(_field(payload, "model_state", path), strict=False)
    if missing or unexpected:
        raise IncompatibleError(
            f"Checkpoint {str(path)!r} does not match its model: missing keys {list(missing)}, "
            f"unexpected keys {list(unexpected)}."
        )
    model.eval()
    return model
