from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from user_models import BNNet, TinyTransformer

from forgetlab.errors import ConfigError, DataError, IncompatibleError
from forgetlab.user import check_state_dict, load_user_model, save_user_model, wrap_model


def test_state_dict_with_module_round_trip(tmp_path):
    net = TinyTransformer()
    torch.save(net.state_dict(), tmp_path / "m.pt")
    model = load_user_model(tmp_path / "m.pt", module=TinyTransformer())
    x = torch.randn(3, 6, 4)
    torch.testing.assert_close(model(x), net.eval()(x))
    assert not model.training


def test_nested_state_dict_key_is_accepted(tmp_path):
    net = BNNet()
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, tmp_path / "m.pt")
    model = load_user_model(tmp_path / "m.pt", module=BNNet())
    torch.testing.assert_close(model.module.out.weight, net.out.weight)


def test_state_dict_without_architecture_says_how(tmp_path):
    torch.save(BNNet().state_dict(), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="--model-class package.module:ClassName"):
        load_user_model(tmp_path / "m.pt")


def test_model_class_import_and_args(tmp_path, monkeypatch):
    (tmp_path / "mynet.py").write_text(textwrap.dedent("""
        from torch import nn
        class Net(nn.Sequential):
            def __init__(self, width=4):
                super().__init__(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mynet

    torch.save(mynet.Net(width=6).state_dict(), tmp_path / "m.pt")
    model = load_user_model(tmp_path / "m.pt", model_class="mynet:Net", model_args={"width": 6})
    assert model.block_names == ("0", "1", "2")
    with pytest.raises(IncompatibleError, match=r"shape mismatches 0.weight: checkpoint \(6, 3\) vs model \(4, 3\)"):
        load_user_model(tmp_path / "m.pt", model_class="mynet:Net")
    with pytest.raises(ConfigError, match="cannot build Net"):
        load_user_model(tmp_path / "m.pt", model_class="mynet:Net", model_args={"depth": 2})
    with pytest.raises(ConfigError, match="'Nett' in 'mynet', which is missing"):
        load_user_model(tmp_path / "m.pt", model_class="mynet:Nett")
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_user_model(tmp_path / "m.pt", model_class="nosuchmodule_xyz:Net")
    with pytest.raises(ConfigError, match="must look like 'package.module:ClassName'"):
        load_user_model(tmp_path / "m.pt", model_class="mynet.Net")
    sys.modules.pop("mynet", None)


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(tmp_path):
    state = TinyTransformer().state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["classifier.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(IncompatibleError, match=r"missing keys \['classifier.bias'\]; unexpected keys \['extra.weight'\]"):
        load_user_model(tmp_path / "bad.pt", module=TinyTransformer())


def test_shape_mismatch_prints_both_shapes():
    with pytest.raises(IncompatibleError, match=r"classifier.weight: checkpoint \(3, 8\) vs model \(4, 8\)"):
        check_state_dict(TinyTransformer(), TinyTransformer(n_classes=3).state_dict(), "x.pt")


@pytest.mark.parametrize("content", [b"", b"garbage bytes", None])
def test_corrupted_files_raise_data_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    if content is None:  # a truncated real checkpoint
        torch.save(TinyTransformer().state_dict(), path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="broken.pt' cannot be read: .*truncated/corrupted"):
        load_user_model(path, module=TinyTransformer())


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_user_model(tmp_path / "nope.pt", module=TinyTransformer())


def test_whole_model_file_and_unimportable_class(tmp_path, monkeypatch):
    (tmp_path / "ghostnet.py").write_text("from torch import nn\nclass Ghost(nn.Sequential):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import ghostnet

    net = ghostnet.Ghost(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(DataError, match="pickled Python objects.*--trust-pickle"):
        load_user_model(tmp_path / "whole.pt")
    with pytest.warns(UserWarning, match="runs code"):
        model = load_user_model(tmp_path / "whole.pt", trust_pickle=True)
    assert type(model.module).__name__ == "Ghost" and model.n_outputs == 2
    (tmp_path / "ghostnet.py").unlink()
    sys.modules.pop("ghostnet")
    with pytest.raises(DataError, match="whole saved model whose class cannot be imported.*PYTHONPATH"):
        load_user_model(tmp_path / "whole.pt", trust_pickle=True)


def test_save_user_model_writes_state_dict_and_sidecar(tmp_path):
    model = wrap_model(TinyTransformer(), blocks=["block1", "block2"], input_shape=(6, 4))
    path = save_user_model(model, tmp_path / "out" / "m.pt", {"method": "naive"})
    assert set(torch.load(path, weights_only=True)) == set(model.module.state_dict())
    again = load_user_model(path, module=TinyTransformer())
    assert again.block_names == ("block1", "block2") and again.input_shape == (6, 4)


def test_forgetlab_checkpoint_loads(tmp_path):
    from forgetlab.config import RunConfig
    from forgetlab.engine.checkpoint import save_checkpoint
    from forgetlab.models import build_model
    from forgetlab.resolve import resolve

    config = resolve(RunConfig())
    net = build_model(config.model, input_shape=(1, 8, 8), head_sizes=(5, 5))
    save_checkpoint(tmp_path / "task-1.pt", {
        "config": config.to_dict(), "model_spec": {"input_shape": [1, 8, 8], "head_sizes": [5, 5]},
        "model_state": net.state_dict(),
    })
    model = load_user_model(tmp_path / "task-1.pt")
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x), net.eval()(x, 0))
    assert model.head_name == "heads.0" and model.input_shape == (1, 8, 8)
    assert model.block_names[0].startswith("blocks.")
