"""Per-request tracing and the request log, for every door: which requests, and what of them.

``Requests.create`` returns None unless tracing (``cifar10_serving.observability.tracing``)
or the request log (``cifar10_serving.observability.request_log``) is on, and each door's
call frame (``grpc_api.methods``, ``grpc_api.streams``, ``http_api.calls``) does nothing
more then. Otherwise the frame calls ``begin`` as a request arrives and gets an
``Observed`` for a request that is traced (its sampler says so) or logged (the log's rate
says so), else None; ``Observed`` is also the data plane's ``Observation`` of it (set in
``OBSERVED`` until ``end``), so the data plane names the model, the images and the stages.

Tracing is on when the process is given an OpenTelemetry tracer provider (an application
embedding the server: ``Service(tracer_provider=...)``) or the standard ``OTEL_*``
environment names an exporter or an OTLP endpoint (``tracing_configured``); the
OpenTelemetry SDK is imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cifar10_serving.dataplane.batching import RunTiming
from cifar10_serving.dataplane.observation import OBSERVED
from cifar10_serving.observability.request_log import RequestLog
from cifar10_serving.onnx_model import ModelInfo
from cifar10_serving.settings import Settings

if TYPE_CHECKING:  # imported only when tracing is on
    from cifar10_serving.observability.tracing import Tracing

Headers = Callable[[], Iterable[tuple[str, str]]]
"""The request's metadata or headers as (lower-case name, value) pairs, read when needed."""

_UNTRACED = contextlib.nullcontext()


def tracing_configured(environ: Mapping[str, str]) -> bool:
    """Does the standard OpenTelemetry environment ask for traces? ``OTEL_SDK_DISABLED=true``
    or ``OTEL_TRACES_EXPORTER=none``: no; an exporter named in ``OTEL_TRACES_EXPORTER``, or
    an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): yes."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def peer_address(peer: str) -> str:
    """``host:port`` of a gRPC peer (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``); other
    kinds (``unix:...``) as they are."""
    kind, _, address = peer.partition(":")
    return address if kind in ("ipv4", "ipv6") else peer


class Requests:
    """Which requests are traced and logged (see the module docstring)."""

    def __init__(self, tracing: Tracing | None, log: RequestLog | None) -> None:
        self.tracing = tracing
        self.log = log

    @classmethod
    def create(cls, settings: Settings, tracer_provider: Any = None) -> Requests | None:
        """Tracing with ``tracer_provider``, else as the ``OTEL_*`` environment configures
        it; the request log as ``settings`` say. None when both are off."""
        tracing = None
        if tracer_provider is not None or tracing_configured(os.environ):
            try:
                from cifar10_serving.observability.tracing import Tracing
            except ImportError as exc:
                raise RuntimeError(
                    f"the OTEL_* environment asks for traces, but OpenTelemetry's SDK cannot be "
                    f"imported ({exc}): pip install 'cifar10-serving[tracing]'") from None

            tracing = Tracing(tracer_provider) if tracer_provider is not None \
                else Tracing.from_environment()
        log = RequestLog(settings.request_log_rate, settings.request_log_file) \
            if settings.request_log_rate > 0 else None
        return cls(tracing, log) if tracing is not None or log is not None else None

    def begin(self, door: str, method: str, name: str, headers: Headers,
              peer: Callable[[], str], request_id: str = "",
              attributes: Mapping[str, Any] | None = None) -> Observed | None:
        """A request has arrived at ``door`` (``grpc``, ``http``) for ``method`` (as the
        metrics name it); ``name``: its span's name, ``attributes``: its span's attributes
        of the door; ``peer()``: the client's ``host:port``. The ``Observed`` (now the data
        plane's ``OBSERVED``) if the request is traced or logged, else None. Call its
        ``end`` in the same task."""
        logged = self.log is not None and self.log.sampled()
        if self.tracing is None and not logged:
            return None
        client = peer()
        span = None
        if self.tracing is not None:
            span = self.tracing.request_span(name, headers, client, attributes)
        if span is None and not logged:
            return None
        return Observed(self.tracing if span is not None else None, self.log if logged else None,
                        door, method, client, request_id, span)

    async def close(self) -> None:
        """Export the spans still held and close the log, once the server has stopped (from
        then on no request is observed)."""
        tracing, log = self.tracing, self.log
        self.tracing = self.log = None
        if tracing is not None:
            await asyncio.get_running_loop().run_in_executor(None, tracing.close)
        if log is not None:
            log.close()


class Observed:
    """One request traced or logged: what the door and the data plane say of it."""

    __slots__ = ("tracing", "log", "door", "method", "peer", "request_id", "span", "model",
                 "images", "arrived", "_token")

    def __init__(self, tracing: Tracing | None, log: RequestLog | None, door: str, method: str,
                 peer: str, request_id: str, span: Any) -> None:
        self.tracing, self.log, self.span = tracing, log, span
        self.door, self.method, self.peer, self.request_id = door, method, peer, request_id
        self.model: ModelInfo | None = None
        self.images: int | None = None
        self.arrived = time.time()
        self._token = OBSERVED.set(self)

    # -- the data plane's Observation -------------------------------------------------

    def identify(self, request_id: str) -> None:
        self.request_id = request_id or self.request_id

    def selected(self, model: ModelInfo) -> None:
        self.model = model

    def count(self, images: int) -> None:
        self.images = images

    def stage(self, name: str) -> contextlib.AbstractContextManager[object]:
        return _UNTRACED if self.tracing is None else self.tracing.stage(self.span, name)

    def batched(self, timing: RunTiming, error: BaseException | None) -> None:
        if self.tracing is not None:
            self.tracing.batched(self.span, timing, time.time_ns(), error)

    # -- the door's ---------------------------------------------------------------------

    def end(self, status: str, seconds: float) -> None:
        """The request was answered with ``status`` (a gRPC code's name, an HTTP status)
        after ``seconds``: its span ends, its log line is written."""
        OBSERVED.reset(self._token)
        if self.tracing is not None:
            self.tracing.end(self.span, self.door, status, self.request_id, self.model, self.images)
        if self.log is not None:
            model = self.model
            self.log.write({
                "time": self.arrived,
                "door": self.door,
                "method": self.method,
                "model": model.name if model is not None else None,
                "model_version": model.version if model is not None else None,
                "images": self.images,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "request_id": self.request_id or None,
                **({"trace_id": self.tracing.trace_id(self.span)} if self.tracing is not None else {}),
                "client": self.peer or None,
            })
