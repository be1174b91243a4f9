"""The bundled models in models/, the seed CNN and airbench94: each honours the contract, was
trained by its recipe on the three-way split, reaches its floor on its untouched test part
(85 % and 90 %), and its card and metadata tell the truth about it (re-measured on its
validation and test parts when ../shared/data is here; on the labelled sample
examples/labelled, drawn from that test part, everywhere). Each INT8 copy: the quantized
model, within 0.5 points on the test part. None names its data by a path of the machine
that trained it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cifar10_core import contract
from cifar10_serving.onnx_model import OnnxModel

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train"
LABELLED = ROOT / "examples" / "labelled"
# examples/labelled: 400 images (40 per class), a seeded sample of the 2,500-image test part
# (the same split for both networks) on which the seed CNN scores 85.80 % (FP32) and 85.52 %
# (INT8). On a random sample of 400 the accuracy's standard deviation is
# sqrt(0.858 * 0.142 / 400) = 1.75 points (1.6 with the finite-population correction), so
# 75 % is more than 6 standard deviations below what a sound model scores: a pass is certain
# for the shipped files (83.0 % measured for the seed CNN), and a model that lost 10 points,
# or inputs decoded or scaled differently from training, fail.
LABELLED_ACCURACY_FLOOR = 0.75


@dataclass(frozen=True)
class Bundled:
    """One bundled network: its model folder, its INT8 copy's, its recipe and test floor."""

    name: str
    recipe: str
    floor: float  # of the test part: a regression guard for the bundled file

    @property
    def model(self) -> Path:
        return ROOT / "models" / self.name / "1" / "model.onnx"

    @property
    def card(self) -> Path:
        return ROOT / "models" / self.name / "card.md"

    @property
    def int8(self) -> Path:
        return ROOT / "models" / f"{self.name}-int8" / "1" / "model.onnx"

    @property
    def int8_card(self) -> Path:
        return ROOT / "models" / f"{self.name}-int8" / "card.md"


SEED_CNN = Bundled("cifar10-cnn", "improved", 0.85)  # issue 15's target: 85 %
# Issue 30 asks 94 %; the bundled run reached 90.24 %, and airbench's own code reaches no more on
# this data (docs/training.md, "Why 94 % is out of reach"): the floor guards the file shipped.
AIRBENCH94 = Bundled("cifar10-airbench94", "airbench94", 0.90)


@pytest.fixture(scope="module", params=[SEED_CNN, AIRBENCH94], ids=lambda b: b.name)
def which(request) -> Bundled:
    return request.param
# An absolute path (/x, ~/x, C:\x) or the authors' ../shared, anywhere in a value or a line;
# not the "/" inside a URL (https://...) or between words (width/height).
MACHINE_PATH = re.compile(r"(?:^|[\s\"'`(=:,\[])(?:/[\w.-]|~/|[A-Za-z]:\\)|\.\./shared|/work/shared")


@pytest.fixture(scope="module")
def bundled(which) -> OnnxModel:
    assert which.model.is_file(), f"the bundled model {which.model.relative_to(ROOT)} is missing"
    return OnnxModel.load(which.model)


@pytest.fixture(scope="module")
def bundled_int8(which) -> OnnxModel:
    assert which.int8.is_file(), f"the INT8 copy {which.int8.relative_to(ROOT)} is missing"
    return OnnxModel.load(which.int8)


def _metadata(model: OnnxModel) -> tuple[dict, dict, dict]:
    """Training config, validation metrics, test metrics."""
    meta = model.info.metadata
    return (json.loads(meta[contract.META_TRAINING_CONFIG]),
            json.loads(meta[contract.META_VALIDATION_METRICS]),
            json.loads(meta[contract.META_TEST_METRICS]))


def _quantization(model: OnnxModel) -> dict:
    from cifar10_training.quantize import META_QUANTIZATION

    return json.loads(model.info.metadata[META_QUANTIZATION])


def test_bundled_model_honours_the_contract_and_was_trained_by_its_recipe(which, bundled):
    config, metrics, test = _metadata(bundled)
    assert bundled.info.labels == contract.CLASS_NAMES
    assert config["recipe"] == which.recipe and config["augment"] is True
    assert config["test_size"] > 0 and config["val_size"] > 0
    assert metrics["val_images"] == config["val_size"] and test["test_images"] == config["test_size"]
    assert 0.5 < metrics["val_accuracy"] <= 1.0
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p = bundled.predict(images)
    assert p.shape == (4, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_bundled_model_reaches_its_floor_on_its_test_part(which, bundled):
    _, _, test = _metadata(bundled)
    assert test["test_accuracy"] >= which.floor, test["test_accuracy"]


def test_card_states_the_models_version_and_its_figures(which, bundled):
    card = which.card.read_text()
    _, metrics, test = _metadata(bundled)
    assert bundled.version in card
    assert f"{metrics['val_accuracy']:.2%}" in card and f"{test['test_accuracy']:.2%}" in card
    assert "JPEG" in card  # the caveat: re-encoded training images, not the original PNG-like data


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/cifar10-jpeg is not here")
def test_validation_and_test_accuracy_in_the_metadata_are_reproduced_through_onnxruntime(
        which, bundled, tmp_path):
    pytest.importorskip("tensorflow")  # the training extra (data loader)
    from cifar10_training.run import evaluate_command

    _, metrics, test = _metadata(bundled)
    result = evaluate_command(which.model, str(DATA), "train", None, tmp_path, validation=True)
    assert result["images"] == metrics["val_images"]
    assert result["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-9)
    result = evaluate_command(which.model, str(DATA), "train", None, tmp_path, test=True)
    assert result["images"] == test["test_images"]
    assert result["accuracy"] == pytest.approx(test["test_accuracy"], abs=1e-9)


def test_int8_copy_is_the_quantized_bundled_model_within_half_a_point(which, bundled, bundled_int8):
    import hashlib

    record = _quantization(bundled_int8)
    assert record["source_model_sha256"] == hashlib.sha256(which.model.read_bytes()).hexdigest()
    assert bundled_int8.version == f"{bundled.version}-int8" and bundled_int8.name == bundled.name
    _, metrics, test = _metadata(bundled)
    assert record["fp32_val_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-5)
    assert record["fp32_test_accuracy"] == pytest.approx(test["test_accuracy"], abs=1e-5)
    assert record["int8_test_accuracy"] >= record["fp32_test_accuracy"] - 0.005
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p = bundled_int8.predict(images)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    card = which.int8_card.read_text()
    assert bundled_int8.version in card and f"{record['int8_val_accuracy']:.2%}" in card
    assert f"{record['int8_test_accuracy']:.2%}" in card


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/cifar10-jpeg is not here")
def test_int8_accuracy_is_reproduced_through_onnxruntime(which, bundled_int8, tmp_path):
    pytest.importorskip("tensorflow")  # the training extra (data loader)
    from cifar10_training.run import evaluate_command

    record = _quantization(bundled_int8)
    result = evaluate_command(which.int8, str(DATA), "train", None, tmp_path, validation=True)
    assert result["images"] == record["validation_images"]
    assert result["accuracy"] == pytest.approx(record["int8_val_accuracy"], abs=1e-5)
    result = evaluate_command(which.int8, str(DATA), "train", None, tmp_path, test=True)
    assert result["images"] == record["test_images"]
    assert result["accuracy"] == pytest.approx(record["int8_test_accuracy"], abs=1e-5)


def _labelled_sample() -> tuple[np.ndarray, np.ndarray]:
    from cifar10_core import datasets, images

    paths, labels = datasets.list_class_folder(LABELLED)
    return np.stack([images.decode(p.read_bytes()) for p in paths]), np.asarray(labels)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_accuracy_on_the_shipped_labelled_sample(precision, which, bundled, bundled_int8):
    """Runs on a fresh clone: examples/labelled ships with the repository."""
    model = {"fp32": bundled, "int8": bundled_int8}[precision]
    x, y = _labelled_sample()
    assert len(y) >= 300 and np.bincount(y, minlength=10).min() >= 30
    predicted = model.predict(x).argmax(axis=1)
    accuracy = float(np.mean(predicted == y))
    assert accuracy >= LABELLED_ACCURACY_FLOOR, f"{which.name} {precision}: {accuracy:.2%} on {len(y)} images"


def test_the_ten_sample_images_are_one_per_class_and_classified_right(bundled):
    from cifar10_core import images

    examples = ROOT / "examples"
    x = np.stack([images.decode((examples / f"{name}.jpg").read_bytes()) for name in contract.CLASS_NAMES])
    assert bundled.predict(x).argmax(axis=1).tolist() == list(range(10))
    large = examples / "ship-256.png"
    from PIL import Image

    with Image.open(large) as image:
        assert image.size == (256, 256)
    assert contract.CLASS_NAMES[int(bundled.predict(images.decode(large.read_bytes())[None]).argmax())] == "ship"


def test_no_metadata_value_or_card_line_holds_a_machine_path(which, bundled, bundled_int8):
    for model, card in ((bundled, which.card), (bundled_int8, which.int8_card)):
        for key, value in model.info.metadata.items():
            assert not MACHINE_PATH.search(value), f"{model.name} metadata {key}: {value[:200]}"
        for number, line in enumerate(card.read_text().splitlines(), 1):
            assert not MACHINE_PATH.search(line), f"{card.name}:{number}: {line}"
    config, _, _ = _metadata(bundled)
    assert bundled.info.metadata[contract.META_DATASET] == config["data"]
    assert "cifar10-jpeg" in config["data"] and "50,000 images" in config["data"]


def test_the_machine_path_pattern_finds_paths_and_nothing_else():
    for text in ('"data": "/work/shared/data/x"', "image folder /home/me/train", "../shared/data",
                 "see ~/data", "C:\\data\\train", "[/srv/x]"):
        assert MACHINE_PATH.search(text), text
    for text in ("https://www.cs.toronto.edu/~kriz/cifar.html", "width/height shift 0.0/0.0",
                 "image folder cifar10-jpeg/train (50,000 images)", "uint8 [N, 32, 32, 3]",
                 "scaled by 1/255", "models/cifar10-cnn.onnx"):
        assert not MACHINE_PATH.search(text), text
