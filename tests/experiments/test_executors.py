"""Sweep executors: in-process, local worker processes, Ray; failures; one store writer."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from forgetlab.api import RunFailure, RunResult
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.errors import ConfigError, DataError, ForgetlabError
from forgetlab.experiments import ExecutorConfig, execute, expand, require_finished
from forgetlab.resolve import resolve
from forgetlab.store import ResultStore

BASE = apply_overrides(RunConfig(), ["train.epochs=1", "stream.train_per_task=120"])
DIVERGING = apply_overrides(BASE, ["train.lr=1e10", "train.batch_size=16"])


def _sweep() -> list[RunConfig]:
    return expand(BASE, {"method.name": ["naive", "si"], "train.seed": [0, 1]})


def _integrity(store: ResultStore) -> str:
    with sqlite3.connect(store.path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture(scope="module")
def inprocess_reference(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("reference"))
    return execute(_sweep(), store)


def test_worker_processes_give_the_in_process_results(tmp_path, inprocess_reference):
    store = ResultStore(tmp_path)
    results = execute(_sweep(), store, executor=ExecutorConfig(workers=2, threads=1))
    assert all(isinstance(r, RunResult) and not r.from_store for r in results)
    for ours, reference in zip(results, inprocess_reference):
        assert ours.run_id == reference.run_id
        np.testing.assert_array_equal(ours.accuracy_matrix, reference.accuracy_matrix)
    for result in results:
        stored = store.get(result.run_id)
        assert stored.status == "finished" and stored.device == "cpu"
        assert stored.wall_seconds > 0 and stored.peak_memory_bytes > 10 * 2**20  # torch alone is more
    assert _integrity(store) == "ok"
    again = execute(_sweep(), store, executor=ExecutorConfig(workers=2, threads=1))
    assert all(r.from_store for r in again)


@pytest.mark.parametrize("executor", [ExecutorConfig(), ExecutorConfig(workers=2, threads=1)], ids=["inprocess", "processes"])
def test_a_diverging_run_is_marked_failed_and_the_sweep_goes_on(tmp_path, executor):
    store = ResultStore(tmp_path)
    configs = [BASE, DIVERGING, apply_overrides(BASE, ["train.seed=1"])]
    results = execute(configs, store, executor=executor)
    assert isinstance(results[0], RunResult) and isinstance(results[2], RunResult)
    failure = results[1]
    assert isinstance(failure, RunFailure) and failure.kind == "diverged"
    stored = store.get(failure.run_id)
    assert stored.status == "failed" and "loss is nan" in stored.error and stored.error == failure.error
    with pytest.raises(ForgetlabError, match=r"1 of 3 runs failed; run [0-9a-f]{16}: Training diverged"):
        require_finished(results)


def test_prefix_reuse_with_workers(tmp_path):
    store = ResultStore(tmp_path)
    configs = expand(BASE, {"method.name": ["freeze"], "method.n_blocks": [0, 1]})
    results = execute(configs, store, executor=ExecutorConfig(workers=2, threads=1))
    naive_id = resolve(BASE).run_id()
    assert store.get(naive_id).status == "finished"  # the source was trained first
    for result in results:
        source, n_tasks = store.reuse_source(result.run_id)
        assert naive_id in source and n_tasks == 1


def test_a_mistake_common_to_every_run_raises_from_a_worker(tmp_path):
    config = apply_overrides(BASE, ["stream.dataset=mnist"])
    with pytest.raises(DataError, match="mnist"):
        execute([config], ResultStore(tmp_path), executor=ExecutorConfig(workers=2, threads=1),
                data_dir=tmp_path / "no-data-here")
    assert ResultStore(tmp_path).get(resolve(config).run_id()).status == "failed"


def test_duplicate_configs_run_once(tmp_path):
    store = ResultStore(tmp_path)
    first, second = execute([BASE, BASE], store)
    assert first is second and len(store.list_runs()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "threads"}, "Unknown executor 'threads'"),
        ({"workers": 0}, "'workers' parameter must be >= 1"),
        ({"name": "inprocess", "workers": 2}, "must be 1 with the inprocess executor"),
        ({"threads": -1}, "'threads' parameter must be >= 0"),
        ({"address": "ray://head:10001"}, "is for the ray executor only"),
    ],
)
def test_executor_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig(**kwargs)


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"pip install 'forgetlab\[ray\]'"):
        execute([BASE], ResultStore(tmp_path), executor=ExecutorConfig(name="ray"))


def test_ray_executor_on_a_local_instance(tmp_path, inprocess_reference):
    ray = pytest.importorskip("ray", reason="the ray extra is installed by .ci/run; this test runs there")
    store = ResultStore(tmp_path)
    try:
        configs = [*_sweep(), DIVERGING]
        results = execute(configs, store, executor=ExecutorConfig(name="ray", workers=2, threads=1))
        assert not ray.is_initialized()  # the sweep started the local Ray instance: it shut it down
    finally:
        ray.shutdown()
    for ours, reference in zip(results, inprocess_reference):
        np.testing.assert_array_equal(ours.accuracy_matrix, reference.accuracy_matrix)
    assert isinstance(results[-1], RunFailure) and "loss is nan" in results[-1].error
    assert store.get(results[0].run_id).device == "cpu" and _integrity(store) == "ok"


def test_sigterm_stops_a_sweep_like_ctrl_c_and_restores_the_handler(tmp_path):
    """SIGTERM while a sweep runs raises SystemExit(143): the runs it leaves are marked
    failed, and a sweep that started Ray or workers shuts them down (the same path)."""
    import os
    import signal

    from forgetlab.experiments.executors import sigterm_as_exit

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("a SIGTERM handler is installed (it is kept)")
    store = ResultStore(tmp_path)
    configs = expand(BASE, {"train.seed": [0, 1, 2]})
    with pytest.raises(SystemExit) as stopped:
        execute(configs, store, on_done=lambda result: os.kill(os.getpid(), signal.SIGTERM))
    assert stopped.value.code == 143
    rows = [store.get(resolve(c).run_id()) for c in configs]
    assert [(r.status, r.error) for r in rows] == [("finished", None), *[("failed", "terminated (SIGTERM)")] * 2]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with sigterm_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL


def test_sweep_command(tmp_path, capsys):
    import json

    from forgetlab.cli import main

    argv = ["sweep", "--epochs", "1", "--set", "stream.train_per_task=120", "--set", "train.batch_size=16",
            "--grid", "train.lr=0.05,1e10", "--grid", "train.seed=0,1", "--workers", "2", "--threads", "1",
            "--store", str(tmp_path), "--json", "--quiet"]
    assert main(argv) == 1  # the lr=1e10 runs diverge
    out, err = capsys.readouterr()
    assert main(argv[:-1]) == 1  # without --quiet (and no terminal): one log line per run trained now
    logged = capsys.readouterr().err
    assert logged.count(" failed: Training diverged") == 2 and " done: ACC " not in logged  # finished: stored
    entries = json.loads(out)  # with --json, stdout is one JSON array and nothing else
    assert [(e["train.lr"], e["train.seed"], e["status"]) for e in entries] == [
        (0.05, 0, "finished"), (0.05, 1, "finished"), (1e10, 0, "failed"), (1e10, 1, "failed")]
    assert "4 runs (2 failed) on the processes executor" in err
    assert err.count("loss is nan") == 2
    store = ResultStore(tmp_path)
    assert sorted(status for _, status in store.list_runs()) == ["failed", "failed", "finished", "finished"]
    assert main(argv) == 1  # again: the finished runs are read back, the failed ones are retried
    lines = [line for line in capsys.readouterr().err.splitlines() if line[:16].isalnum() and line[16:17] == " "]
    assert sum("stored" in line.split() for line in lines) == 2 and sum("failed" in line.split() for line in lines) == 2


def test_ctrl_c_marks_every_unfinished_run_interrupted_and_a_rerun_finishes(tmp_path, monkeypatch):
    import forgetlab.api

    real = forgetlab.api.train_run
    calls = []

    def interrupt_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(forgetlab.api, "train_run", interrupt_the_second)
    store = ResultStore(tmp_path)
    configs = expand(BASE, {"train.seed": [0, 1, 2]})
    with pytest.raises(KeyboardInterrupt):
        execute(configs, store)
    statuses = [store.get(resolve(c).run_id()) for c in configs]
    assert statuses[0].status == "finished"
    assert [(s.status, s.error) for s in statuses[1:]] == [("failed", "interrupted")] * 2
    monkeypatch.setattr(forgetlab.api, "train_run", real)
    results = execute(configs, store)
    assert results[0].from_store and not results[1].from_store and not results[2].from_store


def _worker_holding(lock) -> int | None:
    """The pid of this process's child that holds ``lock`` open (the run it trains), or None."""
    import os
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            for fd in (stat.parent / "fd").iterdir():
                if os.readlink(fd) == str(lock):
                    return int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="finds the worker through /proc")
def test_kill_9_of_one_worker_fails_only_its_run_and_a_rerun_retries_it(tmp_path):
    """kill -9 of the worker training one run (what the out-of-memory killer does) marks
    that run failed with the signal; a new worker takes its place and the other runs finish."""
    import os
    import signal
    import threading

    store = ResultStore(tmp_path)
    slow = apply_overrides(BASE, ["train.epochs=40"])  # long enough (about 0.5 s) to be caught training
    configs = [slow, *expand(BASE, {"train.seed": [1, 2]})]
    lock = store.run_dir(resolve(slow).run_id()) / ".lock"
    killed = []

    def kill_its_worker():
        for _ in range(6000):
            pid = _worker_holding(lock)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            threading.Event().wait(0.005)

    killer = threading.Thread(target=kill_its_worker)
    killer.start()
    results = execute(configs, store, executor=ExecutorConfig(workers=2, threads=1))
    killer.join()
    assert killed, "the slow run's worker was never seen"
    failure, *others = results
    assert isinstance(failure, RunFailure) and "killed by signal 9 (SIGKILL" in failure.error
    assert store.get(failure.run_id).status == "failed" and "signal 9" in store.get(failure.run_id).error
    assert all(isinstance(r, RunResult) for r in others)
    again = execute(configs, store, executor=ExecutorConfig(workers=2, threads=1))  # the failed run is retried
    assert isinstance(again[0], RunResult) and not again[0].from_store and all(r.from_store for r in again[1:])
