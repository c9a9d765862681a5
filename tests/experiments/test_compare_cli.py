"""`forgetlab analyze cka|subspace A.pt B.pt`: table, figure, errors."""

from __future__ import annotations

import re

import pytest

import forgetlab
from forgetlab.analysis import linear_cka
from forgetlab.api import build_stream_for
from forgetlab.cli import main
from forgetlab.data.augment import BatchTransform
from forgetlab.engine import load_model
from forgetlab.engine.checkpoint import read_checkpoint, save_checkpoint
from forgetlab.experiments.compare import compare_checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    config = forgetlab.RunConfig(stream=forgetlab.StreamConfig(train_per_task=200), train=forgetlab.TrainConfig(epochs=2))
    result = forgetlab.run(config, store=store)
    folder = result.run_dir / "checkpoints"
    return folder / "task-1.pt", folder / "task-2.pt"


def test_cka_rows_match_a_direct_computation(checkpoints):
    rows = compare_checkpoints(*checkpoints, measure="cka")
    model_a, config = load_model(checkpoints[0])
    model_b, _ = load_model(checkpoints[1])
    stream = build_stream_for(config)
    x = BatchTransform(stream.mean, stream.std, augment=False)(stream.tasks[0].test_x, train=False)
    _, acts_a = model_a(x, 0, return_activations=True)
    _, acts_b = model_b(x, 0, return_activations=True)
    for row in rows:
        expected = linear_cka(acts_a[row.block], acts_b[row.block], debiased=row.measure.endswith("debiased"))
        assert row.value == pytest.approx(expected, abs=1e-6)
    # a checkpoint against itself is 1 in every block
    assert all(r.value == pytest.approx(1.0, abs=1e-6) for r in compare_checkpoints(checkpoints[0], checkpoints[0]))


def test_inputs_are_normalised_with_the_checkpoints_training_statistics(checkpoints, tmp_path):
    """The mean/std checkpoint A recorded, not those of the stream the inputs come from."""
    payload = read_checkpoint(checkpoints[0])
    stream = build_stream_for(load_model(checkpoints[0])[1])
    assert payload["model_spec"]["mean"] == list(stream.mean)  # as recorded by training
    other_stats = {"mean": [0.9], "std": [0.05]}  # as if A had been trained on other data
    payload["model_spec"] = {**payload["model_spec"], **other_stats}
    moved = tmp_path / "task-1.pt"
    save_checkpoint(moved, {k: v for k, v in payload.items() if k not in ("format", "version")})
    rows = compare_checkpoints(moved, checkpoints[1], measure="cka", blocks=["fc1"])
    model_a, _ = load_model(moved)
    model_b, _ = load_model(checkpoints[1])

    def cka_with(mean, std):
        x = BatchTransform(mean, std, augment=False)(stream.tasks[0].test_x, train=False)
        return linear_cka(model_a(x, 0, return_activations=True)[1]["fc1"], model_b(x, 0, return_activations=True)[1]["fc1"],
                          debiased=True)

    debiased = next(r.value for r in rows if r.measure == "linear_cka_debiased")
    assert debiased == pytest.approx(cka_with(other_stats["mean"], other_stats["std"]), abs=1e-6)
    assert debiased != pytest.approx(cka_with(stream.mean, stream.std), abs=1e-6)  # what the stream's statistics give


def test_cli_prints_table_and_writes_figures(checkpoints, tmp_path, capsys):
    out = tmp_path / "fig"
    assert main(["analyze", "subspace", str(checkpoints[0]), str(checkpoints[1]), "--k", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "subspace_similarity" in text and "fc1" in text and "fc2" in text
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".svg").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--task", "3"], r"'task' parameter must be in \[1, 2\]. Got 3"), (["--blocks", "fc9"], "fc9")],
)
def test_cli_errors(checkpoints, extra, message, capsys, tmp_path):
    code = main(["analyze", "cka", str(checkpoints[0]), str(checkpoints[1]), "--out", str(tmp_path / "f"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err)
