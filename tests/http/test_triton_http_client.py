"""The Open Inference Protocol REST API against Triton's own HTTP client (tritonclient.http),
unchanged: metadata, configuration, readiness, statistics, inference with binary data (its
default) and with JSON, the classification extension, encoded images, errors.

The client runs in a subprocess under the separate Triton venv (``.venv-triton``, made by
``bash bench/setup_triton_env.sh``; ``TRITON_PYTHON`` overrides the interpreter); the
server is the real one on free ports (tests/inference/test_triton_client.py's).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10_core import contract
from tests.inference.test_triton_client import (  # noqa: F401 - its fixtures, used here
    MAX_IMAGES,
    ensure_triton_python,
    model_path,
    triton_server,
)

CHECKS = Path(__file__).with_name("triton_http_checks.py")


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, pixels in enumerate(images(2, seed=2)):
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path, "PNG")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def results(triton_server, pngs):
    python = ensure_triton_python()
    done = subprocess.run(
        [python, str(CHECKS), f"127.0.0.1:{triton_server.http_port}", "tiny-cnn", *map(str, pngs)],
        capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def expected(triton_server, batch: np.ndarray) -> np.ndarray:
    return triton_server.plane.models.default.predict(batch)


def test_health_metadata_and_config(results):
    assert results["live"] and results["ready"]
    assert results["model_ready"] and results["model_ready_v1"]
    assert results["model_ready_unknown"] is False
    assert "binary_tensor_data" in results["server_metadata"]["extensions"]
    model = results["model_metadata"]
    assert (model["name"], model["versions"]) == ("tiny-cnn", ["1"])
    assert model["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    config = results["model_config"]
    assert config["max_batch_size"] == MAX_IMAGES and config["input"][0]["dims"] == [32, 32, 3]


def test_infer_with_binary_data_and_with_json(triton_server, results):
    want = expected(triton_server, images(3, seed=1))
    binary = results["infer_binary"]
    assert (binary["id"], binary["model_name"], binary["model_version"]) == ("req-1", "tiny-cnn", "1")
    assert binary["output"]["parameters"]["binary_data_size"] == 3 * 10 * 4
    np.testing.assert_array_equal(np.array(binary["probabilities"], np.float32), want)
    assert results["infer_json"]["output"] == {"name": "probabilities", "datatype": "FP32",
                                               "shape": [3, 10]}
    np.testing.assert_array_equal(np.array(results["infer_json"]["probabilities"], np.float32), want)


def test_classification(triton_server, results):
    probs = expected(triton_server, images(3, seed=1))
    want = [[f"{row[i]:f}:{i}:{contract.CLASS_NAMES[i]}" for i in np.argsort(-row, kind="stable")[:3]]
            for row in probs]
    assert results["classification"] == {"True": want, "False": want}


def test_encoded_images(triton_server, results):
    want = expected(triton_server, images(2, seed=2))
    for binary in ("True", "False"):
        np.testing.assert_array_equal(np.array(results["encoded"][binary], np.float32), want)


def test_errors_reach_the_client_with_their_status(results):
    errors = results["errors"]
    assert errors["unknown model"][0] == "404" and "this server serves" in errors["unknown model"][1]
    assert errors["unknown version"][0] == "404"
    assert errors["wrong shape"][0] == "400" and "has shape [3, 32, 96]" in errors["wrong shape"][1]
    assert errors["unknown model metadata"][0] == "404"


def test_statistics(results):
    (stats,) = results["statistics"]["model_stats"]
    assert (stats["name"], stats["version"]) == ("tiny-cnn", "1")
    assert stats["inference_stats"]["success"]["count"] == 6
    assert results["all_statistics"]["model_stats"][0]["name"] == "tiny-cnn"
