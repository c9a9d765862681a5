"""Where a sweep's runs train: in this process, in local worker processes, or on Ray.

:func:`forgetlab.experiments.execute` schedules; an executor only trains. Every run is a
:class:`RunJob` (plain values) handed to :func:`run_job`, which trains it with
:func:`forgetlab.api.train_run` and returns a :class:`~forgetlab.api.RunOutcome` or a
:class:`~forgetlab.api.RunFailure`. Workers write only their run's checkpoint files;
the process that called ``execute`` is the only one that writes the store's database,
so concurrent runs can never corrupt it.

Executors (:class:`ExecutorConfig`):

- ``inprocess`` (default with one worker): one run after another in this process.
- ``processes`` (default with ``workers`` > 1): a pool of ``workers`` local processes
  (``spawn``), each with ``threads`` torch threads; a worker exits when its parent dies.
- ``ray``: one Ray task per run on the cluster at ``address`` (``None``: a local Ray
  instance with ``workers`` CPUs), at most ``workers`` in flight. Needs the ``ray``
  extra (``pip install forgetlab[ray]``); every node needs forgetlab installed and the
  store folder on a shared file system.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from forgetlab.errors import ConfigError, DivergedError, ForgetlabError

EXECUTORS = ("inprocess", "processes", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """How a sweep's runs are executed.

    Attributes:
        name: ``inprocess``, ``processes`` or ``ray``; ``None`` = ``processes`` when
            ``workers`` > 1, else ``inprocess``.
        workers: runs trained at the same time (``inprocess``: 1). For ``ray``, 0 = as
            many as the cluster schedules.
        threads: torch threads per run in a worker; 0 = CPU count / workers (at least 1).
            ``inprocess`` leaves this process's setting alone unless it is set.
        address: the Ray cluster (``ray`` only); ``None`` starts a local Ray instance.

    Example:
        >>> ExecutorConfig(workers=2).resolved_name
        'processes'
        >>> ExecutorConfig(name="inprocess", workers=2)
        Traceback (most recent call last):
        ...
        forgetlab.errors.ConfigError: The 'workers' parameter must be 1 with the inprocess executor. Got 2 instead. Use --executor processes (or leave --executor out) to train runs in parallel.
    """

    name: str | None = None
    workers: int = 1
    threads: int = 0
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and self.name not in EXECUTORS:
            from forgetlab.errors import unknown_name

            raise unknown_name("executor", self.name, EXECUTORS)
        if self.workers < (0 if self.name == "ray" else 1):
            bound = ">= 0" if self.name == "ray" else ">= 1"
            raise ConfigError(f"The 'workers' parameter must be {bound}. Got {self.workers} instead.")
        if self.threads < 0:
            raise ConfigError(f"The 'threads' parameter must be >= 0 (0 = automatic). Got {self.threads} instead.")
        if self.name == "inprocess" and self.workers != 1:
            raise ConfigError(
                f"The 'workers' parameter must be 1 with the inprocess executor. Got {self.workers} instead. "
                f"Use --executor processes (or leave --executor out) to train runs in parallel."
            )
        if self.address is not None and self.resolved_name != "ray":
            raise ConfigError(
                f"The 'address' parameter ({self.address!r}) is for the ray executor only. Add --executor ray."
            )

    @property
    def resolved_name(self) -> str:
        """The executor's name with ``None`` resolved."""
        if self.name is not None:
            return self.name
        return "processes" if self.workers > 1 else "inprocess"

    def threads_per_run(self) -> int:
        """Torch threads each run gets (``threads``, or CPU count / workers)."""
        if self.threads:
            return self.threads
        if not self.workers:
            return 1
        return max(1, (os.cpu_count() or 1) // self.workers)


@dataclass(frozen=True)
class RunJob:
    """One run to train, as plain values (it crosses process boundaries).

    Attributes:
        run_id: the run's key (the hash of ``config``).
        config: the resolved config as a dict (:meth:`RunConfig.to_dict`).
        run_dir: the run's folder (the driver created it and wrote its config).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir, download: where the dataset files are; whether to download them.
        start_from: a prefix checkpoint of another run, or ``None``.
        threads: torch threads for the run; 0 = leave the process's setting.
        progress: show step progress bars (in-process only).
        log: training logs to write into the run folder (``csv``, ``tensorboard``).
    """

    run_id: str
    config: dict[str, Any]
    run_dir: str
    device: str
    data_dir: str | None
    download: bool
    start_from: str | None
    threads: int = 0
    progress: bool = False
    log: tuple[str, ...] = ()


def run_job(job: RunJob) -> Any:
    """Train one job; return its :class:`~forgetlab.api.RunOutcome`, or a
    :class:`~forgetlab.api.RunFailure` for a run-specific failure (a diverged loss,
    an out-of-memory or any other error inside training). A :class:`ForgetlabError`
    (bad config, missing data, unwritable folder: the same for every run) propagates."""
    import torch

    from forgetlab.api import RunFailure, failure_reason, train_run
    from forgetlab.config import RunConfig
    from forgetlab.engine.device import resolve_device

    if job.threads:
        torch.set_num_threads(job.threads)
    config = RunConfig.from_dict(job.config)
    try:
        return train_run(
            config, Path(job.run_dir), device=resolve_device(job.device),
            data_dir=job.data_dir, download=job.download, progress=job.progress, start_from=job.start_from,
            log=job.log,
        )
    except DivergedError as exc:
        return RunFailure(job.run_id, config, str(exc), kind="diverged")
    except ForgetlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - one run's crash must not stop the sweep
        return RunFailure(job.run_id, config, failure_reason(exc), kind="error")


class Backend(Protocol):
    """What the scheduler needs from an executor."""

    def submit(self, job: RunJob) -> None: ...

    def next_done(self) -> tuple[RunJob, Any]:
        """Block until a submitted job is done; its job and outcome/failure."""
        ...

    @property
    def n_pending(self) -> int: ...

    def unfinished(self) -> list[RunJob]:
        """Submitted jobs without a result yet (running or queued)."""
        ...


class InProcessBackend:
    """Trains each job in this process when its result is asked for."""

    def __init__(self) -> None:
        self._queue: deque[RunJob] = deque()

    def submit(self, job: RunJob) -> None:
        self._queue.append(job)

    def next_done(self) -> tuple[RunJob, Any]:
        job = self._queue[0]
        outcome = run_job(job)
        self._queue.popleft()
        return job, outcome

    @property
    def n_pending(self) -> int:
        return len(self._queue)

    def unfinished(self) -> list[RunJob]:
        return list(self._queue)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # the sweep's process is gone (killed): stop training for nobody
        time.sleep(0.5)


def _worker_init(parent_pid: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


_POOLS: dict[tuple[int, int], ProcessPoolExecutor] = {}


def _pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """A process pool kept for the life of this process (workers import torch once)."""
    import multiprocessing

    key = (workers, threads)
    if key not in _POOLS:
        _POOLS[key] = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init, initargs=(os.getpid(), threads),
        )
    return _POOLS[key]


def shutdown_pools() -> None:
    """Stop every worker pool of this process (also done at exit)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=False, cancel_futures=True)


atexit.register(shutdown_pools)


class ProcessBackend:
    """Runs jobs on a pool of local worker processes."""

    def __init__(self, workers: int, threads: int) -> None:
        self._key = (workers, threads)
        self._pool = _pool(workers, threads)
        self._futures: dict[Future, RunJob] = {}

    def submit(self, job: RunJob) -> None:
        self._futures[self._pool.submit(run_job, job)] = job

    def next_done(self) -> tuple[RunJob, Any]:
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        future = next(iter(done))
        job = self._futures[future]
        try:
            outcome = future.result()
        except BrokenProcessPool:
            raise ForgetlabError(
                "A worker process died: killed, out of memory, or it could not start (a Python script that "
                "uses workers must start them under `if __name__ == \"__main__\":`). Finished runs are in the "
                "store; run the same command again to resume the others from their checkpoints."
            ) from None
        del self._futures[future]  # kept until here: a job that raised is still unfinished for the caller
        return job, outcome

    @property
    def n_pending(self) -> int:
        return len(self._futures)

    def cancel(self) -> None:
        """Stop every worker of this pool (the sweep stopped; their runs resume next time)."""
        pool = _POOLS.pop(self._key, None)
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()

    def unfinished(self) -> list[RunJob]:
        return list(self._futures.values())


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "The ray executor needs Ray, which is not installed. Install it with: pip install 'forgetlab[ray]'."
        ) from None
    return ray


class RayBackend:
    """Sends each job to a Ray cluster as one task (``num_cpus`` = its threads)."""

    def __init__(self, address: str | None, workers: int, threads: int, device: str) -> None:
        ray = self._ray = _ray()
        if not ray.is_initialized():
            if address is None:
                ray.init(num_cpus=workers * threads if workers else None, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                try:
                    ray.init(address=address, log_to_driver=False, configure_logging=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError(f"Cannot connect to the Ray cluster at {address!r}: {exc}".splitlines()[0]) from None
        self._remote = ray.remote(run_job).options(
            num_cpus=threads, num_gpus=1 if device == "cuda" else 0, max_retries=0
        )
        self._limit = workers
        self._waiting: deque[RunJob] = deque()
        self._refs: dict[Any, RunJob] = {}

    def _launch(self) -> None:
        while self._waiting and (not self._limit or len(self._refs) < self._limit):
            job = self._waiting.popleft()
            self._refs[self._remote.remote(job)] = job

    def submit(self, job: RunJob) -> None:
        self._waiting.append(job)
        self._launch()

    def next_done(self) -> tuple[RunJob, Any]:
        from forgetlab.api import RunFailure, failure_reason
        from forgetlab.config import RunConfig

        ray = self._ray
        (ref,), _ = ray.wait(list(self._refs), num_returns=1)
        job = self._refs[ref]
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the task raised, or its worker died (killed, out of memory)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ForgetlabError):
                raise cause from None
            outcome = RunFailure(job.run_id, RunConfig.from_dict(job.config), failure_reason(cause or exc))
        del self._refs[ref]  # kept until here: a job that raised is still unfinished for the caller
        self._launch()
        return job, outcome

    @property
    def n_pending(self) -> int:
        return len(self._refs) + len(self._waiting)

    def unfinished(self) -> list[RunJob]:
        return [*self._refs.values(), *self._waiting]

    def cancel(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)


@contextmanager
def open_backend(executor: ExecutorConfig, device: str) -> Iterator[Any]:
    """The backend of ``executor`` (Ray and process pools stay up for later sweeps)."""
    name = executor.resolved_name
    if name == "inprocess":
        yield InProcessBackend()
        return
    if name == "processes":
        backend: ProcessBackend | RayBackend = ProcessBackend(executor.workers, executor.threads_per_run())
    else:
        backend = RayBackend(executor.address, executor.workers, executor.threads_per_run(), device)
    try:
        yield backend
    except BaseException:
        backend.cancel()
        raise
