"""The result store: one SQLite database (WAL mode) plus a folder per run.

Layout under the store root::

    forgetlab.sqlite          runs, metrics, learning curves
    runs/<run_id>/config.json the resolved config
    runs/<run_id>/checkpoints/task-<i>.pt

Besides runs, the database holds ``reuse`` (a run that started from another run's
task-boundary checkpoint instead of training those tasks) and ``analyses`` (JSON
results of analyses such as the Anatomy sweeps, keyed by name + key).

A run is keyed by the hash of its resolved config (:meth:`RunConfig.run_id`).

Example:
    >>> import tempfile
    >>> store = ResultStore(tempfile.mkdtemp())
    >>> store.get("0123456789abcdef") is None
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetlab.errors import StoreError, disk_full_error, is_disk_full

DATABASE_NAME = "forgetlab.sqlite"
_ELSEWHERE = "Free space, or choose another store with --store or FORGETLAB_STORE."

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    created REAL NOT NULL,
    finished REAL,
    device TEXT,
    wall_seconds REAL,
    train_seconds REAL,
    peak_memory_bytes INTEGER,
    accuracy_matrix TEXT,
    initial_accuracy TEXT,
    error TEXT,
    version TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    point INTEGER NOT NULL,
    task_index INTEGER NOT NULL,
    epoch REAL NOT NULL,
    step INTEGER NOT NULL,
    eval_task INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    PRIMARY KEY (run_id, point, eval_task)
);
CREATE TABLE IF NOT EXISTS reuse (
    run_id TEXT PRIMARY KEY,
    source_checkpoint TEXT NOT NULL,
    n_tasks INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS analyses (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (name, key)
);
"""


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of a run folder (its ``.lock`` file, ``flock``): a second process
    training the same run waits here until the first is done, then finds its checkpoints.
    Without ``fcntl`` (Windows) there is no lock; on a network file system it holds only
    where the file system supports ``flock``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a+")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise StoreError(f"Cannot lock run folder {str(folder)!r}: {exc.strerror or exc}.") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()  # releases the lock


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex (checkpoint content hashes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_unwritable(message: str) -> bool:
    return any(text in message for text in ("unable to open database file", "readonly database", "read-only"))


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``); ``immutable=1`` when the folder cannot even
    hold WAL's shared-memory file (a read-only file system: nobody writes it meanwhile)."""
    uri = path.absolute().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0, isolation_level=None)
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=60.0, isolation_level=None)


def default_store_dir() -> Path:
    """``$FORGETLAB_STORE`` if set, else ``./forgetlab-results``."""
    return Path(os.environ.get("FORGETLAB_STORE") or "forgetlab-results")


@dataclass(frozen=True)
class StoredRun:
    """One row of the ``runs`` table, decoded."""

    run_id: str
    config: dict[str, Any]
    status: str
    device: str | None
    wall_seconds: float | None
    train_seconds: float | None
    peak_memory_bytes: int | None
    accuracy_matrix: list[list[float]] | None
    initial_accuracy: list[float] | None
    metrics: dict[str, float]
    curves: list[dict[str, Any]]
    error: str | None
    created: float | None = None


class ResultStore:
    """Runs, metrics and curves in SQLite; checkpoints in per-run folders."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / DATABASE_NAME
        self.read_only = False  # a store we cannot write is opened read-only: reading results still works
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / "runs").mkdir(exist_ok=True)
        except OSError as exc:
            if not self.path.is_file():
                raise StoreError(
                    f"Cannot create the result store folder {str(self.root)!r}: {exc.strerror or exc}. "
                    f"Choose another with --store or FORGETLAB_STORE."
                ) from None
            self.read_only = True
        if self.path.is_file() and self.path.stat().st_size == 0 and any((self.root / "runs").glob("*/config.json")):
            raise StoreError(
                f"The result store database {str(self.path)!r} is empty, but the store holds run folders: it was "
                "emptied or truncated. Restore it from a backup, or move it aside to rebuild a store from the folders."
            )
        if self.path.is_file() and not (os.access(self.path, os.W_OK) and os.access(self.root, os.W_OK)):
            self.read_only = True
        if not self.read_only:
            try:
                with self._connect() as db:
                    db.executescript(SCHEMA)
            except StoreError as exc:
                if not (self.path.is_file() and _is_unwritable(str(exc))):
                    raise
                self.read_only = True

    @contextmanager
    def _connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        if write and self.read_only:
            raise StoreError(
                f"The result store {str(self.root)!r} is read-only: it can be read, not written. "
                "Choose a writable one with --store or FORGETLAB_STORE."
            )
        try:
            if self.read_only:
                db = _connect_read_only(self.path)
            else:
                db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the result store {str(self.path)!r}: {exc}.") from None
        try:
            if not self.read_only:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                raise disk_full_error("the result store", self.path, exc, _ELSEWHERE) from None
            raise StoreError(f"Result store {str(self.path)!r} failed: {exc}.") from None
        finally:
            db.close()

    def run_dir(self, run_id: str) -> Path:
        """The run's folder (created if needed)."""
        path = self.root / "runs" / run_id
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error("run folder", path, exc, _ELSEWHERE) from None
            raise StoreError(f"Cannot create run folder {str(path)!r}: {exc.strerror or exc}.") from None
        return path

    def begin(self, run_id: str, config: dict[str, Any], version: str) -> Path:
        """Mark a run as running (keeping any checkpoints), write its config; return its folder."""
        folder = self.run_dir(run_id)
        try:
            (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error("run folder", folder, exc, _ELSEWHERE) from None
            raise StoreError(f"Cannot write to run folder {str(folder)!r}: {exc.strerror or exc}.") from None
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (run_id, config, status, created, version) VALUES (?, ?, 'running', ?, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET status='running', error=NULL",
                (run_id, json.dumps(config, sort_keys=True), time.time(), version),
            )
        return folder

    def finish(
        self,
        run_id: str,
        *,
        accuracy_matrix: list[list[float]],
        initial_accuracy: list[float],
        metrics: dict[str, float],
        curves: list[dict[str, Any]],
        device: str,
        wall_seconds: float,
        train_seconds: float,
        peak_memory_bytes: int | None,
    ) -> None:
        """Record a finished run with its metrics and curves, in one transaction."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE runs SET status='finished', finished=?, device=?, wall_seconds=?, train_seconds=?, "
                "peak_memory_bytes=?, accuracy_matrix=?, initial_accuracy=?, error=NULL WHERE run_id=?",
                (time.time(), device, wall_seconds, train_seconds, peak_memory_bytes,
                 json.dumps(accuracy_matrix), json.dumps(initial_accuracy), run_id),
            )
            db.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                [(run_id, name, float(value)) for name, value in metrics.items()],
            )
            db.execute("DELETE FROM checkpoints WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT INTO checkpoints (run_id, name, sha256) VALUES (?, ?, ?)",
                [(run_id, p.name[: -len(".sha256")], p.read_text().strip())
                 for p in (self.root / "runs" / run_id / "checkpoints").glob("task-*.pt.sha256")],
            )
            db.execute("DELETE FROM curves WHERE run_id=?", (run_id,))
            db.executemany(
                "INSERT INTO curves (run_id, point, task_index, epoch, step, eval_task, accuracy) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, point, c["task_index"], c["epoch"], c["step"], eval_task, accuracy)
                    for point, c in enumerate(curves)
                    for eval_task, accuracy in enumerate(c["accuracies"])
                ],
            )
            db.execute("COMMIT")

    def fail(self, run_id: str, reason: str) -> None:
        """Mark a run as failed with its reason (its checkpoints stay for a resume)."""
        with self._connect() as db:
            db.execute("UPDATE runs SET status='failed', finished=?, error=? WHERE run_id=?", (time.time(), reason, run_id))

    def get(self, run_id: str) -> StoredRun | None:
        """The stored run, or ``None`` if the store has never seen it."""
        with self._connect(write=False) as db:
            row = db.execute(
                "SELECT run_id, config, status, device, wall_seconds, train_seconds, peak_memory_bytes, "
                "accuracy_matrix, initial_accuracy, error, created FROM runs WHERE run_id=?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            metrics = dict(db.execute("SELECT name, value FROM metrics WHERE run_id=?", (run_id,)).fetchall())
            rows = db.execute(
                "SELECT point, task_index, epoch, step, eval_task, accuracy FROM curves WHERE run_id=? "
                "ORDER BY point, eval_task",
                (run_id,),
            ).fetchall()
        curves: list[dict[str, Any]] = []
        for point, task_index, epoch, step, _, accuracy in rows:
            if len(curves) <= point:
                curves.append({"task_index": task_index, "epoch": epoch, "step": step, "accuracies": []})
            curves[point]["accuracies"].append(accuracy)
        return StoredRun(
            run_id=row[0],
            config=self._json(row[1], f"run {row[0]}'s config"),
            status=row[2],
            device=row[3],
            wall_seconds=row[4],
            train_seconds=row[5],
            peak_memory_bytes=row[6],
            accuracy_matrix=self._json(row[7], f"run {row[0]}'s accuracy_matrix") if row[7] else None,
            initial_accuracy=self._json(row[8], f"run {row[0]}'s initial_accuracy") if row[8] else None,
            metrics=metrics,
            curves=curves,
            error=row[9],
            created=row[10],
        )

    def list_runs(self) -> list[tuple[str, str]]:
        """``(run_id, status)`` of every run, oldest first."""
        with self._connect(write=False) as db:
            return db.execute("SELECT run_id, status FROM runs ORDER BY created").fetchall()

    def record_reuse(self, run_id: str, source_checkpoint: str, n_tasks: int) -> None:
        """Note that ``run_id`` adopted its first ``n_tasks`` tasks from ``source_checkpoint``."""
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO reuse (run_id, source_checkpoint, n_tasks, created) VALUES (?, ?, ?, ?)",
                (run_id, source_checkpoint, n_tasks, time.time()),
            )

    def reuse_source(self, run_id: str) -> tuple[str, int] | None:
        """``(source checkpoint, n_tasks adopted)`` if ``run_id`` reused a prefix, else ``None``."""
        with self._connect(write=False) as db:
            row = db.execute("SELECT source_checkpoint, n_tasks FROM reuse WHERE run_id=?", (run_id,)).fetchone()
        return (row[0], int(row[1])) if row else None

    def put_analysis(self, name: str, key: str, value: Any) -> None:
        """Store an analysis result (JSON-serialisable) under ``(name, key)``, replacing any."""
        text = json.dumps(value, sort_keys=True)
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO analyses (name, key, value, created) VALUES (?, ?, ?, ?)",
                (name, key, text, time.time()),
            )

    def get_analysis(self, name: str, key: str) -> Any | None:
        """The stored analysis result, or ``None``."""
        with self._connect(write=False) as db:
            row = db.execute("SELECT value FROM analyses WHERE name=? AND key=?", (name, key)).fetchone()
        return self._json(row[0], f"analysis {name}/{key}") if row else None

    def list_analyses(self, prefix: str = "") -> list[tuple[str, str, Any]]:
        """``(name, key, value)`` of every stored analysis whose name starts with ``prefix``, oldest first."""
        with self._connect(write=False) as db:
            rows = db.execute(
                "SELECT name, key, value FROM analyses WHERE name LIKE ? ORDER BY created", (prefix + "%",)
            ).fetchall()
        return [(name, key, self._json(value, f"analysis {name}/{key}")) for name, key, value in rows]

    def _json(self, text: str, what: str) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"Result store {str(self.path)!r}: {what} is not valid JSON ({exc}); the database was edited or "
                "damaged. `forgetlab store check` lists what else is wrong."
            ) from None

    def check(self) -> list[str]:
        """Inconsistencies, one line each (empty: none): a finished run whose stored metrics
        differ from those of its ``R``, a row that is not valid JSON, a run row without a
        folder or a folder without a row, a checkpoint whose bytes differ from the hash
        recorded with it (``task-i.pt.sha256``, and in the database once the run finished).

        Example:
            >>> import tempfile
            >>> ResultStore(tempfile.mkdtemp()).check()
            []
        """
        import numpy as np

        from forgetlab.metrics import summary

        problems = []
        ids = [run_id for run_id, _ in self.list_runs()]
        for run_id in ids:
            try:
                run = self.get(run_id)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if run is not None and run.status == "finished" and run.accuracy_matrix is not None:
                expected = summary(np.array(run.accuracy_matrix))
                for name, value in expected.items():
                    if name in run.metrics and not np.isclose(run.metrics[name], value, rtol=0, atol=1e-9):
                        problems.append(f"run {run_id}: stored {name} {run.metrics[name]!r} differs from its R's {value!r}")
            if not (self.root / "runs" / run_id).is_dir():
                problems.append(f"run {run_id}: has a row but no folder {str(self.root / 'runs' / run_id)!r}")
        folders = sorted(p.name for p in (self.root / "runs").iterdir() if p.is_dir()) if (self.root / "runs").is_dir() else []
        problems += [f"run folder {str(self.root / 'runs' / name)!r} has no row in the database" for name in folders if name not in ids]
        with self._connect(write=False) as db:
            recorded = {(r, n): h for r, n, h in db.execute("SELECT run_id, name, sha256 FROM checkpoints").fetchall()}
        for run_id in folders:
            for path in sorted((self.root / "runs" / run_id / "checkpoints").glob("task-*.pt")):
                actual = file_sha256(path)
                sidecar = path.with_name(path.name + ".sha256")
                written = sidecar.read_text().strip() if sidecar.is_file() else None
                for source, value in ((sidecar.name, written), ("the database", recorded.get((run_id, path.name)))):
                    if value is not None and value != actual:
                        problems.append(f"checkpoint {str(path)!r} differs from the hash recorded in {source}")
        return problems
