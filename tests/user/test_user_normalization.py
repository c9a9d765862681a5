"""forgetlab checkpoints carry their input normalisation; diagnose / finetune / analyze apply it
to raw inputs (uint8 pixels 0-255 or floats in [0, 1]) and say so (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import forgetlab
from forgetlab.api import build_stream_for
from forgetlab.cli import main
from forgetlab.engine import load_model
from forgetlab.errors import DataError
from forgetlab.user import diagnose, load_user_model, user_data


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-task digits run (multi-head, standard normalisation) and task 1's / task 2's test sets as raw uint8 files."""
    folder = tmp_path_factory.mktemp("norm")
    config = forgetlab.RunConfig(stream=forgetlab.StreamConfig(train_per_task=200), train=forgetlab.TrainConfig(epochs=2))
    result = forgetlab.run(config, store=folder / "store")
    stream = build_stream_for(result.config)
    for index, task in enumerate(stream.tasks):
        np.savez(folder / f"raw{index + 1}.npz", x=task.test_x.numpy(), y=task.test_y.numpy())
    task = stream.tasks[0]
    np.savez(folder / "unit1.npz", x=task.test_x.numpy().astype(np.float32) / 255, y=task.test_y.numpy())
    mean, std = np.float32(stream.mean[0]), np.float32(stream.std[0])
    np.savez(folder / "normalised1.npz", x=(task.test_x.numpy() / np.float32(255) - mean) / std, y=task.test_y.numpy())
    checkpoints = result.run_dir / "checkpoints"
    return folder, checkpoints / "task-1.pt", checkpoints / "task-2.pt", result, stream


def _diagnose_json(capsys, *argv):
    code = main(["diagnose", *map(str, argv), "--k", "2", "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_diagnose_applies_the_checkpoints_normalisation_to_raw_pixels(run, capsys):
    folder, task1, task2, result, stream = run
    code, out, err = _diagnose_json(capsys, task1, task2, "--data", folder / "raw1.npz")
    assert code == 0, err
    # the accuracies training measured on task 1's test set, after task 1 (OLD) and after task 2 (NEW)
    assert out["old_task"]["old"] == pytest.approx(result.accuracy_matrix[0][0])
    assert out["old_task"]["new"] == pytest.approx(result.accuracy_matrix[1][0])
    record = out["input_normalization"]
    assert record["applied"] and record["mean"] == pytest.approx(list(stream.mean)) and record["std"] == pytest.approx(list(stream.std))
    assert "input normalisation: (x - mean) / std with mean [" in err and str(task1) in record["origin"]
    # floats in [0, 1] are raw too; already normalised floats give the same numbers with --input-normalization none
    assert _diagnose_json(capsys, task1, task2, "--data", folder / "unit1.npz")[1]["old_task"] == pytest.approx(out["old_task"])
    code, none, _ = _diagnose_json(capsys, task1, task2, "--data", folder / "normalised1.npz", "--input-normalization", "none")
    assert none["old_task"] == pytest.approx(out["old_task"]) and not none["input_normalization"]["applied"]
    # raw pixels fed as given are not what the model was trained on: the numbers differ
    assert _diagnose_json(capsys, task1, task2, "--data", folder / "raw1.npz", "--input-normalization", "none")[1]["old_task"] != out["old_task"]


def test_normalised_floats_with_auto_are_refused_in_one_line(run, capsys):
    folder, task1, task2, _, _ = run
    code, _, err = _diagnose_json(capsys, task1, task2, "--data", folder / "normalised1.npz")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "normalised1.npz: holds float inputs in [" in err and "not raw inputs (uint8 pixels 0-255 or floats in [0, 1])" in err
    assert "pass --input-normalization none" in err
    old, new = load_user_model(task1), load_user_model(task2)
    with pytest.raises(DataError, match=r"^mine: holds float inputs in \[-1, 2\], not raw inputs"):
        diagnose(old, new, user_data(torch.tensor([-1.0, 2.0] * 128).view(4, 1, 8, 8), [0, 1, 0, 1], "mine"))


def test_finetune_applies_it_and_the_saved_model_records_it(run, capsys, tmp_path):
    folder, task1, _, _, stream = run
    out = tmp_path / "tuned.pt"
    code = main(["finetune", str(task1), "--new-data", str(folder / "raw2.npz"), "--old-data", str(folder / "raw1.npz"),
                 "--method", "naive", "--epochs", "1", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["input_normalization"]["applied"] and summary["model_source"] == str(task1)
    # before fine-tuning: the old model on the held-out part of raw1.npz, normalised here by hand
    from forgetlab.user.userdata import load_user_data, split_data

    held_out = split_data(load_user_data(folder / "raw1.npz"), 0.2)[1]
    model, _ = load_model(task1)
    x = (held_out.x.float() / 255 - stream.mean[0]) / stream.std[0]
    with torch.no_grad():
        expected = float((model(x, 0).argmax(1) == held_out.y).double().mean())
    assert summary["before"]["old_accuracy"] == pytest.approx(expected)
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["input_normalization"]["mean"] == pytest.approx(list(stream.mean))
    # diagnose OLD (the checkpoint) against the saved fine-tuned state_dict (NEW takes OLD's architecture)
    code, diag, err = _diagnose_json(capsys, task1, out, "--data", folder / "raw1.npz")
    assert code == 0, err
    assert diag["input_normalization"]["applied"] and diag["sources"]["new_model"] == str(out)


def test_analyze_says_which_normalisation_it_used(run, capsys, tmp_path):
    _, task1, task2, _, stream = run
    code = main(["analyze", "cka", str(task1), str(task2), "--out", str(tmp_path / "cka"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)["input_normalization"]
    assert record["mean"] == pytest.approx(list(stream.mean)) and record["std"] == pytest.approx(list(stream.std))
    assert "input normalisation: (x / 255 - mean) / std with checkpoint A's recorded mean [" in captured.err
