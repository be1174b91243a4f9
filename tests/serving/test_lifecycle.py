"""Lifecycle against real processes: start-up errors, SIGTERM under load, hot reload under
load (file watcher and SIGHUP), and no TensorFlow in the serving process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.ports import free_port
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from tests.serving import models

ROOT = Path(__file__).resolve().parents[2]
IMAGE = pb.Image(raw=pb.RawImage(data=bytes(range(256)) * 12, height=32, width=32, channels=3))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for key in list(env):
        if key.startswith("CIFAR10_"):
            del env[key]
    env["CIFAR10_HTTP_PORT"] = "0"  # not the default 8501, which another server may hold
    return env


def _start(model_path, *flags, port=None):
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar10_serving", "--model-path", str(model_path), "--host",
         "127.0.0.1", "--port", str(port), "--metrics-port", "-1", *flags],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        proc.kill()
        raise AssertionError(f"server did not start: {proc.communicate()[1]}")
    return proc, channel


@pytest.mark.parametrize(
    "make, message",
    [(lambda p: p, "model file not found"), (models.garbage, "onnxruntime cannot load"),
     (models.wrong_labels, "breaks the model contract")],
    ids=["missing", "garbage", "contract"],
)
def test_bad_model_at_start_up_is_one_error_line_and_non_zero_exit(tmp_path, make, message):
    path = make(tmp_path / "model.onnx")
    result = subprocess.run(
        [sys.executable, "-m", "cifar10_serving", "--model-path", str(path), "--port", "0",
         "--metrics-port", "-1"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("cifar10-serve: error: ")
    assert message in errors[0]


def test_bad_setting_is_one_error_line(tmp_path):
    env = _env() | {"CIFAR10_MAX_BATCH_SIZE": "lots"}
    result = subprocess.run([sys.executable, "-m", "cifar10_serving"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "cifar10-serve: error: invalid value for CIFAR10_MAX_BATCH_SIZE: 'lots' "
        "(invalid literal for int() with base 10: 'lots')"
    )


def test_no_tensorflow_in_the_serving_process(tiny_model_path):
    code = f"""
import sys
from cifar10_serving.testing import BackgroundServer
from cifar10_serving.settings import Settings
import grpc
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb, classifier_pb2_grpc as pb_grpc
import cifar10_serving.grpc_api.server, cifar10_serving.dataplane.plane, cifar10_serving.onnx_model, cifar10_serving.dataplane.batching, cifar10_core.images
try:
    import cifar10_serving.grpc_api.inference
except ModuleNotFoundError:
    pass
with BackgroundServer(Settings(model_path={str(tiny_model_path)!r}, port=0, http_port=0, metrics_port=0)) as srv:
    with grpc.insecure_channel(srv.address) as ch:
        pb_grpc.ClassifierStub(ch).Classify(pb.ClassifyRequest(images=[pb.Image(
            raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))]))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx"))
print("HEAVY", heavy)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


class Load:
    """Client threads calling Classify in a loop, recording every outcome."""

    def __init__(self, channel, threads=4, request=None):
        self.stub = pb_grpc.ClassifierStub(channel)
        self.request = request or pb.ClassifyRequest(images=[IMAGE, IMAGE])
        self.ok: list[tuple[float, str]] = []  # (finish time, model version)
        self.failed: list[tuple[float, grpc.StatusCode, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                resp = self.stub.Classify(self.request, timeout=20)
                self.ok.append((time.monotonic(), resp.model_version))
            except grpc.RpcError as exc:
                self.failed.append((time.monotonic(), exc.code(), exc.details() or ""))
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    time.sleep(0.01)

    def finish(self, timeout=30):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)


@pytest.mark.slow
def test_sigterm_under_load_loses_no_accepted_request_and_sighup_reloads(tmp_path):
    path = models.version(tmp_path / "model.onnx", "1")
    # a 100 ms queue delay keeps requests in flight when the signal lands
    proc, channel = _start(path, "--grace-seconds", "5", "--max-queue-delay-ms", "100",
                           "--reload-interval-s", "0")
    load = Load(channel, threads=6)
    try:
        time.sleep(1.0)
        models.version(tmp_path / "model.onnx", "2", seed=1)  # atomically replaced
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not any(v == "2" for _, v in load.ok[-5:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(v == "2" for _, v in load.ok), "SIGHUP did not swap in version 2"
        before = len(load.ok)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        load.finish()
        if proc.poll() is None:
            proc.kill()
        channel.close()
    stderr = proc.stderr.read()
    assert before > 10
    assert [f for f in load.failed if f[0] < signalled] == []  # nothing failed while serving
    # After the signal, calls are refused with UNAVAILABLE (from our handler, or from the
    # client's transport once the port is closed), never CANCELLED (tests/reliability).
    assert all(code == grpc.StatusCode.UNAVAILABLE for _, code, _ in load.failed), load.failed
    # Answered after the signal = accepted before it (later calls are refused). No upper bound
    # at the process's exit: a client thread may note its answer a moment after the exit.
    finished_after = [t for t, _ in load.ok if t >= signalled]
    assert finished_after, "no request was in flight at SIGTERM; the test proves nothing"
    assert "shutting down" in stderr and "Traceback" not in stderr
    assert "in flight at shutdown: all finished" in stderr


def test_shutdown_accounting_in_process(server_factory, tmp_path):
    """Every request our handlers accepted before or during shutdown is answered OK."""
    srv = server_factory(max_queue_delay_ms=30, grace_seconds=5)
    with grpc.insecure_channel(srv.address) as channel:
        load = Load(channel, threads=6)
        # Stop while requests are admitted and waiting (the 30 ms batching window keeps
        # them queued); on a busy machine the load may need a moment to get going.
        queued, end = 0, time.monotonic() + 15
        while queued == 0 and time.monotonic() < end:
            time.sleep(0.002)
            queued = srv.plane.inflight
        srv.begin_stop(5.0).result(20)
        load.finish()
    counts = {s.labels["code"]: s.value for m in srv.metrics.requests.collect()
              for s in m.samples if s.name.endswith("_total")}
    assert queued > 0
    assert set(counts) <= {"OK", "UNAVAILABLE"}  # nothing cancelled or failed on our side
    assert counts["OK"] == len(load.ok)
    assert all(code == grpc.StatusCode.UNAVAILABLE for _, code, _ in load.failed), load.failed


@pytest.mark.slow
def test_hot_reload_under_load_has_zero_failures_and_rejects_a_bad_file(server_factory, tmp_path):
    path = models.version(tmp_path / "model.onnx", "1")
    srv = server_factory(model_path=path, reload_interval_s=0.05)
    with grpc.insecure_channel(srv.address) as channel:
        load = Load(channel, threads=4)
        try:
            time.sleep(0.5)
            models.version(path, "2", seed=1)
            deadline = time.monotonic() + 20
            while srv.plane.models.default.info.version != "2" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert srv.plane.models.default.info.version == "2"
            time.sleep(0.5)
            models.garbage(tmp_path / "bad.onnx")
            os.replace(tmp_path / "bad.onnx", path)  # a bad file, atomically
            time.sleep(0.5)
            assert srv.plane.models.default.info.version == "2"  # rejected: the old model keeps serving
            models.version(tmp_path / "next.onnx", "3", seed=2)
            os.replace(tmp_path / "next.onnx", path)  # a good one after a bad one is taken
            deadline = time.monotonic() + 20
            while srv.plane.models.default.info.version != "3" and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
        finally:
            load.finish()
    assert load.failed == []
    versions = [v for _, v in load.ok]
    assert versions[0] == "1" and versions[-1] == "3" and "2" in versions
    first_two = versions.index("2")
    assert "1" not in versions[first_two + 50:]  # once swapped, the old one is gone
    reloads = srv.metrics.reloads
    assert reloads.labels("ok")._value.get() == 2
    assert reloads.labels("rejected")._value.get() == 1


def test_a_port_in_use_is_one_line_naming_it_and_the_setting(tiny_model_path):
    """A second server on a taken port (gRPC or metrics) says which and how to change it."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags, name in ((["--port", str(port), "--metrics-port", "-1"], "--port"),
                            (["--port", "0", "--metrics-port", str(port)], "--metrics-port")):
            result = subprocess.run(
                [sys.executable, "-m", "cifar10_serving", "--model-path", str(tiny_model_path),
                 "--host", "127.0.0.1", *flags], capture_output=True, text=True, timeout=60)
            assert result.returncode == 1
            lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
            assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and name in lines[0], lines


def test_a_sigterm_while_the_model_loads_is_a_graceful_stop(tiny_model_path):
    """Before the event loop takes the signals over, SIGTERM is remembered, not a kill: the
    server starts, then stops at once with status 0 (a worker just forked is no different)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar10_serving", "--model-path", str(tiny_model_path), "--port",
         "0", "--metrics-port", "-1"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # the settings line: logged before the model loads
    assert "settings:" in first, first
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped after" in err and "Traceback" not in err
