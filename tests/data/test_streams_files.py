"""Streams from files in the official formats, written to temp folders: CIFAR-100 pickles,
a CelebA folder and zip, an ImageNet folder with a mapping file, image folders and .npz
files for the custom stream; and the decoded-array disk cache behind them."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from streams_fixtures import CIFAR100_COARSE, coarse_of, solid_image, write_celeba, write_cifar100, write_imagenet

from forgetlab.config import RunConfig, StreamConfig
from forgetlab.api import build_stream_for
from forgetlab.data import cache, images, sources
from forgetlab.data.cache import cache_key, cached_arrays, decoded_cache_dir, load_arrays, save_arrays
from forgetlab.data.images import default_superclass_map_text, read_superclass_map
from forgetlab.data.sources import clear_cache, load_source
from forgetlab.data.streams import build_stream, load_stream_data
from forgetlab.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path, monkeypatch):
    """A disk cache per test (tests look inside it) and an empty in-process cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    clear_cache()
    yield
    clear_cache()


def stream_for(root, **fields) -> "object":
    return build_stream_for(RunConfig(stream=StreamConfig(**fields)), data_dir=root)


# --------------------------------------------------------------- CIFAR-100 ----

def test_cifar100_shift_from_official_pickles(tmp_path, monkeypatch):
    root = write_cifar100(tmp_path, monkeypatch)
    stream = stream_for(root, dataset="cifar100", stream="cifar100-shift", superclasses=("vehicles_2", "fish", "people"))
    assert stream.head_sizes == (3,) and stream.input_shape == (3, 32, 32) and stream.augment
    chosen = (19, 1, 14)
    for index, task in enumerate(stream.tasks):
        assert task.label_names == tuple(CIFAR100_COARSE[s] for s in chosen)
        fines = [f for s in chosen for f in [g for g in range(100) if coarse_of(g) == s][2 * index : 2 * index + 2]]
        assert list(task.classes) == fines
        assert task.n_train == 2 * len(fines) and task.n_test == len(fines)
        assert torch.bincount(task.train_y).tolist() == [4, 4, 4]  # 2 fine classes x 2 images per superclass
        assert torch.equal(task.test_y, torch.tensor([chosen.index(coarse_of(int(f))) for f in task.test_source_y]))
    assert set(stream.tasks[0].classes).isdisjoint(stream.tasks[1].classes)


def test_cifar100_warm_load_reads_the_disk_cache(tmp_path, monkeypatch):
    root = write_cifar100(tmp_path, monkeypatch)
    cold = load_source("cifar100", data_dir=root)
    clear_cache()
    monkeypatch.setattr(sources, "_unpickle", lambda *a: pytest.fail("decoded again despite the disk cache"))
    warm = load_source("cifar100", data_dir=root)
    for name in ("train_x", "train_y", "test_x", "test_y", "train_coarse_y", "test_coarse_y"):
        assert torch.equal(getattr(cold, name), getattr(warm, name))
        assert getattr(warm, name).dtype == getattr(cold, name).dtype
    assert (warm.class_names, warm.coarse_names, warm.mean, warm.std) == (cold.class_names, cold.coarse_names, cold.mean, cold.std)


def test_corrupt_cache_entry_is_rebuilt_silently(tmp_path, monkeypatch):
    root = write_cifar100(tmp_path, monkeypatch)
    expected = load_source("cifar100", data_dir=root).train_x.clone()  # loads map the entry: copy before damaging it
    clear_cache()
    (entry,) = [p for p in decoded_cache_dir().iterdir() if not p.name.startswith(".")]
    array = entry / "train_x.npy"
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    calls = []
    original = sources._unpickle
    monkeypatch.setattr(sources, "_unpickle", lambda *a: calls.append(a) or original(*a))
    rebuilt = load_source("cifar100", data_dir=root)
    assert calls and torch.equal(rebuilt.train_x, expected)
    assert np.load(array).shape == (200, 3, 32, 32)  # the entry was rewritten
    assert not list(decoded_cache_dir().glob(".*.tmp"))


# ------------------------------------------------------------------ CelebA ----

@pytest.mark.parametrize("as_zip", [False, True])
def test_celeba_from_official_files(tmp_path, monkeypatch, as_zip):
    _, values, colours = write_celeba(tmp_path, monkeypatch, as_zip=as_zip)
    data = load_source("celeba", data_dir=tmp_path, image_size=16)
    train, test = [0, 1, 2, 3, 4, 5], [7, 8, 9]  # partition 0 and 2; 6 is validation (unused)
    assert data.train_x.shape == (6, 3, 16, 16) and data.test_x.shape == (3, 3, 16, 16)
    assert data.train_x.dtype == torch.uint8 and data.attribute_names[20] == "Male"
    assert torch.equal(data.train_attributes, torch.from_numpy(values[train]))
    assert torch.equal(data.test_attributes, torch.from_numpy(values[test]))
    for row, image in zip(train, data.train_x):
        assert (image.float().mean((1, 2)) - torch.tensor(colours[row], dtype=torch.float)).abs().max() < 4  # JPEG
    stream = stream_for(tmp_path, dataset="celeba", stream="celeba-attributes", image_size=16)
    assert stream.head_sizes == (2, 2) and [t.name for t in stream.tasks] == ["task1: Male", "task2: Smiling"]
    assert torch.equal(stream.tasks[1].test_y, torch.from_numpy(values[test, 31]).long())


def test_celeba_decodes_once_per_size(tmp_path, monkeypatch):
    write_celeba(tmp_path, monkeypatch)
    first = load_source("celeba", data_dir=tmp_path, image_size=8)
    clear_cache()
    decode = images.decode_images
    monkeypatch.setattr(images, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    assert torch.equal(load_source("celeba", data_dir=tmp_path, image_size=8).train_x, first.train_x)
    monkeypatch.setattr(images, "decode_images", decode)
    assert load_source("celeba", data_dir=tmp_path, image_size=12).train_x.shape[2:] == (12, 12)
    assert load_source("celeba", data_dir=tmp_path).train_x.shape[2:] == (64, 64)  # the default size


def test_celeba_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"Missing file\(s\) for dataset 'celeba'.*cannot be downloaded automatically.*img_align_celeba\.zip"):
        load_source("celeba", data_dir=tmp_path / "empty", download=True)
    folder, _, _ = write_celeba(tmp_path, monkeypatch)
    (folder / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataError, match=r"lacks 1 of the 10 images listed in list_attr_celeba\.txt, e\.g\. '.*000003\.jpg'"):
        load_source("celeba", data_dir=tmp_path)
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    lines[4] = lines[4].replace("-1", "0", 1)
    bad = tmp_path / "bad_attr.txt"
    bad.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"line 5: expected a file name and 40 values of 1 or -1"):
        images.read_celeba_attributes(bad)
    bad.write_text("3\n" + "\n".join(lines[1:]))
    with pytest.raises(DataError, match=r"announces 3 images but lists 10"):
        images.read_celeba_attributes(bad)
    bad.write_text("000001.jpg 3\n")
    with pytest.raises(DataError, match=r"line 1: expected '<file> <0\|1\|2>'"):
        images.read_celeba_partition(bad)


# --------------------------------------------------------------- ImageNet ----

def test_imagenet_superclass_from_folders(tmp_path):
    mapping_file, mapping = write_imagenet(tmp_path)
    config = StreamConfig(dataset="imagenet", stream="imagenet-superclass", superclass_map=str(mapping_file), image_size=8)
    data = load_stream_data(config, data_dir=tmp_path)
    wnids = [w for ws in mapping.values() for w in ws]
    assert data.class_names == tuple(wnids) and data.coarse_names == ("super0", "super1", "super2")
    assert data.train_x.shape == (36, 3, 8, 8) and data.test_x.shape == (24, 3, 8, 8)
    assert data.train_coarse_y.tolist() == [k // 12 for k in range(36)]
    assert data.train_x[3, :, 4, 4].tolist() == pytest.approx([10, 245, 60], abs=4)  # wnid 2's colour
    stream = build_stream(config, data)
    assert stream.head_sizes == (3,) and stream.input_shape == (3, 8, 8)
    assert [t.classes for t in stream.tasks] == [(0, 1, 4, 5, 8, 9), (2, 3, 6, 7, 10, 11)]
    assert torch.equal(stream.tasks[1].train_y, torch.tensor([k for k in range(3) for _ in range(6)]))


def test_imagenet_errors(tmp_path):
    with pytest.raises(DataError, match=r"ImageNet folders not found: expected .*imagenet/train.*cannot be downloaded automatically"):
        load_source("imagenet", data_dir=tmp_path)
    mapping_file, mapping = write_imagenet(tmp_path, n_super=2, per_super=2, n_train=1, n_val=1)
    with pytest.raises(DataError, match=r"has no folder for 117 of the 117 wnids of the default mapping: n01440764, .*superclass_map"):
        load_source("imagenet", data_dir=tmp_path)
    wnid = mapping["super1"][0]
    for image in (tmp_path / "imagenet" / "val" / wnid).iterdir():
        image.rename(tmp_path / "imagenet" / "val" / image.name)
    (tmp_path / "imagenet" / "val" / wnid).rmdir()
    with pytest.raises(DataError, match=rf"has no folder for 1 of the 4 wnids of mapping file .*: {wnid}\. .*holds images directly: sort them into one folder per wnid"):
        load_source("imagenet", data_dir=tmp_path, superclass_map=mapping_file)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fish n01440764\n", r"line 1: expected 'superclass: wnid wnid \.\.\.'"),
        ("fish: n01440764\nfish: n01443537\n", r"line 2: superclass 'fish' is listed twice"),
        ("fish:\n", r"superclass 'fish' has no wnids \(an empty class set\)"),
        ("fish: n0144076\n", r"'n0144076' is not a WordNet id"),
        ("fish: n01440764\nshark: n01440764\n", r"wnid n01440764 is in superclasses 'fish' and 'shark'; superclasses must not overlap"),
        ("# nothing\n", r"lists no superclass"),
    ],
)
def test_superclass_map_errors(tmp_path, text, message):
    path = tmp_path / "map.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_superclass_map(path)


def test_default_superclass_map():
    mapping = read_superclass_map()
    assert len(mapping) == 20 and list(mapping)[:3] == ["fish", "bird", "amphibian"]
    assert all(len(wnids) >= 4 for wnids in mapping.values())  # enough for 2 tasks x 2 fine classes
    text = default_superclass_map_text()
    assert text.index("# animals") < text.index("dog:") < text.index("# artifacts") < text.index("car:")
    assert sum(len(w) for w in mapping.values()) == len({w for ws in mapping.values() for w in ws}) == 117


# ------------------------------------------------------- custom image folders ----

def test_custom_image_folders(tmp_path):
    flat = tmp_path / "flat"
    for label, name in enumerate(["cat", "dog"]):
        for k in range(5):
            solid_image(flat / name / f"{k}.png", (80 * label + k, 80 * label + k, 80 * label + k), (6, 6))
    split = tmp_path / "split"
    for part, n in (("train", 3), ("test", 2)):
        for label, name in enumerate(["ant", "bee", "cow"]):
            for k in range(n):
                solid_image(split / part / name / f"{k}.jpg", (200, 30 * label, 10), (9, 7), "JPEG")
    config = StreamConfig(dataset="custom", stream="custom", custom_paths=(str(flat), str(split)), image_size=6)
    stream = build_stream_for(RunConfig(stream=config))
    first, second = stream.tasks
    assert stream.input_shape == (3, 6, 6) and stream.head_sizes == (2, 3)
    assert stream.class_names == ("cat", "dog", "ant", "bee", "cow")
    assert first.n_train == 8 and first.n_test == 2 and first.test_y.tolist() == [0, 1]  # every 5th image is a test image
    assert first.test_x[:, :, 0, 0].tolist() == [[4, 4, 4], [84, 84, 84]]  # grey folder made RGB next to a colour one
    assert second.n_train == 9 and second.n_test == 6 and second.classes == (2, 3, 4)
    grey = build_stream_for(RunConfig(stream=StreamConfig(dataset="custom", stream="custom", custom_paths=(str(flat),), n_tasks=1)))
    assert grey.input_shape == (1, 6, 6)  # every image grey -> one channel, native size
    with pytest.raises(DataError, match=r"is 9x7, but .* is 6x6: images of different sizes need a resize size \(set stream\.image_size\)"):
        solid_image(flat / "cat" / "odd.png", (1, 2, 3), (9, 7))
        build_stream_for(RunConfig(stream=StreamConfig(dataset="custom", stream="custom", custom_paths=(str(flat),), n_tasks=1)))


def test_custom_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"must hold one subfolder per class; it holds none"):
        build_stream(StreamConfig(dataset="custom", stream="custom", custom_paths=(str(tmp_path / "empty"),), n_tasks=1), None)
    solid_image(tmp_path / "few" / "a" / "0.png", (0, 0, 0), (4, 4))
    with pytest.raises(DataError, match=r"yields no test images: give it train/ and test/ subfolders"):
        build_stream(StreamConfig(dataset="custom", stream="custom", custom_paths=(str(tmp_path / "few"),), n_tasks=1), None)
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"Cannot decode image '.*0\.png'"):
        images.decode_images([tmp_path / "broken" / "a" / "0.png"], 4)


# ------------------------------------------------------------- disk cache ----

def test_cache_roundtrip_and_atomic_layout():
    key = cache_key(source="t", files={"a": "1"})
    assert key == cache_key(files={"a": "1"}, source="t") != cache_key(source="t", files={"a": "2"})
    arrays = {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.arange(3)}
    assert save_arrays(key, arrays, {"names": ["a", "b"]})
    loaded, meta = load_arrays(key)
    assert meta == {"names": ["a", "b"]} and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert sorted(p.name for p in (decoded_cache_dir() / key).iterdir()) == ["index.json", "x.npy", "y.npy"]
    assert [p.name for p in decoded_cache_dir().iterdir()] == [key]  # no temporary folder left


def test_cache_rejects_entries_that_do_not_match_their_index():
    key = cache_key(source="t2")
    save_arrays(key, {"x": np.zeros((2, 2), np.uint8)}, {})
    index = decoded_cache_dir() / key / "index.json"
    data = json.loads(index.read_text())
    data["arrays"]["x"][0] = [3, 2]
    index.write_text(json.dumps(data))
    assert load_arrays(key) is None
    index.write_text("{not json")
    assert load_arrays(key) is None
    built = []
    arrays, _ = cached_arrays(key, lambda: built.append(1) or ({"x": np.ones(2, np.uint8)}, {}))
    assert built == [1] and load_arrays(key)[0]["x"].tolist() == [1, 1]


def test_cache_rejects_arrays_changed_in_place_and_a_malformed_index():
    key = cache_key(source="t-checksum")
    x = np.arange(4000, dtype=np.int64).reshape(1000, 4).astype(np.uint8)
    save_arrays(key, {"x": x}, {})
    path = decoded_cache_dir() / key / "x.npy"
    data = bytearray(path.read_bytes())
    half = len(data) // 2
    data[half:] = bytes(len(data) - half)  # the second half zeroed: same size, same shape
    path.write_bytes(bytes(data))
    getattr(cache, "_VERIFIED", set()).clear()  # a new process: nothing verified yet
    assert load_arrays(key) is None
    for malformed in ('{"arrays": 5}', '{"arrays": {"x": 3}, "meta": {}}', "[]"):
        (decoded_cache_dir() / key / "index.json").write_text(malformed)
        assert load_arrays(key) is None
    arrays, _ = cached_arrays(key, lambda: ({"x": x}, {}))  # rebuilt
    assert np.array_equal(load_arrays(key)[0]["x"], x)


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert not save_arrays("k", {"x": np.zeros(1)}, {})
    arrays, meta = cached_arrays("k", lambda: ({"x": np.ones(1)}, {"m": 1}))
    assert arrays["x"].tolist() == [1.0] and meta == {"m": 1}


def test_stale_temporary_folders_are_removed(monkeypatch):
    root = decoded_cache_dir()
    stale = root / ".dead.abc.tmp"
    stale.mkdir(parents=True)
    os.utime(stale, (0, 0))
    fresh = root / ".live.abc.tmp"
    fresh.mkdir()
    save_arrays(cache_key(source="t3"), {"x": np.zeros(1)}, {})
    assert not stale.exists() and fresh.exists()
    assert cache.STALE_TMP_SECONDS >= 3600


def test_unknown_image_size_for_fixed_size_source_is_an_error(tmp_path, monkeypatch):
    root = write_cifar100(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"'stream\.image_size' parameter applies only to the datasets celeba, imagenet"):
        stream_for(root, dataset="cifar100", stream="cifar100-shift", image_size=16)


def test_without_a_writable_cache_decoded_data_stays_in_memory(tmp_path, monkeypatch):
    root = write_cifar100(tmp_path, monkeypatch)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    first = load_source("cifar100", data_dir=root)
    monkeypatch.setattr(sources, "_unpickle", lambda *a: pytest.fail("decoded twice in one process"))
    first.train_x.zero_()
    second = load_source("cifar100", data_dir=root)
    assert int(second.train_x.max()) > 0 and second.train_x.data_ptr() != first.train_x.data_ptr()


def test_loads_are_private_memory_maps(tmp_path, monkeypatch):
    root = write_cifar100(tmp_path, monkeypatch)
    first = load_source("cifar100", data_dir=root)
    resolve_files = sources.resolve_files
    monkeypatch.setattr(sources, "resolve_files", lambda *a: pytest.fail("verified twice in one process"))
    first.train_x.zero_()  # copy-on-write: neither the file nor the next load sees it
    second = load_source("cifar100", data_dir=root)
    assert int(second.train_x.max()) > 0
    clear_cache()
    monkeypatch.setattr(sources, "resolve_files", resolve_files)
    assert int(load_source("cifar100", data_dir=root).train_x.max()) > 0


@pytest.mark.parametrize("module", ["forgetlab.data.streams", "forgetlab.data.cache", "forgetlab.data.images"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 5
