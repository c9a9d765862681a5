"""A model `finetune` saved from a forgetlab checkpoint loads back on its own, with the grown
head: its sidecar records how forgetlab builds it (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import forgetlab
from forgetlab.api import build_stream_for
from forgetlab.cli import main
from forgetlab.errors import DataError
from forgetlab.user import finetune, load_user_data, load_user_model, save_user_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch digits run (two heads of 5: classes 0-4, then 5-9); task 1's test set as old
    data, task 2's with labels 5-9 as new classes for head 0 (raw uint8 pixels)."""
    folder = tmp_path_factory.mktemp("reload")
    config = forgetlab.RunConfig(stream=forgetlab.StreamConfig(train_per_task=200), train=forgetlab.TrainConfig(epochs=1))
    result = forgetlab.run(config, store=folder / "store")
    old, new = build_stream_for(result.config).tasks
    np.savez(folder / "old.npz", x=old.test_x.numpy(), y=old.test_y.numpy())
    np.savez(folder / "new.npz", x=new.test_x.numpy(), y=new.test_y.numpy() + 5)  # head 0's new classes 5-9
    return folder, result.run_dir / "checkpoints" / "task-1.pt"


def test_the_saved_model_loads_back_alone_with_the_grown_head(run, tmp_path):
    folder, checkpoint = run
    tuned = finetune(load_user_model(checkpoint), load_user_data(folder / "new.npz"), method="naive",
                     old_data=load_user_data(folder / "old.npz"), epochs=1)
    assert tuned.n_outputs == 10
    path = save_user_model(tuned.model, tmp_path / "new.pt")
    meta = json.loads((tmp_path / "new.pt.json").read_text())
    assert meta["forgetlab_model"]["head_sizes"] == [10, 5]  # heads.0 grown from 5; heads.1 as trained
    assert meta["forgetlab_model"]["model"]["name"] == "mlp"
    loaded = load_user_model(path)  # nothing but the file
    assert loaded.n_outputs == 10 and loaded.module.head_sizes == (10, 5)
    assert loaded.input_normalization.mean == tuned.model.input_normalization.mean
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), tuned.model.eval()(x))
    assert loaded.build_recipe == meta["forgetlab_model"]  # saved again by a second fine-tune


def test_diagnose_and_a_second_finetune_need_no_model_class(run, tmp_path, capsys):
    folder, checkpoint = run
    new, again = tmp_path / "new.pt", tmp_path / "again.pt"
    common = ["--old-data", str(folder / "old.npz"), "--method", "naive", "--epochs", "1"]
    assert main(["finetune", str(checkpoint), "--new-data", str(folder / "new.npz"), *common, "--out", str(new)]) == 0
    capsys.readouterr()
    code = main(["diagnose", str(checkpoint), str(new), "--data", str(folder / "old.npz"), "--k", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["sources"]["new_model"] == str(new)
    # the saved model alone as OLD, and fine-tuned once more (its head already holds 10 outputs)
    code = main(["finetune", str(new), "--new-data", str(folder / "new.npz"), *common, "--out", str(again), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["n_outputs_before"] == 10
    assert load_user_model(again).n_outputs == 10
    assert json.loads((tmp_path / "again.pt.json").read_text())["forgetlab_model"]["head_sizes"] == [10, 5]
    code = main(["diagnose", str(new), str(again), "--data", str(folder / "new.npz"), "--k", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["sources"]["old_model"] == str(new)


def test_a_broken_recipe_is_refused_naming_the_sidecar(run, tmp_path):
    folder, checkpoint = run
    path = save_user_model(load_user_model(checkpoint), tmp_path / "m.pt")
    sidecar = tmp_path / "m.pt.json"
    meta = json.loads(sidecar.read_text())
    meta["forgetlab_model"]["model"]["widht"] = 3
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"m\.pt\.json' has a 'forgetlab_model' entry that cannot rebuild the model "
                                        r"\(Unknown config key 'model\.widht'"):
        load_user_model(path)
