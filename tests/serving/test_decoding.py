"""Decoding off the event loop, bounded per request and by the deadline (real server)."""

from __future__ import annotations

import io
import logging
import struct
import time
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SIDE = 4000  # 4000 x 4000 = 16,000,000 pixels: the default max_image_pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def black_png(width: int, height: int) -> bytes:
    """An RGB PNG of black pixels, built without Pillow (fast, small: zeros compress)."""
    rows = (b"\0" + bytes(3 * width)) * height  # filter byte + one row of pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows, 6)) + _chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tall_png() -> bytes:
    """The largest legal image (16,000,000 pixels, 48 MB decoded, 47 KB sent): the slowest
    decode within the limits."""
    return black_png(SIDE, SIDE)


def test_an_image_with_a_side_over_16384_is_refused(server):
    request = pb.ClassifyRequest(images=[pb.Image(encoded=black_png(1, 16_000_000))])
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.ClassifierStub(channel).Classify(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "side over the limit of 16384" in info.value.details()


def wait_until(condition, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.001)
    return condition()


def test_health_is_answered_within_50_ms_while_the_largest_legal_image_decodes(
        server, tall_png, record_property):
    # admitted and not answered: the tiny model runs in well under a millisecond, so all
    # but that moment the request is decoding
    decoding = lambda: server.plane.inflight == 1  # noqa: E731
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=10)  # connected and warm
        classify = pb_grpc.ClassifierStub(channel).Classify.future(
            pb.ClassifyRequest(images=[pb.Image(encoded=tall_png)]), timeout=60)
        assert wait_until(decoding)
        latencies = []
        while decoding() and len(latencies) < 200:
            started = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            if decoding():  # the decode was running for the whole check
                latencies.append(time.perf_counter() - started)
        assert len(classify.result().probabilities) == 10
    assert len(latencies) >= 5, "the decode ended too soon to measure"
    latencies.sort()
    median, slowest = latencies[len(latencies) // 2] * 1000, latencies[-1] * 1000
    record_property("health_check_ms_median", round(median, 2))
    record_property("health_check_ms_slowest", round(slowest, 2))
    log.info("%d health checks during the decode: median %.1f ms, slowest %.1f ms",
             len(latencies), median, slowest)
    # Every check is answered while the decode runs (before, the loop was blocked for all
    # of it). On a shared, loaded 2-core machine the scheduler alone can delay any one
    # check by tens of ms, so the bound holds for nine checks in ten, not for the slowest.
    assert sum(t < 0.050 for t in latencies) >= 0.9 * len(latencies), latencies[-5:]


def test_decoding_stops_when_the_deadline_has_passed(server_factory, tall_png):
    server = server_factory(max_request_pixels=10 * SIDE * SIDE)  # all ten may be decoded
    request = pb.ClassifyRequest(images=[pb.Image(encoded=tall_png)] * 10)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(request, timeout=0.2)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # the next decode waits for the decode thread: until the abandoned work stops
        one = time.monotonic()
        stub.Classify(pb.ClassifyRequest(images=[pb.Image(encoded=tall_png)]), timeout=120)
        stopped = time.monotonic() - started
        single = time.monotonic() - one
    # the image being decoded at the deadline is finished, the nine after it are not (all
    # ten would take about 10 x single); the margin absorbs a loaded machine's jitter
    assert stopped < 0.7 + 4 * single, (stopped, single)


def png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), "red").save(buf, "PNG")
    return buf.getvalue()


def test_a_request_decodes_at_most_its_pixel_budget(server_factory):
    server = server_factory(max_request_pixels=100_000)
    request = pb.ClassifyRequest(images=[pb.Image(encoded=png(200))] * 3)  # 40,000 pixels each
    with grpc.insecure_channel(server.address) as channel:
        reply = pb_grpc.ClassifierStub(channel).Classify(request, timeout=10)
    assert len(reply.probabilities) == 20
    assert [e.index for e in reply.image_errors] == [2]
    assert reply.image_errors[0].error.code == "INVALID_ARGUMENT"
    assert "decoding budget" in reply.image_errors[0].error.message


def test_many_raw_calls_are_answered_while_an_image_decodes(server, tall_png):
    """A raw 32x32 call never waits for the decode threads."""
    decoding = lambda: server.plane.inflight >= 1  # noqa: E731  (see the health test)
    raw = pb.Image(raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        slow = stub.Classify.future(pb.ClassifyRequest(images=[pb.Image(encoded=tall_png)]),
                                    timeout=60)
        assert wait_until(decoding)
        answered = 0
        while answered < 20:
            stub.Classify(pb.ClassifyRequest(images=[raw]), timeout=10)
            answered += 1
        still_decoding = not slow.done()
        slow.result()
    assert answered == 20 and still_decoding
