"""Where a sweep's runs train: in this process, in local worker processes, or on Ray.

:func:`forgetlab.experiments.execute` schedules; an executor only trains. Every run is a
:class:`RunJob` (plain values) handed to :func:`run_job`, which trains it with
:func:`forgetlab.api.train_run` and returns a :class:`~forgetlab.api.RunOutcome` or a
:class:`~forgetlab.api.RunFailure`. Workers write only their run's checkpoint files;
the process that called ``execute`` is the only one that writes the store's database,
so concurrent runs can never corrupt it.

Executors (:class:`ExecutorConfig`):

- ``inprocess`` (default with one worker): one run after another in this process.
- ``processes`` (default with ``workers`` > 1): ``workers`` local processes (``spawn``),
  each with ``threads`` torch threads, kept for later sweeps; a worker exits when its
  parent dies; a worker that dies (``kill -9``, out of memory) fails only the run it
  trained, with the signal as the reason, and a new worker replaces it.
- ``ray``: one Ray task per run on the cluster at ``address`` (``None``: a local Ray
  instance with ``workers`` CPUs, shut down when the sweep ends: call ``ray.init()``
  first to keep one for several sweeps), at most ``workers`` in flight. Needs the ``ray`` extra (``pip install forgetlab[ray]``); every node needs
  forgetlab installed and the store folder on a shared file system.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
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


_READY = "ready"  # a worker's first message: it started (imported torch and forgetlab)


def _worker_main(conn: Any, parent_pid: int, threads: int) -> None:
    """A worker process: train the jobs that arrive on ``conn``, one at a time, and send
    back ``(True, outcome)`` or ``(False, exception)``; stop at ``None`` or when the pipe closes."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the sweep's process decides
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    conn.send(_READY)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            reply: tuple[bool, Any] = (True, run_job(job))
        except BaseException as exc:  # noqa: BLE001 - sent to the sweep's process, which raises it
            reply = (False, exc)
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an exception that cannot be pickled
            conn.send((False, ForgetlabError(f"Run {job.run_id} failed in a worker: {type(exc).__name__}: {exc}")))


class _Worker:
    """One worker process, the pipe it takes jobs on, and the job it trains (``None``: idle)."""

    def __init__(self, threads: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, os.getpid(), threads), daemon=True,
                                       name="forgetlab-worker")
        self.process.start()
        child.close()
        self.ready = False
        self.job: RunJob | None = None

    def stop(self) -> None:
        """End the process: an idle one exits by itself (its resources released), a busy one is terminated."""
        if self.job is None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()


def death_reason(exitcode: int | None) -> str:
    """Why a worker process ended, for the store's ``error`` column of the run it trained.

    Example:
        >>> death_reason(-9)
        'The worker process training this run was killed by signal 9 (SIGKILL; the out-of-memory killer sends it too).'
    """
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        oom = "; the out-of-memory killer sends it too" if -exitcode == signal.SIGKILL else ""
        return f"The worker process training this run was killed by signal {-exitcode} ({name}{oom})."
    return f"The worker process training this run exited with status {exitcode}."


_WORKER_START_FAILED = (
    "A worker process died before it could take a run: killed, out of memory, or it could not start (a Python "
    "script that uses workers must start them under `if __name__ == \"__main__\":`). Finished runs are in the "
    "store; run the same command again to resume the others from their checkpoints."
)

_POOLS: dict[tuple[int, int], list[_Worker]] = {}


def _pool(workers: int, threads: int) -> list[_Worker]:
    """The worker processes kept for the life of this process (workers import torch once)."""
    key = (workers, threads)
    if key not in _POOLS:
        _POOLS[key] = [_Worker(threads) for _ in range(workers)]
    return _POOLS[key]


def shutdown_pools() -> None:
    """Stop every worker process of this process (also done at exit)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        for worker in pool:
            worker.stop()


atexit.register(shutdown_pools)


class ProcessBackend:
    """Runs jobs on local worker processes, one job per worker at a time. A worker that
    dies (``kill -9``, the out-of-memory killer, a crash) fails only the run it trained,
    with the signal as its reason, and a new worker takes its place."""

    def __init__(self, workers: int, threads: int) -> None:
        self._key = (workers, threads)
        self._threads = threads
        self._workers = _pool(workers, threads)
        self._queue: deque[RunJob] = deque()

    def _launch(self) -> None:
        for worker in self._workers:
            if not self._queue:
                return
            if worker.job is None:
                worker.job = self._queue.popleft()
                try:
                    worker.conn.send(worker.job)
                except OSError:  # it died idle: its sentinel says so, and the job goes back to the queue
                    self._queue.appendleft(worker.job)
                    worker.job = None

    def submit(self, job: RunJob) -> None:
        self._queue.append(job)
        self._launch()

    def next_done(self) -> tuple[RunJob, Any]:
        from multiprocessing.connection import wait as wait_for

        while True:
            self._launch()
            ready = set(wait_for([w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]))
            for index, worker in enumerate(self._workers):
                if worker.conn in ready:
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        pass  # it died: below
                    else:
                        if isinstance(message, str):  # _READY
                            worker.ready = True
                            continue
                        job, (ok, value) = worker.job, message
                        if not ok:
                            raise value  # the job stays unfinished for the caller (it marks it failed)
                        worker.job = None
                        return job, value
                elif worker.process.sentinel not in ready:
                    continue
                worker.process.join()  # it died: a new worker takes its place, its run failed
                if not worker.ready:
                    raise ForgetlabError(_WORKER_START_FAILED)
                worker.conn.close()
                self._workers[index] = _Worker(self._threads)
                if worker.job is not None:
                    return worker.job, _failure(worker.job, death_reason(worker.process.exitcode))

    @property
    def n_pending(self) -> int:
        return len(self._queue) + sum(w.job is not None for w in self._workers)

    def cancel(self) -> None:
        """Stop every worker of this pool (the sweep stopped; their runs resume next time)."""
        if _POOLS.get(self._key) is self._workers:
            del _POOLS[self._key]
        for worker in self._workers:
            worker.stop()

    def unfinished(self) -> list[RunJob]:
        return [*(w.job for w in self._workers if w.job is not None), *self._queue]


def _failure(job: RunJob, reason: str) -> Any:
    from forgetlab.api import RunFailure
    from forgetlab.config import RunConfig

    return RunFailure(job.run_id, RunConfig.from_dict(job.config), reason)


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
        self._started = not ray.is_initialized()  # this backend calls ray.init: close() shuts Ray down again
        if self._started:
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

    def close(self) -> None:
        """Shut down the Ray instance this backend started (a local one stops its processes;
        for a cluster, this process disconnects); a Ray the caller started stays up."""
        if self._started:
            self._ray.shutdown()


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While inside, SIGTERM raises ``SystemExit(143)`` in this process (main thread only,
    and only if no other handler is installed), so that ``finally`` blocks and the store's
    failure marks run as on Ctrl-C; the default handler is restored after."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def open_backend(executor: ExecutorConfig, device: str) -> Iterator[Any]:
    """The backend of ``executor``. Worker processes stay up for later sweeps of this
    process; a Ray instance this call started is shut down when it ends, whatever ends it
    (done, an error, Ctrl-C, SIGTERM: :func:`sigterm_as_exit`)."""
    name = executor.resolved_name
    with sigterm_as_exit():
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
        finally:
            if isinstance(backend, RayBackend):
                backend.close()
