from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from forgetlab.errors import ConfigError, DataError, IncompatibleError
from forgetlab.user import WrappedModel, check_fits, load_user_data, split_data, user_data


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_x_y_and_x_train(tmp_path):
    data = load_user_data(_npz(tmp_path / "a.npz", x=np.ones((4, 3), np.float32), y=np.array([0, 1, 1, 2])))
    assert data.x.dtype == torch.float32 and data.y.tolist() == [0, 1, 1, 2] and data.n_classes == 3
    data = load_user_data(_npz(tmp_path / "b.npz", x_train=np.zeros((2, 3)), y_train=np.array([0, 1])))
    assert data.n_samples == 2


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"inputs": np.zeros((2, 3)), "y": np.zeros(2, int)}, r"b.npz' must hold arrays 'x' and 'y'.*\['inputs', 'y'\]"),
        ({"x": np.zeros(3), "y": np.zeros(3, int)}, r"b.npz: inputs 'x' must be \(n_samples, ...\) .* Got shape \(3,\)"),
        ({"x": np.zeros((3, 2)), "y": np.array([0.0, 1.5, 2.0])}, "b.npz: labels 'y' must be integers; got float64 values such as 1.5"),
        ({"x": np.zeros((3, 2)), "y": np.array(["a", "b", "c"])}, "labels 'y' must be integers; got dtype <U1"),
        ({"x": np.array([[0.0, np.nan], [1, 2]]), "y": np.array([0, 1])}, r"NaN or infinite values \(first in sample 0\)"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "holds no examples"),
        ({"x": np.zeros((5, 2)), "y": np.zeros(4, int)}, "x has 5 samples but y has 4"),
        ({"x": np.zeros((2, 2)), "y": np.zeros((2, 1), int)}, r"labels 'y' must be 1-D \(n_samples,\). Got shape \(2, 1\)"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "labels 'y' must be >= 0. Got -1"),
    ],
)
def test_npz_validation_errors_name_the_file(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_user_data(_npz(tmp_path / "b.npz", **arrays))


def test_integral_float_labels_are_accepted():
    assert user_data(np.zeros((2, 1)), np.array([1.0, 0.0])).y.dtype == torch.int64


def test_csv_features_and_label_column(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("f1,target,f2\n0.5,1,2\n1.5,0,-3\n")
    data = load_user_data(path, label_column="target")
    assert data.x.tolist() == [[0.5, 2.0], [1.5, -3.0]] and data.y.tolist() == [1, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "f.csv' is empty"),
        ("a,b\n1,2\n", r"no label column 'label'; its columns are \['a', 'b'\]"),
        ("a,label\n", "holds a header but no examples"),
        ("a,label\n1,cat\n", "line 2: label 'cat' in column 'label' is not an integer"),
        ("a,label\nx,1\n", "line 2: a feature is not a number"),
        ("a,b,label\n1,2,0\n1,0\n", "line 3: 2 values for 3 columns"),
        ("a,label\nnan,0\n", "NaN or infinite"),
    ],
)
def test_csv_errors(tmp_path, text, message):
    path = tmp_path / "f.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_user_data(path)


def test_image_folder(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for k in range(5):
            Image.fromarray(np.full((8, 8), 40 * label + k, np.uint8)).save(tmp_path / "imgs" / name / f"{k}.png")
    data = load_user_data(tmp_path / "imgs")
    assert data.x.dtype == torch.uint8 and tuple(data.x.shape) == (10, 1, 8, 8)
    assert sorted(data.y.tolist()) == [0] * 5 + [1] * 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one subfolder per class"):
        load_user_data(tmp_path / "empty")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_user_data(tmp_path / "none.npz")
    (tmp_path / "d.txt").write_text("1")
    with pytest.raises(DataError, match="must be a .npz file .* Got suffix '.txt'"):
        load_user_data(tmp_path / "d.txt")
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="bad.npz' cannot be read as .npz"):
        load_user_data(tmp_path / "bad.npz")


def test_check_fits_shapes_and_labels():
    known = WrappedModel(nn.Sequential(nn.Linear(3, 2)), input_shape=(3,))
    with pytest.raises(IncompatibleError, match=r"d: inputs of shape \(4,\) do not fit the model, which expects \(3,\)"):
        check_fits(user_data(np.zeros((2, 4)), [0, 1], "d"), known)
    with pytest.raises(IncompatibleError, match="labels go up to 2 but the model has 2 outputs"):
        check_fits(user_data(np.zeros((2, 3)), [0, 2], "d"), known)
    unknown = WrappedModel(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(IncompatibleError, match=r"d: inputs of shape \(5,\) do not fit the model"):
        check_fits(user_data(np.zeros((2, 5)), [0, 1], "d"), unknown)
    check_fits(user_data(np.zeros((2, 3)), [0, 1], "d"), unknown)


def test_split_is_seeded_and_disjoint():
    data = user_data(np.arange(20, dtype=np.float32)[:, None], np.arange(20) % 2)
    train, test = split_data(data, 0.25, seed=1)
    again = split_data(data, 0.25, seed=1)[1]
    assert test.x.tolist() == again.x.tolist() and test.n_samples == 5
    assert not set(train.x[:, 0].tolist()) & set(test.x[:, 0].tolist())
    with pytest.raises(ConfigError, match="'test_fraction' parameter must be in \\(0, 1\\). Got 1.5"):
        split_data(data, 1.5)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(st.sampled_from([np.float32, np.float64, np.uint8, np.int64, np.bool_]), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
    y=hnp.arrays(st.sampled_from([np.int64, np.float64, np.int8]), hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)),
)
def test_any_arrays_give_user_data_or_a_data_error(x, y):
    try:
        data = user_data(x, y, "fuzz")
    except DataError as exc:
        assert str(exc).startswith("fuzz")
        return
    assert data.x.shape[0] == data.y.shape[0] > 0 and data.y.dtype == torch.int64
    assert data.x.dtype in (torch.uint8, torch.float32) and bool(torch.isfinite(data.x.float()).all())
