"""Tiny datasets for the stream tests: in-memory ImageData and files in the official
formats (CIFAR-100 pickles, a CelebA folder / zip, an ImageNet folder), written to temp
folders. Nothing is downloaded. Imported by the ``test_streams_*`` modules."""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from forgetlab.data import sources
from forgetlab.data.files import DATASET_FILES, DatasetFiles, FileSpec
from forgetlab.data.sources import ImageData

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def coarse_of(fine: int) -> int:
    """The fixture's CIFAR-100 fine -> coarse mapping: 5 fine classes per superclass, not fine // 5."""
    return (fine * 7) % 20


def pixel_value(label: int, k: int) -> int:
    """Every image is one grey level: 20 * class + (k % 20), so classes never share a value."""
    return (20 * label + k % 20) % 256


def tiny_images(labels: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    values = [pixel_value(int(label), k) for k, label in enumerate(labels)]
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, *shape).contiguous()


def tiny_data(
    name: str,
    class_names: tuple[str, ...],
    *,
    n_train: int = 6,
    n_test: int = 3,
    shape: tuple[int, int, int] = (3, 4, 4),
    coarse: tuple[str, ...] = (),
    fine_to_coarse=None,
) -> ImageData:
    """``n_train`` / ``n_test`` examples per class, interleaved by class (dataset order)."""
    n = len(class_names)
    train_y = torch.arange(n * n_train) % n
    test_y = torch.arange(n * n_test) % n
    kwargs = {}
    if coarse:
        mapping = torch.tensor([fine_to_coarse(c) for c in range(n)])
        kwargs = {"train_coarse_y": mapping[train_y], "test_coarse_y": mapping[test_y], "coarse_names": coarse}
    return ImageData(
        name, tiny_images(train_y.numpy(), shape), train_y, tiny_images(test_y.numpy() + 7, shape), test_y,
        class_names, (0.5,) * shape[0], (0.25,) * shape[0], **kwargs,
    )


def tiny_cifar10(**kwargs) -> ImageData:
    return tiny_data("cifar10", CIFAR10_NAMES, **kwargs)


def tiny_cifar100() -> ImageData:
    return tiny_data(
        "cifar100", tuple(f"fine{i}" for i in range(100)), n_train=2, n_test=1, coarse=CIFAR100_COARSE,
        fine_to_coarse=coarse_of,
    )


def tiny_imagenet_data(n_super: int = 3, per_super: int = 4) -> ImageData:
    wnids = tuple(f"n{index:08d}" for index in range(n_super * per_super))
    return tiny_data(
        "imagenet", wnids, n_train=3, n_test=2, coarse=tuple(f"super{k}" for k in range(n_super)),
        fine_to_coarse=lambda c: c // per_super,
    )


def tiny_celeba_data(n_train: int = 12, n_test: int = 6) -> ImageData:
    rng = np.random.default_rng(0)
    train_a = torch.from_numpy(rng.integers(0, 2, (n_train, 40), dtype=np.uint8))
    test_a = torch.from_numpy(rng.integers(0, 2, (n_test, 40), dtype=np.uint8))
    train_a[:2, 20], train_a[2:4, 20] = 0, 1  # both values of Male and Smiling in each split
    train_a[:2, 31], train_a[2:4, 31] = 1, 0
    test_a[0, [20, 31]], test_a[1, [20, 31]] = 0, 1
    return ImageData(
        "celeba", torch.randint(0, 256, (n_train, 3, 8, 8), dtype=torch.uint8), torch.zeros(n_train, dtype=torch.int64),
        torch.randint(0, 256, (n_test, 3, 8, 8), dtype=torch.uint8), torch.zeros(n_test, dtype=torch.int64),
        (), (0.5,) * 3, (0.25,) * 3, train_attributes=train_a, test_attributes=test_a,
        attribute_names=tuple(CELEBA_ATTRIBUTES),
    )


# -------------------------------------------------------------- file formats ----

def write_npz_task(path: Path, n_classes: int = 2, n: int = 8, shape=(1, 6, 6), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y_train, y_test = np.arange(n) % n_classes, np.arange(n // 2) % n_classes
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n, *shape), dtype=np.uint8), y_train=y_train,
        x_test=rng.integers(0, 256, (n // 2, *shape), dtype=np.uint8), y_test=y_test,
    )
    return path


def solid_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int], fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def write_cifar100(root: Path, monkeypatch: pytest.MonkeyPatch, n_train_per_class: int = 2, n_test_per_class: int = 1) -> Path:
    """Official-format CIFAR-100 pickles (protocol 3, as numpy writes them) under
    ``root/cifar-100-python``; the registry's checksums are pointed at them."""
    rng = np.random.default_rng(0)

    def split(per_class: int) -> dict:
        fine = [i % 100 for i in range(100 * per_class)]
        return {
            b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
            b"fine_labels": fine,
            b"coarse_labels": [coarse_of(f) for f in fine],
        }

    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE],
    }
    contents = {
        name: pickle.dumps(obj, protocol=3)
        for name, obj in {"train": split(n_train_per_class), "test": split(n_test_per_class), "meta": meta}.items()
    }
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    specs = tuple(FileSpec(name, hashlib.md5(data).hexdigest(), ("cifar-100-python", "")) for name, data in contents.items())
    monkeypatch.setitem(DATASET_FILES, "cifar100", DatasetFiles("cifar100", specs))
    return root


def write_celeba(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, as_zip: bool = False, partition=(0, 0, 0, 0, 0, 0, 1, 2, 2, 2)
) -> tuple[Path, np.ndarray, list[tuple[int, int, int]]]:
    """A CelebA folder in the official layout (``root/celeba``): 178x218 JPEGs of one colour
    each, ``list_attr_celeba.txt`` (count, names, ``+1/-1`` rows with the official
    double-space padding) and ``list_eval_partition.txt``. Returns the folder, the
    0/1 attribute matrix and the colours."""
    folder = root / "celeba"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(partition)
    rng = np.random.default_rng(1)
    values = rng.integers(0, 2, (n, 40)).astype(np.uint8)
    colours = [(int(25 * i) % 256, 255 - int(20 * i), 128) for i in range(n)]
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    buffers = {}
    for name, colour in zip(files, colours):
        buffer = io.BytesIO()
        Image.new("RGB", (178, 218), colour).save(buffer, format="JPEG", quality=95)
        buffers[name] = buffer.getvalue()
    if as_zip:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as archive:
            for name, data in buffers.items():
                archive.writestr(f"img_align_celeba/{name}", data)
        monkeypatch.setattr(sources, "CELEBA_ZIP_MD5", hashlib.md5((folder / "img_align_celeba.zip").read_bytes()).hexdigest())
    else:
        (folder / "img_align_celeba").mkdir(exist_ok=True)
        for name, data in buffers.items():
            (folder / "img_align_celeba" / name).write_bytes(data)
    rows = [f"{name} " + " ".join(f"{1 if v else -1:2d}" for v in row) for name, row in zip(files, values)]
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(rows) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{name} {p}\n" for name, p in zip(files, partition)))
    specs = tuple(
        FileSpec(name, hashlib.md5((folder / name).read_bytes()).hexdigest(), ("celeba", ""))
        for name in ("list_attr_celeba.txt", "list_eval_partition.txt")
    )
    monkeypatch.setitem(DATASET_FILES, "celeba", DatasetFiles("celeba", specs, manual=DATASET_FILES["celeba"].manual))
    return folder, values, colours


def write_imagenet(root: Path, n_super: int = 3, per_super: int = 4, n_train: int = 3, n_val: int = 2) -> tuple[Path, dict[str, list[str]]]:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG`` (40x30 images, one colour per wnid) and
    a mapping file ``root/mapping.txt``. Returns the mapping file and the mapping."""
    mapping = {f"super{k}": [f"n{k * per_super + j + 1:08d}" for j in range(per_super)] for k in range(n_super)}
    for index, wnid in enumerate(w for ws in mapping.values() for w in ws):
        colour = (10 * index, 255 - 10 * index, 60)
        for k in range(n_train):
            solid_image(root / "imagenet" / "train" / wnid / f"{wnid}_{k}.JPEG", colour, (40, 30), "JPEG")
        for k in range(n_val):
            solid_image(root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{index:04d}{k}.JPEG", colour, (30, 40), "JPEG")
    path = root / "mapping.txt"
    path.write_text("# test mapping\n" + "".join(f"{name}: {' '.join(ws)}  # comment\n" for name, ws in mapping.items()))
    return path, mapping
