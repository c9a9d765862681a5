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
