"""Find, verify and download a dataset's official files.

Lookup: one data root is used, the first that applies: the explicit ``data_dir``
(``--data-dir``), else ``$FORGETLAB_DATA``, else the per-user cache folder
(``$XDG_CACHE_HOME/forgetlab``, ``~/.cache/forgetlab``, or ``%LOCALAPPDATA%/forgetlab``
on Windows). Under that root each file may sit in the official layout
(``mnist/``, ``cifar-10-batches-py/`` ...), torchvision's layout (``MNIST/raw/`` ...),
or directly in the root. Every file is checked against its official MD5; checksums
already verified are remembered in ``checksums.json`` in the per-user cache folder,
keyed by (absolute path, size, mtime_ns), so a changed file is hashed again; a file
edited in place with its size and mtime restored is not: :func:`verify_data`
(``forgetlab verify-data``) rehashes every file.

Example:
    paths = resolve_files(DATASET_FILES["mnist"], data_dir="/data")
    paths["train-labels-idx1-ubyte.gz"]
    PosixPath('/data/mnist/train-labels-idx1-ubyte.gz')
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from forgetlab.errors import DataError, unknown_name

ENV_VAR = "FORGETLAB_DATA"
CHECKSUM_CACHE_NAME = "checksums.json"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileSpec:
    """One required file: its name, official MD5, the folders (relative to a data root,
    ``""`` = the root itself) it may sit in, first = where a download puts it, and the
    URL it downloads from when it is not part of an archive."""

    name: str
    md5: str
    folders: tuple[str, ...]
    url: str | None = None


@dataclass(frozen=True)
class Archive:
    """An official archive that, extracted into the data root, provides a dataset's files."""

    url: str
    md5: str


@dataclass(frozen=True)
class DatasetFiles:
    """The files a dataset needs, and the archive (if any) that provides them all.
    ``manual`` says how to get files that cannot be downloaded automatically."""

    name: str
    files: tuple[FileSpec, ...]
    archive: Archive | None = None
    manual: str | None = None


def _idx_files(folders: tuple[str, ...], base_url: str, md5s: dict[str, str]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(name, md5, folders, base_url + name) for name, md5 in md5s.items())


_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR10_FOLDERS = ("cifar-10-batches-py", "")
_CIFAR100_FOLDERS = ("cifar-100-python", "")

DATASET_FILES: dict[str, DatasetFiles] = {
    "mnist": DatasetFiles("mnist", _idx_files(("mnist", "MNIST/raw", ""), _MNIST_URL, {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    })),
    "fashion-mnist": DatasetFiles("fashion-mnist", _idx_files(("fashion-mnist", "FashionMNIST/raw", ""), _FASHION_URL, {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    })),
    "cifar10": DatasetFiles("cifar10", tuple(FileSpec(name, md5, _CIFAR10_FOLDERS) for name, md5 in {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    }.items()), Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")),
    "cifar100": DatasetFiles("cifar100", tuple(FileSpec(name, md5, _CIFAR100_FOLDERS) for name, md5 in {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    }.items()), Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")),
    # The aligned images (img_align_celeba.zip, md5 00d2c5bc6d35e252742224ab0c1e8fcb, or the
    # folder it extracts to) are found next to these two files by the CelebA loader.
    "celeba": DatasetFiles("celeba", tuple(FileSpec(name, md5, ("celeba", "")) for name, md5 in {
        "list_attr_celeba.txt": "75e246fa4810816ffd6ee81facbd244c",
        "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
    }.items()), manual=(
        "CelebA is shared through Google Drive and cannot be downloaded automatically: fetch "
        "img_align_celeba.zip, list_attr_celeba.txt and list_eval_partition.txt from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into <data root>/celeba/"
    )),
}


# ------------------------------------------------------------------- roots ----

def user_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/forgetlab``, ``~/.cache/forgetlab``,
    or ``%LOCALAPPDATA%/forgetlab`` on Windows.

    Example:
        >>> user_cache_dir().name
        'forgetlab'
    """
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "forgetlab"


def find_data_root(data_dir: str | Path | None = None) -> list[Path]:
    """The data roots searched, in order. Only one root is used, the first that applies:
    ``data_dir`` if given, else ``$FORGETLAB_DATA`` if set, else :func:`user_cache_dir`.

    Example:
        >>> find_data_root("/data")
        [PosixPath('/data')]
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR]).expanduser()]
    return [user_cache_dir()]


def _root_origin(data_dir: str | Path | None) -> str:
    if data_dir is not None:
        return "--data-dir / data_dir"
    return f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default cache folder"


# --------------------------------------------------------------- checksums ----

def md5_file(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """MD5 hex digest of a file, read in chunks of ``chunk_bytes``.

    Example:
        >>> md5_file(Path(__file__)) == hashlib.md5(Path(__file__).read_bytes()).hexdigest()
        True
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key(path: Path) -> tuple[str, list[int]]:
    st = path.stat()
    return str(path.absolute()), [st.st_size, st.st_mtime_ns]


def read_cache_json(name: str) -> dict[str, Any]:
    """The JSON object in the per-user cache file ``name``; ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads((user_cache_dir() / name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache_json(name: str, data: dict[str, Any]) -> None:
    """Replace the per-user cache file ``name`` atomically; silently skip when the cache
    cannot be written (a cache is never needed to be correct)."""
    try:
        folder = user_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            json.dump(data, f)
        os.replace(f.name, folder / name)
    except OSError:
        pass


def _read_checksum_cache() -> dict:
    return read_cache_json(CHECKSUM_CACHE_NAME)


def _remember_checksum(path: Path, md5: str) -> None:
    """Record a verified checksum; silently skip when the cache cannot be written."""
    try:
        key, stamp = _cache_key(path)
    except OSError:
        return
    cache = _read_checksum_cache()
    cache[key] = {"stamp": stamp, "md5": md5}
    write_cache_json(CHECKSUM_CACHE_NAME, cache)


def verify_file(path: str | Path, md5: str, *, rehash: bool = False) -> None:
    """Raise :class:`DataError` unless the file's MD5 is ``md5``. A checksum verified
    before for the same (absolute path, size, mtime_ns) is not computed again, unless ``rehash``.

    Example:
        verify_file("mnist/t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")
    """
    path = Path(path)
    key, stamp = _cache_key(path)
    known = _read_checksum_cache().get(key)
    if not rehash and isinstance(known, dict) and known.get("stamp") == stamp and known.get("md5") == md5:
        return
    actual = md5_file(path)
    if actual != md5:
        raise DataError(
            f"Checksum mismatch for {str(path)!r}: expected md5 {md5}, got {actual}. The file is "
            f"corrupt or not the official one: delete it and fetch it again (--download / download=True)."
        )
    _remember_checksum(path, md5)


# ---------------------------------------------------------------- download ----

def download_url(url: str, dest: str | Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` (temp file, MD5 check, then atomic rename). A tqdm
    progress bar shows when stderr is a terminal. Nothing is left at ``dest`` on failure.

    Example:
        download_url("file:///tmp/x.gz", "/tmp/data/x.gz", "d41d8cd98f00b204e9800998ecf8427e")
        PosixPath('/tmp/data/x.gz')
    """
    from tqdm import tqdm

    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    except OSError as exc:
        raise DataError(f"Cannot write to folder {str(dest.parent)!r}: {exc}. Choose a writable --data-dir.") from None
    tmp = Path(tmp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not sys.stderr.isatty()) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != md5:
            raise DataError(
                f"Checksum mismatch for the download of {url}: expected md5 {md5}, got {actual}. "
                f"The download is corrupt or the server changed the file; try again."
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"Cannot download {url}: {getattr(exc, 'reason', exc)}. Check the network, or fetch the file "
            f"by hand and point --data-dir / ${ENV_VAR} at the folder holding it."
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    _remember_checksum(dest, md5)
    return dest


def extract_tar(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar archive into ``dest``, refusing members with absolute paths, ``..``,
    or anything but regular files and folders (links, devices).

    Example:
        extract_tar("cifar-10-python.tar.gz", "/data")
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                parts = PurePosixPath(member.name.replace("\\", "/")).parts
                if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DataError(f"Unsafe path {member.name!r} in archive {str(archive)!r}: must be relative and must not contain '..'.")
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"Unsafe member {member.name!r} in archive {str(archive)!r}: only regular files and folders are allowed.")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kwargs)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"Cannot extract archive {str(archive)!r}: {exc}. Delete it and download again.") from None


def download_archive(url: str, root: str | Path, md5: str) -> None:
    """Download a ``.tar.gz`` archive into ``root``, check its MD5, extract it there
    safely (:func:`extract_tar`), then delete the archive.

    Example:
        download_archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "/data",
                         "c58f30108f718f92721af3b95e74349a")
    """
    root = Path(root)
    archive = download_url(url, root / PurePosixPath(url).name, md5)
    try:
        extract_tar(archive, root)
    finally:
        archive.unlink(missing_ok=True)


# ----------------------------------------------------------------- resolve ----

def _locate(spec: DatasetFiles, root: Path) -> dict[str, Path]:
    found = {}
    for file in spec.files:
        for folder in file.folders:
            if (root / folder / file.name).is_file():
                found[file.name] = root / folder / file.name
                break
    return found


def resolve_files(
    spec: DatasetFiles, data_dir: str | Path | None = None, download: bool = False, *, rehash: bool = False
) -> dict[str, Path]:
    """Find every file of ``spec`` under the data root (see :func:`find_data_root`),
    downloading missing ones when ``download`` is true, and verify their MD5s.

    Returns file name -> path. Raises :class:`DataError` for a missing file (naming the
    folders searched and the fix) or a corrupt one (naming the path and both MD5s).

    Example:
        resolve_files(DATASET_FILES["cifar10"], "/data")["test_batch"]
        PosixPath('/data/cifar-10-batches-py/test_batch')
    """
    root = find_data_root(data_dir)[0]
    found = _locate(spec, root)
    missing = [f for f in spec.files if f.name not in found]
    if missing and download and spec.manual is None:
        if spec.archive is not None:
            download_archive(spec.archive.url, root, spec.archive.md5)
        for file in missing:
            if file.url is not None:
                download_url(file.url, root / file.folders[0] / file.name, file.md5)
        found = _locate(spec, root)
        missing = [f for f in spec.files if f.name not in found]
        if missing:
            raise DataError(
                f"Downloading dataset {spec.name!r} did not provide {', '.join(f.name for f in missing)} "
                f"under {str(root)!r}; the official archive layout may have changed."
            )
    if missing:
        searched = list(dict.fromkeys(str(root / folder) for f in spec.files for folder in f.folders))
        fix = (
            f"{spec.manual}, or point --data-dir or ${ENV_VAR} at a folder holding them."
            if spec.manual
            else f"point --data-dir or ${ENV_VAR} at a folder holding the official files, or pass "
            f"--download (CLI) / download=True (API) to download them."
        )
        raise DataError(
            f"Missing file(s) for dataset {spec.name!r}: {', '.join(f.name for f in missing)}. "
            f"Searched: {', '.join(searched)} (data root from {_root_origin(data_dir)}). Fix: {fix}"
        )
    # Verify every file before any caller parses (or unpickles) it.
    for file in spec.files:
        verify_file(found[file.name], file.md5, rehash=rehash)
    return found


def verify_data(names: list[str] | None = None, data_dir: str | Path | None = None) -> dict[str, str]:
    """Rehash every file of the datasets ``names`` (default: every dataset with official
    files) under the data root, skipping the remembered checksums; returns name -> ``ok
    (N files)`` or ``not found``. A named dataset that is missing, or any file whose MD5
    differs, raises :class:`DataError`.

    Example:
        verify_data(["mnist"], "/data")
        {'mnist': 'ok (4 files)'}
    """
    out = {}
    for name in names or list(DATASET_FILES):
        if name not in DATASET_FILES:
            raise unknown_name("dataset", name, DATASET_FILES)
        spec = DATASET_FILES[name]
        if names is None and len(_locate(spec, find_data_root(data_dir)[0])) < len(spec.files):
            out[name] = "not found"
            continue
        out[name] = f"ok ({len(resolve_files(spec, data_dir, rehash=True))} files)"
    return out
