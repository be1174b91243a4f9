"""Whole runs on tiny synthetic data: artifacts, export contract and parity, resume after a
kill, and the two-arm comparison. Real TensorFlow, tf2onnx and onnxruntime throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cifar10_core import contract
from tests.training import cifar_files

pytestmark = [pytest.mark.training, pytest.mark.slow]

TINY = ["--val-size", "20", "--batch-size", "16"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return cifar_files.write_image_folder(tmp_path_factory.mktemp("data") / "train", per_class=8)


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory) -> Path:
    from cifar10_training.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--run-dir", str(run_dir), "--data", str(image_folder), "--epochs", "2", *TINY]) == 0
    return run_dir


def test_a_run_leaves_every_artifact(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert {"config.json", "split.json", "history.csv", "curves.png", "confusion_matrix.png",
            "evaluation.json", "model.onnx", "MODEL_CARD.md", "checkpoints"} <= names
    history = (finished_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(history) == 3
    evaluation = json.loads((finished_run / "evaluation.json").read_text())
    assert evaluation["validation"]["images"] == 20
    assert set(evaluation["validation"]["per_class_accuracy"]) == set(contract.CLASS_NAMES)
    assert evaluation["parity"]["argmax_mismatches"] == 0
    card = (finished_run / "MODEL_CARD.md").read_text()
    assert "JPEG" in card and f"{evaluation['validation']['accuracy']:.2%}" in card
    split = json.loads((finished_run / "split.json").read_text())
    assert len(split["val_indices"]) == 20 and split["split_seed"] == 1234


def test_export_honours_the_model_contract(finished_run, image_folder):
    import onnxruntime as ort

    from cifar10_serving.model import OnnxModel
    from cifar10_training import data

    session = ort.InferenceSession(str(finished_run / "model.onnx"))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [32, 32, 3])
    assert (out.name, out.type, out.shape[1:]) == ("probabilities", "tensor(float)", [10])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta[contract.META_CLASS_NAMES]) == list(contract.CLASS_NAMES)
    assert json.loads(meta[contract.META_TRAINING_CONFIG])["epochs"] == 2
    loaded = data.load(image_folder, progress=False)
    assert meta[contract.META_DATASET_FINGERPRINT] == loaded.fingerprint
    assert "val_accuracy" in json.loads(meta[contract.META_VALIDATION_METRICS])

    model = OnnxModel.load(finished_run / "model.onnx")  # serving's own contract check
    probabilities = model.predict(loaded.images[:5])
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_parity_check_fails_loudly_and_writes_nothing(finished_run, tmp_path):
    import keras

    from cifar10_training import export
    from cifar10_training.model import build_seed_cnn

    trained = keras.models.load_model(sorted((finished_run / "checkpoints").glob("*.keras"))[-1])
    other = build_seed_cnn()
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(export.ExportParityError, match="disagrees with Keras"):
        export.check_parity(trained, export.to_onnx(other), images)


def test_export_command_parity_failure_is_one_error_line(finished_run, tmp_path, capsys, monkeypatch):
    """Real Keras, tf2onnx and onnxruntime; only the limit is one no export can meet."""
    from cifar10_training import export
    from cifar10_training.cli import main

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)
    target = tmp_path / "models" / "refused.onnx"
    assert main(["export", "--run-dir", str(finished_run), "--output", str(target)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("cifar10-train: error: ONNX export disagrees with Keras")
    assert "Traceback" not in err
    assert not target.exists()


def test_export_command_rewrites_atomically(finished_run, tmp_path):
    from cifar10_training.cli import main

    target = tmp_path / "models" / "exported.onnx"
    assert main(["export", "--run-dir", str(finished_run), "--output", str(target)]) == 0
    assert target.exists() and target.with_suffix(".md").exists()
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_command_on_the_validation_split(finished_run, image_folder, tmp_path, capsys):
    from cifar10_training.cli import main

    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(finished_run / "model.onnx"), "--data", str(image_folder),
                 "--val-of", str(finished_run), "--out", str(out)])
    assert code == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    recorded = json.loads((finished_run / "evaluation.json").read_text())["validation"]
    assert evaluation["accuracy"] == recorded["accuracy"] and evaluation["images"] == 20
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert "accuracy" in capsys.readouterr().out
    # The same split, found from the model's own metadata instead of the run folder.
    code = main(["evaluate", "--model", str(finished_run / "model.onnx"), "--data", str(image_folder),
                 "--validation", "--out", str(tmp_path / "eval2")])
    assert code == 0
    assert json.loads((tmp_path / "eval2" / "evaluation.json").read_text()) == evaluation


def test_killed_run_resumes_with_the_same_command(image_folder, tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "training", "train", "--run-dir", str(run_dir), "--data", str(image_folder),
               "--epochs", "6", "--no-export", *TINY]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list((run_dir / "checkpoints").glob("epoch-0002.keras")):
            assert process.poll() is None, "training exited before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    from cifar10_training.train import latest_checkpoint, read_history

    done, _ = latest_checkpoint(run_dir)
    assert 2 <= done < 6
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} after epoch {done}" in resumed.stderr
    assert "epoch 6/6  loss " in resumed.stderr and "ETA 00:00" in resumed.stderr  # per-epoch progress line
    assert [row["epoch"] for row in read_history(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert latest_checkpoint(run_dir)[0] == 6


def test_resume_refuses_a_different_config(finished_run, image_folder, capsys):
    from cifar10_training.cli import main

    code = main(["train", "--run-dir", str(finished_run), "--data", str(image_folder), "--epochs", "2",
                 "--val-size", "20", "--batch-size", "32"])
    assert code == 2
    assert "batch_size: 16 in the run, 32 now" in capsys.readouterr().err


def test_compare_runs_both_arms_and_overlays_them(image_folder, tmp_path, capsys):
    from cifar10_training.cli import main

    out = tmp_path / "compare"
    assert main(["compare", "--out", str(out), "--data", str(image_folder), "--epochs", "1", *TINY]) == 0
    for arm, augment in (("baseline", False), ("augmented", True)):
        config = json.loads((out / arm / "config.json").read_text())
        assert config["augment"] is augment
        assert (out / arm / "model.onnx").exists()
    table = (out / "comparison.md").read_text()
    assert "| baseline | 1 |" in table and "| augmented | 1 |" in table
    assert (out / "comparison.png").stat().st_size > 10_000
    # A second compare finds both arms finished and only redraws.
    assert main(["compare", "--out", str(out), "--data", str(image_folder), "--epochs", "1", *TINY]) == 0
    assert "training " not in capsys.readouterr().err
    # --no-train draws runs that are still short of their epochs, and trains nothing.
    (out / "comparison.md").unlink()
    assert main(["compare", "--out", str(out), "--no-train", "--epochs", "3", *TINY]) == 0
    assert "training " not in capsys.readouterr().err
    assert "| baseline | 1 |" in (out / "comparison.md").read_text()
    assert not (out / "baseline" / "checkpoints" / "epoch-0002.keras").exists()
    # ...and says so in one line when there is nothing to draw.
    assert main(["compare", "--out", str(tmp_path / "empty"), "--no-train", *TINY]) == 2
    assert "no finished epoch yet" in capsys.readouterr().err
