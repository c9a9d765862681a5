"""Files from outside are never trusted (issue 18): checkpoints that would run code, are
garbled, belong to another run, or are unreadable; through every entry point."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import forgetlab
from forgetlab.cli import main
from forgetlab.config import RunConfig, apply_overrides
from forgetlab.engine.checkpoint import CHECKPOINT_FORMAT, load_model
from forgetlab.errors import DataError
from forgetlab.resolve import resolve

TINY = ["stream.train_per_task=60", "train.steps=2"]


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


def test_a_checkpoint_planted_in_a_run_folder_runs_no_code(tmp_path, capsys):
    config = resolve(apply_overrides(RunConfig(), TINY))
    folder = tmp_path / "store" / "runs" / config.run_id() / "checkpoints"
    folder.mkdir(parents=True)
    marker = tmp_path / "marker"
    _malicious(folder / "task-1.pt", marker)
    main(["run", "--store", str(tmp_path / "store"), "--quiet", *[a for kv in TINY for a in ("--set", kv)]])
    assert not marker.exists(), "unpickling ran code from the planted file"


def test_trust_pickle_is_explicit_and_warns(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    torch.save(net, tmp_path / "whole.pt")
    assert main(["finetune", str(tmp_path / "whole.pt"), "--new-data", "x.npz", "--out", "o.pt"]) == 2
    with pytest.warns(UserWarning, match="trust_pickle"):
        model = forgetlab.user.load_user_model(tmp_path / "whole.pt", trust_pickle=True)
    assert model.n_outputs == 2
