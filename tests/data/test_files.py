"""Finding, verifying and downloading dataset files (no network: file:// URLs only)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from forgetlab.data import files
from forgetlab.data.files import (
    DATASET_FILES,
    DatasetFiles,
    FileSpec,
    download_archive,
    download_url,
    extract_tar,
    find_data_root,
    md5_file,
    resolve_files,
    user_cache_dir,
    verify_file,
)
from forgetlab.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_cache")

LABELS = "t10k-labels-idx1-ubyte.gz"
LABELS_MD5 = "ec29112dd5afa0611ce80d1b7f02629c"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def mnist_labels(shared_data: Path) -> Path:
    path = shared_data / "mnist" / LABELS
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


# ------------------------------------------------------------------ roots ----

def test_find_data_root_explicit_then_env_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FORGETLAB_DATA", str(tmp_path / "env"))
    assert find_data_root(tmp_path / "explicit") == [tmp_path / "explicit"]
    assert find_data_root() == [tmp_path / "env"]
    monkeypatch.delenv("FORGETLAB_DATA")
    assert find_data_root() == [tmp_path / "xdg" / "forgetlab"]


def test_user_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / ".cache" / "forgetlab"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert user_cache_dir() == tmp_path / "local" / "forgetlab"


# -------------------------------------------------------------- checksums ----

@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_md5_file_matches_hashlib(tmp_path, chunk_bytes):
    data = bytes(range(256)) * 9
    (tmp_path / "f").write_bytes(data)
    assert md5_file(tmp_path / "f", chunk_bytes) == md5(data)


def test_corrupt_file_names_path_and_both_md5s(tmp_path, mnist_labels):
    path = tmp_path / LABELS
    data = bytearray(mnist_labels.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    message = rf"{re.escape(str(path))}.*expected md5 {LABELS_MD5}, got {md5(bytes(data))}.*delete it.*--download"
    with pytest.raises(DataError, match=message):
        verify_file(path, LABELS_MD5)


def test_checksum_cache_skips_rehash_and_sees_changes(tmp_path, monkeypatch, mnist_labels):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / LABELS
    shutil.copyfile(mnist_labels, path)
    verify_file(path, LABELS_MD5)
    assert (tmp_path / "xdg" / "forgetlab" / files.CHECKSUM_CACHE_NAME).is_file()

    real_md5_file = files.md5_file
    monkeypatch.setattr(files, "md5_file", lambda p: pytest.fail("verified checksum was hashed again"))
    verify_file(path, LABELS_MD5)

    # Same size, new content and a new mtime: must be hashed again and caught.
    monkeypatch.setattr(files, "md5_file", real_md5_file)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(DataError, match="expected md5 " + LABELS_MD5):
        verify_file(path, LABELS_MD5)


def test_unwritable_checksum_cache_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    (tmp_path / "f").write_bytes(b"abc")
    verify_file(tmp_path / "f", md5(b"abc"))


# ---------------------------------------------------------------- layouts ----

@pytest.mark.parametrize("folder", ["mnist", "MNIST/raw", ""])
def test_mnist_layouts_are_found(tmp_path, shared_data, folder):
    (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for file in DATASET_FILES["mnist"].files:
        (tmp_path / folder / file.name).symlink_to(shared_data / "mnist" / file.name)
    paths = resolve_files(DATASET_FILES["mnist"], tmp_path)
    assert paths[LABELS] == tmp_path / folder / LABELS


def test_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.delenv("FORGETLAB_DATA", raising=False)
    message = (
        rf"Missing file\(s\) for dataset 'cifar10': .*test_batch.*Searched: "
        rf"{re.escape(str(tmp_path / 'cifar-10-batches-py'))}, {re.escape(str(tmp_path))} .*"
        r"--data-dir or \$FORGETLAB_DATA.*--download \(CLI\) / download=True"
    )
    with pytest.raises(DataError, match=message):
        resolve_files(DATASET_FILES["cifar10"], tmp_path)


def test_missing_files_message_names_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGETLAB_DATA", str(tmp_path))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "MNIST" / "raw")) + r".*from \$FORGETLAB_DATA"):
        resolve_files(DATASET_FILES["mnist"])


# --------------------------------------------------------------- download ----

def test_download_url_checks_md5_and_renames(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"payload" * 1000)
    dest = download_url(source.as_uri(), tmp_path / "data" / "got.bin", md5(source.read_bytes()))
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["got.bin"]


def test_download_url_wrong_md5_leaves_nothing(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"payload")
    with pytest.raises(DataError, match=rf"{re.escape(source.as_uri())}: expected md5 {'0' * 32}, got {md5(b'payload')}"):
        download_url(source.as_uri(), tmp_path / "data" / "got.bin", "0" * 32)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_url_network_error_names_url(tmp_path):
    url = (tmp_path / "absent.bin").as_uri()
    with pytest.raises(DataError, match=rf"Cannot download {re.escape(url)}: "):
        download_url(url, tmp_path / "data" / "absent.bin", "0" * 32)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_archive_extracts_and_removes_archive(tmp_path):
    archive = make_tar(tmp_path / "fake.tar.gz", {"fake-py/a": b"alpha", "fake-py/b": b"beta"})
    root = tmp_path / "root"
    download_archive(archive.as_uri(), root, md5_file(archive))
    assert (root / "fake-py" / "a").read_bytes() == b"alpha"
    assert sorted(p.name for p in root.iterdir()) == ["fake-py"]


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/tmp/forgetlab-evil"])
def test_extract_rejects_path_traversal(tmp_path, name):
    archive = make_tar(tmp_path / "bad.tar.gz", {"ok": b"1", name: b"evil"})
    with pytest.raises(DataError, match=rf"Unsafe path '{re.escape(name)}' in archive"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists() and not Path("/tmp/forgetlab-evil").exists()
    assert not (tmp_path / "out").exists()


def test_extract_rejects_links(tmp_path):
    with tarfile.open(tmp_path / "link.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="Unsafe member 'link'"):
        extract_tar(tmp_path / "link.tar.gz", tmp_path / "out")


def test_resolve_files_downloads_missing_files(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "one.gz").write_bytes(b"one")
    archive = make_tar(tmp_path / "two.tar.gz", {"two-py/two": b"two"})
    single = DatasetFiles("single", (FileSpec("one.gz", md5(b"one"), ("single", ""), (remote / "one.gz").as_uri()),))
    packed = DatasetFiles("packed", (FileSpec("two", md5(b"two"), ("two-py", "")),), files.Archive(archive.as_uri(), md5_file(archive)))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="Missing file"):
        resolve_files(single, root)
    assert resolve_files(single, root, download=True) == {"one.gz": root / "single" / "one.gz"}
    assert resolve_files(packed, root, download=True) == {"two": root / "two-py" / "two"}


def test_verify_data_rehashes_a_file_edited_in_place_with_its_mtime_restored(tmp_path, monkeypatch, capsys):
    from forgetlab.cli import main

    content = b"official bytes"
    spec = DatasetFiles("fake", (FileSpec("f.bin", md5(content), ("fake",)),))
    monkeypatch.setitem(files.DATASET_FILES, "fake", spec)
    path = tmp_path / "fake" / "f.bin"
    path.parent.mkdir()
    path.write_bytes(content)
    resolve_files(spec, tmp_path)  # verified and remembered
    stat = path.stat()
    path.write_bytes(b"edited bytes!!")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    resolve_files(spec, tmp_path)  # the documented fast path: not hashed again
    assert main(["verify-data", "--dataset", "fake", "--data-dir", str(tmp_path)]) == 2
    assert "Checksum mismatch for" in capsys.readouterr().err
    path.write_bytes(content)
    assert main(["verify-data", "--dataset", "fake", "--data-dir", str(tmp_path)]) == 0
    assert "fake: ok (1 files)" in capsys.readouterr().out
