"""Data sources: the registry, the digits loader, and the official-file loaders."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetlab.data import files, sources
from forgetlab.data.files import DATASET_FILES, Archive, DatasetFiles, FileSpec
from forgetlab.data.sources import (
    SOURCES,
    DatasetDefaults,
    ImageData,
    dataset_defaults,
    list_sources,
    load_source,
    read_idx,
)
from forgetlab.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")


def official(shared_data: Path, name: str) -> ImageData:
    folder = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py"}[name]
    if not (shared_data / folder).is_dir():
        pytest.skip(f"{shared_data / folder} not found")
    return load_source(name, data_dir=shared_data)


def check_image_data(data: ImageData, n_train: int, n_test: int, shape: tuple[int, int, int], n_classes: int) -> None:
    assert data.train_x.shape == (n_train, *shape) and data.test_x.shape == (n_test, *shape)
    assert data.train_x.dtype == data.test_x.dtype == torch.uint8
    assert data.train_y.shape == (n_train,) and data.test_y.shape == (n_test,)
    assert data.train_y.dtype == data.test_y.dtype == torch.int64
    assert data.n_classes == n_classes and data.input_shape == shape
    assert int(data.train_y.min()) == 0 and int(data.train_y.max()) == n_classes - 1
    assert len(data.mean) == len(data.std) == shape[0]
    assert all(0 < m < 1 for m in data.mean) and all(0 < s < 1 for s in data.std)


# --------------------------------------------------------------- registry ----

def test_registry_entries_have_defaults_and_descriptions():
    assert set(SOURCES) >= {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100"}
    assert set(list_sources()) == set(SOURCES)
    for name in SOURCES:
        assert isinstance(dataset_defaults(name), DatasetDefaults)
        assert list_sources()[name]
    assert dataset_defaults("mnist") == DatasetDefaults(model="mlp", epochs=1, lr=0.05, augment=False)
    assert dataset_defaults("cifar100") == DatasetDefaults(model="vgg", epochs=2, lr=0.05, augment=True)


def test_unknown_source_suggests_close_name():
    with pytest.raises(ConfigError, match=r"Unknown dataset 'cifar-10'\. Did you mean 'cifar10'\?.*Valid datasets: "):
        load_source("cifar-10")
    with pytest.raises(ConfigError, match="Unknown dataset 'mnsit'"):
        dataset_defaults("mnsit")


# ----------------------------------------------------------------- digits ----

def test_digits():
    data = load_source("digits")
    check_image_data(data, 1438, 359, (1, 8, 8), 10)
    assert len(data.train_x) + len(data.test_x) == 1797
    assert int(data.train_x.max()) == 255 and int(data.train_x.min()) == 0
    assert data.train_coarse_y is None and data.coarse_names == ()


# ------------------------------------------------------------ real files ----

def test_mnist(shared_data):
    data = official(shared_data, "mnist")
    check_image_data(data, 60000, 10000, (1, 28, 28), 10)
    assert data.class_names == tuple("0123456789")
    assert data.train_y[:5].tolist() == [5, 0, 4, 1, 9] and data.test_y[0].item() == 7
    assert data.mean[0] == pytest.approx(0.1307, abs=1e-4) and data.std[0] == pytest.approx(0.3081, abs=1e-4)


def test_fashion_mnist(shared_data):
    data = official(shared_data, "fashion-mnist")
    check_image_data(data, 60000, 10000, (1, 28, 28), 10)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[-1] == "Ankle boot"
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert data.train_y[0].item() == 9  # the first training image is an ankle boot


def test_cifar10(shared_data):
    data = official(shared_data, "cifar10")
    check_image_data(data, 50000, 10000, (3, 32, 32), 10)
    assert data.class_names == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert torch.bincount(data.train_y).tolist() == [5000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert data.train_y[:3].tolist() == [6, 9, 9] and data.test_y[0].item() == 3
    assert data.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-4)
    assert data.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=1e-4)


def test_repeated_load_is_cached_and_private(shared_data, monkeypatch):
    first = official(shared_data, "mnist")
    monkeypatch.setattr(sources, "resolve_files", lambda *a: pytest.fail("a cached dataset was read again"))
    first.train_x.zero_()
    second = official(shared_data, "mnist")
    assert int(second.train_x.max()) == 255
    assert second.train_x.data_ptr() != official(shared_data, "mnist").train_x.data_ptr()


def test_torchvision_layout_loads(tmp_path, shared_data):
    if not (shared_data / "fashion-mnist").is_dir():
        pytest.skip("fashion-mnist files not found")
    (tmp_path / "FashionMNIST" / "raw").mkdir(parents=True)
    for file in DATASET_FILES["fashion-mnist"].files:
        (tmp_path / "FashionMNIST" / "raw" / file.name).symlink_to(shared_data / "fashion-mnist" / file.name)
    data = load_source("fashion-mnist", data_dir=tmp_path)
    assert torch.equal(data.test_x, official(shared_data, "fashion-mnist").test_x)


# ------------------------------------------------------------------- IDX ----

@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc", "Malformed IDX header"),  # float type code
        (b"\x01\x02", "Malformed IDX header"),
        (b"\x00\x00\x08\x03" + (3).to_bytes(4, "big"), "need 16 header bytes"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc", r"dimensions \(5,\) need 13 bytes, the file holds 11"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path, raw, rule):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=rule) as info:
        read_idx(path)
    assert repr(str(path)) in str(info.value)


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()))
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_not_gzip(tmp_path):
    (tmp_path / "plain.gz").write_bytes(b"\x00\x00\x08\x01")
    with pytest.raises(DataError, match=r"Cannot read IDX file '.*plain\.gz'"):
        read_idx(tmp_path / "plain.gz")


# -------------------------------------------- CIFAR-100 on fake tiny files ----

def fake_cifar100(tmp_path: Path, n_train: int = 12, n_test: int = 6) -> dict[str, bytes]:
    """Pickled bytes of tiny CIFAR-100-like files. Protocol 3: Python 3's protocol 2
    pickles bytes through ``_codecs.encode``, a global the loader (rightly) refuses."""
    rng = np.random.default_rng(0)

    def split(n):
        fine = [i % 100 for i in range(n)]
        return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}

    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    return {name: pickle.dumps(obj, protocol=3) for name, obj in {"train": split(n_train), "test": split(n_test), "meta": meta}.items()}


def use_fake_cifar100(monkeypatch, contents: dict[str, bytes], archive: Archive | None = None) -> None:
    specs = tuple(FileSpec(name, hashlib.md5(data).hexdigest(), ("cifar-100-python", "")) for name, data in contents.items())
    monkeypatch.setitem(DATASET_FILES, "cifar100", DatasetFiles("cifar100", specs, archive))


def test_cifar100_download_and_coarse_labels(tmp_path, monkeypatch):
    contents = fake_cifar100(tmp_path)
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    use_fake_cifar100(monkeypatch, contents, Archive(archive.as_uri(), files.md5_file(archive)))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="Missing file"):
        load_source("cifar100", data_dir=root)
    data = load_source("cifar100", data_dir=root, download=True)
    assert (root / "cifar-100-python" / "meta").is_file()
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_y.dtype == data.train_coarse_y.dtype == torch.int64
    assert data.n_classes == 100 and len(data.coarse_names) == 20 and data.coarse_names[3] == "coarse3"
    assert torch.equal(data.train_coarse_y, data.train_y // 5) and torch.equal(data.test_coarse_y, data.test_y // 5)
    raw = pickle.loads(contents["train"], encoding="bytes")[b"data"]
    assert torch.equal(data.train_x[1], torch.from_numpy(raw[1]).reshape(3, 32, 32))


def test_clear_cache_reads_files_again(shared_data, monkeypatch):
    official(shared_data, "mnist")
    sources.clear_cache()
    monkeypatch.setattr(sources, "resolve_files", lambda *a: pytest.fail("read again"))
    with pytest.raises(pytest.fail.Exception, match="read again"):
        official(shared_data, "mnist")


def test_corrupt_pickle_is_never_unpickled(tmp_path, monkeypatch):
    contents = fake_cifar100(tmp_path)
    use_fake_cifar100(monkeypatch, contents)
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data if name != "meta" else data[:-1] + b"!")
    monkeypatch.setattr(sources, "_unpickle", lambda *a: pytest.fail("unpickled a file that failed its checksum"))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "meta")) + ".*expected md5"):
        load_source("cifar100", data_dir=tmp_path)


def test_pickle_with_foreign_global_is_refused(tmp_path, monkeypatch):
    contents = fake_cifar100(tmp_path)
    contents["meta"] = pickle.dumps({b"fine_label_names": [], b"coarse_label_names": Path("x")}, protocol=3)
    use_fake_cifar100(monkeypatch, contents)
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=r"Cannot unpickle CIFAR file '.*meta'.*pathlib.*not allowed"):
        load_source("cifar100", data_dir=tmp_path)
