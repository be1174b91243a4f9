"""cifar10-batch --engine ray: the same rows as --local, the same resume, the extra's hint.

Real Ray (a local instance, started once for the module) and the real tiny ONNX model.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from cifar10_core.contract import CLASS_NAMES
from tests.client.helpers import random_image
from tests.client.test_batch import ROOT, batch, comparable, folder, jsonl  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def ray_here():
    """One local Ray instance for the module (``ray_running``, as cifar10-batch starts it):
    each run reuses it instead of starting its own. Where Ray cannot start, the failure comes
    with the end of Ray's own logs."""
    pytest.importorskip("ray", reason="--engine ray needs the 'ray' extra (in dev)")
    pytest.importorskip("ray.data", reason="--engine ray needs the 'ray' extra (in dev)")
    from cifar10_client.engine import ray_running
    from cifar10_client.errors import UnreachableError

    with ExitStack() as stack:
        try:
            stack.enter_context(ray_running())
        except UnreachableError as error:
            pytest.fail(f"{error}\n{ray_logs()}")
        yield


def ray_logs(lines: int = 20) -> str:
    """The end of the newest Ray session's raylet and GCS logs: why a start failed."""
    from ray._common.utils import get_default_ray_temp_dir  # where ray.init puts its sessions

    logs = Path(get_default_ray_temp_dir()) / "session_latest" / "logs"
    tails = []
    for name in ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"):
        path = logs / name
        if path.exists():
            tails.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(tails) or f"(no logs under {logs})"


def probabilities(records: list[dict]) -> dict[str, np.ndarray]:
    return {r["item"]: np.array(list(r["probabilities"].values())) for r in records if "error" not in r}


@pytest.mark.slow
def test_ray_gives_the_same_rows_as_local(ray_here, folder, tiny_model_path, tmp_path):
    local, engine = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert batch(folder, "-o", local, "--local", tiny_model_path, "--batch-size", "5") == 1  # broken.jpg
    assert batch(folder, "-o", engine, "-o", tmp_path / "ray.csv", "--local", tiny_model_path,
                 "--engine", "ray", "--batch-size", "5", "--concurrency", "2") == 1
    local_rows, engine_rows = jsonl(local), jsonl(engine)
    assert len(engine_rows) == 13 and comparable(engine_rows) == comparable(local_rows)
    p_local, p_engine = probabilities(local_rows), probabilities(engine_rows)
    assert p_engine.keys() == p_local.keys() and len(p_engine) == 12
    for key, p in p_engine.items():
        np.testing.assert_allclose(p, p_local[key], rtol=0, atol=1e-6)
    assert {r["error"]["code"] for r in engine_rows if "error" in r} == {"INVALID_ARGUMENT"}
    assert len((tmp_path / "ray.csv").read_text().splitlines()) == 1 + 13

    # An array input: the pixels travel in the Dataset instead of paths.
    np.save(tmp_path / "a.npy", np.stack([random_image(i) for i in range(9)]))
    local_csv, engine_csv = tmp_path / "a-local.csv", tmp_path / "a-ray.csv"
    assert batch(tmp_path / "a.npy", "-o", local_csv, "--local", tiny_model_path) == 0
    assert batch(tmp_path / "a.npy", "-o", engine_csv, "--local", tiny_model_path, "--engine", "ray",
                 "--batch-size", "4") == 0
    assert sorted(engine_csv.read_text().splitlines()) == sorted(local_csv.read_text().splitlines())


@pytest.mark.slow
def test_ray_resumes_after_a_partial_output(ray_here, tiny_model_path, tmp_path, capsys):
    images = np.stack([random_image(i) for i in range(20)])
    labels = np.arange(20) % len(CLASS_NAMES)
    np.savez(tmp_path / "a.npz", images=images, labels=labels)
    out = tmp_path / "o.csv"
    assert batch(tmp_path / "a.npz", "-o", out, "--local", tiny_model_path, "--engine", "ray",
                 "--limit", "6") == 0
    with open(out, "a") as f:
        f.write("7,cat,cat,0.5")  # a crash in the middle of a line
    capsys.readouterr()
    assert batch(tmp_path / "a.npz", "-o", out, "--local", tiny_model_path, "--engine", "ray",
                 "--batch-size", "3") == 0
    assert "6 already in the output, 14 to do" in capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["item"] for r in rows), key=int) == [str(i) for i in range(20)]
    assert all(r["true_label"] == CLASS_NAMES[int(r["item"]) % 10] for r in rows)

    reference = tmp_path / "local.csv"
    assert batch(tmp_path / "a.npz", "-o", reference, "--local", tiny_model_path) == 0
    assert sorted(out.read_text().splitlines()) == sorted(reference.read_text().splitlines())


def test_engine_without_ray_says_what_to_install(tmp_path, tiny_model_path):
    np.save(tmp_path / "a.npy", np.stack([random_image(0)]))
    code = ("import sys; sys.modules['ray'] = None; from cifar10_client.batch import main; "
            f"sys.exit(main([{str(tmp_path / 'a.npy')!r}, '-o', {str(tmp_path / 'o.csv')!r}, "
            f"'--local', {str(tiny_model_path)!r}, '--engine', 'ray', '--no-progress']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 5, done.stderr
    assert "'ray' extra" in done.stderr and "pip install 'cifar10-serving[ray]'" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()  # nothing opened before the check


@pytest.mark.slow
def test_engine_that_cannot_reach_ray_says_so_in_one_line(tmp_path, tiny_model_path):
    pytest.importorskip("ray.data", reason="--engine ray needs the 'ray' extra (in dev)")
    np.save(tmp_path / "a.npy", np.stack([random_image(0)]))
    done = subprocess.run(
        [sys.executable, "-m", "cifar10_client.batch", tmp_path / "a.npy", "-o", tmp_path / "o.csv",
         "--local", tiny_model_path, "--engine", "ray", "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "head-node"},  # no port: a typo
    )
    assert done.returncode == 3, done.stderr  # unavailable
    assert "cifar10-batch: error: cannot reach the Ray cluster at RAY_ADDRESS=head-node: " in done.stderr
    assert "Traceback" not in done.stderr


def test_engine_needs_a_local_model(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.stack([random_image(0)]))
    assert batch(tmp_path / "a.npy", "-o", tmp_path / "o.csv", "--engine", "ray") == 2
    assert "--local" in capsys.readouterr().err
    assert batch(tmp_path / "a.npy", "-o", tmp_path / "o.csv", "--engine", "ray",
                 "--local", tmp_path / "missing.onnx") == 2
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert batch(tmp_path / "a.npy", "-o", tmp_path / "o.csv", "--engine", "ray",
                 "--local", tmp_path / "bad.onnx") == 2
    assert "bad.onnx" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
