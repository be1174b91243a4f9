"""A client-only install: `pip install ".[client]"` into a fresh venv, then the CLIs from it.

The README's client install brings the client library, cifar10-client and cifar10-batch and
nothing of the server's or training's heavy libraries. What needs another extra says so in
one line: `cifar10-batch --local` (the `local` extra), the confusion-matrix PNG (`plots`)
and `cifar10-serve` (`serve`). The server the CLIs talk to is the real one, run from this
test's own environment.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.helpers import image_folder
from tests.packaging.compose import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
NOT_FOR_CLIENTS = {"onnxruntime", "tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx",
                   "matplotlib", "prometheus-client", "grpcio-reflection"}
CLIENT = {"cifar10-serving", "grpcio", "protobuf", "numpy", "pillow", "grpcio-health-checking", "tqdm"}


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", "-c", str(CONSTRAINTS), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv holding `pip install ".[client]"` of a copy of the source (a real install,
    not editable; the copy keeps build files out of the checkout)."""
    base = tmp_path_factory.mktemp("client-install")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    for folder in ("core", "protos", "serving", "client", "training"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "setuptools", "wheel")
    _pip(venv, "--no-build-isolation", f"{source}[client]")
    return venv


def _run(venv: Path, command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / command), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _installed(venv: Path) -> set[str]:
    """Canonical (PEP 503) names of the distributions installed in ``venv``."""
    code = ("import json, re, importlib.metadata as m; print(json.dumps(sorted("
            "re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() for d in m.distributions())))")
    listed = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                            text=True, timeout=60, check=True)
    return set(json.loads(listed.stdout))


def test_the_client_extra_installs_no_server_training_or_plotting_library(client_venv):
    installed = _installed(client_venv)
    assert CLIENT <= installed, CLIENT - installed
    assert not installed & NOT_FOR_CLIENTS, installed & NOT_FOR_CLIENTS


def test_client_cli_and_batch_against_a_real_server(client_venv, server, tiny_model_path, tmp_path):
    paths = image_folder(tmp_path / "images", per_class=2)
    done = _run(client_venv, "cifar10-client", "--address", server.address, "classify", str(paths[0]),
                "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["file"] == str(paths[0]) and record["model_name"] == "tiny-cnn"
    assert len(record["probabilities"]) == 10

    out = tmp_path / "out.csv"
    done = _run(client_venv, "cifar10-batch", str(tmp_path / "images"), "-o", str(out),
                "--address", server.address, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(paths) and all(r["label"] and not r["error"] for r in rows)
    assert "accuracy:" in done.stdout
    # Labels are known, so a PNG is due: without matplotlib, one warning naming the extra.
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "'plots' extra" in warnings[0], done.stderr
    assert "pip install 'cifar10-serving[plots]'" in warnings[0]
    assert not out.with_suffix(".confusion.png").exists()

    done = _run(client_venv, "cifar10-batch", str(tmp_path / "images"), "-o", str(tmp_path / "local.csv"),
                "--local", str(tiny_model_path), cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert done.stderr.strip().splitlines() == [
        "cifar10-batch: error: --local needs the 'local' extra (onnxruntime is not installed): "
        "pip install 'cifar10-serving[local]'"
    ]
    done = _run(client_venv, "cifar10-batch", str(tmp_path / "images"), "-o", str(tmp_path / "ray.csv"),
                "--local", str(tiny_model_path), "--engine", "ray", cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert done.stderr.strip().splitlines() == [
        "cifar10-batch: error: --engine ray needs the 'ray' extra (onnxruntime is not installed): "
        "pip install 'cifar10-serving[ray]'"
    ]


@pytest.mark.parametrize("command", [["cifar10-serve"], ["python", "-m", "cifar10_serving"]])
def test_the_server_names_its_extra_instead_of_failing_on_an_import(client_venv, tmp_path, command):
    done = _run(client_venv, *command, "--port", "0", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("cifar10-serve: error: the server needs the 'serve' extra (")
    assert lines[0].endswith("pip install 'cifar10-serving[serve]'")
