"""``cifar10-serve`` exports its spans over OTLP/gRPC to a real receiver, as configured by
the standard ``OTEL_*`` environment alone, and its request log to stderr names their trace.

The receiver is a grpc server implementing the OpenTelemetry collector's TraceService (the
``opentelemetry-proto`` package's), on a free port in this process; the server is a process
of its own, stopped with SIGTERM (its spans are exported before it exits)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
RAW = pb.Image(raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        with self._lock:
            self.requests.append(request)
            self.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) of every span received."""
        out = []
        with self._lock:
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    resource = {a.key: a.value.string_value
                                for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        out.extend((resource, span) for span in scope_spans.spans)
        return out


@pytest.fixture
def receiver():
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_spans_reach_an_otlp_receiver_and_the_request_log_names_their_trace(receiver, tiny_model_path):
    servicer, port = receiver
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CIFAR10_"))}
    env.update({
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "cifar10-under-test",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=tests",
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar10_serving", "--model-path", str(tiny_model_path),
         "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--metrics-port", "-1",
         "--reload-interval-s", "0", "--request-log-rate", "1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    log: list[str] = []
    try:
        grpc_port = http_port = None
        while grpc_port is None or http_port is None:
            line = lines.get(timeout=60)
            assert line is not None, f"server ended before listening: {''.join(log)}"
            log.append(line)
            if found := re.search(r"HTTP on port (\d+)", line):
                http_port = int(found.group(1))
            if found := re.search(r"listening on port (\d+)", line):
                grpc_port = int(found.group(1))
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            pb_grpc.ClassifierStub(channel).Classify(
                pb.ClassifyRequest(images=[RAW], request_id="otlp-1"),
                metadata=[("traceparent", TRACEPARENT)], timeout=30)
        answer = httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready",
                           headers={"traceparent": TRACEPARENT, "X-Request-Id": "otlp-2"})
        assert answer.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    while (line := lines.get(timeout=10)) is not None:
        log.append(line)

    received = servicer.spans()
    names = {span.name for _, span in received}
    assert {"cifar10.v2.Classifier/Classify", "GET /v2/health/ready", "admission", "queue wait",
            "model run"} <= names
    assert {resource["service.name"] for resource, _ in received} == {"cifar10-under-test"}
    calls = [span for _, span in received if span.name in ("cifar10.v2.Classifier/Classify",
                                                            "GET /v2/health/ready")]
    assert {span.trace_id.hex() for span in calls} == {TRACE_ID}
    assert {m.get("x-tenant") for m in servicer.metadata} == {"tests"}

    entries = [json.loads(line) for line in log if line.startswith("{")]
    by_id = {entry["request_id"]: entry for entry in entries}
    assert by_id["otlp-1"]["trace_id"] == TRACE_ID
    assert by_id["otlp-1"]["method"] == "Classify" and by_id["otlp-1"]["door"] == "grpc"
    assert by_id["otlp-2"]["trace_id"] == TRACE_ID
    assert by_id["otlp-2"]["status"] == "200" and by_id["otlp-2"]["door"] == "http"
