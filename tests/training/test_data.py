"""The three data sources, their errors, and the validation split (no TensorFlow needed)."""

from __future__ import annotations

import re
import tarfile

import numpy as np
import pytest

from cifar10_core.contract import CLASS_NAMES
from tests.training import cifar_files
from cifar10_training import data
from cifar10_training.cli import main as train_cli


def test_image_folder_loads_labels_in_class_order(tmp_path):
    root = cifar_files.write_image_folder(tmp_path / "imgs", per_class=3)
    loaded = data.load(root, progress=False)
    assert loaded.images.shape == (30, 32, 32, 3) and loaded.images.dtype == np.uint8
    assert loaded.labels.tolist() == [i for i in range(10) for _ in range(3)]
    expected, _ = cifar_files.synthetic_arrays(3)
    np.testing.assert_array_equal(loaded.images, expected)  # PNG is lossless
    assert loaded.names[0].endswith("airplane/0000.png")


def test_image_folder_resizes_other_sizes_the_shared_way(tmp_path):
    from PIL import Image

    from cifar10_core import images

    big = np.random.default_rng(1).integers(0, 255, (64, 48, 4), dtype=np.uint8)
    (tmp_path / "cat").mkdir()
    Image.fromarray(big, "RGBA").save(tmp_path / "cat" / "x.png")
    loaded = data.load(tmp_path, progress=False)
    np.testing.assert_array_equal(loaded.images[0], images.from_array(big))
    assert loaded.labels.tolist() == [CLASS_NAMES.index("cat")]


@pytest.mark.parametrize("layout", ["archive", "folder", "parent"])
def test_official_layouts(tmp_path, layout):
    if layout == "archive":
        source = cifar_files.write_archive(tmp_path / "cifar-10-python.tar.gz", per_class=2)
    else:
        folder = cifar_files.write_batches_folder(tmp_path / "cifar-10-batches-py", per_class=2)
        source = folder if layout == "folder" else tmp_path
    train = data.load(source, split="train")
    test = data.load(source, split="test")
    assert len(train) == 5 * 20 and len(test) == 20
    expected, labels = cifar_files.synthetic_arrays(2, seed=1)
    np.testing.assert_array_equal(train.images[:20], expected)  # CHW rows -> HWC
    assert train.labels[:20].tolist() == labels.tolist()


def test_keras_source_reads_the_keras_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cifar_files.write_batches_folder(data.keras_cache_folder(), per_class=1)
    loaded = data.load("keras", split="test")
    assert len(loaded) == 10 and "keras" in loaded.source


def test_keras_source_without_network_or_cache_names_the_way_out(tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline():
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(data.DataError, match="local image folder or cifar-10-python.tar.gz"):
        data.load("keras")


def test_archive_pickles_cannot_run_code(tmp_path):
    folder = cifar_files.write_malicious_batch(tmp_path / "cifar-10-batches-py")
    with pytest.raises(data.DataError, match="refusing to load"):
        data.load(folder)


def _bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    cifar_files.write_image_folder(tmp_path / "unknown", per_class=1)
    (tmp_path / "unknown" / "giraffe").mkdir()
    cifar_files.write_image_folder(tmp_path / "broken", per_class=1)
    (tmp_path / "broken" / "dog" / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "noimages" / "cat").mkdir(parents=True)
    (tmp_path / "wrong.tar.gz").write_bytes(b"not a tar")
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        tar.add(__file__, arcname="something.py")
    (tmp_path / "notes.txt").write_text("hello")
    return {
        "missing": (tmp_path / "nope", "does not exist"),
        "empty folder": (tmp_path / "empty", "no class sub-folders"),
        "unknown class": (tmp_path / "unknown", "not CIFAR-10 classes: giraffe"),
        "unreadable image": (tmp_path / "broken", "unreadable image .*bad.jpg"),
        "no images": (tmp_path / "noimages", "holds no images"),
        "corrupt archive": (tmp_path / "wrong.tar.gz", "cannot read archive"),
        "wrong archive": (tmp_path / "other.tar.gz", "not the CIFAR-10 python archive"),
        "plain file": (tmp_path / "notes.txt", "not a CIFAR-10 archive"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "empty folder", "unknown class", "unreadable image", "no images", "corrupt archive",
     "wrong archive", "plain file"],
)
def test_bad_data_gives_one_error_line_and_no_artifacts(tmp_path, capsys, case):
    source, message = _bad_sources(tmp_path)[case]
    run_dir = tmp_path / "run"
    code = train_cli(["train", "--run-dir", str(run_dir), "--data", str(source), "--epochs", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cifar10-train: error: ")]
    assert code == 2
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in err
    assert not run_dir.exists()


def test_split_is_fixed_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    train_a, val_a = data.stratified_split(labels, 100, seed=7)
    train_b, val_b = data.stratified_split(labels, 100, seed=7)
    _, val_c = data.stratified_split(labels, 100, seed=8)
    np.testing.assert_array_equal(val_a, val_b)
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.array_equal(val_a, val_c)
    assert np.bincount(labels[val_a]).tolist() == [10] * 10
    assert len(np.intersect1d(train_a, val_a)) == 0 and len(train_a) + len(val_a) == 500


def test_split_of_unbalanced_classes_has_exact_size():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 11)
    _, val = data.stratified_split(labels, 5, seed=0)
    assert len(val) == 5 and set(labels[val]) == {0, 1, 2}
    with pytest.raises(data.DataError):
        data.stratified_split(labels, 21, seed=0)


def test_fingerprint_changes_with_one_pixel(tmp_path):
    images, labels = cifar_files.synthetic_arrays(1)
    a = data.LabelledImages(images, labels, "x")
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert a.fingerprint == data.LabelledImages(images.copy(), labels, "y").fingerprint
    assert a.fingerprint != data.LabelledImages(changed, labels, "x").fingerprint


def test_three_way_split_is_disjoint_stratified_and_fixed():
    labels = np.repeat(np.arange(10), 50)
    split = data.three_way_split(labels, 60, 40, seed=7)
    parts = [split.train, split.val, split.test]
    assert [len(p) for p in parts] == [400, 60, 40]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(500))  # disjoint, nothing lost
    assert np.bincount(labels[split.val]).tolist() == [6] * 10
    assert np.bincount(labels[split.test]).tolist() == [4] * 10
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    again = data.three_way_split(labels, 60, 40, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, [again.train, again.val, again.test]))
    assert split.sizes() == {"train_size": 400, "val_size": 60, "test_size": 40}


def test_three_way_split_keeps_the_labs_training_images():
    """Validation + test are the lab's two-way validation split cut in two: the lab's
    5,000 (seed 1234) become 2,500 + 2,500, and training keeps the lab's 45,000 images."""
    labels = np.repeat(np.arange(10), 100)
    lab_train, lab_val = data.stratified_split(labels, 100, seed=1234)
    split = data.three_way_split(labels, 50, 50, seed=1234)
    np.testing.assert_array_equal(split.train, lab_train)
    np.testing.assert_array_equal(np.sort(np.concatenate([split.val, split.test])), lab_val)
    old = data.three_way_split(labels, 100, 0, seed=1234)  # a model from before the test part
    np.testing.assert_array_equal(old.val, lab_val)
    assert len(old.test) == 0
