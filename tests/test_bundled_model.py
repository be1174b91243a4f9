"""The bundled model in models/: honours the contract, was trained by our recipe, and its
card and metadata tell the truth about it (re-measured on its validation split when
../shared/data is here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cifar10_core import contract
from cifar10_serving.model import OnnxModel

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "cifar10-cnn.onnx"
CARD = MODEL.with_suffix(".md")
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train"


@pytest.fixture(scope="module")
def bundled() -> OnnxModel:
    assert MODEL.is_file(), f"the bundled model {MODEL.relative_to(ROOT)} is missing"
    return OnnxModel.load(MODEL)


def _metadata(model: OnnxModel) -> tuple[dict, dict]:
    meta = model.info.metadata
    return json.loads(meta[contract.META_TRAINING_CONFIG]), json.loads(meta[contract.META_VALIDATION_METRICS])


def test_bundled_model_honours_the_contract_and_was_trained_by_the_recipe(bundled):
    config, metrics = _metadata(bundled)
    assert bundled.info.labels == contract.CLASS_NAMES
    assert config["augment"] is True and config["optimizer"] == "rmsprop" and config["batch_size"] == 256
    assert metrics["epochs"] >= 20, "the foundation asks for at least 20 epochs with augmentation"
    assert bundled.version.endswith(f"-e{metrics['epochs']:03d}")
    assert metrics["val_images"] == config["val_size"]
    assert 0.5 < metrics["val_accuracy"] <= 1.0
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p = bundled.predict(images)
    assert p.shape == (4, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_card_states_the_models_version_and_validation_accuracy(bundled):
    card = CARD.read_text()
    _, metrics = _metadata(bundled)
    assert bundled.version in card
    assert f"{metrics['val_accuracy']:.2%}" in card
    assert "JPEG" in card  # the caveat: re-encoded training images, not the original PNG-like data


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/cifar10-jpeg is not here")
def test_validation_accuracy_in_the_metadata_is_reproduced_through_onnxruntime(bundled, tmp_path):
    pytest.importorskip("tensorflow")  # the training extra (data loader)
    from cifar10_training.run import evaluate_command

    _, metrics = _metadata(bundled)
    result = evaluate_command(MODEL, str(DATA), "train", None, tmp_path, validation=True)
    assert result["images"] == metrics["val_images"]
    assert result["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-9)


INT8 = ROOT / "models" / "cifar10-cnn-int8.onnx"


@pytest.fixture(scope="module")
def bundled_int8() -> OnnxModel:
    assert INT8.is_file(), f"the INT8 copy {INT8.relative_to(ROOT)} is missing"
    return OnnxModel.load(INT8)


def test_int8_copy_is_the_quantized_bundled_model_and_its_card_says_so(bundled, bundled_int8):
    import hashlib

    from cifar10_training.quantize import META_QUANTIZATION

    record = json.loads(bundled_int8.info.metadata[META_QUANTIZATION])
    assert record["source_model_sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert bundled_int8.version == f"{bundled.version}-int8" and bundled_int8.name == bundled.name
    _, metrics = _metadata(bundled)
    assert record["fp32_val_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-5)
    assert record["int8_val_accuracy"] > record["fp32_val_accuracy"] - 0.01  # at most a point lost
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p = bundled_int8.predict(images)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    card = INT8.with_suffix(".md").read_text()
    assert bundled_int8.version in card and f"{record['int8_val_accuracy']:.2%}" in card


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/cifar10-jpeg is not here")
def test_int8_validation_accuracy_is_reproduced_through_onnxruntime(bundled_int8, tmp_path):
    from cifar10_training.quantize import META_QUANTIZATION
    from cifar10_training.run import evaluate_command

    record = json.loads(bundled_int8.info.metadata[META_QUANTIZATION])
    result = evaluate_command(INT8, str(DATA), "train", None, tmp_path, validation=True)
    assert result["images"] == record["validation_images"]
    assert result["accuracy"] == pytest.approx(record["int8_val_accuracy"], abs=1e-5)
