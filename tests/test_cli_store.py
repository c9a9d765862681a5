"""`forgetlab runs`, `show`, `export`; `--json` makes stdout one JSON document on every command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from forgetlab.cli import main
from forgetlab.store import ResultStore

TINY = ["--set", "stream.train_per_task=100", "--set", "train.steps=5", "--quiet"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with two finished runs (naive, EWC lam=100) and their `run --json` payloads."""
    root = tmp_path_factory.mktemp("store")
    payloads = {}
    for method in (["--method", "naive"], ["--method", "ewc", "--set", "method.lam=100"]):
        with pytest.MonkeyPatch.context() as patch:
            import io
            import sys

            out = io.StringIO()
            patch.setattr(sys, "stdout", out)
            patch.setattr(sys, "stderr", io.StringIO())
            assert main(["run", "--store", str(root), "--json", *method, *TINY]) == 0
        payload = json.loads(out.getvalue())
        payloads[method[1]] = payload
    return root, payloads


def _json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)  # fails on anything but one JSON document


def test_runs_lists_every_run_with_its_metrics(store, capsys):
    root, payloads = store
    rows = _json(capsys, ["runs", "--store", str(root), "--json"])
    by_method = {row["method.name"]: row for row in rows}
    assert set(by_method) == {"naive", "ewc"}
    for method, payload in payloads.items():
        row = by_method[method]
        assert row["run_id"] == payload["run_id"] and row["status"] == "finished"
        assert row["acc"] == pytest.approx(payload["acc"]) and row["bwt"] == pytest.approx(payload["bwt"])
        assert row["forgetting"] == pytest.approx(payload["forgetting"])
        np.testing.assert_allclose(json.loads(row["R"]), payload["accuracy_matrix"])
    assert by_method["ewc"]["method.lam"] == 100.0 and by_method["naive"]["stream.dataset"] == "digits"
    # a filter keeps what it names, numbers compared as numbers
    only = _json(capsys, ["runs", "--store", str(root), "--json", "--where", "method.lam=1e2"])
    assert [row["run_id"] for row in only] == [payloads["ewc"]["run_id"]]
    assert _json(capsys, ["runs", "--store", str(root), "--json", "--status", "failed"]) == []
    # the human table: one line per run under a header
    assert main(["runs", "--store", str(root)]) == 0
    text = capsys.readouterr().out
    assert payloads["naive"]["run_id"] in text and payloads["ewc"]["run_id"] in text and "2 runs" in text


def test_show_prints_config_matrix_and_figures(store, capsys):
    root, payloads = store
    run_id = payloads["ewc"]["run_id"]
    shown = _json(capsys, ["show", run_id[:6], "--store", str(root), "--json"])
    assert shown["run_id"] == run_id and shown["config"]["method"]["lam"] == 100.0
    np.testing.assert_allclose(shown["R"], payloads["ewc"]["accuracy_matrix"])
    assert isinstance(shown["figures"], list)
    assert main(["show", run_id, "--store", str(root)]) == 0
    assert "Accuracy matrix" in capsys.readouterr().out
    assert main(["show", "ffffffff", "--store", str(root)]) == 2
    assert "names no run" in capsys.readouterr().err


def test_export_csv_and_json_round_trip(store, tmp_path, capsys):
    root, payloads = store
    done = _json(capsys, ["export", "--store", str(root), "--out", str(tmp_path / "runs.csv"), "--json"])
    assert done["runs"] == 2
    with (tmp_path / "runs.csv").open() as handle:
        rows = {row["run_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {p["run_id"] for p in payloads.values()}
    ewc = rows[payloads["ewc"]["run_id"]]
    assert float(ewc["acc"]) == pytest.approx(payloads["ewc"]["acc"]) and float(ewc["method.lam"]) == 100.0
    np.testing.assert_allclose(json.loads(ewc["R"]), payloads["ewc"]["accuracy_matrix"])
    assert main(["export", "--store", str(root), "--format", "json", "--out", str(tmp_path / "runs.json")]) == 0
    exported = json.loads((tmp_path / "runs.json").read_text())
    assert {row["run_id"] for row in exported} == set(rows)


def test_parquet_export_or_a_one_line_hint(store, tmp_path, capsys):
    root, payloads = store
    code = main(["export", "--store", str(root), "--format", "parquet", "--out", str(tmp_path / "runs.parquet")])
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert code == 2 and "pip install 'forgetlab[parquet]'" in capsys.readouterr().err
        return
    assert code == 0
    table = pq.read_table(tmp_path / "runs.parquet").to_pylist()
    assert {row["run_id"] for row in table} == {p["run_id"] for p in payloads.values()}


def test_a_store_that_does_not_exist_is_an_error_not_an_empty_store(tmp_path, capsys):
    missing = tmp_path / "typo-in-the-path"
    for command in (["runs"], ["report"], ["show", "abc"], ["export", "--out", str(tmp_path / "x.csv")]):
        assert main([*command, "--store", str(missing)]) == 2
        err = capsys.readouterr().err.strip()
        assert "No result store at" in err and len(err.splitlines()) == 1
    assert not missing.exists()


def test_json_is_the_whole_stdout_of_list_and_report(store, capsys):
    root, _ = store
    listing = _json(capsys, ["list", "--json"])
    assert {"datasets", "streams", "models", "methods"} <= set(listing) and "ewc" in listing["methods"]
    report = _json(capsys, ["report", "--store", str(root), "--out", str(root / "rep"), "--json"])
    assert report["report"].endswith(".html")


def test_json_is_the_whole_stdout_of_analyze(store, capsys):
    root, payloads = store
    checkpoints = sorted((ResultStore(root).run_dir(payloads["naive"]["run_id"]) / "checkpoints").glob("task-*.pt"))
    result = _json(capsys, ["analyze", "cka", str(checkpoints[0]), str(checkpoints[1]), "--out",
                            str(root / "cka"), "--json"])
    assert result["measure"] == "cka" and len(result["rows"]) >= 1 and result["figures"]


def test_every_run_writes_its_figures_into_its_run_folder(store, capsys):
    from PIL import Image

    root, payloads = store
    for payload in payloads.values():
        folder = ResultStore(root).run_dir(payload["run_id"])
        for name in ("accuracy-matrix", "learning-curves"):
            with Image.open(folder / f"{name}.png") as image:
                assert image.width > 300 and image.height > 200
            svg = (folder / f"{name}.svg").read_text()
            assert payload["run_id"] in svg  # titled with the run it shows
        shown = _json(capsys, ["show", payload["run_id"], "--store", str(root), "--json"])
        assert sorted(Path(p).name for p in shown["figures"]) == [
            "accuracy-matrix.png", "accuracy-matrix.svg", "learning-curves.png", "learning-curves.svg"]


def test_no_figures_draws_none(tmp_path, capsys):
    assert main(["run", "--store", str(tmp_path), "--no-figures", "--json", *TINY]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert not list(ResultStore(tmp_path).run_dir(run_id).glob("*.png"))


def test_log_csv_records_every_step_and_every_evaluation(tmp_path, capsys):
    assert main(["run", "--store", str(tmp_path), "--log", "csv", "--no-figures", "--json",
                 "--set", "stream.train_per_task=100", "--set", "train.steps=6", "--set", "train.eval_every_steps=3",
                 "--quiet"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    with (ResultStore(tmp_path).run_dir(run_id) / "train-log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    steps = [row for row in rows if row["kind"] == "step"]
    evals = [row for row in rows if row["kind"] == "eval"]
    assert [int(r["step"]) for r in steps] == list(range(1, 13)) and all(float(r["loss"]) > 0 for r in steps)
    assert [r["task"] for r in steps] == ["1"] * 6 + ["2"] * 6
    stored = ResultStore(tmp_path).get(run_id).curves  # the evaluations the store holds, independently written
    assert [int(r["step"]) for r in evals] == [c["step"] for c in stored] == [3, 6, 9, 12]
    for row, point in zip(evals, stored):
        np.testing.assert_allclose([float(row["task_1"]), float(row["task_2"])], point["accuracies"], rtol=1e-5)


def test_log_names_are_checked_and_tensorboard_needs_its_extra(tmp_path, capsys):
    assert main(["run", "--store", str(tmp_path), "--log", "csv,wandb", *TINY]) == 2
    assert "The --log option takes 'csv', 'tensorboard'" in capsys.readouterr().err
    code = main(["run", "--store", str(tmp_path), "--log", "tensorboard", "--no-figures", "--json", *TINY])
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert code == 2 and "pip install 'forgetlab[tensorboard]'" in capsys.readouterr().err
        return
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert list((ResultStore(tmp_path).run_dir(run_id) / "tensorboard").glob("events.out.tfevents.*"))


def test_json_is_the_whole_stdout_of_store_check_and_verify_data(store, capsys):
    root, payloads = store
    checked = _json(capsys, ["store", "check", "--store", str(root), "--json"])
    assert checked["runs"] == len(payloads) and checked["problems"] == []
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "MNIST").exists() and not list(data.glob("*mnist*")):
        return  # the dataset-file half needs the real files (../shared/data)
    verified = _json(capsys, ["verify-data", "--dataset", "mnist", "--data-dir", str(data), "--json"])
    assert verified["mnist"].startswith("ok")
