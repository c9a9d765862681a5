"""Config: overrides, files, validation messages, hashing."""

from __future__ import annotations

import pytest

from forgetlab.config import (
    ModelConfig,
    RunConfig,
    StreamConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from forgetlab.errors import ConfigError
from forgetlab.resolve import resolve


def test_overrides_coerce_types():
    cfg = apply_overrides(
        RunConfig(),
        ["train.lr=0.01", "stream.n_tasks=5", "stream.class_order=9,8,7,6,5,4,3,2,1,0",
         "model.batch_norm=false", "train.epochs=auto", "stream.head=single"],
    )
    assert cfg.train.lr == 0.01
    assert cfg.stream.n_tasks == 5
    assert cfg.stream.class_order == (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
    assert cfg.model.batch_norm is False
    assert cfg.train.epochs is None
    assert cfg.stream.head == "single"
    # the original is frozen and unchanged
    assert RunConfig().train.lr is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", r"Unknown config key 'train.lrr'. Did you mean 'train.lr'\?"),
        ("lr=1", r"Unknown config key 'lr'. Did you mean 'train.lr'\?"),
        ("train=1", r"'train' is a section"),
        ("train.lr=-1", r"The 'train.lr' parameter must be in \(0, 1e30\] \(the optimizer computes in float32\). Got -1.0 instead."),
        ("train.epochs=x", r"The 'train.epochs' parameter must be an integer \(or 'auto'\). Got 'x' instead."),
        ("train.optimizer=adm", r"'train.optimizer' parameter must be one of 'sgd', 'adam'. Got 'adm' instead. Did you mean 'adam'\?"),
        ("stream.class_order=1,1", r"'stream.class_order' parameter must be a list without repeats"),
        ("train.lr=nan", r"'train.lr' parameter must be a number"),
        ("train.label_smoothing=1", r"The 'train.label_smoothing' parameter must be in \[0, 1\) \(0 = off\). Got 1.0 instead."),
        ("model.batch_norm=maybe", r"'model.batch_norm' parameter must be true or false"),
        ("novalue", r"--set expects key=value"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [override])


def test_toml_file_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[stream]\ndataset = "digits"\nn_tasks = 5\n[train]\nlr = 0.1\nepochs = 3\n')
    cfg = load_config(path)
    assert cfg.stream.n_tasks == 5 and cfg.train.lr == 0.1 and cfg.train.epochs == 3
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlrr = 0.1\n")
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.lrr'. Did you mean 'train.lr'\?"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_config(tmp_path / "missing.toml")


def test_resolve_fills_dataset_and_family_defaults():
    cfg = resolve(RunConfig())
    assert cfg.model.name == "mlp" and cfg.model.width == 256 and cfg.model.batch_norm is False
    assert cfg.train.lr is not None and cfg.train.epochs is not None
    # explicit values win
    cfg = resolve(RunConfig(model=ModelConfig(name="vgg", width=8), train=TrainConfig(epochs=1)))
    assert cfg.model.name == "vgg" and cfg.model.width == 8 and cfg.train.epochs == 1


def test_run_id_is_the_hash_of_the_resolved_config():
    implicit = resolve(RunConfig())
    explicit = resolve(RunConfig(model=ModelConfig(name="mlp", width=256, depth=2, batch_norm=False)))
    assert implicit.run_id() == explicit.run_id() == "5a21174bbb31b316"  # the id README shows: stored runs are found
    assert len(implicit.run_id()) == 16
    assert resolve(RunConfig(train=TrainConfig(seed=1))).run_id() != implicit.run_id()
    assert resolve(RunConfig(stream=StreamConfig(n_tasks=5))).run_id() != implicit.run_id()
    assert resolve(implicit) == implicit  # resolving twice changes nothing


def test_an_unresolved_config_has_no_run_id():
    with pytest.raises(ConfigError, match=r"run_id\(\) needs a resolved config; model.name, .*stream.head are still 'auto'"):
        RunConfig().run_id()
    partly = resolve(RunConfig())
    with pytest.raises(ConfigError, match=r"; train.lr is still 'auto'\. Use forgetlab.resolve.resolve"):
        RunConfig(stream=partly.stream, model=partly.model, train=TrainConfig(epochs=10)).run_id()


@pytest.mark.parametrize("family", ["vgg", "resnet", "densenet"])
def test_a_conv_family_of_depth_0_is_rejected_before_any_data_loads(family, tmp_path):
    import forgetlab

    assert resolve(RunConfig(model=ModelConfig(name="mlp", depth=0))).model.depth == 0  # a linear model
    message = rf"The 'model.depth' parameter of model '{family}' must be >= 1\. Got 0 instead\."
    with pytest.raises(ConfigError, match=message):
        resolve(RunConfig(model=ModelConfig(name=family, depth=0)))
    config = RunConfig(stream=StreamConfig(dataset="cifar10"), model=ModelConfig(name=family, depth=0))
    with pytest.raises(ConfigError, match=message):  # not a missing-file error: the folder is empty
        forgetlab.run(config, data_dir=tmp_path / "no-data", store=tmp_path / "store")
