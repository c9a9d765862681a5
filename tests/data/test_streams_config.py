"""Stream parameters in StreamConfig: coercion from --set / TOML, validation, resolve()."""

from __future__ import annotations

import pytest

from forgetlab.config import RunConfig, StreamConfig, apply_overrides, load_config, parse_class_sets
from forgetlab.data.sources import load_source
from forgetlab.data.streams import STREAMS, check_pairing, resolve_stream_config
from forgetlab.errors import ConfigError
from forgetlab.resolve import resolve


def test_set_coerces_the_new_fields():
    cfg = apply_overrides(
        RunConfig(),
        [
            "stream.attributes=Smiling,Young",
            "stream.class_sets=ship+truck,cat+horse",
            "stream.superclasses=fish,3",
            "stream.fine_order=3,1,0,2",
            "stream.mixup_alpha=0.25",
            "stream.permute_first=true",
            "stream.image_size=auto",
            "stream.custom_paths=a.npz,b.npz",
            "stream.pairs_task1=four",
        ],
    ).stream
    assert cfg.attributes == ("Smiling", "Young") and cfg.class_sets == ("ship+truck", "cat+horse")
    assert cfg.superclasses == ("fish", "3") and cfg.fine_order == (3, 1, 0, 2)
    assert cfg.mixup_alpha == 0.25 and cfg.permute_first is True and cfg.image_size is None
    assert cfg.custom_paths == ("a.npz", "b.npz") and cfg.pairs_task1 == "four"
    assert apply_overrides(RunConfig(), ["stream.image_size=48"]).stream.image_size == 48


def test_toml_lists_of_strings(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[stream]\nsuperclasses = [0, 3]\nattributes = ["Male"]\nclass_sets = ["0+1", "2+3"]\nn_tasks = 1\n')
    cfg = load_config(path).stream
    assert cfg.superclasses == ("0", "3") and cfg.attributes == ("Male",) and cfg.class_sets == ("0+1", "2+3")


def test_new_fields_change_the_run_id():
    base = RunConfig()
    assert resolve(base).run_id() != resolve(apply_overrides(base, ["stream.mixup_alpha=0.75"])).run_id()
    assert resolve(base).run_id() == resolve(RunConfig()).run_id()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stream.mixup_alpha=1.5", r"'stream\.mixup_alpha' parameter must be in \[0, 1\]\. Got 1\.5"),
        ("stream.mixup_alpha=-0.1", r"'stream\.mixup_alpha' parameter must be in \[0, 1\]"),
        ("stream.mixup_alpha=half", r"'stream\.mixup_alpha' parameter must be a number"),
        ("stream.fine_per_task=0", r"'stream\.fine_per_task' parameter must be >= 1\. Got 0"),
        ("stream.n_superclasses=-1", r"'stream\.n_superclasses' parameter must be >= 0"),
        ("stream.fine_order=1,1", r"'stream\.fine_order' parameter must be a list of positions >= 0 without repeats"),
        ("stream.superclasses=fish,fish", r"'stream\.superclasses' parameter must be a list .* without repeats"),
        ("stream.attributes=Male,Male", r"'stream\.attributes' parameter must be a list of attribute names without repeats"),
        ("stream.image_size=0", r"'stream\.image_size' parameter must be >= 1 \(or 'auto'\)\. Got 0"),
        ("stream.image_size=big", r"'stream\.image_size' parameter must be an integer \(or 'auto'\)"),
        ("stream.pairs_task2=similiar", r"'stream\.pairs_task2' parameter must be one of 'similar', 'dissimilar'.*Did you mean 'similar'\?"),
        ("stream.pairs_task1=three", r"'stream\.pairs_task1' parameter must be one of 'two', 'four'"),
        ("stream.head=mult", r"'stream\.head' parameter must be one of 'auto', 'multi', 'single'.*Did you mean 'multi'\?"),
        ("stream.permutation_seed=-3", r"'stream\.permutation_seed' parameter must be >= 0"),
        ("stream.class_sets=ship+truck,truck+cat", r"disjoint class sets without repeats; 'truck' is in sets 1 and 2"),
        ("stream.class_sets=ship+ship", r"'ship' is twice in set 1"),
        ("stream.class_sets=ship+,cat+dog", r"set 1 is empty or has an empty name"),
        ("stream.superclass=fish", r"Unknown config key 'stream\.superclass'\. Did you mean 'stream\.superclasses'\?"),
    ],
)
def test_documented_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [override])


def test_parse_class_sets():
    assert parse_class_sets(["a + b", "c"]) == [("a", "b"), ("c",)]
    assert parse_class_sets([]) == []


def test_head_auto_resolves_to_the_streams_default():
    defaults = {name: resolve_stream_config(StreamConfig(dataset=(kind.datasets or ("digits",))[0], stream=name)).head for name, kind in STREAMS.items()}
    assert defaults == {
        "split": "multi", "one-vs-rest": "multi", "permuted": "single", "class-pairs": "multi",
        "mixup-fraction": "single", "cifar10-shift": "single", "cifar100-shift": "single",
        "imagenet-superclass": "single", "celeba-attributes": "multi", "custom": "multi",
    }
    assert resolve(RunConfig()).stream.head == "multi"
    assert resolve(RunConfig(stream=StreamConfig(stream="permuted", head="multi"))).stream.head == "multi"


@pytest.mark.parametrize(
    ("dataset", "stream", "message"),
    [
        ("cifar10", "cifar100-shift", r"The 'cifar100-shift' stream needs stream\.dataset='cifar100'\. Got 'cifar10' instead\."),
        ("cifar100", "cifar10-shift", r"The 'cifar10-shift' stream needs stream\.dataset='cifar10'"),
        ("mnist", "celeba-attributes", r"needs stream\.dataset='celeba'"),
        ("cifar100", "imagenet-superclass", r"needs stream\.dataset='imagenet'"),
        ("digits", "custom", r"needs stream\.dataset='custom'"),
        ("celeba", "split", r"Dataset 'celeba' works only with stream\.stream='celeba-attributes' \(it has attributes, not classes\)\. Got 'split'"),
        ("custom", "permuted", r"Dataset 'custom' works only with stream\.stream='custom'"),
        ("digits", "permutted", r"Unknown stream 'permutted'\. Did you mean 'permuted'\?"),
    ],
)
def test_dataset_stream_pairing(dataset, stream, message):
    with pytest.raises(ConfigError, match=message):
        check_pairing(dataset, stream)
    with pytest.raises(ConfigError, match=message):
        resolve(RunConfig(stream=StreamConfig(dataset=dataset, stream=stream)))


def test_source_options_only_where_they_apply():
    with pytest.raises(ConfigError, match=r"'stream\.image_size' parameter applies only to the datasets celeba, imagenet; leave it auto for dataset 'digits'\. Got 32"):
        load_source("digits", image_size=32)
    with pytest.raises(ConfigError, match=r"'stream\.superclass_map' parameter applies only to the datasets imagenet"):
        load_source("digits", superclass_map="map.txt")
    with pytest.raises(ConfigError, match=r"'custom' dataset has no files of its own.*custom_stream"):
        load_source("custom")
