from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from forgetlab.cli import main

NET = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width=16):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, width), nn.ReLU())
            self.skip = nn.Linear(width, width)
            self.out = nn.Linear(width, 4)

        def forward(self, x):
            h = self.body(x)
            return self.out(h + torch.relu(self.skip(h)))
""")


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    (tmp_path / "clinet.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import clinet

    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    y_old = np.arange(60) % 2
    x_old = generator.normal(size=(60, 6)).astype(np.float32)
    x_old[:, 0] += 2 * y_old
    x_new = generator.normal(size=(60, 6)).astype(np.float32)
    y_new = 2 + np.arange(60) % 2
    x_new[:, 1] += 2 * (y_new - 2)
    np.savez(tmp_path / "old.npz", x=x_old, y=y_old)
    with open(tmp_path / "new.csv", "w") as handle:
        handle.write(",".join([f"f{i}" for i in range(6)] + ["label"]) + "\n")
        for row, label in zip(x_new, y_new):
            handle.write(",".join([f"{v:.5f}" for v in row] + [str(label)]) + "\n")
    net = clinet.Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(x_old)), torch.from_numpy(y_old)).backward()
        optimizer.step()
    torch.save(net.state_dict(), tmp_path / "old.pt")
    yield tmp_path
    sys.modules.pop("clinet", None)


def test_finetune_then_diagnose(workdir, capsys):
    code = main([
        "finetune", "old.pt", "--model-class", "clinet:Net", "--new-data", "new.csv", "--old-data", "old.npz",
        "--method", "ewc", "--set", "lam=100", "--set", "fisher_samples=20", "--epochs", "2", "--out", "tuned.pt", "--json",
    ])
    captured = capsys.readouterr()
    out = captured.err  # with --json the report goes to stderr, stdout is the JSON alone
    assert code == 0, out
    assert "method ewc: lam=100.0" in out and "old task" in out and "saved:" in out
    summary = json.loads(captured.out)
    assert summary["method"] == "ewc" and set(summary["after"]) == {"old_accuracy", "new_accuracy", "all_accuracy", "revision_agreement"}
    meta = json.loads((workdir / "tuned.pt.json").read_text())
    assert meta["model_class"] == "clinet:Net" and meta["blocks"] == ["body", "skip", "out"]

    code = main([
        "diagnose", "old.pt", "tuned.pt", "--model-class", "clinet:Net", "--data", "old.npz", "--new-data", "new.csv",
        "--k", "3", "--report", "report", "--json",
    ])
    captured = capsys.readouterr()
    out = captured.err
    assert code == 0, out
    assert "weight change" in out and "skip" in out and (workdir / "report" / "report.html").is_file()
    result = json.loads(captured.out)
    assert [b["block"] for b in result["blocks"]] == ["body", "skip", "out"]


def test_cli_errors_are_one_line(workdir, capsys):
    state = torch.load(workdir / "old.pt", weights_only=True)
    state["out.weight"] = torch.zeros(3, 16)
    torch.save(state, workdir / "bad.pt")
    code = main(["diagnose", "old.pt", "bad.pt", "--model-class", "clinet:Net", "--data", "old.npz"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert r"out.weight: checkpoint (3, 16) vs model (4, 16)" in err
    code = main(["finetune", "old.pt", "--new-data", "new.csv", "--out", "x.pt"])
    err = capsys.readouterr().err
    assert code == 2 and "--model-class" in err
    code = main(["finetune", "old.pt", "--model-class", "clinet:Net", "--new-data", "old.npz", "--set", "lam", "--out", "x.pt"])
    assert code == 2 and "KEY=VALUE" in capsys.readouterr().err
    np.savez(workdir / "wide.npz", x=np.zeros((4, 7), np.float32), y=np.zeros(4, int))
    code = main(["finetune", "old.pt", "--model-class", "clinet:Net", "--new-data", "wide.npz", "--out", "x.pt"])
    err = capsys.readouterr().err
    assert code == 2 and "wide.npz: inputs of shape (7,) do not fit the model" in err


def test_finetune_adds_classes_then_diagnose_compares_the_grown_model(workdir, capsys):
    generator = np.random.default_rng(1)
    y_added = 4 + np.arange(60) % 2  # beyond the 4 outputs of the model: new classes
    x_added = generator.normal(size=(60, 6)).astype(np.float32)
    x_added[:, 2] += 2 * (y_added - 4)
    np.savez(workdir / "added.npz", x=x_added, y=y_added)
    code = main(["finetune", "old.pt", "--model-class", "clinet:Net", "--new-data", "added.npz", "--old-data", "old.npz",
                 "--method", "naive", "--epochs", "2", "--out", "grown.pt", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    conclusion = summary["conclusion"]
    assert conclusion.startswith("Fine-tuned with naive (head grown from 4 to 6 outputs): the new task went")
    assert "n = 12 held-out examples of added.npz" in conclusion and "n = 12 held-out examples of old.npz" in conclusion
    assert captured.err.startswith("Conclusion: Fine-tuned with naive")

    code = main(["diagnose", "old.pt", "grown.pt", "--model-class", "clinet:Net", "--data", "old.npz",
                 "--new-data", "added.npz", "--k", "2", "--max-samples", "10", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["sources"] == {"data": "old.npz", "new_data": "added.npz", "old_model": "old.pt", "new_model": "grown.pt"}
    assert result["n_examples"] == {"old_task": 60, "new_task": 60} and result["n_samples"] == 10
    assert list(result["skipped"]) == ["out"] and all("out" not in r["blocks"] for r in result["resets"])
    assert result["new_task"]["old"] == 0.0  # a 4-output model never predicts 4 or 5
    assert result["conclusion"].startswith("NEW ") and "n = 60" in result["conclusion"]
    lines = captured.err.splitlines()
    assert lines[0] == "OLD = old.pt; NEW = grown.pt" and lines[1].startswith("Conclusion: NEW ")
    assert "old-task accuracy (old.npz, n = 60)" in captured.err and "new-task accuracy (added.npz, n = 60)" in captured.err
