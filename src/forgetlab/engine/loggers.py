"""Training logs for the trackers people use: a CSV file and TensorBoard event files.

Off by default; ``forgetlab run --log csv,tensorboard`` (API: ``forgetlab.run(config,
log=("csv",))``) writes them into the run folder while the run trains:

- ``csv``: ``train-log.csv``, one row per optimizer step (``kind=step``: the batch loss) and
  one per evaluation (``kind=eval``: every task's test accuracy), with the task being
  trained, the global step and the epoch within the task.
- ``tensorboard``: event files under ``tensorboard/`` (``loss/train``, ``accuracy/task_j``),
  through ``torch.utils.tensorboard``; needs ``pip install 'forgetlab[tensorboard]'``.

A resumed run appends: the steps of a task cut short by a kill appear twice, the second
time as trained after the resume.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (logger,) = make_loggers(["csv"], folder, n_tasks=2)
    >>> logger.log_step(0, 1, 0.5); logger.log_eval(0, 1, 1.0, (0.9, 0.1)); logger.close()
    >>> (folder / "train-log.csv").read_text().splitlines()[1]
    'step,1,1,,0.5,,'
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from forgetlab.errors import ConfigError

LOGGERS = ("csv", "tensorboard")


class TrainLogger(Protocol):
    """What :func:`forgetlab.engine.train.train_stream` calls while it trains (0-based ``task_index``)."""

    def log_step(self, task_index: int, global_step: int, loss: float) -> None: ...

    def log_eval(self, task_index: int, global_step: int, epoch: float, accuracies: Sequence[float]) -> None: ...

    def close(self) -> None: ...


class CSVLogger:
    """``train-log.csv``: kind, task (1-based), step, epoch, loss, then one accuracy column per task."""

    def __init__(self, folder: Path, n_tasks: int) -> None:
        path = folder / "train-log.csv"
        new = not path.exists()
        self._file = path.open("a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(["kind", "task", "step", "epoch", "loss", *(f"task_{j + 1}" for j in range(n_tasks))])
        self._n_tasks = n_tasks

    def log_step(self, task_index: int, global_step: int, loss: float) -> None:
        self._writer.writerow(["step", task_index + 1, global_step, "", f"{loss:.6g}", *[""] * self._n_tasks])

    def log_eval(self, task_index: int, global_step: int, epoch: float, accuracies: Sequence[float]) -> None:
        self._writer.writerow(["eval", task_index + 1, global_step, f"{epoch:g}", "", *(f"{a:.6g}" for a in accuracies)])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    """Event files under ``tensorboard/``: ``loss/train`` per step, ``accuracy/task_j`` per evaluation."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'forgetlab[tensorboard]'") from None
        self._writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def log_step(self, task_index: int, global_step: int, loss: float) -> None:
        self._writer.add_scalar("loss/train", loss, global_step)

    def log_eval(self, task_index: int, global_step: int, epoch: float, accuracies: Sequence[float]) -> None:
        for j, accuracy in enumerate(accuracies):
            self._writer.add_scalar(f"accuracy/task_{j + 1}", accuracy, global_step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def check_loggers(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` checked against :data:`LOGGERS`, and the tensorboard package there if named
    (one-line errors, before any work)."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"The --log option takes {', '.join(map(repr, LOGGERS))} (comma-separated). Got {name!r}.")
    if "tensorboard" in names and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'forgetlab[tensorboard]'")
    return tuple(dict.fromkeys(names))


def make_loggers(names: Sequence[str], folder: Path, n_tasks: int) -> list[TrainLogger]:
    """The loggers ``names`` (see :data:`LOGGERS`), writing into ``folder``."""
    loggers: list[TrainLogger] = []
    for name in check_loggers(names):
        loggers.append(CSVLogger(folder, n_tasks) if name == "csv" else TensorBoardLogger(folder))
    return loggers
