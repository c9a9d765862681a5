"""The result store: SQLite (runs, metrics, curves) + run folders (config, checkpoints)."""

from forgetlab.store.sqlite import ResultStore, StoredRun, default_store_dir, file_sha256, run_lock

__all__ = ["ResultStore", "StoredRun", "default_store_dir", "file_sha256", "run_lock"]
