"""Compose-equivalent smoke test: docker-compose.yml's services run as local processes.

``make compose-test`` runs the file for real (images, podman, docker-compose); this is the
fast stand-in inside ``make test``, so that the compose file and the code cannot drift apart
(a renamed flag, a moved module) without a container engine. It reads from docker-compose.yml
(and each service's Dockerfile) the command, environment and health check each service
declares and runs them on this machine: `serve` first, seeding the translated `models` volume
with the bundled model and answering at once; then `train` (the data fetch step finds the
local folder given as CIFAR10_DATA, 1 epoch on tiny synthetic images, the export onto the
served model); the running server reloads it, and `cifar10-client classify` names its version.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from cifar10_core import contract
from tests.packaging import compose
from tests.training.cifar_files import write_image_folder

pytestmark = pytest.mark.slow


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


@pytest.mark.training
@pytest.mark.timeout(1200)
def test_compose_up_serves_at_once_then_trains_exports_and_reloads(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data / "train", per_class=6)
    doc = compose.load({"EPOCHS": "1", "VAL_SIZE": "10", "TEST_SIZE": "10", "CIFAR10_DATA": str(data)})
    assert compose.active_services(doc) == ["serve", "train"]
    volumes, logs = tmp_path / "volumes", tmp_path / "logs"
    logs.mkdir()
    image = next((data / "train" / "cat").iterdir())
    bundled = "1"  # the repository's version of the bundled model

    serve = compose.local_service(doc, "serve", volumes)
    process = start_and_wait_healthy(serve, logs, timeout=120)
    try:
        # The published metrics port answers the health probes, and the HTTP port the HTTP door.
        assert compose.http_status(f"http://127.0.0.1:{serve.ports[8502]}/v2/health/ready") == 200
        if compose.http_door_present():
            assert compose.http_status(f"http://127.0.0.1:{serve.ports[8501]}/v2/health/ready") == 200
        (first,) = classify(serve, image)
        assert first["model_version"] == bundled, "serve starts on the bundled model"
        assert (volumes / "models" / "cifar10-cnn" / "card.md").is_file(), "the card is seeded with it"

        train = compose.local_service(doc, "train", volumes)
        run_to_completion(train, logs, timeout=900)
        model_dir = train.local_path(train.env["MODEL_OUTPUT"])
        assert (model_dir / "2" / "model.onnx").is_file(), "the export is the next version"
        exported = "2"
        deadline = time.monotonic() + 60
        while (answer := classify(serve, image)[0])["model_version"] != exported:
            assert time.monotonic() < deadline, f"not reloaded: {answer}\n{compose.tail(logs / 'serve.log')}"
            time.sleep(0.5)
    finally:
        compose.stop(process)
