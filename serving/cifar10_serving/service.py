"""The whole server in one process: the data plane, its lifecycle, the gRPC and HTTP doors,
metrics and memory housekeeping, built from ``Settings``.

``serve`` runs one until SIGTERM or SIGINT (``cifar10-serve``: ``cifar10_serving.startup``
imports this module while the model loads); ``cifar10_serving.testing.BackgroundServer`` runs
one on a thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from cifar10_serving.assembly import build_plane
from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.grpc_api.server import ServingServer
from cifar10_serving.grpc_api.status import RequestObserver
from cifar10_serving.inference_protocol.statistics import InferenceStatistics
from cifar10_serving.lifecycle import Door, Lifecycle
from cifar10_serving.observability.metrics import Metrics, mark_process_dead
from cifar10_serving.observability.requests import Requests
from cifar10_serving.process.memory import CycleCollector, Trimmer
from cifar10_serving.process.workers import Workers
from cifar10_serving.settings import Settings

log = logging.getLogger("cifar10_serving.server")

SUPERVISE_INTERVAL_S = 0.1
"""How often the first of several workers looks for a worker that has ended."""


class Service:
    """Build on the event loop; ``await start()``, then ``stop()`` (a graceful shutdown)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 plane: DataPlane | None = None, tracer_provider: Any = None) -> None:
        """``tracer_provider``: an OpenTelemetry tracer provider to trace requests with (an
        application embedding the server); None: tracing as the ``OTEL_*`` environment says
        (``cifar10_serving.observability.requests``)."""
        self.settings = settings
        self.metrics = metrics
        self.plane = plane if plane is not None else build_plane(settings, metrics)
        self.requests = Requests.create(settings, tracer_provider)
        self.lifecycle = Lifecycle(self.plane)
        self.collector = CycleCollector()
        statistics = InferenceStatistics()  # the Open Inference Protocol's, both doors'
        self.grpc = ServingServer(settings, self.plane, self.lifecycle, self._observer("grpc", "OK"),
                                  metrics.malformed_request if metrics is not None else None,
                                  statistics, self.requests)
        self.http = None
        if settings.http_port >= 0:
            from cifar10_serving.http_api.server import HttpServer  # FastAPI only when on

            self.http = HttpServer(settings, self.plane, self.lifecycle,
                                   self._observer("http", "200"), statistics, self.requests)
        if metrics is not None:
            self.lifecycle.doors.append(Door(self._metrics_not_ready, _nothing_to_close))
        self.port = self.grpc.port
        self.http_port = self.http.port if self.http is not None else None
        self._trimmer: asyncio.Future | None = None

    def _observer(self, door: str, ok: str) -> RequestObserver:
        """``observe(method, code, seconds)`` for one door: Prometheus, and an error (any code
        but ``ok``) asks for a garbage collection soon (its path leaves cycles that hold the
        request)."""
        count = self.metrics.observer(door) if self.metrics is not None else None
        note_error = self.collector.note_error

        def observe(method: str, code: str, seconds: float) -> None:
            if count is not None:
                count(method, code, seconds)
            if code != ok:
                note_error()

        return observe

    async def _metrics_not_ready(self) -> None:
        self.metrics.set_ready(False)

    async def start(self) -> None:
        """Open the port and serve (the model is already loaded and warm)."""
        await self.grpc.start()
        if self.http is not None:
            await self.http.start()
        await self.plane.start()
        admission = self.plane.admission
        self._trimmer = asyncio.ensure_future(Trimmer(
            lambda: admission.seen, lambda: admission.requests == 0).run())
        if self.metrics is not None:
            self.metrics.set_ready(self.plane.ready)
        self.collector.freeze()
        models = self.plane.models
        log.info("serving %s on port %d (%s): %s", ", ".join(
            f"{info.name} {info.version}" for info in models.infos()), self.port,
            "TLS" if self.settings.tls else "plaintext", ", ".join(self.grpc.service_names))
        log.info("default model %s; %s", models.default.name, models.source.describe())
        if self.http is not None:
            log.info("HTTP on port %d: Open Inference Protocol REST /v2, images /v1/classify, "
                     "web page /, API docs /docs", self.http_port)

    def stop(self, grace: float | None = None) -> asyncio.Task:
        """Begin a graceful stop (idempotent); await the task for its end."""
        task = self.lifecycle.shutdown(self.settings.grace_seconds if grace is None else grace)
        if self._trimmer is not None:
            task.add_done_callback(lambda _: self._trimmer.cancel())
        return task

    async def wait(self) -> None:
        """Until the service has stopped (and its spans are exported, its request log written)."""
        await self.lifecycle.stopped.wait()
        if self.requests is not None:
            await self.requests.close()


async def _nothing_to_close(_grace: float) -> None:
    """The metrics port stays open until the process ends: its probes say "not ready"."""


async def serve(settings: Settings, metrics: Metrics, plane: DataPlane,
                workers: Workers | None = None, early_signals: list[int] | None = None,
                announce: Callable[[int], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit status. ``workers``: this process's share of
    ``--workers`` (the first process passes signals on and supervises the others);
    ``early_signals``: SIGTERM or SIGHUP that came before this loop handled them (acted on
    as soon as it serves); ``announce(port)``: once serving (the first process only)."""
    service = Service(settings, metrics, plane)
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        if workers is not None:
            workers.signal(sig)
        service.stop()

    def reload() -> None:
        if workers is not None:
            workers.signal(signal.SIGHUP)
        plane.models.request_reload()

    async def supervise() -> None:  # the first process of several: has a worker ended?
        while True:  # polled: uvloop keeps SIGCHLD to itself
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            workers.reap(mark_process_dead)
            if workers.failed and not workers.stopping:
                stop(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await service.start()
    for sig in early_signals or ():
        if sig == signal.SIGHUP:
            reload()
        else:
            stop(sig)
    if announce is not None and (workers is None or workers.is_first):
        announce(service.port)
    if workers is None or not workers.children:
        await service.wait()
        return 0
    supervisor = asyncio.ensure_future(supervise())
    await service.wait()
    supervisor.cancel()
    await workers.wait(settings.grace_seconds + 5.0, mark_process_dead)
    return 1 if workers.failed else 0
