"""Reaching the server from the command-line tools: a wrong address fails at once in one
line, --wait waits for a server that is starting, a batch outlives a server that goes away
for a while (--retry-for) and says how to resume when it does not come back, and gRPC's
C-core log stays off. Real servers on free ports, no mocks."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cifar10_client import batch, cli
from tests.client.helpers import random_image
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent


@pytest.fixture
def images(tmp_path) -> Path:
    path = tmp_path / "a.npy"
    np.save(path, np.stack([random_image(i) for i in range(3)]))
    return path


def tool_argv(tool: str, address: str, images: Path, tmp_path: Path) -> list[str]:
    if tool == "cifar10-client":
        return ["--address", address, "info"]
    return [str(images), "-o", str(tmp_path / "o.jsonl"), "--no-progress", "--address", address]


def run_tool(tool: str, argv: list[str]) -> int:
    return (cli.main if tool == "cifar10-client" else batch.main)(argv)


@pytest.mark.parametrize("tool", ["cifar10-client", "cifar10-batch"])
@pytest.mark.parametrize("host, said", [
    ("localhost:{port}", "error: cannot reach localhost:{port}: connection refused"),
    ("nosuch.invalid:8500", "error: cannot resolve host nosuch.invalid"),
])
def test_a_wrong_address_fails_at_once_in_one_line(tool, host, said, images, tmp_path, capsys):
    port = free_port()
    started = time.monotonic()
    code = run_tool(tool, tool_argv(tool, host.format(port=port), images, tmp_path))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.splitlines()
    assert code == 3 and elapsed < 2.5, (code, elapsed, err)
    assert len(err) == 1 and err[0].startswith(f"{tool}: {said.format(port=port)}"), err


@pytest.mark.parametrize("tool", ["cifar10-client", "cifar10-batch"])
def test_wait_waits_for_a_server_that_is_starting(tool, server_factory, images, tmp_path, capsys):
    port = free_port()
    starter = threading.Timer(1.0, server_factory, kwargs={"port": port})
    starter.start()
    try:
        started = time.monotonic()
        code = run_tool(tool, [*tool_argv(tool, f"localhost:{port}", images, tmp_path), "--wait", "20"])
        elapsed = time.monotonic() - started
    finally:
        starter.join()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert 1.0 <= elapsed < 15, elapsed
    assert "tiny-cnn" in out + err


def test_a_batch_that_loses_its_server_says_how_to_resume_and_resuming_completes(server_factory, tmp_path,
                                                                                capsys):
    count, retry_for = 2000, 2.0
    np.save(tmp_path / "many.npy", np.stack([random_image(i % 97) for i in range(count)]))
    out = tmp_path / "many.jsonl"
    srv = server_factory()
    argv = [str(tmp_path / "many.npy"), "-o", str(out), "--address", srv.address, "--batch-size", "1",
            "--concurrency", "2", "--no-progress", "--retry-for", str(retry_for)]
    stopped: list[float] = []

    def stop_midway() -> None:
        while not out.exists() or out.read_bytes().count(b"\n") < 100:
            time.sleep(0.005)
        srv.stop(grace=0.0)
        stopped.append(time.monotonic())

    stopper = threading.Thread(target=stop_midway, daemon=True)
    stopper.start()
    code = batch.main(argv)
    ended = time.monotonic()
    stopper.join(5)
    err = capsys.readouterr().err.splitlines()
    assert code == 3, err
    assert stopped and ended - stopped[0] < retry_for + 3, ended - stopped[0]
    assert f"cifar10-batch: error: cannot reach {srv.address}: connection refused" in err[-2]
    written = out.read_bytes().count(b"\n")
    assert 100 <= written < count
    resume = err[-1].removeprefix("cifar10-batch: to resume, run: ")
    assert shlex.split(resume) == ["cifar10-batch", *argv]

    server_factory(port=srv.port)  # the server is back, on the same address
    assert batch.main(shlex.split(resume)[1:]) == 0, capsys.readouterr().err
    items = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    assert sorted(items, key=int) == [str(i) for i in range(count)]  # each exactly once


def test_a_batch_rides_out_a_server_that_comes_back_within_retry_for(server_factory, tmp_path, capsys):
    count = 1500
    np.save(tmp_path / "many.npy", np.stack([random_image(i % 97) for i in range(count)]))
    out = tmp_path / "many.jsonl"
    srv = server_factory()

    def restart_midway() -> None:
        while not out.exists() or out.read_bytes().count(b"\n") < 100:
            time.sleep(0.005)
        srv.stop(grace=0.0)
        time.sleep(1.0)
        server_factory(port=srv.port)

    restarter = threading.Thread(target=restart_midway, daemon=True)
    restarter.start()
    code = batch.main([str(tmp_path / "many.npy"), "-o", str(out), "--address", srv.address, "--batch-size", "1",
                       "--no-progress", "--retry-for", "20"])
    restarter.join(10)
    assert code == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == count


def test_wait_and_retry_for_must_not_be_negative(images, tmp_path, capsys):
    assert cli.main(["--wait", "-1", "info"]) == 2
    assert batch.main([str(images), "-o", str(tmp_path / "o.csv"), "--retry-for", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--wait must not be negative" in err and "--retry-for must not be negative" in err


@pytest.mark.parametrize("tool", ["cifar10-client", "cifar10-batch"])
def test_grpc_core_log_is_off_unless_asked_for(tool, server, images, tmp_path):
    """--tls against a plaintext server: one line of ours, none of gRPC's C core (which logs
    each failed handshake), unless the user sets GRPC_VERBOSITY."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    # The server listens on 127.0.0.1 only: "localhost" would also try ::1, which refuses.
    address = f"127.0.0.1:{server.port}"
    argv = [str(SCRIPTS / tool), *tool_argv(tool, address, images, tmp_path), "--tls"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"{tool}: error: cannot reach {address}: TLS handshake failed (WRONG_VERSION_NUMBER): "
        "the server does not seem to use TLS"]
    asked = subprocess.run(argv, capture_output=True, text=True, env={**env, "GRPC_VERBOSITY": "INFO"},
                           cwd=ROOT, timeout=60)
    assert asked.returncode == 3 and "ssl_transport_security" in asked.stderr
