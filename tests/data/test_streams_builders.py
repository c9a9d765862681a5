"""Every stream on tiny in-memory data: the contract over the registry, then each stream's
labels, class sets and head wiring, its documented errors, and per-class accuracy."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from streams_fixtures import (
    CIFAR10_NAMES,
    coarse_of,
    pixel_value,
    tiny_celeba_data,
    tiny_cifar10,
    tiny_cifar100,
    tiny_imagenet_data,
    write_npz_task,
)
from torch import nn

from forgetlab.config import StreamConfig
from forgetlab.data.augment import BatchTransform
from forgetlab.data.sources import load_source
from forgetlab.data.streams import STREAMS, build_stream, custom_stream, mix_images, permutations
from forgetlab.engine.train import evaluate_task, per_class_accuracy
from forgetlab.errors import ConfigError, DataError, IncompatibleError

pytestmark = pytest.mark.usefixtures("isolated_cache")


@functools.cache
def digits():
    """scikit-learn's digits, parsed once per module (builders never change their input)."""
    return load_source("digits")


def contract_case(name: str, tmp_path):
    """(config, data) for every registered stream, on tiny data."""
    if name == "custom":
        paths = tuple(str(write_npz_task(tmp_path / f"t{i}.npz", seed=i)) for i in range(2))
        return StreamConfig(dataset="custom", stream="custom", custom_paths=paths), None
    cases = {
        "split": lambda: (StreamConfig(), digits()),
        "one-vs-rest": lambda: (StreamConfig(stream="one-vs-rest"), digits()),
        "permuted": lambda: (StreamConfig(stream="permuted", n_tasks=3), digits()),
        "class-pairs": lambda: (StreamConfig(dataset="cifar10", stream="class-pairs"), tiny_cifar10()),
        "mixup-fraction": lambda: (StreamConfig(stream="mixup-fraction"), digits()),
        "cifar10-shift": lambda: (StreamConfig(dataset="cifar10", stream="cifar10-shift"), tiny_cifar10()),
        "cifar100-shift": lambda: (StreamConfig(dataset="cifar100", stream="cifar100-shift"), tiny_cifar100()),
        "imagenet-superclass": lambda: (StreamConfig(dataset="imagenet", stream="imagenet-superclass"), tiny_imagenet_data()),
        "celeba-attributes": lambda: (StreamConfig(dataset="celeba", stream="celeba-attributes"), tiny_celeba_data()),
    }
    return cases[name]()


def test_every_registered_stream_has_a_contract_case(tmp_path):
    for name in STREAMS:
        config, _ = contract_case(name, tmp_path)  # a KeyError here = a new stream without a contract case
        assert config.stream == name


@pytest.mark.parametrize("head", ["multi", "single"])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_contract(name, head, tmp_path):
    config, data = contract_case(name, tmp_path)
    config = dataclasses.replace(config, head=head)
    stream = build_stream(config, data, seed=3)
    assert stream.name == name and stream.n_tasks == config.n_tasks >= 1
    assert len(stream.head_sizes) == (stream.n_tasks if head == "multi" else 1)
    for index, task in enumerate(stream.tasks):
        assert task.name.startswith(f"task{index + 1}: ")
        assert task.head_index == (index if head == "multi" else 0)
        size = stream.head_sizes[task.head_index]
        assert len(task.label_names) == size
        for x, y in ((task.train_x, task.train_y), (task.test_x, task.test_y)):
            assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == stream.input_shape
            assert y.dtype == torch.int64 and y.shape == (x.shape[0],) and x.shape[0] > 0
            assert 0 <= int(y.min()) and int(y.max()) < size
        if task.test_source_y is not None:
            assert task.test_source_y.shape == task.test_y.shape
            assert 0 <= int(task.test_source_y.min()) and int(task.test_source_y.max()) < len(stream.class_names)
            if name != "one-vs-rest":  # its negatives come from every other class
                assert set(task.test_source_y.tolist()) <= set(task.classes)
    assert len(stream.mean) == len(stream.std) == stream.input_shape[0]
    again = build_stream(config, data, seed=3)
    for first, second in zip(stream.tasks, again.tasks):
        assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)


def test_train_per_task_subsamples_every_stream_but_custom_and_celeba_share_inputs():
    data = tiny_celeba_data()
    stream = build_stream(StreamConfig(dataset="celeba", stream="celeba-attributes"), data)
    assert all(task.train_x.data_ptr() == stream.tasks[0].train_x.data_ptr() for task in stream.tasks)
    small = build_stream(StreamConfig(stream="permuted", train_per_task=100), digits())
    assert [task.n_train for task in small.tasks] == [100, 100]
    assert torch.bincount(small.tasks[1].train_y).tolist() == [10] * 10


# ---------------------------------------------------------------- permuted ----

def test_permuted_tasks_are_fixed_pixel_permutations():
    data = digits()
    stream = build_stream(StreamConfig(stream="permuted", n_tasks=3, permutation_seed=7), data, seed=1)
    assert stream.head_sizes == (10,) and not stream.augment
    first, second, third = stream.tasks
    assert torch.equal(first.train_x, data.train_x) and torch.equal(first.test_y, data.test_y)
    perms = permutations(StreamConfig(stream="permuted", n_tasks=3, permutation_seed=7), 64)
    assert perms[0] is None and not torch.equal(perms[1], perms[2])
    flat = data.test_x.reshape(len(data.test_x), 1, 64)
    assert torch.equal(second.test_x.reshape(-1, 1, 64), flat[:, :, perms[1]])
    assert torch.equal(third.train_x.reshape(-1, 1, 64), data.train_x.reshape(-1, 1, 64)[:, :, perms[2]])
    other_training_seed = build_stream(StreamConfig(stream="permuted", n_tasks=3, permutation_seed=7), data, seed=99)
    assert torch.equal(other_training_seed.tasks[2].test_x, third.test_x)
    everything = build_stream(StreamConfig(stream="permuted", n_tasks=3, permutation_seed=7, permute_first=True), data)
    assert not torch.equal(everything.tasks[0].train_x, data.train_x)
    assert torch.equal(everything.tasks[1].train_x, second.train_x)  # task 2's permutation does not move


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_tasks=st.integers(1, 4))
def test_permutations_are_permutations(seed, n_tasks):
    perms = permutations(StreamConfig(stream="permuted", n_tasks=n_tasks, permutation_seed=seed, permute_first=True), 49)
    assert len(perms) == n_tasks
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(49))


# ------------------------------------------------------------- class-pairs ----

@pytest.mark.parametrize(
    ("task1", "task2", "sets"),
    [
        ("two", "similar", [("ship", "truck"), ("airplane", "automobile")]),
        ("two", "dissimilar", [("ship", "truck"), ("cat", "horse")]),
        ("four", "similar", [("deer", "dog", "ship", "truck"), ("airplane", "automobile")]),
        ("four", "dissimilar", [("deer", "dog", "ship", "truck"), ("cat", "horse")]),
    ],
)
def test_class_pairs_presets(task1, task2, sets):
    data = tiny_cifar10()
    stream = build_stream(StreamConfig(dataset="cifar10", stream="class-pairs", pairs_task1=task1, pairs_task2=task2), data)
    assert [tuple(CIFAR10_NAMES[c] for c in task.classes) for task in stream.tasks] == sets
    assert stream.head_sizes == tuple(len(s) for s in sets)
    for task, names in zip(stream.tasks, sets):
        assert task.label_names == names
        expected = [names.index(CIFAR10_NAMES[c]) for c in task.test_source_y.tolist()]
        assert task.test_y.tolist() == expected
        assert task.n_train == 6 * len(names) and task.n_test == 3 * len(names)


def test_class_pairs_single_head_labels_are_positions_in_the_union():
    stream = build_stream(
        StreamConfig(dataset="cifar10", stream="class-pairs", pairs_task1="four", pairs_task2="dissimilar", head="single"),
        tiny_cifar10(),
    )
    union = ("deer", "dog", "ship", "truck", "cat", "horse")
    assert stream.head_sizes == (6,) and stream.tasks[1].label_names == union
    assert sorted(set(stream.tasks[1].train_y.tolist())) == [4, 5]


def test_class_sets_by_name_or_index_on_any_dataset():
    stream = build_stream(StreamConfig(stream="class-pairs", n_tasks=3, class_sets=("1+7", "4+9+3", "0+8")), digits())
    assert [task.classes for task in stream.tasks] == [(1, 7), (4, 9, 3), (0, 8)]
    assert stream.head_sizes == (2, 3, 2)
    by_name = build_stream(StreamConfig(dataset="cifar10", stream="class-pairs", class_sets=("ship+9", "cat+horse")), tiny_cifar10())
    assert [task.classes for task in by_name.tasks] == [(8, 9), (3, 7)]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (StreamConfig(stream="class-pairs", class_sets=("plane+truck", "cat+horse")), r"'stream\.class_sets' parameter must name classes of dataset 'cifar10'; 'plane' is not one\. Did you mean 'airplane'\?"),
        (StreamConfig(stream="class-pairs", class_sets=("ship+12", "cat+horse")), r"must name classes of dataset 'cifar10' or give an index in \[0, 9\]\. Got '12'"),
        (StreamConfig(stream="class-pairs", class_sets=("ship+3", "cat+horse")), r"disjoint class sets; class 'cat' is in sets 1 and 2"),
        (StreamConfig(stream="class-pairs", class_sets=("ship+truck", "cat")), r"at least 2 classes; set 2 has 1"),
        (StreamConfig(stream="class-pairs", n_tasks=3), r"'stream\.n_tasks' parameter must equal the number of class sets \(2\) for the class-pairs stream\. Got 3"),
        (StreamConfig(stream="mixup-fraction", class_sets=("ship+truck", "cat+horse", "dog+frog")), r"must be two pairs 'a\+b,c\+d' for the mixup-fraction stream"),
        (StreamConfig(stream="mixup-fraction", class_sets=("ship+truck+deer", "cat+horse")), r"must be two pairs"),
        (StreamConfig(stream="mixup-fraction", n_tasks=3), r"'stream\.n_tasks' parameter must equal 2"),
        (StreamConfig(stream="cifar10-shift", n_tasks=3), r"Superclass 'vehicle' has 4 fine classes, but n_tasks x fine_per_task = 3 x 2 = 6 are needed"),
    ],
)
def test_class_set_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        build_stream(dataclasses.replace(config, dataset="cifar10"), tiny_cifar10())


def test_class_pairs_presets_need_cifar10():
    with pytest.raises(ConfigError, match=r"presets .* name CIFAR-10 classes: use stream\.dataset='cifar10', or give your own stream\.class_sets\. Got dataset 'digits'"):
        build_stream(StreamConfig(stream="class-pairs"), digits())


# ---------------------------------------------------------- mixup-fraction ----

@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_mixup_fraction_mixes_each_primary_with_a_partner(alpha):
    data = tiny_cifar10()
    stream = build_stream(StreamConfig(dataset="cifar10", stream="mixup-fraction", class_sets=("cat+dog", "ship+truck"), mixup_alpha=alpha), data, seed=5)
    first, second = stream.tasks
    assert stream.head_sizes == (2,) and first.head_index == second.head_index == 0
    assert first.classes == (3, 5) and second.classes == (3, 5, 8, 9)
    assert first.label_names == ("cat", "dog") and second.label_names == ("cat~ship", "dog~truck")
    for x, y, offset in ((second.train_x, second.train_y, 0), (second.test_x, second.test_y, 7)):
        assert torch.bincount(y).tolist() == [len(y) // 2] * 2
        for label, (a, c) in enumerate([(3, 8), (5, 9)]):
            values = x[y == label][:, 0, 0, 0].tolist()
            primaries = [pixel_value(a + offset, k) for k in range(a, 60, 10)][: len(values)]
            partners = {pixel_value(c + offset, k) for k in range(c, 60, 10)}
            for value, primary in zip(values, primaries):  # primaries keep dataset order
                assert any(value == round((1 - alpha) * primary + alpha * p) for p in partners)
    if alpha == 0.0:
        assert sorted(second.train_x[:, 0, 0, 0].tolist()) == sorted(first.train_x[:, 0, 0, 0].tolist())


LATER_VALUES = {"mixup_alpha": (0.2, 0.9), "pairs_task2": ("similar", "dissimilar")}


@pytest.mark.parametrize("normalize", ["standard", "first-task", "none"])
@pytest.mark.parametrize("name", [name for name, kind in STREAMS.items() if kind.later_tasks_only])
def test_later_tasks_only_fields_change_task_two_only(name, normalize, tmp_path):
    """What prefix reuse relies on: task 1's tensors, the heads and the statistics stay."""
    config, data = contract_case(name, tmp_path)
    config = dataclasses.replace(config, normalize=normalize, train_per_task=6, test_per_task=4)  # the generator is used
    for field in STREAMS[name].later_tasks_only:
        a, b = (build_stream(dataclasses.replace(config, **{field: v}), data, seed=3) for v in LATER_VALUES[field])
        for key in ("train_x", "train_y", "test_x", "test_y"):
            assert torch.equal(getattr(a.tasks[0], key), getattr(b.tasks[0], key))
        assert (a.head_sizes, a.mean, a.std) == (b.head_sizes, b.mean, b.std)
        assert not torch.equal(a.tasks[1].train_x, b.tasks[1].train_x) or a.tasks[1].classes != b.tasks[1].classes


def test_first_task_normalisation_uses_the_first_tasks_training_images_only():
    config = StreamConfig(stream="mixup-fraction", normalize="first-task", train_per_task=40)
    stream = build_stream(config, digits(), seed=1)
    pixels = stream.tasks[0].train_x.double() / 255
    assert stream.mean == pytest.approx((float(pixels.mean()),), abs=1e-12)
    assert stream.std == pytest.approx((float(pixels.std(unbiased=False)),), abs=1e-12)
    assert stream.mean != build_stream(dataclasses.replace(config, normalize="standard"), digits(), seed=1).mean


def test_mixup_default_pairs_are_classes_0_1_then_2_3():
    stream = build_stream(StreamConfig(stream="mixup-fraction", head="multi"), digits())
    assert [task.classes for task in stream.tasks] == [(0, 1), (0, 1, 2, 3)] and stream.head_sizes == (2, 2)


@given(
    x=st.lists(st.integers(0, 255), min_size=1, max_size=20),
    partner=st.integers(0, 255),
    alpha=st.floats(0.0, 1.0),
)
def test_mix_images_is_a_rounded_convex_combination(x, partner, alpha):
    a = torch.tensor(x, dtype=torch.uint8)
    b = torch.full_like(a, partner)
    mixed = mix_images(a, b, alpha)
    assert mixed.dtype == torch.uint8
    expected = np.round((1 - np.float32(alpha)) * np.array(x, np.float32) + np.float32(alpha) * np.float32(partner))
    assert np.abs(mixed.numpy().astype(int) - expected).max() <= 1
    assert torch.equal(mix_images(a, b, 0.0), a) and torch.equal(mix_images(a, b, 1.0), b)


# ------------------------------------------------------------ shift streams ----

def test_cifar10_shift_matches_the_spec():
    stream = build_stream(StreamConfig(dataset="cifar10", stream="cifar10-shift"), tiny_cifar10())
    assert stream.head_sizes == (2,)
    first, second = stream.tasks
    assert [CIFAR10_NAMES[c] for c in first.classes] == ["airplane", "automobile", "bird", "cat"]
    assert [CIFAR10_NAMES[c] for c in second.classes] == ["ship", "truck", "deer", "dog"]
    for task in stream.tasks:
        assert task.label_names == ("vehicle", "animal")
        vehicle = {0, 1, 8, 9}
        assert task.test_y.tolist() == [0 if c in vehicle else 1 for c in task.test_source_y.tolist()]


def test_cifar100_shift_uses_the_datasets_own_mapping():
    data = tiny_cifar100()
    stream = build_stream(StreamConfig(dataset="cifar100", stream="cifar100-shift"), data)
    assert stream.head_sizes == (5,)
    fines = {s: [f for f in range(100) if coarse_of(f) == s] for s in range(5)}
    for index, task in enumerate(stream.tasks):
        assert task.label_names == data.coarse_names[:5]
        expected = [f for s in range(5) for f in fines[s][2 * index : 2 * index + 2]]
        assert list(task.classes) == expected
        assert task.train_y.tolist() == [coarse_of(f) for f in data.train_y.tolist() if f in expected]
    assert not set(stream.tasks[0].classes) & set(stream.tasks[1].classes)


def test_cifar100_shift_parameters():
    data = tiny_cifar100()
    config = StreamConfig(dataset="cifar100", stream="cifar100-shift", superclasses=("fish", "19", "people"), fine_per_task=1, n_tasks=3, fine_order=(4, 0, 2), head="multi")
    stream = build_stream(config, data)
    assert stream.head_sizes == (3, 3, 3) and stream.tasks[2].head_index == 2
    assert stream.tasks[0].label_names == ("fish", "vehicles_2", "people")
    fines = {s: [f for f in range(100) if coarse_of(f) == s] for s in (1, 19, 14)}
    assert [list(task.classes) for task in stream.tasks] == [[fines[s][p] for s in (1, 19, 14)] for p in (4, 0, 2)]
    assert stream.tasks[0].train_y.tolist() == [(1, 19, 14).index(coarse_of(f)) for f in data.train_y.tolist() if f in stream.tasks[0].classes]
    assert build_stream(dataclasses.replace(config, superclasses=(), n_superclasses=20, fine_order=()), data).head_sizes == (20,) * 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"superclasses": ("fishes", "people")}, r"'stream\.superclasses' parameter must name superclasses of dataset 'cifar100'; 'fishes' is not one\. Did you mean 'fish'\?"),
        ({"superclasses": ("fish", "20")}, r"or give an index in \[0, 19\]\. Got '20'"),
        ({"superclasses": ("fish", "1")}, r"must not name a superclass twice"),
        ({"superclasses": ("fish",)}, r"needs at least 2 superclasses"),
        ({"superclasses": ("fish", "people"), "n_superclasses": 3}, r"'stream\.n_superclasses' parameter must be 0 or the number of stream\.superclasses \(2\)"),
        ({"n_superclasses": 21}, r"'stream\.n_superclasses' parameter must be <= the number of superclasses of dataset 'cifar100' \(20\)\. Got 21"),
        ({"fine_per_task": 3}, r"Superclass 'aquatic_mammals' has 5 fine classes, but n_tasks x fine_per_task = 2 x 3 = 6 are needed"),
        ({"fine_order": (0, 1, 2)}, r"'stream\.fine_order' parameter must list at least n_tasks x fine_per_task = 4 positions"),
        ({"fine_order": (0, 1, 2, 7)}, r"has 5 fine classes.*stream\.fine_order uses position 7"),
    ],
)
def test_shift_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_stream(StreamConfig(dataset="cifar100", stream="cifar100-shift", **changes), tiny_cifar100())


def test_imagenet_superclass_uses_every_superclass_by_default():
    data = tiny_imagenet_data(n_super=3, per_super=4)
    stream = build_stream(StreamConfig(dataset="imagenet", stream="imagenet-superclass"), data)
    assert stream.head_sizes == (3,) and stream.tasks[1].classes == (2, 3, 6, 7, 10, 11)
    with pytest.raises(ConfigError, match=r"Superclass 'super0' has 4 fine classes, but n_tasks x fine_per_task = 3 x 2 = 6"):
        build_stream(StreamConfig(dataset="imagenet", stream="imagenet-superclass", n_tasks=3), data)


# -------------------------------------------------------- celeba-attributes ----

def test_celeba_attributes_labels_and_heads():
    data = tiny_celeba_data()
    config = StreamConfig(dataset="celeba", stream="celeba-attributes", attributes=("Male", "Smiling", "Mouth_Slightly_Open"), n_tasks=3)
    stream = build_stream(config, data)
    assert stream.head_sizes == (2, 2, 2) and stream.class_names == () and stream.augment
    for task, column in zip(stream.tasks, (20, 31, 21)):
        assert task.label_names == (f"not {data.attribute_names[column]}", data.attribute_names[column])
        assert torch.equal(task.train_y, data.train_attributes[:, column].long())
        assert torch.equal(task.test_y, data.test_attributes[:, column].long())
        assert task.test_source_y is None and task.classes == ()
    assert build_stream(dataclasses.replace(config, head="single"), data).head_sizes == (2,)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attributes": ("smiling", "Male")}, r"'stream\.attributes' parameter must name attributes of dataset 'celeba'; 'smiling' is not one\. Did you mean 'Smiling'\?"),
        ({"attributes": ("Male",)}, r"'stream\.n_tasks' parameter must equal the number of attributes \(1\)"),
        ({"attributes": ()}, r"must name at least one CelebA attribute"),
    ],
)
def test_celeba_attribute_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_stream(StreamConfig(dataset="celeba", stream="celeba-attributes", **changes), tiny_celeba_data())


# ------------------------------------------------------------------ custom ----

def test_custom_stream_from_tensors_and_arrays():
    x = torch.randint(0, 256, (10, 5, 5), dtype=torch.uint8)
    y = torch.arange(10) % 3
    stream = custom_stream(
        [(x, y, x[:4], y[:4]), (np.asarray(x, np.float32) / 255.0, (y + 1).numpy(), x[:3].numpy(), np.array([0, 1, 3]))],
        label_names=[("a", "b", "c"), ("d", "e", "f", "g")],
        task_names=["letters", "more"],
    )
    assert stream.input_shape == (1, 5, 5) and stream.head_sizes == (3, 4) and not stream.augment
    assert stream.class_names == ("a", "b", "c", "d", "e", "f", "g")
    first, second = stream.tasks
    assert first.name == "task1: letters" and first.classes == (0, 1, 2) and second.classes == (3, 4, 5, 6)
    assert torch.equal(second.train_x[:, 0], x) and torch.equal(second.test_source_y, torch.tensor([3, 4, 6]))
    shared = custom_stream([(x, y, x, y), (x, y + 1, x, y + 1)], head="single")
    assert shared.head_sizes == (4,) and [t.head_index for t in shared.tasks] == [0, 0]
    assert shared.mean[0] == pytest.approx(float(x.double().mean() / 255))


@pytest.mark.parametrize(
    ("tasks", "error", "message"),
    [
        ([], ConfigError, r"at least one \(x_train, y_train, x_test, y_test\)"),
        ([(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))], DataError, r"task 1, x_train: images must be \(N, C, H, W\) or \(N, H, W\)\. Got shape \(4, 2\)"),
        ([(torch.full((4, 3, 3), 2.0), torch.zeros(4, dtype=torch.long), torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long))], DataError, r"float images must lie in \[0, 1\]"),
        ([(torch.zeros(4, 3, 3, dtype=torch.int32), torch.zeros(4, dtype=torch.long), torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long))], DataError, r"must be uint8 or float in \[0, 1\]\. Got dtype torch\.int32"),
        ([(torch.zeros(4, 3, 3), torch.zeros(3, dtype=torch.long), torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long))], DataError, r"y_train: labels must be integers of shape \(4,\)"),
        ([(torch.zeros(4, 3, 3), -torch.ones(4, dtype=torch.long), torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long))], DataError, r"labels must be >= 0"),
        ([(torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long), torch.zeros(0, 3, 3), torch.zeros(0, dtype=torch.long))], DataError, r"must not be empty"),
        ([(torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4, 3, 3), torch.zeros(4, dtype=torch.long)),
          (torch.zeros(4, 3, 4), torch.zeros(4, dtype=torch.long), torch.zeros(4, 3, 4), torch.zeros(4, dtype=torch.long))], IncompatibleError, r"task 2, x_train: images of shape \(1, 3, 4\) do not match task 1's \(1, 3, 3\)"),
    ],
)
def test_custom_stream_errors(tasks, error, message):
    with pytest.raises(error, match=message):
        custom_stream(tasks)


def test_custom_stream_from_npz_files(tmp_path):
    paths = (str(write_npz_task(tmp_path / "a.npz", n_classes=2)), str(write_npz_task(tmp_path / "b.npz", n_classes=3, seed=1)))
    config = StreamConfig(dataset="custom", stream="custom", custom_paths=paths)
    stream = build_stream(config, None)
    with np.load(paths[1]) as arrays:
        assert torch.equal(stream.tasks[1].train_x, torch.from_numpy(arrays["x_train"]))
    assert stream.head_sizes == (2, 3) and stream.input_shape == (1, 6, 6)
    with pytest.raises(ConfigError, match=r"'stream\.n_tasks' parameter must equal the number of custom_paths \(1\)"):
        build_stream(dataclasses.replace(config, custom_paths=paths[:1]), None)
    with pytest.raises(ConfigError, match=r"'stream\.custom_paths' parameter must list one \.npz file or image folder per task"):
        build_stream(dataclasses.replace(config, custom_paths=()), None)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match=r"lacks array\(s\) \['y_train', 'x_test', 'y_test'\]; it holds \['x_train'\]"):
        build_stream(dataclasses.replace(config, custom_paths=(str(tmp_path / "bad.npz"), paths[0])), None)
    with pytest.raises(DataError, match=r"must be a \.npz file .* or an image folder .* it does not exist"):
        build_stream(dataclasses.replace(config, custom_paths=(str(tmp_path / "nope.npz"), paths[0])), None)


# ---------------------------------------------------------- per-class accuracy ----

class AlwaysLabel(nn.Module):
    """Predicts ``label`` on every head (a reference whose per-class accuracy is known)."""

    def __init__(self, head_sizes: tuple[int, ...], label: int) -> None:
        super().__init__()
        self.head_sizes, self.label = head_sizes, label
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, head_index: int = 0) -> torch.Tensor:
        logits = torch.zeros(len(x), self.head_sizes[head_index])
        logits[:, self.label] = 1.0
        return logits * self.scale


def test_per_class_accuracy_against_a_known_model():
    stream = build_stream(StreamConfig(dataset="cifar10", stream="cifar10-shift"), tiny_cifar10())
    transform = BatchTransform(stream.mean, stream.std, augment=False)
    model = AlwaysLabel(stream.head_sizes, label=0).train()
    result = per_class_accuracy(model, stream.tasks[1], transform, batch_size=5)
    assert result == {8: 1.0, 9: 1.0, 4: 0.0, 5: 0.0}  # vehicles right, animals wrong, per fine class
    assert model.training
    task = stream.tasks[1]
    weighted = sum(acc * int((task.test_source_y == c).sum()) for c, acc in result.items()) / task.n_test
    assert weighted == pytest.approx(evaluate_task(model, task.test_x, task.test_y, 0, transform, 7))
    celeba = build_stream(StreamConfig(dataset="celeba", stream="celeba-attributes"), tiny_celeba_data())
    assert per_class_accuracy(AlwaysLabel((2, 2), label=1), celeba.tasks[0], transform) == {0: 0.0, 1: 1.0}
