"""cifar10-train quantize: a real INT8 copy (onnxruntime's quantizer) of a model that carries
its training metadata, on tiny synthetic data. No TensorFlow needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from cifar10_core import contract
from cifar10_serving.onnx_model import OnnxModel
from tests.serving.models import _save, _set_meta
from tests.tiny_model import build_tiny_model
from tests.training import cifar_files
from cifar10_training import data as data_module
from cifar10_training import evaluate, quantize
from cifar10_training.cli import main

VAL_SIZE, SPLIT_SEED = 20, 3


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return cifar_files.write_image_folder(tmp_path_factory.mktemp("data") / "train", per_class=8)


@pytest.fixture(scope="module")
def trained_model(image_folder, tmp_path_factory) -> Path:
    """The tiny model, stamped as if trained on ``image_folder`` with a 20-image split."""
    model = build_tiny_model(version="7")
    dataset = data_module.load(str(image_folder), progress=False)
    _set_meta(model, contract.META_TRAINING_CONFIG,
              json.dumps({"val_size": VAL_SIZE, "split_seed": SPLIT_SEED}))
    _set_meta(model, contract.META_DATASET_FINGERPRINT, dataset.fingerprint)
    return _save(model, tmp_path_factory.mktemp("models") / "fp32.onnx")


@pytest.fixture(scope="module")
def quantized(trained_model, image_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "int8.onnx"
    assert main(["quantize", "--model", str(trained_model), "--data", str(image_folder),
                 "--output", str(out), "--calibration-images", "32"]) == 0
    return out


def test_the_int8_copy_honours_the_contract(quantized):
    model = OnnxModel.load(quantized, threads=1)  # the server's own contract check
    assert (model.name, model.version) == ("tiny-cnn", "7-int8")
    ops = [node.op_type for node in onnx.load(str(quantized)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert ops[-1] == "Softmax"  # probabilities stay float32, not quantized
    images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    out = model.predict(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_the_record_holds_the_figures_of_the_validation_split(quantized, trained_model, image_folder):
    meta = OnnxModel.load(quantized, threads=1).info.metadata
    record = json.loads(meta[quantize.META_QUANTIZATION])
    assert record["calibration_images"] == 32 and record["validation_images"] == VAL_SIZE
    assert record["source_model_version"] == "7"
    assert record["reduce_range"] is True and "7-bit" in record["method"]  # the default (no VNNI)
    dataset = data_module.load(str(image_folder), progress=False)
    _, validation = data_module.stratified_split(dataset.labels, VAL_SIZE, SPLIT_SEED)
    images, labels = dataset.images[validation], dataset.labels[validation]
    int8 = evaluate.evaluate_onnx(quantized, images, labels)
    fp32 = evaluate.evaluate_onnx(trained_model, images, labels)
    assert record["int8_val_accuracy"] == pytest.approx(int8.accuracy, abs=1e-5)
    assert record["fp32_val_accuracy"] == pytest.approx(fp32.accuracy, abs=1e-5)
    metrics = json.loads(meta[contract.META_VALIDATION_METRICS])
    assert metrics["val_accuracy"] == pytest.approx(int8.accuracy)
    assert metrics["val_images"] == VAL_SIZE
    # Everything else of the FP32 model's metadata is carried over.
    assert meta[contract.META_DATASET_FINGERPRINT] == dataset.fingerprint
    assert json.loads(meta[contract.META_TRAINING_CONFIG])["split_seed"] == SPLIT_SEED
    card = quantized.with_suffix(".md").read_text()
    assert "7-int8" in card and f"{record['int8_val_accuracy']:.2%}" in card
    # per class, FP32 beside INT8, and the INT8 confusion matrix; where and how long it took
    assert "| class | FP32 validation | INT8 validation |" in card
    assert f"| airplane | {fp32.per_class_accuracy['airplane']:.1%} | {int8.per_class_accuracy['airplane']:.1%} |" in card
    assert "INT8 confusion matrix (validation images" in card
    assert "| airplane | " + " | ".join(map(str, int8.confusion_matrix[0])) + " |" in card
    assert record["host"] in card and "cores" in record["host"]


def test_calibration_never_uses_validation_images():
    labels = np.repeat(np.arange(10), 10)
    _, validation = data_module.stratified_split(labels, 30, 0)
    chosen = quantize.calibration_indices(labels, validation, 70, seed=5)
    assert len(set(chosen.tolist())) == 70 and not set(chosen.tolist()) & set(validation.tolist())
    np.testing.assert_array_equal(chosen, quantize.calibration_indices(labels, validation, 70, seed=5))
    with pytest.raises(data_module.DataError, match="between 1 and 70"):
        quantize.calibration_indices(labels, validation, 71, seed=5)


def test_other_data_is_refused_and_nothing_is_written(trained_model, tmp_path, capsys):
    other = cifar_files.write_image_folder(tmp_path / "other", per_class=8, seed=9)
    out = tmp_path / "int8.onnx"
    assert main(["quantize", "--model", str(trained_model), "--data", str(other),
                 "--output", str(out)]) == 2
    assert "fingerprint differs" in capsys.readouterr().err
    assert not out.exists()


def test_too_many_calibration_images_is_one_clear_error(trained_model, image_folder, tmp_path, capsys):
    out = tmp_path / "int8.onnx"
    assert main(["quantize", "--model", str(trained_model), "--data", str(image_folder),
                 "--output", str(out), "--calibration-images", "500"]) == 2
    assert "calibration needs between 1 and 60 training images" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_full_range_is_recorded(trained_model, image_folder, tmp_path):
    out = tmp_path / "int8-full.onnx"
    assert main(["quantize", "--model", str(trained_model), "--data", str(image_folder),
                 "--output", str(out), "--calibration-images", "16", "--full-range"]) == 0
    record = json.loads(OnnxModel.load(out, threads=1).info.metadata[quantize.META_QUANTIZATION])
    assert record["reduce_range"] is False and "7-bit" not in record["method"]


def test_a_model_with_a_test_part_gets_test_figures_and_no_test_image_calibrates(image_folder, tmp_path):
    model = build_tiny_model(version="8")
    dataset = data_module.load(str(image_folder), progress=False)
    _set_meta(model, contract.META_TRAINING_CONFIG,
              json.dumps({"val_size": VAL_SIZE, "test_size": 10, "split_seed": SPLIT_SEED}))
    _set_meta(model, contract.META_DATASET_FINGERPRINT, dataset.fingerprint)
    fp32 = _save(model, tmp_path / "fp32.onnx")
    out = tmp_path / "int8.onnx"
    # 50 training images: asking for 51 shows the test part is kept out of calibration.
    assert main(["quantize", "--model", str(fp32), "--data", str(image_folder), "--output", str(out),
                 "--calibration-images", "51"]) == 2
    assert main(["quantize", "--model", str(fp32), "--data", str(image_folder), "--output", str(out),
                 "--calibration-images", "32"]) == 0
    meta = OnnxModel.load(out, threads=1).info.metadata
    record = json.loads(meta[quantize.META_QUANTIZATION])
    split = data_module.three_way_split(dataset.labels, VAL_SIZE, 10, SPLIT_SEED)
    test = evaluate.evaluate_onnx(out, dataset.images[split.test], dataset.labels[split.test])
    assert record["test_images"] == 10 and record["int8_test_accuracy"] == pytest.approx(test.accuracy, abs=1e-5)
    assert json.loads(meta[contract.META_TEST_METRICS])["test_accuracy"] == pytest.approx(test.accuracy)
    assert f"{record['int8_test_accuracy']:.2%}" in out.with_suffix(".md").read_text()
