"""Compose-equivalent smoke test: docker-compose.yml's services run as local processes.

No Docker engine here, so this reads from docker-compose.yml (and each service's Dockerfile)
the command, environment and health check each service declares and runs them on this
machine, in compose's order: `train` (1 epoch on tiny synthetic image folders, then export
into the translated named volume), then `serve` on what `train` exported, waiting until its
declared health check passes; then `cifar10-client classify` against it. The compose file
and the code cannot drift apart without this failing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10_core import contract
from tests.packaging import compose

pytestmark = pytest.mark.slow

IMAGES_PER_CLASS = 6
VAL_SIZE = 10
TEST_SIZE = 10


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory) -> Path:
    """``<root>/train/<class>/<n>.{png,jpg}``: 10 classes x 6 images of 32x32 RGB, each
    class a distinct colour with noise, half PNG and half JPEG."""
    root = tmp_path_factory.mktemp("cifar10-synthetic")
    rng = np.random.default_rng(0)
    for label, name in enumerate(contract.CLASS_NAMES):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        base = np.array([(label * 25) % 256, (label * 70) % 256, 255 - label * 25], dtype=np.int16)
        for n in range(IMAGES_PER_CLASS):
            noise = rng.integers(-30, 31, size=(32, 32, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            suffix = "png" if n % 2 == 0 else "jpg"
            Image.fromarray(pixels, "RGB").save(folder / f"{n:04d}.{suffix}")
    return root


def run_to_completion(svc: compose.LocalService, logs: Path, timeout: float) -> None:
    log = logs / f"{svc.name}.log"
    with open(log, "wb") as out:
        try:
            result = subprocess.run(svc.argv, env=svc.env, cwd=svc.cwd, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"service {svc.name} ran past {timeout:.0f} s:\n{compose.tail(log)}")
    assert result.returncode == 0, f"service {svc.name} exited {result.returncode}:\n{compose.tail(log)}"


def start_and_wait_healthy(svc: compose.LocalService, logs: Path, timeout: float) -> subprocess.Popen:
    """Start a long-running service; return once its compose health check passes."""
    assert svc.healthcheck, f"service {svc.name} declares no health check"
    log = logs / f"{svc.name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(svc.argv, env=svc.env, cwd=svc.cwd, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        compose.wait_healthy(process, svc.healthcheck, svc.env, svc.cwd, log, timeout)
    except AssertionError as exc:
        pytest.fail(f"service {svc.name}: {exc}")
    return process


def classify(svc: compose.LocalService, image: Path) -> list:
    """`cifar10-client classify --json IMAGE` against the service's published gRPC port."""
    env = dict(svc.env, CIFAR10_ADDRESS=f"127.0.0.1:{svc.ports[8500]}")
    result = subprocess.run(["cifar10-client", "classify", "--json", str(image)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    records = json.loads(result.stdout)
    text = json.dumps(records)
    assert any(name in text for name in contract.CLASS_NAMES), text
    return records


def run_compose_up(doc: dict, profiles: tuple[str, ...], volume_root: Path, logs: Path, image: Path,
                   only: tuple[str, ...] | None = None) -> dict[str, list]:
    """`docker compose [--profile P] up [SERVICES]`, as local processes; classify on each
    service that stays up. Returns {service: client records}."""
    services = doc["services"]
    order = compose.active_services(doc, profiles)
    if only is not None:
        order = [name for name in order if name in only]
    one_shot = {
        dep for name in order for dep, condition in compose.depends_on(services[name]).items()
        if condition == "service_completed_successfully"
    }
    running: dict[str, tuple[compose.LocalService, subprocess.Popen]] = {}
    answers = {}
    try:
        for name in order:
            svc = compose.local_service(doc, name, volume_root)
            if name in one_shot:
                run_to_completion(svc, logs, timeout=900)
            else:
                running[name] = (svc, start_and_wait_healthy(svc, logs, timeout=180))
        for name, (svc, _process) in running.items():
            answers[name] = classify(svc, image)
    finally:
        for _svc, process in running.values():
            compose.stop(process)
    return answers


@pytest.mark.training
@pytest.mark.timeout(1200)
def test_compose_up_trains_exports_serves_and_classifies(synthetic_data, tmp_path):
    doc = compose.load({"EPOCHS": "1", "VAL_SIZE": str(VAL_SIZE), "TEST_SIZE": str(TEST_SIZE),
                        "CIFAR10_DATA_DIR": str(synthetic_data)})
    assert compose.active_services(doc) == ["train", "serve"]
    volume_root, logs = tmp_path / "volumes", tmp_path / "logs"
    logs.mkdir()
    image = synthetic_data / "train" / "cat" / "0000.png"

    answers = run_compose_up(doc, (), volume_root, logs, image)

    train = compose.local_service(doc, "train", volume_root)
    model = train.local_path(train.env["MODEL_OUTPUT"])
    assert model.is_file() and model.is_relative_to(volume_root)
    assert model.with_suffix(".md").is_file(), "the model card travels with the model"
    assert list(answers) == ["serve"] and answers["serve"]


@pytest.mark.timeout(600)
def test_compose_profile_bundled_serves_the_bundled_model(synthetic_data, tmp_path):
    bundled = compose.ROOT / "models" / "cifar10-cnn.onnx"
    if not bundled.is_file():
        pytest.skip("no bundled model at models/cifar10-cnn.onnx yet")
    doc = compose.load({})
    logs = tmp_path / "logs"
    logs.mkdir()
    image = synthetic_data / "train" / "ship" / "0000.png"
    answers = run_compose_up(doc, ("bundled",), tmp_path / "volumes", logs, image, only=("serve-bundled",))
    assert list(answers) == ["serve-bundled"] and answers["serve-bundled"]
