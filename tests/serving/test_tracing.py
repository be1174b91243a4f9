"""OpenTelemetry tracing against a real server: spans of both doors in the SDK's in-memory
exporter (names, parent and child, attributes, the client's trace context, errors), the
``OTEL_*`` rules that turn it on, and a server with tracing off that never imports the SDK.
The export over OTLP/gRPC to a real receiver: tests/serving/test_tracing_otlp.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from PIL import Image

from cifar10_core.errors import DeadlineExceededError
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_serving.dataplane.request import InferenceRequest
from cifar10_serving.observability.requests import tracing_configured
from cifar10_serving.observability.tracing import exporter_names
from cifar10_serving.settings import Settings
from cifar10_serving.testing import BackgroundServer

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
RAW = pb.Image(raw=pb.RawImage(data=bytes(range(256)) * 12, height=32, width=32, channels=3))


def _png(size: int = 40) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def traced(tiny_model_path):
    """A server tracing into an in-memory exporter: (server, exporter)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = BackgroundServer(Settings(
        model_path=str(tiny_model_path), host="127.0.0.1", port=0, http_port=0, metrics_port=-1,
        grace_seconds=5.0, reload_interval_s=0.0), tracer_provider=provider).start()
    yield server, exporter
    server.stop(grace=0.0)


def _by_name(spans, name):
    found = [s for s in spans if s.name == name]
    assert found, f"no span {name!r} among {[s.name for s in spans]}"
    return found


def _children(spans, parent):
    return {s.name: s for s in spans if s.parent is not None
            and s.parent.span_id == parent.context.span_id}


def test_a_grpc_call_continues_the_clients_trace_with_a_span_per_stage(traced):
    server, exporter = traced
    with grpc.insecure_channel(server.address) as channel:
        answer = pb_grpc.ClassifierStub(channel).Classify(
            pb.ClassifyRequest(images=[RAW, pb.Image(encoded=_png())], request_id="req-7"),
            metadata=[("traceparent", TRACEPARENT)], timeout=30)
    assert answer.model_name == "tiny-cnn"
    spans = exporter.get_finished_spans()
    [call] = _by_name(spans, "cifar10.v2.Classifier/Classify")
    assert call.kind is SpanKind.SERVER
    assert f"{call.context.trace_id:032x}" == TRACE_ID
    assert f"{call.parent.span_id:016x}" == PARENT_ID and call.parent.is_remote
    assert call.status.status_code is StatusCode.UNSET
    attributes = dict(call.attributes)
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "cifar10.v2.Classifier"
    assert attributes["rpc.method"] == "Classify"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["cifar10.request_id"] == "req-7"
    assert attributes["cifar10.model.name"] == "tiny-cnn"
    assert attributes["cifar10.model.version"] == "1"
    assert attributes["cifar10.images"] == 2
    assert attributes["client.address"] == "127.0.0.1"
    stages = _children(spans, call)
    assert set(stages) == {"admission", "decode", "queue wait", "model run"}
    assert stages["model run"].attributes["cifar10.batch.images"] >= 2
    assert stages["model run"].attributes["cifar10.batch.runs"] == 1
    # in order, within the call's span
    assert call.start_time <= stages["admission"].start_time
    assert stages["admission"].end_time <= stages["decode"].start_time
    assert stages["decode"].end_time <= stages["queue wait"].start_time
    assert stages["queue wait"].end_time == stages["model run"].start_time
    assert stages["model run"].end_time <= call.end_time


def test_raw_pixels_have_no_decode_stage_and_a_call_without_context_starts_a_trace(traced):
    server, exporter = traced
    with grpc.insecure_channel(server.address) as channel:
        pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(images=[RAW]), timeout=30)
    [call] = _by_name(exporter.get_finished_spans(), "cifar10.v2.Classifier/Classify")
    assert call.parent is None
    assert set(_children(exporter.get_finished_spans(), call)) == {"admission", "queue wait",
                                                                   "model run"}


def test_each_stream_message_is_a_span_of_the_streams_trace(traced):
    server, exporter = traced
    with grpc.insecure_channel(server.address) as channel:
        answers = list(pb_grpc.ClassifierStub(channel).ClassifyStream(
            iter([pb.ClassifyRequest(images=[RAW], request_id=f"m{i}") for i in range(3)]),
            metadata=[("traceparent", TRACEPARENT)], timeout=30))
    assert len(answers) == 3
    messages = _by_name(exporter.get_finished_spans(), "cifar10.v2.Classifier/ClassifyStream")
    assert sorted(s.attributes["cifar10.request_id"] for s in messages) == ["m0", "m1", "m2"]
    assert {f"{s.context.trace_id:032x}" for s in messages} == {TRACE_ID}
    assert {s.attributes["cifar10.images"] for s in messages} == {1}


def test_an_http_call_continues_the_clients_trace(traced):
    server, exporter = traced
    answer = httpx.post(f"{server.http_address}/v1/classify", content=_png(),
                        headers={"Content-Type": "image/png", "traceparent": TRACEPARENT,
                                 "X-Request-Id": "http-1"}, timeout=30)
    assert answer.status_code == 200, answer.text
    spans = exporter.get_finished_spans()
    [call] = _by_name(spans, "POST /v1/classify")
    assert call.kind is SpanKind.SERVER
    assert f"{call.context.trace_id:032x}" == TRACE_ID
    assert f"{call.parent.span_id:016x}" == PARENT_ID
    attributes = dict(call.attributes)
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/v1/classify"
    assert attributes["http.response.status_code"] == 200
    assert attributes["cifar10.request_id"] == "http-1"
    assert attributes["cifar10.model.name"] == "tiny-cnn"
    assert attributes["cifar10.images"] == 1
    assert set(_children(spans, call)) == {"admission", "decode", "queue wait", "model run"}


def test_failures_mark_the_stage_that_failed(traced):
    server, exporter = traced
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.ClassifierStub(channel).Classify(
                pb.ClassifyRequest(images=[pb.Image(encoded=b"not an image")]), timeout=30)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    spans = exporter.get_finished_spans()
    [call] = _by_name(spans, "cifar10.v2.Classifier/Classify")
    # a client's mistake is no failure of the server's span (OpenTelemetry's RPC conventions)
    assert call.status.status_code is StatusCode.UNSET
    assert call.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    decode = _children(spans, call)["decode"]
    assert decode.status.status_code is StatusCode.ERROR
    assert [e.name for e in decode.events] == ["exception"]
    assert "queue wait" not in _children(spans, call)

    answer = httpx.post(f"{server.http_address}/v1/classify?model=nothing", content=_png(),
                        headers={"Content-Type": "image/png"}, timeout=30)
    assert answer.status_code == 404
    [call] = _by_name(exporter.get_finished_spans(), "POST /v1/classify")
    assert call.attributes["http.response.status_code"] == 404
    assert "cifar10.model.name" not in call.attributes


def test_a_request_whose_deadline_passed_in_the_queue_fails_its_queue_wait(traced):
    server, exporter = traced

    async def late() -> None:  # as a door would: observed, then handed to the data plane
        observed = server.service.requests.begin(
            "grpc", "Classify", "test/Classify", lambda: (), lambda: "127.0.0.1:1")
        with pytest.raises(DeadlineExceededError):
            await server.plane.infer(InferenceRequest(
                np.zeros((1, 32, 32, 3), np.uint8), deadline=time.monotonic() - 1.0))
        observed.end("DEADLINE_EXCEEDED", 0.001)

    server.call(late())
    spans = exporter.get_finished_spans()
    [call] = _by_name(spans, "test/Classify")
    assert call.status.status_code is StatusCode.ERROR  # a server-side failure
    stages = _children(spans, call)
    assert set(stages) == {"admission", "queue wait"}
    assert stages["queue wait"].status.status_code is StatusCode.ERROR
    assert "deadline" in stages["queue wait"].status.description


def test_a_request_the_sampler_leaves_out_is_not_observed(tiny_model_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with BackgroundServer(Settings(model_path=str(tiny_model_path), host="127.0.0.1", port=0,
                                   http_port=0, metrics_port=-1, reload_interval_s=0.0),
                          tracer_provider=provider) as server:
        with grpc.insecure_channel(server.address) as channel:
            pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(images=[RAW]), timeout=30)
        assert server.service.requests.begin(
            "grpc", "Classify", "x/Classify", lambda: (), lambda: "127.0.0.1:1") is None
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("environ, on", [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "x"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
])
def test_tracing_is_on_only_when_the_environment_asks(environ, on):
    assert tracing_configured(environ) is on


def test_the_exporters_named_by_the_environment():
    assert exporter_names({}) == ["otlp_proto_grpc"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp_proto_grpc", "console"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == ["otlp_proto_http"]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []


def test_an_exporter_that_is_not_installed_is_one_line_at_start(tiny_model_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CIFAR10_"))}
    done = subprocess.run(
        [sys.executable, "-m", "cifar10_serving", "--model-path", str(tiny_model_path),
         "--host", "127.0.0.1", "--port", "0", "--http-port", "-1", "--metrics-port", "-1"],
        env={**env, "OTEL_TRACES_EXPORTER": "zipkin_nothing"}, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 1
    assert "no span exporter 'zipkin_nothing' is installed" in done.stderr
    assert "Traceback" not in done.stderr


def test_traces_asked_for_without_the_tracing_extra_are_one_line_at_start(tiny_model_path):
    """The SDK is the optional ``tracing`` extra: a server without it says how to install it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CIFAR10_"))}
    script = ("import sys; sys.modules['opentelemetry.sdk'] = None  # as if not installed\n"
              "from cifar10_serving.startup import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run(
        [sys.executable, "-c", script, "--model-path", str(tiny_model_path), "--host",
         "127.0.0.1", "--port", "0", "--http-port", "-1", "--metrics-port", "-1"],
        env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 1
    assert "pip install 'cifar10-serving[tracing]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_with_tracing_off_the_sdk_is_never_imported(tiny_model_path):
    """The server's own process, serving both doors, with no OTEL_* variable."""
    script = textwrap.dedent(f"""
        import sys, grpc, httpx
        from cifar10_protos.cifar10.v2 import classifier_pb2 as pb, classifier_pb2_grpc as pb_grpc
        from cifar10_serving.settings import Settings
        from cifar10_serving.testing import BackgroundServer
        settings = Settings(model_path={str(tiny_model_path)!r}, host="127.0.0.1", port=0,
                            http_port=0, metrics_port=-1, reload_interval_s=0.0)
        with BackgroundServer(settings) as server:
            assert server.service.requests is None
            with grpc.insecure_channel(server.address) as channel:
                pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(images=[pb.Image(
                    raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))]), timeout=30)
            assert httpx.get(server.http_address + "/v2/health/ready").status_code == 200
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
