"""Floods against the real server: every call OK or RESOURCE_EXHAUSTED (with pushback), and
the process's memory under its documented ceiling (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import collections
import re
import urllib.request

import grpc
import pytest

from bench.overload import CLASSIFY, channels, classify_bytes
from bench.server_process import Server

CEILING_MB = 1536  # docs/reliability.md: the documented ceiling under the default limits


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
    for code, value in re.findall(r'^cifar10_requests_total\{code="(\w+)",method="Classify"\} (\S+)',
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
