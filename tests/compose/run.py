"""`make compose-test`: docker-compose.yml end to end, with real images and Debian's docker-compose.

    .venv/bin/python -m tests.compose.run [--no-resume] [--base-image IMAGE]

On a machine without Docker (podman stands in, through its Docker-compatible socket):

1. the base image: the Dockerfiles' pinned python:3.11-slim when podman has it, else a local
   stand-in made once (tests/compose/base-image.sh), passed as the BASE_IMAGE build argument;
2. both images built from serving/Dockerfile and training/Dockerfile (``--format docker``
   keeps the HEALTHCHECK), timed, sized;
   the train image's data step, with no data and no network, says what to do in one line;
3. ``docker-compose up -d`` with the unchanged docker-compose.yml. Only documented settings
   differ (environment variables): CIFAR10_DATA points at a tiny image folder (20 images per
   class), EPOCHS=1, VAL_SIZE=20, TEST_SIZE=20, free host ports, image tag ``compose-test``;
4. the server answers ``cifar10-client classify`` through the published port on the bundled
   model; the container turns healthy under podman (``podman healthcheck run``); its threads
   follow the compose file's CPU limit (its ``settings:`` line says threads=1);
5. training exports; ``cifar10-client info`` shows the new version; a client classifying all
   the while saw no failed request; the server's answers name the new version and equal the
   exported model's own answers (onnxruntime here, on the file copied out of the container);
6. ``up`` again (same EPOCHS) finds the finished run in the volume (a run killed mid-way
   resumes from its last checkpoint the same way: tests/training/test_run.py), exports again, and the server
   answers from that model (--no-resume skips this);
7. ``docker-compose down -v``: no container or volume of the project is left.

Every phase is timed; a summary ends the run. On failure the services' logs are shown and
everything is torn down all the same. Logs: runs/compose-test/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tests.ports import free_port
from cifar10_core import contract, images
from cifar10_client import Client, ClientError
from cifar10_serving.onnx_model import OnnxModel
from tests.training.cifar_files import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
LOGS = ROOT / "runs" / "compose-test"
STAND_IN = "localhost/cifar10-base:bookworm-python3.11"
PROJECT = "cifar10-compose-test"
TAG = "compose-test"
CLIENT = Path(sys.executable).parent / "cifar10-client"
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train"
IMAGES_PER_CLASS = 20
SERVE_CPUS = 1  # docker-compose.yml's default CIFAR10_SERVE_CPUS


class Failed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def run(args: list[str], *, env: dict | None = None, timeout: float = 600, log: Path | None = None,
        ok: bool = True) -> subprocess.CompletedProcess:
    """Run ``args``; with ``log``, its output goes there (and its tail into the error)."""
    if log is not None:
        with open(log, "ab") as out:
            result = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        result.stdout = ""
    else:
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if ok and result.returncode != 0:
        detail = tail(log) if log is not None else (result.stdout + result.stderr)[-3000:]
        raise Failed(f"{' '.join(args[:4])} ... exited {result.returncode}:\n{detail}")
    return result


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def wait_for(what: str, probe, timeout: float, interval: float = 1.0):
    """Call ``probe()`` until it returns something truthy; that value, or Failed."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Timer:
    def __init__(self):
        self.started = time.monotonic()
        self.marks: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        yield
        self.marks[name] = time.monotonic() - started
        print(f"   {name}: {self.marks[name]:.1f} s", flush=True)


# --- images ----------------------------------------------------------------------------------

def default_base_image() -> str:
    text = (ROOT / "serving" / "Dockerfile").read_text()
    return re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1)


def base_image(requested: str | None) -> str:
    if requested:
        return requested
    official = default_base_image()
    if run(["podman", "image", "exists", official], ok=False).returncode == 0:
        return official
    run(["bash", str(ROOT / "tests" / "compose" / "base-image.sh"), STAND_IN], timeout=900)
    return STAND_IN


def build(dockerfile: str, name: str, base: str) -> tuple[float, int]:
    """(seconds, bytes) of ``podman build`` of one image, tagged as docker-compose.yml names it."""
    log = LOGS / f"build-{name}.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    run(["podman", "build", "--format", "docker", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
         "-f", dockerfile, "-t", f"cifar10-serving/{name}:{TAG}", str(ROOT)], timeout=1800, log=log)
    seconds = time.monotonic() - started
    size = int(run(["podman", "image", "inspect", "--format", "{{.Size}}", f"cifar10-serving/{name}:{TAG}"]).stdout)
    health = run(["podman", "image", "inspect", "--format", "{{.Config.Healthcheck}}",
                  f"cifar10-serving/{name}:{TAG}"]).stdout.strip()
    if name == "serve":
        check("cifar10_serving.healthcheck" in health, f"the serving image lost its HEALTHCHECK: {health!r}")
    return seconds, size


def no_data_no_network() -> str:
    """The train image's data step with an empty data folder and no network: one line on
    stderr saying what to do, exit status 1 (what `train` does for a user without either)."""
    empty = LOGS / "empty-data"
    shutil.rmtree(empty, ignore_errors=True)
    empty.mkdir()
    result = run(["podman", "run", "--rm", "--network", "none", "-v", f"{empty}:/input:ro",
                  "-e", "CIFAR10_DATA=/input", "-e", "CIFAR10_DATA_CACHE=/data", "--entrypoint", "python",
                  f"cifar10-serving/train:{TAG}", "-m", "cifar10_training.fetch"], ok=False, timeout=120)
    lines = result.stderr.strip().splitlines()
    check(result.returncode == 1 and len(lines) == 1 and "CIFAR10_DATA" in lines[0] and not result.stdout,
          f"expected one line and exit 1, got {result.returncode}: {result.stdout + result.stderr}")
    return lines[0]


# --- data ------------------------------------------------------------------------------------

def tiny_image_folder(root: Path) -> Path:
    """``root/train/<class>/*``: IMAGES_PER_CLASS images per class, CIFAR-10's own from
    ../shared/data when it is there, else synthetic (tests/training/cifar_files.py)."""
    shutil.rmtree(root, ignore_errors=True)
    if all(len(list((SHARED_IMAGES / name).glob("*.jpg"))) >= IMAGES_PER_CLASS for name in contract.CLASS_NAMES):
        for name in contract.CLASS_NAMES:
            (root / "train" / name).mkdir(parents=True)
            for path in sorted((SHARED_IMAGES / name).glob("*.jpg"))[:IMAGES_PER_CLASS]:
                shutil.copyfile(path, root / "train" / name / path.name)
    else:
        write_image_folder(root / "train", per_class=IMAGES_PER_CLASS)
    return root


# --- compose ---------------------------------------------------------------------------------

class Compose:
    def __init__(self, socket: Path, data: Path):
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_", "CIFAR10_"))}
        env.update({
            "DOCKER_HOST": f"unix://{socket}",
            "COMPOSE_PROJECT_NAME": PROJECT,
            "TAG": TAG,
            "CIFAR10_DATA": str(data),
            "EPOCHS": "1",
            "VAL_SIZE": "20",
            "TEST_SIZE": "20",
            "CIFAR10_HOST_PORT": str(self.grpc_port),
            "CIFAR10_HOST_HTTP_PORT": str(self.http_port),
            "CIFAR10_HOST_METRICS_PORT": str(self.metrics_port),
        })
        self.env = env
        self.address = f"127.0.0.1:{self.grpc_port}"

    def __call__(self, *args: str, timeout: float = 600, ok: bool = True, **env) -> subprocess.CompletedProcess:
        return run(["docker-compose", "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
                   env={**self.env, **env}, timeout=timeout, ok=ok)

    def container(self, service: str) -> str:
        ids = self("ps", "-a", "-q", service).stdout.split()
        check(len(ids) == 1, f"expected one {service} container, found {ids}")
        return ids[0]

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", service, ok=False).stdout


def client(address: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The project's own command-line client against the published port."""
    return run([str(CLIENT), "--address", address, "--timeout", "10", *args], ok=ok, timeout=60)


def served_version(address: str) -> str | None:
    result = client(address, "info", "--json", ok=False)
    return json.loads(result.stdout)["version"] if result.returncode == 0 else None


def classify(address: str, image: Path, ok: bool = True) -> dict | None:
    result = client(address, "classify", "--json", str(image), ok=ok)
    if result.returncode != 0:
        return None
    (record,) = json.loads(result.stdout)
    check(record.get("label") in contract.CLASS_NAMES, f"not an answer: {record}")
    return record


class Traffic(threading.Thread):
    """Classifies ``image`` over and over (the client library) until stopped, recording each
    answer's model version and every failure: a hot reload must not fail a request."""

    def __init__(self, address: str, image: Path):
        super().__init__(daemon=True)
        self.address, self.image = address, image.read_bytes()
        self.stopped = threading.Event()
        self.versions: dict[str, int] = {}
        self.failures: list[str] = []

    def run(self) -> None:
        with Client(self.address, timeout=10.0) as c:
            while not self.stopped.is_set():
                try:
                    version = c.classify(self.image).model_version
                    self.versions[version] = self.versions.get(version, 0) + 1
                except ClientError as error:
                    self.failures.append(f"{error.code.name}: {error.message}")
                self.stopped.wait(0.1)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)


def train_exit_code(compose: Compose) -> int | None:
    state = json.loads(run(["podman", "inspect", "--format", "{{json .State}}", compose.container("train")],
                           env=compose.env).stdout)
    return None if state.get("Running") else int(state.get("ExitCode", -1))


def wait_train_exit(compose: Compose, timeout: float) -> None:
    code = wait_for("training to finish", lambda: (c := train_exit_code(compose)) is not None and [c],
                    timeout, interval=3)[0]
    check(code == 0, f"the train service exited {code}:\n{compose.logs('train')[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.compose.run", description=__doc__.split("\n")[0])
    parser.add_argument("--base-image", help="base image for both Dockerfiles (default: the pinned "
                        "python:3.11-slim when podman has it, else the local stand-in)")
    parser.add_argument("--no-resume", action="store_true", help="skip the second `up` (resume)")
    parser.add_argument("--train-timeout", type=float, default=1200, help="seconds to wait for the export")
    args = parser.parse_args(argv)

    LOGS.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    figures: dict[str, str] = {}
    socket = LOGS / "podman.sock"
    socket.unlink(missing_ok=True)
    service = None
    compose = None
    try:
        with timer.phase("base image"):
            base = base_image(args.base_image)
            figures["base image"] = base
        for name, dockerfile in (("serve", "serving/Dockerfile"), ("train", "training/Dockerfile")):
            with timer.phase(f"build {name}"):
                seconds, size = build(dockerfile, name, base)
                figures[f"{name} image"] = f"{size / 1e6:.0f} MB, built in {seconds:.0f} s"

        with timer.phase("train image: no data and no network"):
            figures["no data, no network"] = no_data_no_network()

        with open(LOGS / "podman-service.log", "wb") as out:
            service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"],
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        data = tiny_image_folder(LOGS / "data")
        compose = Compose(socket, data)
        wait_for("podman's socket", lambda: socket.exists() and compose("version", ok=False).returncode == 0, 30)
        image = sorted((data / "train" / "cat").iterdir())[0]
        bundled = "1"  # the bundled model's version in the repository

        compose("down", "-v", "--remove-orphans", ok=False)  # what an interrupted run left
        with timer.phase("compose up -> first answer"):
            up = time.monotonic()
            compose("up", "-d", "--no-build")
            record = wait_for("a first answer", lambda: classify(compose.address, image, ok=False), 120, 0.5)
            first_answer = time.monotonic() - up
            check(record["model_version"] == bundled, f"first answer from {record['model_version']}, not the bundled {bundled}")
        with timer.phase("healthy (podman healthcheck run)"):
            serve_id = compose.container("serve")
            wait_for("the serve container's HEALTHCHECK",
                     lambda: run(["podman", "healthcheck", "run", serve_id], ok=False).returncode == 0, 60)
            status = run(["podman", "inspect", "--format", "{{.State.Health.Status}}", serve_id]).stdout.strip()
            check(status == "healthy", f"health status {status!r}")
            healthy = time.monotonic() - up
        settings = [line for line in compose.logs("serve").splitlines() if "settings:" in line]
        check(bool(settings), "no settings line in the serve logs")
        check(f" threads={SERVE_CPUS} " in settings[-1] + " ",
              f"threads do not follow cpus: {SERVE_CPUS}: {settings[-1]}")
        figures["serve threads"] = f"threads={SERVE_CPUS} under cpus: {SERVE_CPUS} (host: {os.cpu_count()} CPUs)"

        traffic = Traffic(compose.address, image)
        traffic.start()
        with timer.phase("training -> reloaded model"):
            new = wait_for("the trained model's version", lambda: (v := served_version(compose.address)) != bundled and v,
                           args.train_timeout, 2)
            reloaded = time.monotonic() - up
            wait_train_exit(compose, 120)
        time.sleep(1)
        traffic.stop()
        check(not traffic.failures, f"{len(traffic.failures)} failed request(s) around the reload: {traffic.failures[:3]}")
        check({bundled, new} <= set(traffic.versions), f"answers during the reload came from {traffic.versions}")
        figures["requests during training and reload"] = f"{sum(traffic.versions.values())}, none failed ({traffic.versions})"

        record = classify(compose.address, image)
        check(record["model_version"] == new, f"answer from {record['model_version']}, not {new}")
        exported = LOGS / "exported.onnx"
        exported.unlink(missing_ok=True)
        run(["podman", "cp", f"{compose.container('serve')}:/models/cifar10-cnn/{new}/model.onnx",
             str(exported)])
        model = OnnxModel.load(exported)
        expected = model.predict(images.decode(image.read_bytes())[None])[0]
        answered = [record["probabilities"][name] for name in contract.CLASS_NAMES]
        check(np.allclose(answered, expected, atol=1e-5),
              f"server {answered} != exported model {expected.tolist()}")

        if not args.no_resume:
            with timer.phase("up again (same EPOCHS): the run in the volume is found, exported again"):
                compose("up", "-d", "--no-build", "train")
                wait_train_exit(compose, args.train_timeout)
                logs = compose.logs("train")
                check("/runs/compose-e1 already has 1 epochs: nothing to train" in logs,
                      f"train did not find its run in the volume:\n{logs[-2000:]}")
                again = str(int(new) + 1)  # the same weights exported as the next version
                wait_for("the export's next version", lambda: served_version(compose.address) == again, 60, 1)
                record = classify(compose.address, image)
                check(record["model_version"] == again, f"answer from {record['model_version']}, not {again}")
                check(np.allclose([record["probabilities"][name] for name in contract.CLASS_NAMES], expected,
                                  atol=1e-5), "the version exported again answers as the first export")
                figures["up again"] = f"found the finished run in the volume, exported it again as version {again}"

        with timer.phase("compose down -v"):
            compose("down", "-v")
            left = run(["podman", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]).stdout.split()
            volumes = [v for v in run(["podman", "volume", "ls", "-q"]).stdout.split() if v.startswith(PROJECT)]
            check(not left and not volumes, f"left behind: containers {left}, volumes {volumes}")
        compose = None
    except (Failed, subprocess.TimeoutExpired) as error:
        print(f"\ncompose-test FAILED: {error}", file=sys.stderr)
        if compose is not None:
            for name in ("serve", "train"):
                print(f"\n--- {name} logs (tail) ---\n" + "\n".join(compose.logs(name).splitlines()[-40:]), file=sys.stderr)
        return 1
    finally:
        if compose is not None:
            compose("down", "-v", "--remove-orphans", ok=False)
        if service is not None:
            service.terminate()
            service.wait(timeout=30)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print("\ncompose-test passed")
    print(f"  machine: {cpu}, {os.cpu_count()} CPUs; podman {run(['podman', '--version']).stdout.split()[-1]}, "
          f"docker-compose {run(['docker-compose', 'version', '--short']).stdout.strip()}")
    for name, value in figures.items():
        print(f"  {name}: {value}")
    print(f"  up -> first answer (bundled model {bundled}): {first_answer:.1f} s; healthy: {healthy:.1f} s")
    print(f"  up -> reloaded trained model {new} (1 epoch on {IMAGES_PER_CLASS * 10} images): {reloaded:.1f} s")
    for name, seconds in timer.marks.items():
        print(f"  phase {name}: {seconds:.1f} s")
    print(f"  total: {time.monotonic() - timer.started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
