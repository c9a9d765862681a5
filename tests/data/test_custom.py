"""data/custom.py: the content fingerprint behind a run's identity, and the one custom-data
loader used by the custom stream, user data and pseudo-rehearsal's revision inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from forgetlab.data import custom
from forgetlab.data.custom import content_fingerprint, load_revision_inputs, load_task_path, read_labelled_file
from forgetlab.errors import DataError

OLD_NS = 1_600_000_000 * 10**9  # an mtime long past: such files are memoised


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private per-user cache folder; returns the memo file's path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "cache"))
    return tmp_path / "cache" / "forgetlab" / custom.FINGERPRINT_MEMO


def _write(path, data: bytes, mtime_ns: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_fingerprint_follows_every_byte_and_is_stable(tmp_path, cache):
    path = _write(tmp_path / "a.npz", bytes(range(256)) * 64)
    first = content_fingerprint([path])
    assert content_fingerprint([path]) == content_fingerprint([str(path)]) == first
    assert len(first) == 64 and int(first, 16) >= 0
    flipped = bytearray(path.read_bytes())
    flipped[1000] ^= 1
    path.write_bytes(bytes(flipped))  # same size, rewritten at once (same coarse mtime is possible)
    assert content_fingerprint([path]) != first
    assert not cache.exists()  # files this fresh are never memoised


def test_memo_skips_unchanged_files_and_its_documented_caveat(tmp_path, cache, monkeypatch):
    path = _write(tmp_path / "a.npz", b"0123456789", OLD_NS)
    first = content_fingerprint([path])
    memo = json.loads(cache.read_text())
    assert memo[str(path.absolute())]["stamp"] == [10, OLD_NS]
    reads = []
    real_open = open
    with monkeypatch.context() as patched:
        patched.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
        assert content_fingerprint([path]) == first and reads == []  # served from the memo
        assert content_fingerprint([_write(tmp_path / "b.npz", b"0123456789", OLD_NS)]) == first
        assert reads == [tmp_path / "b.npz"]  # a new file is read (then memoised)
    _write(path, b"0123456780")  # one byte changed, new mtime
    changed = content_fingerprint([path])
    assert changed != first
    _write(path, b"0123456789", OLD_NS)  # back to the first content and stamp
    assert content_fingerprint([path]) == first
    _write(path, b"9123456789", OLD_NS)  # caveat: same size, mtime set back -> the memoised digest
    assert content_fingerprint([path]) == first
    cache.unlink()  # deleting the memo is always safe: the file is read again
    assert content_fingerprint([path]) not in (first, changed)


def test_folder_fingerprint_is_order_independent_and_sees_names_and_content(tmp_path, cache):
    files = {"cat/0.png": b"c0", "cat/1.png": b"c1", "dog/0.png": b"d0", "test/dog/9.png": b"d9"}
    for name, data in files.items():
        _write(tmp_path / "one" / name, data)
    for name, data in reversed(list(files.items())):
        _write(tmp_path / "two" / name, data, OLD_NS)
    one = content_fingerprint([tmp_path / "one"])
    assert content_fingerprint([tmp_path / "two"]) == one
    (tmp_path / "two" / "dog" / "0.png").rename(tmp_path / "two" / "dog" / "2.png")
    renamed = content_fingerprint([tmp_path / "two"])
    assert renamed != one
    _write(tmp_path / "two" / "dog" / "2.png", b"dx", OLD_NS + 1)
    assert content_fingerprint([tmp_path / "two"]) not in (one, renamed)
    _write(tmp_path / "one" / "cat" / "extra.txt", b"")
    assert content_fingerprint([tmp_path / "one"]) != one  # every file counts, even an empty one


def test_fingerprint_of_several_paths_keeps_their_order(tmp_path, cache):
    a, b = _write(tmp_path / "a.npz", b"a"), _write(tmp_path / "b.npz", b"b")
    assert content_fingerprint([a, b]) != content_fingerprint([b, a])
    assert content_fingerprint([a]) != content_fingerprint([a, a])
    _write(tmp_path / "dir" / "a.npz", b"a")
    assert content_fingerprint([tmp_path / "dir"]) != content_fingerprint([a])  # a folder is not its file
    missing = content_fingerprint([tmp_path / "nope.npz"])  # no error: the loader reports a missing path
    assert missing == content_fingerprint([tmp_path / "other.npz"]) != content_fingerprint([a])


def test_one_loader_for_streams_and_user_data(tmp_path):
    x = np.arange(4 * 9, dtype=np.uint8).reshape(4, 1, 3, 3)
    np.savez(tmp_path / "t.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x, y_test=np.array([1, 1, 0, 0]))
    (x_train, y_train, _, _), names = load_task_path(tmp_path / "t.npz")
    assert np.array_equal(x_train, x) and names == ("0", "1")
    user_x, user_y = read_labelled_file(tmp_path / "t.npz")  # x_train / y_train when there is no x / y
    assert torch.equal(user_x, torch.from_numpy(x)) and user_y.tolist() == [0, 1, 0, 1]
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    with pytest.raises(DataError, match=r"Custom task file '.*bad\.npz' cannot be read as \.npz"):
        load_task_path(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=r"Data file '.*bad\.npz' cannot be read as \.npz"):
        read_labelled_file(tmp_path / "bad.npz")


def test_revision_inputs_loader(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", inputs=pixels)  # the only array: no need to call it x
    assert torch.equal(load_revision_inputs(tmp_path / "x.npz", (1, 4, 4))[:, 0], torch.from_numpy(pixels))
    np.save(tmp_path / "rgb.npy", np.zeros((2, 4, 4, 3), np.float32))
    loaded = load_revision_inputs(tmp_path / "rgb.npy", (3, 4, 4))
    assert loaded.shape == (2, 3, 4, 4) and loaded.dtype == torch.float32
    np.save(tmp_path / "int.npy", np.zeros((2, 1, 4, 4), np.int32))
    with pytest.raises(DataError, match=r"must be uint8 pixels or floats in \[0, 1\]\. Got torch\.int32"):
        load_revision_inputs(tmp_path / "int.npy", (1, 4, 4))
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    with pytest.raises(DataError, match=r"Cannot read revision inputs '.*bad\.npz'"):
        load_revision_inputs(tmp_path / "bad.npz", (1, 4, 4))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_pixels_are_refused_naming_the_file(tmp_path, bad):
    from forgetlab.api import build_stream_for
    from forgetlab.config import RunConfig, StreamConfig

    x = np.full((6, 1, 4, 4), 0.5, np.float32)
    x[2, 0, 1, 1] = bad
    y = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "task.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    config = RunConfig(stream=StreamConfig(dataset="custom", stream="custom", custom_paths=(str(tmp_path / "task.npz"),), n_tasks=1))
    with pytest.raises(DataError, match=r"task\.npz'.*'x_train' holds (nan|inf) values"):
        build_stream_for(config)
    from forgetlab.data.custom import check_tasks

    with pytest.raises(DataError, match="task 1, x_train: images must be finite"):
        check_tasks([(x, y, x, y)])
    np.savez(tmp_path / "revision.npz", x=x)
    with pytest.raises(DataError, match="revision.npz' must be finite"):
        load_revision_inputs(tmp_path / "revision.npz", (1, 4, 4))
