"""Multi-worker training: two real ``cifar10-train train`` processes on localhost under
``MultiWorkerMirroredStrategy`` (TF_CONFIG), on tiny synthetic data. Real TensorFlow,
tf2onnx and onnxruntime; no mocks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ports import free_port
from tests.training import cifar_files

pytestmark = [pytest.mark.training, pytest.mark.slow]

TINY = ["--recipe", "lab", "--val-size", "20", "--test-size", "20", "--batch-size", "16"]
DIGEST_RE = re.compile(r"epoch (\d+) weights digest ([0-9a-f]{16})")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return cifar_files.write_image_folder(tmp_path_factory.mktemp("data") / "train", per_class=8)


def start_workers(run_dir: Path, image_folder: Path, epochs: int, *extra: str, workers: int = 2
                  ) -> list[subprocess.Popen]:
    """``workers`` processes of the same ``training train`` on one run folder (shared, as a
    volume on Kubernetes), worker i of a localhost cluster with its temporary folders under
    ``<run folder>-tmp-i``."""
    hosts = [f"127.0.0.1:{free_port()}" for _ in range(workers)]
    processes = []
    for index in range(workers):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        tmp = run_dir.with_name(f"{run_dir.name}-tmp-{index}")
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(tmp)}
        command = [sys.executable, "-m", "cifar10_training", "train", "--run-dir", str(run_dir), "--data",
                   str(image_folder), "--epochs", str(epochs), *TINY, *extra]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    return processes


def finish_workers(processes: list[subprocess.Popen], timeout: float = 400) -> list[str]:
    """Wait for every worker; assert each exited 0; return their stderr."""
    logs = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        logs.append(err)
        assert process.returncode == 0, err[-12000:]
    return logs


def digests(log: str) -> dict[int, str]:
    return {int(epoch): digest for epoch, digest in DIGEST_RE.findall(log)}


@pytest.fixture(scope="module")
def two_worker_run(image_folder, tmp_path_factory) -> tuple[Path, list[str]]:
    run_dir = tmp_path_factory.mktemp("multiworker") / "run"
    return run_dir, finish_workers(start_workers(run_dir, image_folder, epochs=1))


def test_only_the_chief_writes_the_run_folder(two_worker_run):
    run_dir, logs = two_worker_run
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "split.json", "history.csv", "model.onnx", "checkpoints"} <= names
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best-0001.keras", "epoch-0001.keras"]
    assert len(json.loads((run_dir / "hosts.json").read_text())) == 1  # one sitting, recorded once
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2
    assert f"worker worker:0 of 2 (chief): writes {run_dir}" in logs[0] and "run finished" in logs[0]
    temporary = Path(re.search(r"worker worker:1 of 2: saves to the temporary (\S+)", logs[1]).group(1))
    assert temporary.parent == run_dir.with_name("run-tmp-1") and not temporary.exists()  # deleted at the end


def test_the_weights_agree_across_workers_and_with_the_chief_checkpoint(two_worker_run):
    import keras

    from cifar10_training.distributed import weights_digest

    run_dir, logs = two_worker_run
    chief_digests, other_digests = digests(logs[0]), digests(logs[1])
    assert list(chief_digests) == [1] and chief_digests == other_digests
    saved = keras.models.load_model(run_dir / "checkpoints" / "epoch-0001.keras")
    assert weights_digest(saved) == chief_digests[1]


def test_the_export_is_what_the_chief_weights_give(two_worker_run, image_folder):
    import keras

    from cifar10_training import data, evaluate

    run_dir, _ = two_worker_run
    images = data.load(image_folder, progress=False).images[:20]
    saved = keras.models.load_model(run_dir / "checkpoints" / "best-0001.keras")
    expected = np.asarray(saved(images.astype(np.float32) / 255.0, training=False))
    served = evaluate.predict_onnx(run_dir / "model.onnx", images)
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_killed_workers_resume_from_the_chief_checkpoint(image_folder, tmp_path):
    from cifar10_training.train import latest_checkpoint, read_history

    run_dir = tmp_path / "run"
    processes = start_workers(run_dir, image_folder, 3, "--no-export")
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(run_dir)[0] < 1:
            assert all(p.poll() is None for p in processes), "a worker exited before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        for process in processes:
            process.send_signal(signal.SIGKILL)
        for process in processes:
            process.communicate(timeout=30)
    done = latest_checkpoint(run_dir)[0]
    assert 1 <= done < 3
    logs = finish_workers(start_workers(run_dir, image_folder, 3, "--no-export"))
    for log in logs:
        assert f"resuming {run_dir} after epoch {done}" in log
    assert digests(logs[0]) == digests(logs[1]) and sorted(digests(logs[0])) == list(range(done + 1, 4))
    assert [row["epoch"] for row in read_history(run_dir)] == [1, 2, 3]
    assert [host["from_epoch"] for host in json.loads((run_dir / "hosts.json").read_text())] == [1, done + 1]
