"""The whole server in one process: the data plane, its lifecycle, the gRPC door, metrics and
memory housekeeping, built from ``Settings``.

``cifar10-serve`` (``cifar10_serving.startup``) runs one until SIGTERM or SIGINT;
``cifar10_serving.testing.BackgroundServer`` runs one on a thread.
"""

from __future__ import annotations

import asyncio
import logging

from cifar10_serving.assembly import build_plane
from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.grpc_api.server import ServingServer
from cifar10_serving.lifecycle import Door, Lifecycle
from cifar10_serving.observability.metrics import Metrics
from cifar10_serving.process.memory import CycleCollector, Trimmer
from cifar10_serving.settings import Settings

log = logging.getLogger("cifar10_serving.server")


class Service:
    """Build on the event loop; ``await start()``, then ``stop()`` (a graceful shutdown)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None,
                 plane: DataPlane | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.plane = plane if plane is not None else build_plane(settings, metrics)
        self.lifecycle = Lifecycle(self.plane)
        self.collector = CycleCollector()
        note_error = self.collector.note_error
        count = metrics.observe if metrics is not None else None

        def observe(method: str, code: str, seconds: float) -> None:
            if count is not None:
                count(method, code, seconds)
            if code != "OK":  # an error path leaves cycles that hold the request: collect soon
                note_error()

        self.grpc = ServingServer(settings, self.plane, self.lifecycle, observe,
                                  metrics.malformed_request if metrics is not None else None)
        if metrics is not None:
            self.lifecycle.doors.append(Door(self._metrics_not_ready, _nothing_to_close))
        self.port = self.grpc.port
        self._trimmer: asyncio.Future | None = None

    async def _metrics_not_ready(self) -> None:
        self.metrics.set_ready(False)

    async def start(self) -> None:
        """Open the port and serve (the model is already loaded and warm)."""
        await self.grpc.start()
        await self.plane.start()
        admission = self.plane.admission
        self._trimmer = asyncio.ensure_future(Trimmer(
            lambda: admission.seen, lambda: admission.requests == 0).run())
        if self.metrics is not None:
            self.metrics.set_ready(self.plane.ready)
        self.collector.freeze()
        log.info("serving %s on port %d (%s): %s", self.plane.models.default.name, self.port,
                 "TLS" if self.settings.tls else "plaintext", ", ".join(self.grpc.service_names))

    def stop(self, grace: float | None = None) -> asyncio.Task:
        """Begin a graceful stop (idempotent); await the task for its end."""
        task = self.lifecycle.shutdown(self.settings.grace_seconds if grace is None else grace)
        if self._trimmer is not None:
            task.add_done_callback(lambda _: self._trimmer.cancel())
        return task

    async def wait(self) -> None:
        """Until the service has stopped."""
        await self.lifecycle.stopped.wait()


async def _nothing_to_close(_grace: float) -> None:
    """The metrics port stays open until the process ends: its probes say "not ready"."""
