"""The request log against a real server: one JSON line per request at both doors, its
fields (never an image's bytes), its sampling rate, off by default. To stderr, with a trace
id: tests/serving/test_tracing_otlp.py."""

from __future__ import annotations

import base64
import io
import json
import os
import time

import grpc
import httpx
import pytest
from PIL import Image

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_serving.observability.request_log import FLUSH_S
from cifar10_serving.settings import Settings

FIELDS = {"time", "door", "method", "model", "model_version", "images", "status", "latency_ms",
          "request_id", "client"}
RAW = pb.Image(raw=pb.RawImage(data=bytes(range(256)) * 12, height=32, width=32, channels=3))


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def _entries(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(autouse=True)
def no_tracing(monkeypatch):
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


def test_one_line_per_request_at_both_doors(server_factory, tmp_path):
    log = tmp_path / "requests.jsonl"
    server = server_factory(request_log_rate=1.0, request_log_file=str(log))
    png = _png()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        stub.Classify(pb.ClassifyRequest(images=[RAW, pb.Image(encoded=png)], request_id="g-1"),
                      timeout=30)
        with pytest.raises(grpc.RpcError):
            stub.Classify(pb.ClassifyRequest(images=[RAW], model_name="nothing", request_id="g-2"),
                          timeout=30)
    answer = httpx.post(f"{server.http_address}/v1/classify", content=png,
                        headers={"Content-Type": "image/png", "X-Request-Id": "h-1"}, timeout=30)
    assert answer.status_code == 200
    answer = httpx.post(f"{server.http_address}/v1/classify", content=b"\x89PNG broken",
                        headers={"Content-Type": "image/png", "X-Request-Id": "h-2"}, timeout=30)
    assert answer.status_code == 400
    server.stop()  # the lines still queued are written

    entries = _entries(log)
    assert all(set(entry) == FIELDS for entry in entries)  # no trace_id: tracing is off
    by_id = {entry["request_id"]: entry for entry in entries}
    assert set(by_id) == {"g-1", "g-2", "h-1", "h-2"}
    ok = by_id["g-1"]
    assert (ok["door"], ok["method"], ok["status"]) == ("grpc", "Classify", "OK")
    assert (ok["model"], ok["model_version"], ok["images"]) == ("tiny-cnn", "1", 2)
    assert 0 < ok["latency_ms"] < 30_000
    assert ok["client"].startswith("127.0.0.1:")
    assert ok["time"].endswith("Z") and ok["time"][10] == "T"
    refused = by_id["g-2"]
    assert refused["status"] not in ("OK", "INTERNAL")
    assert refused["model"] is None and refused["images"] is None
    http = by_id["h-1"]
    assert (http["door"], http["method"], http["status"]) == ("http", "Classify", "200")
    assert (http["model"], http["images"]) == ("tiny-cnn", 1)
    assert by_id["h-2"]["status"] == "400"
    text = log.read_text()
    assert base64.b64encode(png[:30]).decode()[:20] not in text
    assert max(len(line) for line in text.splitlines()) < 400


def test_lines_are_written_within_a_second_while_serving(server_factory, tmp_path):
    log = tmp_path / "requests.jsonl"
    server = server_factory(request_log_rate=1.0, request_log_file=str(log))
    assert httpx.get(f"{server.http_address}/v2/health/live",
                     headers={"X-Request-Id": "soon"}).status_code == 200
    deadline = time.monotonic() + FLUSH_S + 5.0
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [entry["request_id"] for entry in _entries(log)] == ["soon"]


def test_the_rate_samples_requests(server_factory, tmp_path):
    log = tmp_path / "requests.jsonl"
    server = server_factory(request_log_rate=0.5, request_log_file=str(log))
    with httpx.Client(base_url=server.http_address) as client:
        for _ in range(200):
            assert client.get("/v2/health/live").status_code == 200
    server.stop()
    # 200 draws at 0.5: outside 60..140 with a probability below 1e-8
    assert 60 <= len(_entries(log)) <= 140


def test_two_servers_in_one_process_log_their_own_requests(server_factory, tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    servers = [server_factory(request_log_rate=1.0, request_log_file=str(path))
               for path in (first, second)]
    for server, calls in zip(servers, (1, 2)):
        for _ in range(calls):
            httpx.get(f"{server.http_address}/v2/health/live")
    for server in servers:
        server.stop()
    assert (len(_entries(first)), len(_entries(second))) == (1, 2)


def test_off_by_default(server):
    assert Settings().request_log_rate == 0
    assert server.service.requests is None  # no OTEL_* either: the doors observe nothing


@pytest.mark.parametrize("rate", ["-0.1", "1.5", "nan"])
def test_a_rate_outside_0_to_1_is_refused(rate):
    with pytest.raises(ValueError, match="request_log_rate"):
        Settings.from_args(["--request-log-rate", rate], environ={})
