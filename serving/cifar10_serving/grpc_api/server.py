"""The gRPC server: every service on one port, health, reflection, TLS, graceful shutdown.

``cifar10-serve`` (``cifar10_serving.launcher`` checks the serve extra, then
``cifar10_serving.startup.main``) loads the model, starts metrics and ``serve``s here until
SIGTERM or SIGINT. Shutdown: health
turns NOT_SERVING at once, new requests are refused with UNAVAILABLE, admitted requests are
answered, streams answer what they read and end UNAVAILABLE, and no call is cancelled under
its client (``ServingServer._stop``); exit status 0 within ``grace_seconds``.
SIGHUP reloads the model. A missing or invalid model at start-up prints one error line
on stderr and exits with status 1 (2 for a bad flag or environment value). ``--workers N``
runs N such processes on one port (``cifar10_serving.process.workers``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from cifar10_serving.assembly import build_core
from cifar10_serving.dataplane.plane import ServingCore
from cifar10_serving.grpc_api.status import RequestObserver
from cifar10_serving.process.memory import CycleCollector, Trimmer
from cifar10_serving.observability.metrics import Metrics, mark_process_dead
from cifar10_serving.grpc_api.parsing import GuardedServer
from cifar10_serving.grpc_api.receive_gate import Gates
from cifar10_serving.settings import Settings
from cifar10_serving.process.workers import Workers

log = logging.getLogger("cifar10_serving.grpc_api.server")

PENDING_CALLS = 1 << 16
QUIET_S = 0.1
"""At shutdown, the port closes once no request was refused for this long."""
SUPERVISE_INTERVAL_S = 0.1
"""How often the first of several workers looks for a worker that has ended."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Registrar = Callable[[grpc.aio.Server, ServingCore, RequestObserver | None], Iterable[str] | None]


def servicer_registrations() -> list[Registrar]:
    """Every API served on the port: ``add_to_server(server, core, observe) -> [full service
    names]`` (``observe``: ``Metrics.observe``, or None without metrics).

    To add a servicer, append its module's ``add_to_server`` here.
    """
    from cifar10_serving.grpc_api import classifier as classifier_servicer

    registrations: list[Registrar] = [classifier_servicer.add_to_server]
    # Open Inference Protocol (KServe v2): serving/inference_servicer.py, written
    # separately. Tolerated as absent only until that module lands.
    try:
        inference_servicer = importlib.import_module("cifar10_serving.grpc_api.inference")
    except ModuleNotFoundError as exc:
        if exc.name != "cifar10_serving.grpc_api.inference":
            raise
        log.debug("cifar10_serving.grpc_api.inference not present; Open Inference Protocol off")
    else:
        registrations.append(inference_servicer.add_to_server)
    return registrations


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    key, cert = _read(settings.tls_key), _read(settings.tls_cert)
    client_ca = _read(settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # A port in use is an error, not a silent second listener; several workers share
        # theirs (the first one reserved it: cifar10_serving.process.workers).
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        # Calls a connection may have open at once; a grpc client's calls past it fail
        # UNAVAILABLE (they are not queued), so the default is well above any client's.
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # Calls received and not yet taken by our event loop: past grpc's defaults (1,000,
        # then random drops to 3,000) they are CANCELLED before our code sees them. Ours
        # (every connection's streams) answer them all: OK or RESOURCE_EXHAUSTED.
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
        # A call that waits for its turn to read (cifar10_serving.grpc_api.receive_gate) holds only its
        # stream's initial window (64 KiB), not one grown to the link's bandwidth.
        ("grpc.http2.bdp_probe", 0),
    ]


class ServingServer:
    """A grpc.aio server with our servicers, health and reflection. Make one on the loop."""

    def __init__(self, settings: Settings, core: ServingCore, metrics: Metrics | None = None):
        self.settings = settings
        self.core = core
        self.metrics = metrics
        self.collector = CycleCollector()
        observe = self._observer(metrics)
        self.grpc_server = grpc.aio.server(options=grpc_options(settings))
        # Every service registers through the guard: we parse the requests (parsing.py).
        self.gates = Gates(image_slots=settings.receive_slots)
        guarded = GuardedServer(
            self.grpc_server, metrics.malformed_request if metrics is not None else None,
            self.gates)
        self.health = HealthServicer()
        self.service_names: list[str] = []
        for register in servicer_registrations():
            names = register(guarded, core, observe)
            self.service_names.extend(names or [])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, guarded)
        # reflection.enable_server_reflection, but through the guard (which it would not
        # recognise as an aio server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            ReflectionServicer(
                [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME]),
            guarded,
        )
        address = f"{settings.host}:{settings.port}"
        if ":" in settings.host and not settings.host.startswith("["):
            address = f"[{settings.host}]:{settings.port}"
        if settings.tls:
            self.port = self.grpc_server.add_secure_port(address, server_credentials(settings))
        else:
            self.port = self.grpc_server.add_insecure_port(address)
        if not self.port:
            raise RuntimeError(f"cannot bind {address}")
        self._stopping: asyncio.Task | None = None
        self._trimmer: asyncio.Future | None = None
        self.stopped = asyncio.Event()

    def _observer(self, metrics: Metrics | None) -> RequestObserver:
        """``observe(method, code, seconds)`` for every finished call: metrics, and a
        collection soon after an error (``CycleCollector``)."""
        note_error = self.collector.note_error
        count = metrics.observe if metrics is not None else None

        def observe(method: str, code: str, seconds: float) -> None:
            if count is not None:
                count(method, code, seconds)
            if code != "OK":
                note_error()

        return observe

    async def _set_health(self, status) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        if self.metrics is not None:
            self.metrics.set_ready(status == SERVING)

    async def start(self) -> None:
        """Start serving; health turns SERVING (the model is already loaded and warm)."""
        await self._set_health(NOT_SERVING)
        await self.grpc_server.start()
        await self.core.start()
        admission = self.core.admission
        self._trimmer = asyncio.ensure_future(Trimmer(
            lambda: admission.seen, lambda: admission.requests == 0).run())
        if self.core.ready:
            await self._set_health(SERVING)
        self.collector.freeze()
        log.info("serving %s on port %d (%s): %s", self.core.info.name, self.port,
                 "TLS" if self.settings.tls else "plaintext", ", ".join(self.service_names))

    def stop(self, grace: float | None = None) -> asyncio.Task:
        """Begin a graceful stop (idempotent); await the returned task to wait for the end."""
        if self._stopping is None:
            grace = self.settings.grace_seconds if grace is None else grace
            self._stopping = asyncio.ensure_future(self._stop(grace))
        return self._stopping

    async def _stop(self, grace: float) -> None:
        started = time.monotonic()
        log.info("shutting down: health NOT_SERVING, refusing new requests, %.1f s grace", grace)
        self.core.begin_shutdown()  # from here on, new requests get UNAVAILABLE
        await self.health.enter_graceful_shutdown()
        if self.metrics is not None:
            self.metrics.set_ready(False)
        inflight = self.core.inflight
        # 1. Answer every admitted request (and the streams' read messages) while the port
        # is open; late arrivals get UNAVAILABLE at once, with a pushback hint.
        finished = await self.core.drained(grace)
        log.info("%d request(s) in flight at shutdown: %s", inflight,
                 "all finished" if finished else f"{self.core.inflight} still running")
        # 2. grpc's stop cancels the calls it has received but not yet handed to us (they
        # would end CANCELLED). So from here a refusal is held, not answered: a client's
        # next call waits in our hands instead of racing the stop. Once no new call has come
        # for QUIET_S, close the port (GOAWAY) and only then answer the held refusals.
        admission = self.core.admission
        admission.hold()
        left = max(0.0, grace - min(1.0, grace / 2) - (time.monotonic() - started))
        if not await self.core.refusals_ended(QUIET_S, left) and left > QUIET_S:
            log.warning("clients kept sending during the %.1f s grace; closing the port", grace)
        closing = asyncio.ensure_future(
            self.grpc_server.stop(max(0.0, grace - (time.monotonic() - started))))
        await asyncio.sleep(0)  # the stop has begun: the port is closed, GOAWAY sent
        admission.release()
        await closing
        await self.core.stop(timeout=max(1.0, grace - (time.monotonic() - started)))
        if self._trimmer is not None:
            self._trimmer.cancel()
        log.info("stopped after %.2f s", time.monotonic() - started)
        self.stopped.set()

    async def wait_for_termination(self) -> None:
        await self.stopped.wait()


def create_server(settings: Settings, core: ServingCore,
                  metrics: Metrics | None = None) -> tuple[ServingServer, int]:
    """Build the server (not started) bound to settings.host:port; returns it and the port."""
    server = ServingServer(settings, core, metrics)
    return server, server.port


async def serve(settings: Settings, metrics: Metrics | None = None,
                core: ServingCore | None = None, workers: Workers | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status. ``workers``: this process's share
    of ``--workers`` (the first process passes signals on and supervises the others)."""
    if core is None:
        core = await asyncio.get_running_loop().run_in_executor(None, build_core, settings, metrics)
    server, port = create_server(settings, core, metrics)
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        if workers is not None:
            workers.signal(sig)
        server.stop()

    def reload() -> None:
        if workers is not None:
            workers.signal(signal.SIGHUP)
        core.request_reload()

    async def supervise() -> None:  # the first process of several: has a worker ended?
        while True:  # polled: uvloop keeps SIGCHLD to itself
            await asyncio.sleep(SUPERVISE_INTERVAL_S)
            workers.reap(mark_process_dead)
            if workers.failed and not workers.stopping:
                stop(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await server.start()
    if workers is None or workers.is_first:
        print(f"cifar10-serve: listening on port {port}", file=sys.stderr, flush=True)
    if workers is None or not workers.children:
        await server.wait_for_termination()
        return 0
    supervisor = asyncio.ensure_future(supervise())
    await server.wait_for_termination()
    supervisor.cancel()
    await workers.wait(settings.grace_seconds + 5.0, mark_process_dead)
    return 1 if workers.failed else 0


if __name__ == "__main__":
    from cifar10_serving.startup import main

    sys.exit(main())
