"""``--workers 2`` against real processes: two servers on one port, both answering, signals
passed on, metrics summed, a dead worker stopping the server, start-up errors said once."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from tests.processes import tree
from tests.ports import free_port
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_core.cpus import available_cpus
from cifar10_serving.settings import Settings
from tests.serving import models
from tests.serving.test_lifecycle import IMAGE, _env
from tests.tiny_model import write_tiny_model

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 16  # P(all on one of 2 workers) = 2 ** -15


def _spawn(model_path, *flags, port=0, metrics_port=-1):
    return subprocess.Popen(
        [sys.executable, "-m", "cifar10_serving", "--model-path", str(model_path),
         "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
         "--workers", "2", "--reload-interval-s", "0", *flags],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _port_of(proc) -> int:
    """The port from the first process's 'listening on port N' line."""
    for line in proc.stderr:
        found = re.search(r"listening on port (\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"server ended before listening (status {proc.wait()})")


def _children(pid: int) -> list[int]:
    return tree(pid)[1:]


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def _versions(port: int, connections: int = CONNECTIONS) -> set[str]:
    """Model versions answered over ``connections`` fresh connections (one call each)."""
    seen = set()
    for i in range(connections):
        # a distinct channel argument: its own connection, not one shared by the channels
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("test.connection", i)]) as ch:
            answer = pb_grpc.ClassifierStub(ch).Classify(
                pb.ClassifyRequest(images=[IMAGE]), timeout=30, wait_for_ready=True)
            seen.add(answer.model_version)
    return seen


def _stop(proc, sig=signal.SIGTERM) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_model(tmp_path / "tiny.onnx")


def test_two_workers_share_the_port_and_both_answer(tiny):
    proc = _spawn(tiny)
    try:
        port = _port_of(proc)
        workers = [proc.pid, *_children(proc.pid)]
        assert len(workers) == 2
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # both are listening
            grpc.channel_ready_future(ch).result(timeout=30)
        before = {pid: _sockets(pid) for pid in workers}
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("test.connection", i)])
                    for i in range(CONNECTIONS)]
        try:
            for ch in channels:  # connections held open while the sockets are counted
                pb_grpc.ClassifierStub(ch).Classify(pb.ClassifyRequest(images=[IMAGE]), timeout=30)
            after = {pid: _sockets(pid) for pid in workers}
        finally:
            for ch in channels:
                ch.close()
        assert all(after[pid] > before[pid] for pid in workers), (before, after)
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert "ERROR" not in err and "Traceback" not in err
    assert not any(Path(f"/proc/{pid}").exists() and "cifar10" in
                   Path(f"/proc/{pid}/cmdline").read_text() for pid in workers[1:])


def test_sighup_reloads_every_worker(tmp_path):
    path = models.version(tmp_path / "model.onnx", "1")
    proc = _spawn(path)
    try:
        port = _port_of(proc)
        assert _versions(port) == {"1"}
        models.version(tmp_path / "v2.onnx", "2", seed=1)
        os.replace(tmp_path / "v2.onnx", path)
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 30
        while _versions(port) != {"2"}:
            assert time.monotonic() < end, "not every worker reloaded"
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert err.count("model swapped") == 2


def test_metrics_sum_the_workers(tiny):
    metrics_port = free_port()
    proc = _spawn(tiny, metrics_port=metrics_port)
    try:
        port = _port_of(proc)
        _versions(port)
        end = time.monotonic() + 30
        while True:  # every worker's metrics, once each has loaded its model
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                          timeout=10).read().decode()
            if len(re.findall(r"^cifar10_model_info\{.*pid=", text, re.M)) == 2:
                break
            assert time.monotonic() < end, "the second worker's metrics never appeared"
            time.sleep(0.1)
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    images = re.search(r'^cifar10_images_total\{model="tiny-cnn",version="1"\} (\S+)$', text, re.M)
    assert images and float(images.group(1)) == CONNECTIONS
    calls = re.search(r'^cifar10_requests_total\{code="OK",door="grpc",method="Classify"\} (\S+)$', text, re.M)
    assert calls and float(calls.group(1)) == CONNECTIONS
    assert len(re.findall(r"^cifar10_model_info\{.*pid=", text, re.M)) == 2


def test_a_worker_that_dies_stops_the_server_with_status_1(tiny):
    proc = _spawn(tiny)
    port = _port_of(proc)
    (child,) = _children(proc.pid)
    os.kill(child, signal.SIGKILL)
    try:
        proc.wait(timeout=60)
    finally:
        code, err = _stop(proc)
    assert code == 1
    assert f"worker 1 (pid {child}) exited with status -9; stopping the server" in err
    with socket.socket() as s:  # nobody listens any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_bad_model_is_one_error_line(tmp_path):
    path = models.garbage(tmp_path / "model.onnx")
    proc = _spawn(path)
    code, err = proc.wait(timeout=60), proc.stderr.read()
    assert code == 1
    errors = [line for line in err.splitlines()
              if " ERROR " in line or "error:" in line or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("cifar10-serve: error: onnxruntime cannot load")


def test_a_port_held_by_a_single_process_server_is_an_error(tiny):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cifar10_serving", "--model-path", str(tiny), "--host",
             "127.0.0.1", "--port", str(port), "--metrics-port", "-1", "--workers", "2"],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cifar10-serve: error: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port or CIFAR10_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_share_out_the_cpus():
    assert Settings().workers == 1
    assert Settings(workers=0).workers == available_cpus()
    assert Settings(workers=2, instances=2, threads=4).overlap_threads == 1
    assert Settings(workers=2).instances == max(1, min(2, available_cpus() // 2))
    with pytest.raises(ValueError, match="workers must not be negative"):
        Settings(workers=-1)
