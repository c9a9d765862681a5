"""Files from outside are never trusted (issue 18): checkpoints that would run code, are
garbled, belong to another run, or are unreadable; through every entry point."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

import forgetlab
from forgetlab.cli import main
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.engine.checkpoint import CHECKPOINT_FORMAT, load_model
from forgetlab.errors import DataError
from forgetlab.resolve import resolve

TINY = ["stream.train_per_task=60", "train.steps=2", "model.width=32"]


class _WritesMarker:
    """Unpickling this object creates the file ``marker`` (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(path: Path, marker: Path) -> Path:
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "config": {}, "payload": _WritesMarker(marker)}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "marker"
    return _malicious(tmp_path / "evil.pt", marker), marker


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "cka", "{evil}", "{evil}"],
        ["diagnose", "{evil}", "{evil}", "--data", "{evil}.npz"],
        ["finetune", "{evil}", "--new-data", "{evil}.npz", "--out", "{evil}.out"],
    ],
    ids=["analyze", "diagnose", "finetune"],
)
def test_a_malicious_checkpoint_runs_no_code_through_the_cli(argv, evil, capsys):
    path, marker = evil
    assert main([a.format(evil=path) for a in argv]) == 2
    assert not marker.exists(), "unpickling ran code from the file"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pickled Python objects" in err


def test_a_malicious_checkpoint_runs_no_code_through_load_model(evil):
    path, marker = evil
    with pytest.raises(DataError, match="pickled Python objects"):
        load_model(path)
    assert not marker.exists()


def test_a_checkpoint_planted_in_a_run_folder_runs_no_code(tmp_path, one_torch_thread):
    config = resolve(apply_overrides(RunConfig(), TINY))
    folder = tmp_path / "store" / "runs" / config.run_id() / "checkpoints"
    folder.mkdir(parents=True)
    marker = tmp_path / "marker"
    _malicious(folder / "task-1.pt", marker)
    with pytest.warns(UserWarning, match="pickled Python objects.*Moved aside"):
        code = main(["run", "--store", str(tmp_path / "store"), "--quiet", *[a for kv in TINY for a in ("--set", kv)]])
    assert not marker.exists(), "unpickling ran code from the planted file"
    assert code == 0 and (folder / "task-1.pt.quarantined").is_file()  # quarantined; the run trained


def test_trust_pickle_is_explicit_and_warns(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.save(net, tmp_path / "whole.pt")
    assert main(["finetune", str(tmp_path / "whole.pt"), "--new-data", "x.npz", "--out", "o.pt"]) == 2
    with pytest.warns(UserWarning, match="trust_pickle"):
        model = forgetlab.user.load_user_model(tmp_path / "whole.pt", trust_pickle=True)
    assert model.n_outputs == 2


def _tiny(*extra: str):
    return resolve(apply_overrides(RunConfig(), [*TINY, *extra]))


def _train(config, folder):
    from forgetlab.api import train_run

    return train_run(config, folder, device=torch.device("cpu"))


def _garble(path: Path) -> None:
    """Overwrite 32 KB (or half the file) in the middle with other bytes of the same size."""
    data = bytearray(path.read_bytes())
    n = min(32768, len(data) // 2)
    start = (len(data) - n) // 2
    data[start : start + n] = bytes((b + 1) % 256 for b in data[start : start + n])
    path.write_bytes(bytes(data))


def test_a_garbled_checkpoint_is_refused_and_the_run_restarts_from_the_boundary_before(tmp_path, one_torch_thread):
    config = _tiny()
    straight = _train(config, tmp_path / "a")
    folder = tmp_path / "b"
    _train(config, folder)
    (folder / "checkpoints" / "task-2.pt").unlink()  # killed during task 2
    _garble(folder / "checkpoints" / "task-1.pt")
    with pytest.raises(DataError, match="task-1.pt' does not match the content hash"):
        load_model(folder / "checkpoints" / "task-1.pt")  # analyze, diagnose: refused
    with pytest.warns(UserWarning, match="task-1.pt.*content hash.*Moved aside"):
        resumed = _train(config, folder)
    assert resumed.accuracy_matrix == straight.accuracy_matrix  # trained again from the start
    assert (folder / "checkpoints" / "task-1.pt.quarantined").is_file()


def test_another_runs_checkpoint_is_not_taken_as_this_runs(tmp_path, one_torch_thread):
    seed_0, seed_3 = _tiny("train.seed=0"), _tiny("train.seed=3")
    _train(seed_0, tmp_path / "seed0")
    straight = _train(seed_3, tmp_path / "seed3-straight")
    folder = tmp_path / "seed3" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("task-1.pt", "task-1.pt.sha256"):  # copied with its own (valid) hash
        shutil.copy(tmp_path / "seed0" / "checkpoints" / name, folder / name)
    with pytest.warns(UserWarning, match="belongs to another run"):
        result = _train(seed_3, tmp_path / "seed3")
    assert result.accuracy_matrix == straight.accuracy_matrix


def test_a_truncated_checkpoint_does_not_stop_the_sweep(tmp_path, one_torch_thread):
    from forgetlab.experiments import execute, expand
    from forgetlab.store import ResultStore

    configs = expand(apply_overrides(RunConfig(), TINY), {"train.seed": [0, 1]})
    reference = execute(configs, ResultStore(tmp_path / "reference"), device="cpu")
    store = ResultStore(tmp_path / "store")
    bad = store.run_dir(reference[0].run_id) / "checkpoints" / "task-1.pt"
    _train(reference[0].config, bad.parent.parent)
    bad.with_name("task-2.pt").unlink()
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.warns(UserWarning, match="task-1.pt"):
        results = execute(configs, store, device="cpu")
    assert [r.accuracy_matrix.tolist() for r in results] == [r.accuracy_matrix.tolist() for r in reference]
    assert bad.with_name("task-1.pt.quarantined").is_file()


def test_a_checkpoint_without_config_is_a_one_line_error(tmp_path, capsys):
    config = _tiny()
    _train(config, tmp_path)
    path = tmp_path / "checkpoints" / "task-1.pt"
    payload = torch.load(path, weights_only=True)
    del payload["config"]
    torch.save(payload, tmp_path / "noconfig.pt")
    with pytest.raises(DataError, match="has no 'config' entry"):
        load_model(tmp_path / "noconfig.pt")
    assert main(["analyze", "cka", str(tmp_path / "noconfig.pt"), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'config'" in err


def test_two_trainings_of_one_run_do_not_delete_each_others_files(tmp_path, monkeypatch, one_torch_thread):
    """While A writes its first checkpoint, B starts the same run in the same folder: B waits
    for A's lock (it used to delete A's in-flight temporary file), then reads A's result."""
    import threading

    import forgetlab.engine.checkpoint as checkpoint_module

    config = _tiny()
    _train(config, tmp_path / "warm-up")  # data loaded: B reaches its start quickly
    writing, release = threading.Event(), threading.Event()
    real_save = torch.save

    def slow_save(payload, handle):
        real_save(payload, handle)
        if threading.current_thread().name == "A" and not writing.is_set():
            writing.set()
            release.wait(10)

    monkeypatch.setattr(checkpoint_module.torch, "save", slow_save)
    results: dict[str, object] = {}

    def train(name):
        try:
            results[name] = _train(config, tmp_path / "run")
        except Exception as exc:  # noqa: BLE001 - reported by the asserts
            results[name] = exc

    a = threading.Thread(target=train, args=("A",), name="A")
    a.start()
    assert writing.wait(30)
    b = threading.Thread(target=train, args=("B",), name="B")
    b.start()
    folder = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 1.0
    while list(folder.glob("*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    a.join(60)
    b.join(60)
    assert not isinstance(results["A"], Exception), results["A"]
    assert not isinstance(results["B"], Exception), results["B"]
    assert results["B"].accuracy_matrix == results["A"].accuracy_matrix
    assert results["B"].curves == results["A"].curves  # read back, not trained again
