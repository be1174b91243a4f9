"""Docker-build-equivalent check of serving/Dockerfile, without a Docker engine.

Runs the builder stage's own RUN lines (venv, pinned `serve` extra) on a copy of exactly what
its COPY lines put in the image, then starts the final stage's CMD from that venv with the
final stage's ENV, in a folder standing for its WORKDIR, and waits for its HEALTHCHECK to
pass. Catches what a structural check cannot: a runtime dependency missing from the `serve`
extra or the constraints, a module or data file that does not get installed, an import of
TensorFlow on the serving path.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ports import free_port
from tests.packaging import compose

ROOT = compose.ROOT
DOCKERFILE = ROOT / "serving" / "Dockerfile"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def copy_into(src: Path, dest: Path) -> None:
    """Docker's COPY: a folder's contents into dest, a file onto dest (or into dest/)."""
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def test_serving_image_builds_and_becomes_healthy(tmp_path):
    root = tmp_path / "image"  # stands for the image's filesystem root
    root.mkdir()
    def translate(text: str) -> str:
        """Absolute image paths after a space, '=' or ':' (RUN lines, ENV values) -> under root."""
        return re.sub(r"(?<=[ =:])/", f"{root}/", text)

    def local(path: str) -> Path:
        return root / path.lstrip("/")

    builder = compose.dockerfile_stages(DOCKERFILE)[0]

    # The builder stage: COPY from the context, ENV, RUN, as written.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys._base_executable).parent), env["PATH"]])
    env.pop("VIRTUAL_ENV", None)
    workdir = "/"
    log = tmp_path / "build.log"
    for keyword, rest in builder[1:]:
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, rest)
            local(workdir).mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            for key, _, value in (item.partition("=") for item in shlex.split(rest)):
                env[key] = compose.interpolate(translate("=" + value)[1:], env)
        elif keyword == "COPY":
            *sources, dest = rest.split()
            target = dest if dest.startswith("/") else os.path.join(workdir, dest)
            for src in sources:
                into_folder = target.endswith("/") and not (ROOT / src).is_dir()
                copy_into(ROOT / src, local(target) / Path(src).name if into_folder else local(target))
        elif keyword == "RUN":
            with open(log, "ab") as out:
                result = subprocess.run(["/bin/sh", "-c", translate(" " + rest)], cwd=local(workdir), env=env,
                                        stdout=out, stderr=subprocess.STDOUT, timeout=600)
            assert result.returncode == 0, f"RUN {rest!r} failed:\n{log.read_text()[-3000:]}"
        else:
            pytest.fail(f"this check does not know the builder instruction {keyword}")

    # The final stage: the builder's venv stays where it is; COPY the context's files, ENV, CMD.
    image = compose.parse_dockerfile(DOCKERFILE, ROOT)
    for src, target in image.copies:
        if src.exists():  # a missing source fails test_dockerfiles; the tiny model stands in here
            copy_into(src, local(target))
    models = local(image.workdir) / "models"
    if not (models / "cifar10-cnn.onnx").is_file():  # no bundled model yet: the tiny one
        from tests.tiny_model import write_tiny_model

        models.mkdir(parents=True, exist_ok=True)
        write_tiny_model(models / "cifar10-cnn.onnx")
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("CIFAR10_", "PYTHON", "VIRTUAL_ENV"))}
    ports = {8500: free_port(), 8501: free_port()}
    for key, value in image.env.items():
        value = translate("=" + value)[1:] if key != "PATH" else value
        run_env[key] = str(ports[int(value)]) if value.isdigit() and int(value) in ports else value
    run_env["PATH"] = os.pathsep.join([str(local("/opt/venv/bin")), "/usr/bin", "/bin"])
    run_env["CIFAR10_HOST"] = "127.0.0.1"

    venv_python = local("/opt/venv/bin/python")
    for module in ("tensorflow", "keras", "tf2onnx"):
        probe = subprocess.run([str(venv_python), "-c", f"import {module}"], env=run_env, capture_output=True)
        assert probe.returncode != 0, f"{module} is importable in the serving image"

    server_log = tmp_path / "serve.log"
    with open(server_log, "wb") as out:
        process = subprocess.Popen(image.cmd, env=run_env, cwd=local(image.workdir), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        (healthcheck,) = [rest for keyword, rest in compose.dockerfile_stages(DOCKERFILE)[-1]
                          if keyword == "HEALTHCHECK"]
        command = json.loads(healthcheck.split("CMD", 1)[1])
        compose.wait_healthy(process, command, run_env, local(image.workdir), server_log, timeout=120)
        # The image's packages answer a real request too (client from the dev environment).
        from PIL import Image

        picture = tmp_path / "red.png"
        Image.new("RGB", (32, 32), (200, 10, 10)).save(picture)
        result = subprocess.run(
            [str(Path(sys.executable).parent / "cifar10-client"), "--address", f"127.0.0.1:{ports[8500]}",
             "classify", "--json", str(picture)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)
    finally:
        compose.stop(process)
