"""Whole runs on tiny synthetic data: artifacts, the three-way split recorded, the best
checkpoint kept and exported, export contract and parity, resume after a kill, and the
two-arm comparison. Real TensorFlow, tf2onnx and onnxruntime throughout."""

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

from cifar10_core import contract, cpus
from tests.training import cifar_files

pytestmark = [pytest.mark.training, pytest.mark.slow]

TINY = ["--val-size", "20", "--test-size", "20", "--batch-size", "16"]


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
    assert {"config.json", "split.json", "hosts.json", "history.csv", "curves.png", "confusion_matrix.png",
            "evaluation.json", "model.onnx", "MODEL_CARD.md", "checkpoints"} <= names
    history = (finished_run / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds,learning_rate" and len(history) == 3
    evaluation = json.loads((finished_run / "evaluation.json").read_text())
    assert evaluation["validation"]["images"] == 20 and evaluation["test"]["images"] == 20
    assert set(evaluation["test"]["per_class_accuracy"]) == set(contract.CLASS_NAMES)
    assert evaluation["parity"]["argmax_mismatches"] == 0 and evaluation["checkpoint"] == "best"
    card = (finished_run / "MODEL_CARD.md").read_text()
    assert "JPEG" in card and f"{evaluation['test']['accuracy']:.2%} test accuracy" in card
    assert "recipe `improved`" in card and "Host CPU: " in card and "training images/s" in card
    assert "| true \\ predicted |" in card  # the test part's confusion matrix
    hosts = json.loads((finished_run / "hosts.json").read_text())
    assert hosts[0]["from_epoch"] == 1 and hosts[0]["cpu"]
    assert set(hosts[0]["cpu_flags"]) <= set(cpus.VECTOR_FLAGS)
    assert "| epoch | seconds | training images/s | validation accuracy |" in card  # every epoch
    assert sum(line.startswith(("| 1 | ", "| 2 | ")) for line in card.splitlines()) == 2


def test_the_three_way_split_is_recorded_in_the_run_and_the_model(finished_run, image_folder):
    import onnx

    from cifar10_training import data

    split = json.loads((finished_run / "split.json").read_text())
    assert (split["train_size"], split["val_size"], split["test_size"], split["split_seed"]) == (40, 20, 20, 1234)
    val, test = set(split["val_indices"]), set(split["test_indices"])
    assert len(val) == 20 and len(test) == 20 and not val & test
    labels = data.load(image_folder, progress=False).labels
    assert np.bincount(labels[sorted(test)], minlength=10).tolist() == [2] * 10
    meta = {p.key: p.value for p in onnx.load(str(finished_run / "model.onnx")).metadata_props}
    assert json.loads(meta[contract.META_SPLIT]) == {"split_seed": 1234, "train_size": 40, "val_size": 20,
                                                     "test_size": 20}
    config = json.loads(meta[contract.META_TRAINING_CONFIG])
    assert (config["recipe"], config["val_size"], config["test_size"]) == ("improved", 20, 20)
    # The data named portably (issue 32): its name and size, no path of this machine; the
    # run folder itself keeps the path it was given.
    described = f"image folder {image_folder.parent.name}/train (80 images)"
    assert meta[contract.META_DATASET] == config["data"] == described
    assert str(image_folder.parent) not in "".join(meta.values())
    card = (finished_run / "MODEL_CARD.md").read_text()
    assert f"{described}, fingerprint" in card and str(image_folder.parent) not in card
    assert json.loads((finished_run / "config.json").read_text())["data"] == str(image_folder)
    test_metrics = json.loads(meta[contract.META_TEST_METRICS])
    evaluation = json.loads((finished_run / "evaluation.json").read_text())
    assert test_metrics["test_images"] == 20
    assert test_metrics["test_accuracy"] == pytest.approx(evaluation["test"]["accuracy"])


def test_export_honours_the_model_contract(finished_run, image_folder):
    import onnxruntime as ort

    from cifar10_serving.onnx_model import OnnxModel
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


def test_export_command_writes_the_next_version_into_a_model_repository(finished_run, tmp_path):
    from cifar10_serving.dataplane.repository import Repository
    from cifar10_training.cli import main

    model_dir = tmp_path / "repository" / "cifar10-cnn"
    for _ in range(2):
        assert main(["export", "--run-dir", str(finished_run), "--repository-model", str(model_dir)]) == 0
    assert (model_dir / "1" / "model.onnx").is_file() and (model_dir / "2" / "model.onnx").is_file()
    chosen = Repository(model_dir.parent).scan().chosen(lambda slot: True)
    assert [(s.name, s.version) for s in chosen] == [("cifar10-cnn", "2")]  # latest 1: the export
    link = tmp_path / "repository" / "cifar10-cnn.onnx"  # as models/cifar10-cnn.onnx
    link.symlink_to("cifar10-cnn/2/model.onnx")
    before = (model_dir / "2" / "model.onnx").stat().st_ino
    assert main(["export", "--run-dir", str(finished_run), "--output", str(link)]) == 0
    assert link.is_symlink() and (model_dir / "2" / "model.onnx").stat().st_ino != before
    with pytest.raises(SystemExit):  # one place to write, not two
        main(["export", "--run-dir", str(finished_run), "--repository-model", str(model_dir),
              "--output", str(tmp_path / "m.onnx")])


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
    # ...and its test part.
    code = main(["evaluate", "--model", str(finished_run / "model.onnx"), "--data", str(image_folder),
                 "--test", "--out", str(tmp_path / "eval3")])
    assert code == 0
    test = json.loads((tmp_path / "eval3" / "evaluation.json").read_text())
    assert test == json.loads((finished_run / "evaluation.json").read_text())["test"]


def _copy_run(run_dir: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, target)
    return target


def _set_val_accuracy(run_dir: Path, by_epoch: dict[int, float]) -> None:
    from cifar10_training.train import read_history, write_history

    history = read_history(run_dir)
    for row in history:
        row["val_accuracy"] = by_epoch[row["epoch"]]
    write_history(run_dir, history)


def test_the_best_checkpoint_is_kept_beside_the_rolling_ones(finished_run):
    from cifar10_training.train import best_checkpoint, best_row, latest_checkpoint, read_history

    names = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    best = best_row(read_history(finished_run))["epoch"]
    assert names == sorted(["epoch-0001.keras", "epoch-0002.keras", f"best-{best:04d}.keras"])
    assert best_checkpoint(finished_run)[0] == best and latest_checkpoint(finished_run)[0] == 2


def test_export_takes_the_best_epoch_not_the_last_and_says_which(finished_run, tmp_path, caplog):
    """A run whose best validation epoch (1) is not its last (2): export exports epoch 1."""
    import keras
    import onnx

    from cifar10_training import evaluate
    from cifar10_training.cli import main

    run_dir = _copy_run(finished_run, tmp_path / "run")
    for old in (run_dir / "checkpoints").glob("best-*.keras"):
        old.unlink()
    (run_dir / "checkpoints" / "best-0001.keras").write_bytes((run_dir / "checkpoints" / "epoch-0001.keras").read_bytes())
    _set_val_accuracy(run_dir, {1: 0.9, 2: 0.1})
    target = tmp_path / "best.onnx"
    with caplog.at_level("INFO"):
        assert main(["export", "--run-dir", str(run_dir), "--output", str(target)]) == 0
    assert "exporting epoch 1 of 2 (best checkpoint, validation accuracy 90.00%)" in caplog.text
    meta = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    metrics = json.loads(meta[contract.META_VALIDATION_METRICS])
    assert (metrics["epochs"], metrics["checkpoint"], metrics["epochs_trained"]) == (1, "best", 2)
    assert meta[contract.META_MODEL_VERSION].endswith("-e001")
    assert "These weights are epoch 1 (best checkpoint" in target.with_suffix(".md").read_text()
    last = tmp_path / "last.onnx"
    assert main(["export", "--run-dir", str(run_dir), "--output", str(last), "--checkpoint", "last"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(last)).metadata_props}
    assert json.loads(meta[contract.META_VALIDATION_METRICS])["epochs"] == 2
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    answers = {}
    for epoch, onnx_file in ((1, target), (2, last)):  # each file computes its epoch's weights
        keras_model = keras.models.load_model(run_dir / "checkpoints" / f"epoch-{epoch:04d}.keras")
        expected = np.asarray(keras_model(images.astype(np.float32) / 255.0, training=False))
        answers[epoch] = evaluate.predict_onnx(onnx_file, images)
        np.testing.assert_allclose(answers[epoch], expected, atol=1e-5)
    assert not np.allclose(answers[1], answers[2], atol=1e-5)
    assert meta[contract.META_MODEL_VERSION].endswith("-e002")


def test_resume_keeps_the_best_a_kill_between_the_two_saves_left_out(finished_run, image_folder, tmp_path):
    from cifar10_training.cli import main
    from cifar10_training.train import best_checkpoint

    run_dir = _copy_run(finished_run, tmp_path / "run")
    for old in (run_dir / "checkpoints").glob("best-*.keras"):
        old.unlink()
    (run_dir / "checkpoints" / "best-0001.keras").write_bytes(b"stale")  # the best before epoch 2
    _set_val_accuracy(run_dir, {1: 0.5, 2: 0.7})  # epoch 2 was the best; its copy never made
    assert main(["train", "--run-dir", str(run_dir), "--data", str(image_folder), "--epochs", "2",
                 "--no-export", *TINY]) == 0
    epoch, path = best_checkpoint(run_dir)
    assert epoch == 2 and path.read_bytes() == (run_dir / "checkpoints" / "epoch-0002.keras").read_bytes()
    assert not (run_dir / "checkpoints" / "best-0001.keras").exists()


def test_killed_run_resumes_with_the_same_command(image_folder, tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "cifar10_training", "train", "--run-dir", str(run_dir), "--data", str(image_folder),
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
                 "--val-size", "20", "--test-size", "20", "--batch-size", "32"])
    assert code == 2
    assert "batch_size: 16 in the run, 32 now" in capsys.readouterr().err
    # A schedule's length is fixed in its checkpoints: more epochs are refused too.
    assert main(["train", "--run-dir", str(finished_run), "--data", str(image_folder), "--epochs", "3", *TINY]) == 2
    assert "epochs: 2 in the run, 3 now" in capsys.readouterr().err


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
