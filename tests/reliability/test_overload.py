"""Floods against the real server: every call OK or RESOURCE_EXHAUSTED (with pushback), and
the process's memory under its documented ceiling (docs/reliability.md).

The server is ``python -m cifar10_serving`` in a process of its own, configured through its
CIFAR10_* environment; the load comes from grpc.aio channels in the test's process.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from tests import processes
from tests.ports import free_port

CEILING_MB = 1536  # docs/reliability.md: the documented ceiling under the default limits
CLASSIFY = "/cifar10.v2.Classifier/Classify"
ROOT = Path(__file__).resolve().parents[2]


class Server:
    """``python -m cifar10_serving`` in its own process: default settings but for the model,
    the ports and ``extra_env``."""

    def __init__(self, model: str, extra_env: dict[str, str] | None = None):
        self.port, self.metrics_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIFAR10_")}
        env.update({"CIFAR10_MODEL_PATH": model, "CIFAR10_HOST": "127.0.0.1",
                    "CIFAR10_PORT": str(self.port), "CIFAR10_METRICS_PORT": str(self.metrics_port),
                    **(extra_env or {})})
        self.log = tempfile.TemporaryFile()  # not a pipe: nobody reads it while it runs
        self.process = subprocess.Popen([sys.executable, "-m", "cifar10_serving"], env=env,
                                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)
        self.address = f"127.0.0.1:{self.port}"

    def metrics_base(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def first_answer(self, timeout: float = 60.0) -> None:
        """Wait until the server answers a Classify call OK."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                channel.unary_unary(CLASSIFY)(classify_bytes(1), timeout=timeout, wait_for_ready=True)
            except grpc.RpcError:
                self.log.seek(0)
                raise AssertionError(f"the server did not answer (status {self.process.poll()}): "
                                     f"{self.log.read().decode(errors='replace')[-2000:]}")

    def memory_mb(self) -> dict[str, float]:
        """``rss_mb`` and ``peak_rss_mb`` of the server's processes."""
        return processes.memory_mb(self.process.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def classify_bytes(images: int = 1, encoded: bytes | None = None) -> bytes:
    """A serialized ClassifyRequest: ``images`` copies of one random raw 32x32 image, or one
    image of ``encoded`` bytes."""
    if encoded is not None:
        return pb.ClassifyRequest(images=[pb.Image(encoded=encoded)]).SerializeToString()
    data = np.random.default_rng(1).integers(0, 256, 3072, dtype=np.uint8).tobytes()
    image = pb.Image(raw=pb.RawImage(data=data, height=32, width=32, channels=3))
    return pb.ClassifyRequest(images=[image] * images).SerializeToString()


def channels(address: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` channels, each its own TCP connection, no message size limits."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1),
               ("grpc.max_receive_message_length", -1)]
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def flood(address: str, calls: int, connections: int, images: int = 1):
    """``calls`` Classify calls at once over ``connections`` connections: codes, pushbacks."""
    codes: collections.Counter = collections.Counter()
    pushbacks: collections.Counter = collections.Counter()
    chans = channels(address, connections)
    data = classify_bytes(images)

    async def one(i: int) -> None:
        call = chans[i % connections].unary_unary(CLASSIFY)(data, timeout=120)
        try:
            await call
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            trailers = dict(exc.trailing_metadata() or ())
            pushbacks[trailers.get("grpc-retry-pushback-ms")] += 1

    await asyncio.gather(*(one(i) for i in range(calls)))
    for channel in chans:
        await channel.close()
    return codes, pushbacks


def counted_requests(server: Server) -> dict[str, float]:
    """cifar10_requests_total by code, from the server's /metrics."""
    text = urllib.request.urlopen(server.metrics_base() + "/metrics", timeout=10).read().decode()
    counts: collections.Counter = collections.Counter()
    for code, value in re.findall(r'^cifar10_requests_total\{code="(\w+)",door="grpc",method="Classify"\} (\S+)',
                                  text, re.M):
        counts[code] += float(value)
    return dict(counts)


@pytest.mark.slow
@pytest.mark.parametrize("connections", [4, 16])
def test_a_flood_gets_only_ok_or_resource_exhausted(tiny_model_path, connections):
    # a 50 ms batching window keeps requests in flight, so the flood meets the limit
    server = Server(str(tiny_model_path), {"CIFAR10_MAX_INFLIGHT_REQUESTS": "16",
                                           "CIFAR10_MAX_QUEUE_DELAY_MS": "50"})
    try:
        server.first_answer()
        codes, pushbacks = asyncio.run(flood(server.address, 4000, connections))
        counted = counted_requests(server)
    finally:
        assert server.stop() == 0
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0, codes
    assert set(pushbacks) == {"50"}  # every refusal tells the client when to retry
    # every call reached our code and was counted (+1: first_answer's)
    assert counted == {code: n + (code == "OK") for code, n in codes.items()}, counted


@pytest.mark.slow
def test_big_requests_keep_the_server_under_its_memory_ceiling(tiny_model_path):
    server = Server(str(tiny_model_path))
    try:
        server.first_answer()
        codes, _ = asyncio.run(flood(server.address, 48, 8, images=1024))
        memory = server.memory_mb()
    finally:
        assert server.stop() == 0
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"} and codes["OK"] > 0, codes
    assert memory["peak_rss_mb"] < CEILING_MB, memory


async def send_all(address: str, data: bytes, calls: int, connections: int) -> collections.Counter:
    """``calls`` Classify calls of ``data`` at once over ``connections`` connections."""
    codes: collections.Counter = collections.Counter()
    chans = channels(address, connections)

    async def one(i: int) -> None:
        try:
            await chans[i % connections].unary_unary(CLASSIFY)(data, timeout=120)
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1

    await asyncio.gather(*(one(i) for i in range(calls)))
    for channel in chans:
        await channel.close()
    return codes


@pytest.mark.slow
def test_many_messages_of_the_largest_size_keep_the_server_under_its_memory_ceiling(
        tiny_model_path):
    # 24 messages of 60 MiB at once (an image that does not decode): without the receive
    # gate grpc read them all before our admission saw one (2.2 GB for 16 of them)
    server = Server(str(tiny_model_path))
    data = classify_bytes(encoded=bytes(60 << 20))
    try:
        server.first_answer()
        codes = asyncio.run(send_all(server.address, data, 24, 8))
        memory = server.memory_mb()
    finally:
        assert server.stop() == 0
    assert set(codes) <= {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, codes
    assert sum(codes.values()) == 24
    assert memory["peak_rss_mb"] < CEILING_MB, memory


@pytest.mark.slow
def test_requests_that_fail_do_not_pile_up_in_memory(tiny_model_path):
    # an error path leaves a reference cycle holding the request; 30 MiB each, they used to
    # stay until Python's collector happened to run (+125 MB per request here)
    server = Server(str(tiny_model_path))
    data = classify_bytes(encoded=bytes(30 << 20))
    try:
        server.first_answer()
        asyncio.run(send_all(server.address, data, 1, 1))
        before = server.memory_mb()["rss_mb"]
        codes = collections.Counter()
        for _ in range(8):
            codes.update(asyncio.run(send_all(server.address, data, 1, 1)))
        after = server.memory_mb()["rss_mb"]
    finally:
        assert server.stop() == 0
    assert codes == {"INVALID_ARGUMENT": 8}, codes
    assert after - before < 120, (before, after)
