"""The split and one-vs-rest streams on the digits data."""

from __future__ import annotations

import pytest
import torch

from forgetlab.config import StreamConfig
from forgetlab.data.streams import build_stream, list_streams
from forgetlab.errors import ConfigError


def test_split_multi_head(digits_data):
    stream = build_stream(StreamConfig(n_tasks=2), digits_data)
    assert stream.head_sizes == (5, 5)
    for index, task in enumerate(stream.tasks):
        assert task.head_index == index
        assert task.classes == tuple(range(5 * index, 5 * index + 5))
        assert set(task.train_y.tolist()) == set(range(5))
        # every example of the task's classes, and only those
        expected = torch.isin(digits_data.train_y, torch.tensor(task.classes)).sum()
        assert task.n_train == int(expected)
        # local label k is class classes[k]
        source_labels = digits_data.train_y[torch.isin(digits_data.train_y, torch.tensor(task.classes))]
        assert torch.equal(torch.tensor(task.classes)[task.train_y], source_labels)


def test_split_single_head_with_class_order(digits_data):
    order = (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
    stream = build_stream(StreamConfig(n_tasks=5, head="single", class_order=order), digits_data)
    assert stream.head_sizes == (10,)
    assert [t.classes for t in stream.tasks] == [(9, 8), (7, 6), (5, 4), (3, 2), (1, 0)]
    assert all(t.head_index == 0 for t in stream.tasks)
    # labels are positions in the class order: class 9 -> 0, class 0 -> 9
    assert set(stream.tasks[0].train_y.tolist()) == {0, 1}
    assert set(stream.tasks[-1].train_y.tolist()) == {8, 9}


def test_one_vs_rest(digits_data):
    stream = build_stream(StreamConfig(stream="one-vs-rest", positive_classes=(5, 4)), digits_data)
    assert stream.head_sizes == (2, 2)
    first = stream.tasks[0]
    assert first.train_y.sum() * 2 == first.n_train  # balanced
    positives = first.train_x[first.train_y == 1]
    expected = digits_data.train_x[digits_data.train_y == 5]
    assert torch.equal(positives, expected)
    shared = build_stream(StreamConfig(stream="one-vs-rest", head="single"), digits_data)
    assert shared.head_sizes == (2,)


def test_subsample_is_balanced_and_seeded(digits_data):
    a = build_stream(StreamConfig(train_per_task=100), digits_data, seed=1)
    b = build_stream(StreamConfig(train_per_task=100), digits_data, seed=1)
    assert a.tasks[0].n_train == 100
    assert torch.bincount(a.tasks[0].train_y).tolist() == [20] * 5
    assert torch.equal(a.tasks[0].train_x, b.tasks[0].train_x)
    c = build_stream(StreamConfig(test_per_task=50), digits_data)
    assert [t.n_test for t in c.tasks] == [50, 50]
    assert torch.bincount(c.tasks[1].test_y).tolist() == [10] * 5


def test_stream_errors(digits_data):
    with pytest.raises(ConfigError, match=r"Unknown stream 'splt'. Did you mean 'split'"):
        build_stream(StreamConfig(stream="splt"), digits_data)
    with pytest.raises(ConfigError, match=r"'stream.n_tasks' parameter must be <= the number of classes \(10\). Got 11"):
        build_stream(StreamConfig(n_tasks=11), digits_data)
    with pytest.raises(ConfigError, match=r"'stream.class_order' parameter must hold class indices in \[0, 9\].*invalid: \[12\]"):
        build_stream(StreamConfig(class_order=(0, 12)), digits_data)
    with pytest.raises(ConfigError, match="must equal the number of positive_classes"):
        build_stream(StreamConfig(stream="one-vs-rest", n_tasks=3), digits_data)
    assert {"split", "one-vs-rest"} <= set(list_streams())


def test_a_task_with_one_class_is_refused_one_vs_rest_is_binary_and_kept(digits_data, tmp_path, capsys):
    import numpy as np

    from forgetlab.cli import main

    with pytest.raises(ConfigError, match=r"^The 'stream.class_order' parameter must give every task at least 2 classes when "
                                          r"split into stream.n_tasks=2 groups .*task 2 gets 1\. Got 3 classes \[1, 2, 3\]"):
        build_stream(StreamConfig(class_order=(1, 2, 3)), digits_data)
    with pytest.raises(ConfigError, match=r"task 1 gets 1"):
        build_stream(StreamConfig(n_tasks=10, head="single"), digits_data)
    # one-vs-rest: one positive class per task, but two labels (no / yes): allowed
    stream = build_stream(StreamConfig(stream="one-vs-rest"), digits_data)
    assert all(len(task.classes) == 1 and set(task.train_y.tolist()) == {0, 1} for task in stream.tasks)
    # a custom task file with one label
    x = np.zeros((6, 1, 4, 4), np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x, y_test=np.arange(6) % 2)
    np.savez(tmp_path / "b.npz", x_train=x, y_train=np.full(6, 3), x_test=x, y_test=np.full(6, 3))
    config = StreamConfig(dataset="custom", stream="custom", custom_paths=(str(tmp_path / "a.npz"), str(tmp_path / "b.npz")))
    with pytest.raises(ConfigError, match=r"at least 2 classes .*task 2 of stream 'custom' \(stream.custom_paths: that task's file\) has 1: label 3"):
        build_stream(config, None)
    # the command line: one line, exit 2, before any training
    code = main(["run", "--set", "stream.class_order=1,2,3", "--store", str(tmp_path / "store"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'stream.class_order' parameter must give every task" in err
