"""Fuzzed messages on every method of every service: never UNKNOWN or INTERNAL, never a hang.

Random bytes and mutated valid messages (``tests/reliability/fuzzing.py``) go to each unary
method and, several to a stream, to each stream, over raw channels (no client-side checks).
``CIFAR10_FUZZ_CALLS`` sets the number of messages (default 2,000 in CI; more on demand,
e.g. ``CIFAR10_FUZZ_CALLS=100000``); ``CIFAR10_FUZZ_SEED`` the seed. The server must answer
every one with a deliberate status and stay healthy.
"""

from __future__ import annotations

import collections
import logging
import os
import random

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.reliability.fuzzing import STREAMS, mutate, seeds

log = logging.getLogger(__name__)

CALLS = int(os.environ.get("CIFAR10_FUZZ_CALLS", "2000"))
SEED = int(os.environ.get("CIFAR10_FUZZ_SEED", "13"))
PER_STREAM = 8
IN_FLIGHT = 32
BROKEN = {"UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED"}


def identity(data: bytes) -> bytes:
    return data


def stream_codes(call, messages: list[bytes]) -> list[str]:
    """The error of each answer on a stream (OK when none), then the stream's own end."""
    codes = []
    try:
        for answer in call(iter(messages), timeout=30):
            codes.append("OK")  # per-message errors are checked by the stream tests
    except grpc.RpcError as exc:
        codes.append(exc.code().name)
    else:
        codes.append("OK")
    return codes


def test_fuzzed_messages_get_deliberate_codes_and_the_server_stays_healthy(
        server_factory, record_property, caplog):
    server = server_factory(metrics_port=0, max_images_per_request=64)
    rng = random.Random(SEED)
    valid = seeds()
    methods = sorted(valid)
    by_code: collections.Counter = collections.Counter()
    examples: dict[str, tuple[str, bytes, str]] = {}
    sent = 0
    with grpc.insecure_channel(server.address) as channel:
        while sent < CALLS:
            futures = []
            for _ in range(IN_FLIGHT):
                method = rng.choice(methods)
                messages = [mutate(rng.choice(valid[method]), rng)
                            for _ in range(PER_STREAM if method in STREAMS else 1)]
                sent += len(messages)
                if method in STREAMS:
                    call = channel.stream_stream(method, request_serializer=identity,
                                                 response_deserializer=identity)
                    for code in stream_codes(call, messages):
                        by_code[code] += 1
                        if code in BROKEN:
                            examples.setdefault(code, (method, messages[0], ""))
                    continue
                call = channel.unary_unary(method, request_serializer=identity,
                                           response_deserializer=identity)
                futures.append((method, messages[0], call.future(messages[0], timeout=30)))
            for method, data, future in futures:
                try:
                    future.result()
                    code, details = "OK", ""
                except grpc.RpcError as exc:
                    code, details = exc.code().name, exc.details() or ""
                by_code[code] += 1
                if code in BROKEN:
                    examples.setdefault(code, (method, data, details))
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
    record_property("fuzz_codes", dict(by_code))
    log.info("%d fuzzed messages: %s", sent, dict(by_code))
    assert not BROKEN & set(by_code), examples
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no log flood
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    malformed = sum(s.value for m in server.metrics.malformed.collect() for s in m.samples
                    if s.name.endswith("_total"))
    assert malformed > 0 and by_code["INVALID_ARGUMENT"] > 0 and by_code["OK"] > 0
