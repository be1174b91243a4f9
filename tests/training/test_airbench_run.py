"""A whole airbench94 run on tiny synthetic data: its recipe recorded, its export under the
model contract (the server's own check), ONNX against Keras with and without test-time
augmentation, resume from a checkpoint, and an INT8 copy. Real Keras, tf2onnx, onnxruntime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar10_core import contract
from tests.training import cifar_files

pytestmark = [pytest.mark.training, pytest.mark.slow]

TINY = ["--arch", "airbench94", "--val-size", "20", "--test-size", "20", "--batch-size", "16"]
STEPS_PER_EPOCH = 3  # 40 training images in batches of 16


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return cifar_files.write_image_folder(tmp_path_factory.mktemp("data") / "train", per_class=8)


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory) -> Path:
    from cifar10_training.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "airbench"
    assert main(["train", "--run-dir", str(run_dir), "--data", str(image_folder), "--epochs", "2", *TINY]) == 0
    return run_dir


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def _keras_reference(model, images: np.ndarray, tta: str) -> np.ndarray:
    """airbench94's test-time augmentation written out with numpy views of the images and the
    Keras network's logits, independently of cifar10_training.tta."""
    import keras

    x = images.astype(np.float32) / 255.0
    if tta == "none":
        return np.asarray(model(x, training=False))
    logits_model = keras.Model(model.input, model.get_layer("logits").output)

    def logits(views):
        return np.asarray(logits_model(np.ascontiguousarray(views), training=False), dtype=np.float64)

    def mirrored(views):
        return 0.5 * logits(views) + 0.5 * logits(views[:, :, ::-1])

    averaged = mirrored(x)
    if tta == "flip-translate":
        padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
        shifted = 0.5 * (mirrored(padded[:, :32, :32]) + mirrored(padded[:, 2:, 2:]))
        averaged = 0.5 * averaged + 0.5 * shifted
    exp = np.exp(averaged - averaged.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_the_run_records_its_architecture_and_recipe(finished_run):
    config = json.loads((finished_run / "config.json").read_text())
    assert (config["arch"], config["recipe"], config["optimizer"], config["model_name"]) == (
        "airbench94", "airbench94", "sgd-nesterov", "cifar10-airbench94")
    assert (config["momentum"], config["learning_rate"], config["weight_decay"], config["label_smoothing"],
            config["lookahead"], config["crop_padding"], config["fill_mode"]) == (
        0.85, 11.5, 0.0153, 0.2, True, 2, "reflect")
    history = (finished_run / "history.csv").read_text().splitlines()
    assert len(history) == 3
    assert {p.name for p in finished_run.iterdir()} >= {"curves.png", "split.json", "evaluation.json", "model.onnx",
                                                       "MODEL_CARD.md", "hosts.json"}
    card = (finished_run / "MODEL_CARD.md").read_text()
    assert "airbench94's network" in card and "Nesterov momentum 0.85" in card
    assert "Test-time augmentation inside the graph: none" in card


def test_the_export_honours_the_contract_and_names_its_architecture(finished_run, image_folder):
    from cifar10_serving.onnx_model import OnnxModel
    from cifar10_training import data, export

    path = finished_run / "model.onnx"
    export.check_model_file(path)  # training's check before writing
    model = OnnxModel.load(path)  # the server's own
    meta = _metadata(path)
    assert (meta["architecture"], meta["recipe"], meta["test_time_augmentation"]) == ("airbench94", "airbench94", "none")
    assert json.loads(meta[contract.META_TRAINING_CONFIG])["arch"] == "airbench94"
    assert meta[contract.META_MODEL_NAME] == "cifar10-airbench94"
    assert json.loads(meta[contract.META_TEST_METRICS])["test_images"] == 20
    probabilities = model.predict(data.load(image_folder, progress=False).images[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("tta", ["none", "flip-translate"])
def test_onnx_matches_keras_with_and_without_test_time_augmentation(finished_run, tmp_path, tta):
    from cifar10_training import architectures, evaluate
    from cifar10_training.cli import main
    from cifar10_training.train import best_checkpoint

    target = tmp_path / f"{tta}.onnx"
    assert main(["export", "--run-dir", str(finished_run), "--output", str(target), "--tta", tta]) == 0
    meta = _metadata(target)
    assert meta["test_time_augmentation"] == tta
    assert meta[contract.META_MODEL_VERSION].endswith("" if tta == "none" else "-flip-translate")
    keras_model = architectures.load_checkpoint(best_checkpoint(finished_run)[1])
    images = _images(12)
    expected = _keras_reference(keras_model, images, tta)
    np.testing.assert_allclose(evaluate.predict_onnx(target, images), expected, atol=1e-5)
    if tta != "none":  # the views change the answer: the augmentation is really in the graph
        assert not np.allclose(expected, _keras_reference(keras_model, images, "none"), atol=1e-5)


def test_the_seed_cnn_refuses_test_time_augmentation_in_one_line(tmp_path, capsys):
    from cifar10_training.cli import main
    from cifar10_training.config import TrainConfig

    (tmp_path / "run").mkdir()
    TrainConfig().save(tmp_path / "run" / "config.json")
    assert main(["export", "--run-dir", str(tmp_path / "run"), "--tta", "flip"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("cifar10-train: error: --tta flip needs a network with a logits layer (airbench94); "
                           "seed-cnn has none")


def test_a_run_resumes_from_its_checkpoint(finished_run, image_folder, tmp_path):
    from cifar10_training import architectures
    from cifar10_training.train import latest_checkpoint, read_history, write_history

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "checkpoints" / "epoch-0002.keras").unlink()  # as if killed during epoch 2
    for best in (run_dir / "checkpoints").glob("best-0002.keras"):
        best.unlink()
    write_history(run_dir, read_history(run_dir)[:1])
    first = architectures.load_checkpoint(run_dir / "checkpoints" / "epoch-0001.keras")
    assert int(first.optimizer.iterations.numpy()) == STEPS_PER_EPOCH
    assert first.optimizer.get_config()["lookahead_steps"] == 2 * STEPS_PER_EPOCH

    # A new process, as after a kill: everything it needs comes from the checkpoint.
    command = [sys.executable, "-m", "cifar10_training", "train", "--run-dir", str(run_dir), "--data",
               str(image_folder), "--epochs", "2", "--no-export", *TINY]
    resumed_run = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True,
                                 text=True, timeout=300)
    assert resumed_run.returncode == 0, resumed_run.stderr[-2000:]
    assert f"resuming {run_dir} after epoch 1 from epoch-0001.keras" in resumed_run.stderr
    assert [row["epoch"] for row in read_history(run_dir)] == [1, 2] and latest_checkpoint(run_dir)[0] == 2
    resumed = architectures.load_checkpoint(run_dir / "checkpoints" / "epoch-0002.keras")
    assert int(resumed.optimizer.iterations.numpy()) == 2 * STEPS_PER_EPOCH  # the schedule went on
    np.testing.assert_array_equal(resumed.get_layer("whitening").kernel.numpy(),
                                  first.get_layer("whitening").kernel.numpy())  # frozen across the resume


def test_the_int8_copy_honours_the_contract(finished_run, image_folder, tmp_path):
    import onnx

    from cifar10_serving.onnx_model import OnnxModel
    from cifar10_training import quantize
    from cifar10_training.cli import main

    out = tmp_path / "int8.onnx"
    assert main(["quantize", "--model", str(finished_run / "model.onnx"), "--data", str(image_folder),
                 "--output", str(out), "--calibration-images", "16"]) == 0
    model = OnnxModel.load(out, threads=1)
    assert model.version.endswith("-int8")
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(out)).graph.node}
    record = json.loads(model.info.metadata[quantize.META_QUANTIZATION])
    assert record["validation_images"] == 20 and record["test_images"] == 20
    assert model.info.metadata["architecture"] == "airbench94"
    np.testing.assert_allclose(model.predict(_images(4)).sum(axis=1), 1.0, atol=1e-5)
