"""OpenTelemetry traces: a server span per request at each door, a child span per stage.

Imported only when tracing is on (``cifar10_serving.observability.requests`` decides). A
request's span continues the W3C trace context its client sent (``traceparent`` in the gRPC
metadata or HTTP headers; the propagators of ``OTEL_PROPAGATORS``), is named as OpenTelemetry's
conventions say (gRPC: ``service/method``; HTTP: ``METHOD route``) and carries the
``cifar10.*`` attributes (request id, model name and version, images). Its children:
``admission``, ``decode`` (encoded images or typed tensors to model input), ``queue wait``
and ``model run`` (the batched run it shared: ``cifar10.batch.images``).

Configured by the standard environment as the SDK reads it: ``OTEL_TRACES_EXPORTER``
(default ``otlp``: OTLP over gRPC to ``OTEL_EXPORTER_OTLP_ENDPOINT``, default
localhost:4317), ``OTEL_SERVICE_NAME`` (default ``cifar10-serving``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG`` (default: parent-based, always
on), ``OTEL_BSP_*`` (the batch span processor, exporting on its own thread).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

import cifar10_serving
from cifar10_serving.dataplane.batching import RunTiming
from cifar10_serving.onnx_model import ModelInfo

DEFAULT_SERVICE_NAME = "cifar10-serving"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
              "UNAUTHENTICATED")
"""gRPC status codes by number."""
GRPC_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL",
                                "UNAVAILABLE", "DATA_LOSS"})
"""The codes that mark a gRPC server span as failed (OpenTelemetry's RPC conventions); an
HTTP server span fails with a 5xx status."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters' entry point names that ``OTEL_TRACES_EXPORTER`` asks for (``otlp``
    is OTLP over the protocol of ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, gRPC by default, as the SDK reads it)."""
    names = []
    for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(","):
        name = name.strip()
        if name == "otlp":
            protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
            name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
        if name and name != "none":
            names.append(name)
    return names


def _exporter(name: str) -> SpanExporter:
    found = entry_points(group=EXPORTER_GROUP, name=name)
    if not found:
        known = ", ".join(sorted(e.name for e in entry_points(group=EXPORTER_GROUP)))
        raise RuntimeError(f"OTEL_TRACES_EXPORTER: no span exporter {name!r} is installed "
                           f"(installed: {known}; 'otlp' is OTLP over gRPC)")
    return next(iter(found)).load()()


class Tracing:
    """Spans through ``provider``'s tracer; ``close()`` shuts down a provider made here."""

    def __init__(self, provider: trace.TracerProvider, owned: bool = False) -> None:
        self.tracer = provider.get_tracer("cifar10_serving", cifar10_serving.__version__)
        self._owned = provider if owned else None

    @classmethod
    def from_environment(cls) -> Tracing:
        """A tracer provider of the SDK as the ``OTEL_*`` environment configures it, each
        exporter behind a batch span processor."""
        resource = Resource.create({SERVICE_VERSION: cifar10_serving.__version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        for name in exporter_names(os.environ):
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
        return cls(provider, owned=True)

    # -- a request's span ----------------------------------------------------------------

    def request_span(self, name: str, headers: Callable[[], Iterable[tuple[str, str]]],
                     client: str, attributes: Mapping[str, Any] | None) -> Span | None:
        """The request's server span, child of the trace context in ``headers()`` if any;
        None if the sampler leaves the request out."""
        span = self.tracer.start_span(name, context=propagate.extract(dict(headers())),
                                      kind=SpanKind.SERVER, attributes=attributes)
        if not span.is_recording():
            return None
        host, _, port = client.rpartition(":")
        if host:
            span.set_attribute("client.address", host.strip("[]"))
            if port.isdigit():
                span.set_attribute("client.port", int(port))
        return span

    def end(self, span: Span, door: str, status: str, request_id: str,
            model: ModelInfo | None, images: int | None) -> None:
        """End the request's span with what is known of it and its status."""
        if door == "grpc":
            span.set_attribute("rpc.grpc.status_code",
                               GRPC_CODES.index(status) if status in GRPC_CODES else 2)
            failed = status in GRPC_SERVER_ERRORS
        else:
            code = int(status)
            span.set_attribute("http.response.status_code", code)
            failed = code >= 500
        if request_id:
            span.set_attribute("cifar10.request_id", request_id)
        if model is not None:
            span.set_attribute("cifar10.model.name", model.name)
            span.set_attribute("cifar10.model.version", model.version)
        if images is not None:
            span.set_attribute("cifar10.images", images)
        if failed:
            span.set_status(Status(StatusCode.ERROR, status))
        span.end()

    @staticmethod
    def trace_id(span: Span) -> str:
        return trace.format_trace_id(span.get_span_context().trace_id)

    # -- its stages -------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, parent: Span, name: str) -> Iterator[Span]:
        """A child span of ``parent`` around a stage on the event loop (an exception marks
        it failed)."""
        span = self.tracer.start_span(name, context=trace.set_span_in_context(parent))
        with trace.use_span(span, end_on_exit=True):
            yield span

    def batched(self, parent: Span, timing: RunTiming, now_ns: int,
                error: BaseException | None) -> None:
        """``queue wait`` and ``model run`` spans from the batcher's timing; a request that
        never ran (its deadline passed, the queue was full) waited until ``now_ns``."""
        context = trace.set_span_in_context(parent)
        ran = timing.runs > 0
        queue = self.tracer.start_span("queue wait", context=context,
                                       start_time=timing.queued_ns or now_ns)
        if not ran and error is not None:
            _failed(queue, error)
        queue.end(end_time=timing.started_ns if ran else now_ns)
        if ran:
            run = self.tracer.start_span(
                "model run", context=context, start_time=timing.started_ns,
                attributes={"cifar10.batch.images": timing.batch_images,
                            "cifar10.batch.runs": timing.runs})
            if error is not None:
                _failed(run, error)
            run.end(end_time=timing.ended_ns)

    def close(self) -> None:
        """Export what is held and stop (blocking), if the provider was made here."""
        if self._owned is not None:
            self._owned.shutdown()
            self._owned = None


def _failed(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
