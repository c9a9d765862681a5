"""Streams on the real CIFAR-10 and MNIST files (skipped without them), the disk cache on
real files, an end-to-end run, and ``forgetlab list``."""

from __future__ import annotations

import tempfile

import pytest
import torch

import forgetlab
from forgetlab.cli import main
from forgetlab.config import RunConfig, StreamConfig, TrainConfig
from forgetlab.data import sources
from forgetlab.data.augment import BatchTransform
from forgetlab.data.sources import list_sources, load_source
from forgetlab.data.streams import STREAMS, build_stream
from forgetlab.engine.train import per_class_accuracy
from forgetlab.models import create_model

pytestmark = pytest.mark.usefixtures("isolated_cache")

AIRPLANE, AUTOMOBILE, BIRD, CAT, DEER, DOG, FROG, HORSE, SHIP, TRUCK = range(10)


@pytest.fixture(scope="module")
def cifar10(shared_data, isolated_cache):
    if not (shared_data / "cifar-10-batches-py").is_dir():
        pytest.skip(f"{shared_data / 'cifar-10-batches-py'} not found")
    return load_source("cifar10", data_dir=shared_data)


def test_cifar10_shift_on_real_files(cifar10):
    stream = build_stream(StreamConfig(dataset="cifar10", stream="cifar10-shift"), cifar10)
    assert stream.head_sizes == (2,) and stream.augment and stream.input_shape == (3, 32, 32)
    first, second = stream.tasks
    assert first.classes == (AIRPLANE, AUTOMOBILE, BIRD, CAT) and second.classes == (SHIP, TRUCK, DEER, DOG)
    for task in stream.tasks:
        assert task.n_train == 20000 and task.n_test == 4000 and task.head_index == 0
        assert torch.bincount(task.train_y).tolist() == [10000, 10000]
        assert torch.equal(task.test_y, (~torch.isin(task.test_source_y, torch.tensor([0, 1, 8, 9]))).long())
    model = create_model("mlp", input_shape=stream.input_shape, head_sizes=stream.head_sizes, width=8, depth=1)
    accuracy = per_class_accuracy(model, second, BatchTransform(stream.mean, stream.std, augment=False))
    assert sorted(accuracy) == [DEER, DOG, SHIP, TRUCK] and all(0.0 <= a <= 1.0 for a in accuracy.values())


@pytest.mark.parametrize(
    ("task1", "task2", "head", "classes", "head_sizes"),
    [
        ("two", "similar", "auto", [(SHIP, TRUCK), (AIRPLANE, AUTOMOBILE)], (2, 2)),
        ("four", "dissimilar", "single", [(DEER, DOG, SHIP, TRUCK), (CAT, HORSE)], (6,)),
    ],
)
def test_class_pairs_on_real_files(cifar10, task1, task2, head, classes, head_sizes):
    config = StreamConfig(dataset="cifar10", stream="class-pairs", pairs_task1=task1, pairs_task2=task2, head=head)
    stream = build_stream(config, cifar10)
    assert [task.classes for task in stream.tasks] == classes and stream.head_sizes == head_sizes
    for task in stream.tasks:
        assert task.n_train == 5000 * len(task.classes) and task.n_test == 1000 * len(task.classes)
        assert torch.equal(torch.unique(task.test_source_y), torch.tensor(sorted(task.classes)))
        first_image = (cifar10.test_y == task.classes[0]).nonzero()[0, 0]
        assert torch.equal(task.test_x[task.test_source_y == task.classes[0]][0], cifar10.test_x[first_image])


def test_mixup_fraction_on_real_files(cifar10):
    pure = build_stream(StreamConfig(dataset="cifar10", stream="mixup-fraction", class_sets=("cat+dog", "ship+truck"), mixup_alpha=1.0), cifar10)
    mixed = pure.tasks[1]
    assert mixed.n_train == 10000 and mixed.n_test == 2000 and pure.head_sizes == (2,)
    ships = {bytes(row) for row in cifar10.train_x[cifar10.train_y == SHIP].reshape(5000, -1).numpy()}
    label0 = mixed.train_x[mixed.train_y == 0].reshape(5000, -1).numpy()
    assert all(bytes(row) in ships for row in label0[:500])  # alpha = 1: the partner class alone
    assert len({bytes(row) for row in label0}) == 5000  # a permutation: every ship used once
    half = build_stream(StreamConfig(dataset="cifar10", stream="mixup-fraction", class_sets=("cat+dog", "ship+truck")), cifar10).tasks[1]
    cats = cifar10.train_x[cifar10.train_y == CAT]
    difference = half.train_x[half.train_y == 0].float() - cats.float()
    assert difference.abs().mean() > 10  # mixed, not the cats
    assert half.train_x.dtype == torch.uint8


def test_permuted_mnist(shared_data):
    if not (shared_data / "mnist").is_dir():
        pytest.skip("mnist files not found")
    data = load_source("mnist", data_dir=shared_data)
    stream = build_stream(StreamConfig(dataset="mnist", stream="permuted", n_tasks=2, train_per_task=2000), data, seed=4)
    assert stream.head_sizes == (10,) and not stream.augment
    first, second = stream.tasks
    assert first.n_train == second.n_train == 2000
    assert torch.equal(first.test_x, data.test_x) and torch.equal(second.test_y, data.test_y)
    assert not torch.equal(second.test_x, data.test_x)
    assert torch.equal(torch.sort(second.test_x[:50].reshape(50, -1)).values, torch.sort(data.test_x[:50].reshape(50, -1)).values)


def test_split_cifar10_warm_load_from_the_disk_cache(cifar10, shared_data, monkeypatch):
    sources.clear_cache()
    monkeypatch.setattr(sources, "_unpickle", lambda *a: pytest.fail("unpickled again despite the disk cache"))
    warm = load_source("cifar10", data_dir=shared_data)
    assert torch.equal(warm.train_x, cifar10.train_x) and torch.equal(warm.test_y, cifar10.test_y)
    assert warm.mean == cifar10.mean and warm.class_names == cifar10.class_names
    stream = build_stream(StreamConfig(dataset="cifar10"), warm)
    assert [task.classes for task in stream.tasks] == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]


def test_end_to_end_run_of_a_new_stream():
    config = RunConfig(
        stream=StreamConfig(stream="mixup-fraction", class_sets=("3+8", "5+9"), mixup_alpha=0.5),
        train=TrainConfig(epochs=1, batch_size=64),
    )
    result = forgetlab.run(config, store=tempfile.mkdtemp(), device="cpu")
    assert result.accuracy_matrix.shape == (2, 2) and result.config.stream.head == "single"
    assert 0.0 <= result.metrics["acc"] <= 1.0


def test_list_describes_every_stream_and_source_on_one_line(capsys):
    assert main(["list"]) == 0
    sections: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith(" "):
            sections[line.rstrip(":")] = []
        else:
            sections[list(sections)[-1]].append(line)
    for title, names in (("datasets", list_sources()), ("streams", STREAMS)):
        assert [line.split()[0] for line in sections[title]] == list(names)
        assert all(len(line.split(None, 1)[1]) > 20 for line in sections[title])
    assert all("\n" not in kind.description for kind in STREAMS.values())
