"""Servers in their own processes: ``python -m cifar10_serving`` (the ``cifar10-serve``
command: first answer, CPU time, memory, cold start) and ``bench.echo_server`` (the gRPC
floor).

The server is configured through its CIFAR10_* environment only. It may run several
processes (``CIFAR10_WORKERS``), the one started here the parent of the others: CPU time and
memory are those of the whole process tree (bench.proctree), and stopping it signals the
parent, which stops the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench import proctree
from bench.paths import ROOT
from bench.ports import accepts, free_port
from bench.stats import median

class Server:
    """``python -m cifar10_serving`` in its own process with default settings (model, ports
    and ``extra_env`` aside; ``CIFAR10_METRICS_PORT=-1`` or ``CIFAR10_HTTP_PORT=-1`` in
    ``extra_env`` turns that port off)."""

    def __init__(self, model: str, extra_env: dict[str, str] | None = None):
        """``model``: an ONNX file, or a model repository folder."""
        self.port = free_port()
        env = dict(os.environ)
        # a folder is a model repository, a file the one model
        source = "CIFAR10_MODEL_REPOSITORY" if os.path.isdir(model) else "CIFAR10_MODEL_PATH"
        env.pop("CIFAR10_MODEL_REPOSITORY" if source == "CIFAR10_MODEL_PATH" else "CIFAR10_MODEL_PATH", None)
        env.update({source: model, "CIFAR10_PORT": str(self.port),
                    "CIFAR10_HOST": "127.0.0.1", "CIFAR10_METRICS_PORT": str(free_port()),
                    "CIFAR10_HTTP_PORT": str(free_port())})
        env.update(extra_env or {})
        self.metrics_port = int(env["CIFAR10_METRICS_PORT"])
        self.http_port = int(env["CIFAR10_HTTP_PORT"])  # -1: HTTP off
        # Its log goes to a file, not a pipe: a pipe nobody reads until stop would block a
        # server that logs more than the pipe holds (64 KB) during a long run.
        self._log = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "cifar10_serving"], env=env,
                                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log)
        self.address = f"127.0.0.1:{self.port}"
        self.children_left: list[int] = []  # pids of its children still running after stop()

    def metrics_base(self) -> str:
        """``http://127.0.0.1:PORT`` of its metrics port (``/metrics`` and the health probes)."""
        if self.metrics_port < 0:
            raise RuntimeError("this server runs without a metrics port")
        return f"http://127.0.0.1:{self.metrics_port}"

    def log_text(self) -> str:
        """Everything the server has written to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def first_answer(self, timeout: float = 60.0) -> float:
        """Seconds from process start to the first Classify answer."""
        import grpc
        import numpy as np

        from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
        from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

        request = pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(
            data=np.zeros(3072, np.uint8).tobytes(), height=32, width=32, channels=3))])
        # Wait for the port with plain connects a millisecond apart: a grpc channel's
        # reconnect backoff (tens of ms, jittered) would be counted as start-up time.
        end = time.perf_counter() + timeout
        while not accepts("127.0.0.1", self.port) and time.perf_counter() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode}: "
                                   f"{self.log_text()[-2000:]}")
            time.sleep(0.001)
        options = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5),
                   ("grpc.max_reconnect_backoff_ms", 20)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            stub.Classify(request, timeout=timeout, wait_for_ready=True)
        return time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes (all their threads) so far."""
        return proctree.cpu_seconds(self.process.pid)

    def memory_mb(self) -> dict:
        """Memory of the server's processes, MB: bench.proctree.memory_mb (``rss_mb``,
        ``peak_rss_mb``, ``pss_mb``, ``processes``, ``per_process_rss_mb``)."""
        return proctree.memory_mb(self.process.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM to the parent, then SIGKILL after ``timeout``; the parent's exit status.
        Children still running once it has exited are killed and listed in
        ``children_left``."""
        children = []
        if self.process.poll() is None:
            children = proctree.identities(proctree.tree(self.process.pid)[1:])
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.children_left = proctree.kill_survivors(children)
        return code


def cold_start(model: str, repeats: int, extra_env: dict[str, str] | None = None) -> dict:
    """Process start to first answer of ``repeats`` fresh servers: median, all, exit codes."""
    times, codes = [], []
    for _ in range(repeats):
        server = Server(model, extra_env)
        try:
            times.append(round(server.first_answer(), 3))
        finally:
            codes.append(server.stop())
    return {"seconds": median(times), "all": times, "exit_codes": codes}


@contextmanager
def echo_server() -> Iterator[str]:
    """``bench.echo_server`` in its own process, for as long as the block runs; its address.
    It runs on the kind of event loop the benchmarked server runs on (``CIFAR10_EVENT_LOOP``)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_server", "--port", str(port), "--event-loop",
         os.environ.get("CIFAR10_EVENT_LOOP", "auto")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not process.stdout.readline().startswith("listening"):
            raise RuntimeError(f"bench.echo_server did not start: {process.stderr.read()[-2000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)
