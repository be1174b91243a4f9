"""cifar10_core.datasets: the one CIFAR-10 reader (archive, batches folder, class folders)."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cifar10_core import datasets
from cifar10_core.contract import CLASS_NAMES


def _batch(n: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # the official layout: R, G, B planes
    payload = {b"batch_label": b"synthetic", b"labels": labels.tolist(), b"data": data}
    return pickle.dumps(payload, protocol=2), images, labels


def _folder(root: Path) -> Path:
    folder = root / datasets.ARCHIVE_DIR
    folder.mkdir(parents=True)
    for i, name in enumerate(datasets.SPLITS["all"]):
        (folder / name).write_bytes(_batch(3, seed=i)[0])
    (folder / "readme.html").write_text("<html></html>")
    return folder


class _System:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class _Encode:
    """``_codecs.encode`` with another codec: the only call the allow-list admits, misused."""

    def __reduce__(self):
        return (codecs.encode, ("payload", "rot13"))


def test_batch_is_parsed_in_the_official_layout():
    data, images, labels = _batch(4)
    parsed_images, parsed_labels = datasets.parse_batch(data, "b")
    np.testing.assert_array_equal(parsed_images, images)
    np.testing.assert_array_equal(parsed_labels, labels)
    assert parsed_images.dtype == np.uint8 and parsed_labels.dtype == np.int64


@pytest.mark.parametrize("payload,message", [
    ({b"data": _System(), b"labels": [1]}, "refusing to load posix.system|refusing to load nt.system"),
    ({b"data": _Encode(), b"labels": [1]}, "refusing to load _codecs.encode with 'rot13'"),
    (["not", "a", "dict"], "not a dict"),
    ({b"data": np.zeros((1, 3072), np.float32), b"labels": [1]}, "uint8 data of shape Nx3072"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "inconsistent images and labels"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, "inconsistent images and labels"),
])
def test_malicious_or_malformed_batches_are_refused(tmp_path, monkeypatch, payload, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(datasets.DatasetError, match=message):
        datasets.parse_batch(pickle.dumps(payload, protocol=2), "evil")
    assert not (tmp_path / "pwned").exists()


def test_folder_and_archive_give_the_same_batches(tmp_path):
    folder = _folder(tmp_path)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=datasets.ARCHIVE_DIR)
    from_folder = datasets.read_batches_folder(folder, datasets.batch_names("all"))
    from_archive = datasets.read_archive(archive, datasets.batch_names("all"))
    assert list(from_folder) == list(from_archive) == list(datasets.SPLITS["all"])
    for name in from_folder:
        np.testing.assert_array_equal(from_folder[name][0], from_archive[name][0])
        np.testing.assert_array_equal(from_folder[name][1], from_archive[name][1])
    assert list(datasets.read_archive(archive, datasets.batch_names("test"))) == ["test_batch"]
    assert datasets.is_batches_folder(folder) and not datasets.is_batches_folder(tmp_path)


def test_archive_members_must_be_regular_and_small(tmp_path, monkeypatch):
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        member = tarfile.TarInfo(f"{datasets.ARCHIVE_DIR}/test_batch")
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(member)
    with pytest.raises(datasets.DatasetError, match="not a regular file"):
        datasets.read_archive(link, ("test_batch",))
    big = tmp_path / "big.tar"
    data = _batch(2)[0]
    with tarfile.open(big, "w") as tar:
        member = tarfile.TarInfo(f"{datasets.ARCHIVE_DIR}/test_batch")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    monkeypatch.setattr(datasets, "MAX_BATCH_BYTES", len(data) - 1)
    with pytest.raises(datasets.DatasetError, match="larger than a CIFAR-10 batch"):
        datasets.read_archive(big, ("test_batch",))
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(datasets.DatasetError, match="cannot read archive .*junk.tar.gz"):
        datasets.read_archive(tmp_path / "junk.tar.gz", ("test_batch",))
    with pytest.raises(datasets.DatasetError, match="unknown split 'val'"):
        datasets.batch_names("val")


def test_class_folder_listing(tmp_path):
    for name in CLASS_NAMES[:2]:
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "b.PNG").write_bytes(b"x")
        (tmp_path / name / "a.jpg").write_bytes(b"x")
        (tmp_path / name / "notes.txt").write_text("skip me")
    paths, labels = datasets.list_class_folder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"{CLASS_NAMES[0]}/a.jpg", f"{CLASS_NAMES[0]}/sub/b.PNG", f"{CLASS_NAMES[1]}/a.jpg", f"{CLASS_NAMES[1]}/sub/b.PNG",
    ]
    assert labels == [0, 0, 1, 1]
    (tmp_path / "giraffe").mkdir()
    with pytest.raises(datasets.DatasetError, match="not CIFAR-10 classes: giraffe"):
        datasets.list_class_folder(tmp_path)
