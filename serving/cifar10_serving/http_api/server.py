"""The HTTP door's server: uvicorn on the server's own event loop, beside grpc.aio.

One process, one loop (as MLServer runs uvicorn beside grpc.aio): a request reaches the
same data plane, admission and dynamic batcher whichever door it came through. uvicorn is
started and stopped by its ``startup``/``shutdown`` steps, not ``serve()``, which would take
SIGTERM and SIGINT from our lifecycle (``cifar10_serving.service`` owns the signals). The
lifecycle gets a ``Door``; its close (``HttpServer._close``) loses no request the server has
accepted:

* connections the kernel has already accepted are taken from the port's queue before the
  port closes (closing the port would reset them);
* a keep-alive connection with no request in progress stays open a moment (``LINGER_S``):
  HTTP/1.1 has no GOAWAY, so a client cannot know that its idle connection is about to
  close, and a request it sends as it closes meets a reset. Meanwhile a request on it is
  answered (503 ``Retry-After`` from the data plane, ``Connection: close`` from
  ``Calls``);
* then every connection is closed once idle, those answering after their answer, within the
  grace period (uvicorn's graceful shutdown, asked again until none is left: a connection
  set up late would otherwise be missed, and waited for).

What remains is HTTP/1.1's own race: a request sent on an idle connection at the instant it
closes, after ``LINGER_S`` of nothing, is never read; the client sees the connection close
without an answer and may safely send it again (the server never saw it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time

import uvicorn

from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.http_api.app import build_app
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.calls import Calls, Observer
from cifar10_serving.http_api.protocol import HttpProtocol, rate_limit_client_warnings
from cifar10_serving.inference_protocol.statistics import InferenceStatistics
from cifar10_serving.lifecycle import Door, Lifecycle
from cifar10_serving.observability.requests import Requests
from cifar10_serving.settings import Settings

log = logging.getLogger("cifar10_serving.server")

KEEP_ALIVE_S = 75
"""An idle connection closes after this long (nginx's default): longer than the idle
timeouts of common clients and proxies (httpx 5 s, Go 90 s is the exception), so that they,
not the server, close it, and never race a request against its close."""

LINGER_S = 1.0
"""At shutdown, how long an idle keep-alive connection stays open once the port has closed
(at most half the grace left)."""


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); OSError naming the port and
    how to change it when it is taken. ``reuse_port``: several workers share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without
    # it an answer's body waits for the ACK of its headers (40 ms of delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"cannot listen on {host}:{port} for HTTP: port in use (another "
                          f"server? {Settings.how_to_set('http_port')} changes the port; -1 "
                          f"turns HTTP off)") from None
        raise
    return sock


def _tls(settings: Settings) -> dict:
    if not settings.tls:
        return {}
    return {
        "ssl_certfile": settings.tls_cert,
        "ssl_keyfile": settings.tls_key,
        "ssl_ca_certs": settings.tls_client_ca,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if settings.tls_client_ca else ssl.CERT_NONE,
    }


class HttpServer:
    """The HTTP door bound to the settings' host and ``http_port`` (``port``: the one bound).
    Make one on the event loop; ``await start()``; the lifecycle closes it."""

    def __init__(self, settings: Settings, plane: DataPlane, lifecycle: Lifecycle,
                 observe: Observer | None = None,
                 statistics: InferenceStatistics | None = None,
                 requests: Requests | None = None) -> None:
        calls = Calls(lifecycle, observe, settings.max_message_bytes, requests)
        self.context = Context(plane, lifecycle, calls, settings, statistics or InferenceStatistics())
        self.app = build_app(self.context)
        self.socket = bind(settings.host, settings.http_port, reuse_port=settings.workers > 1)
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            self.app, loop="none", http=HttpProtocol, ws="none", lifespan="off",
            log_config=None, access_log=False, proxy_headers=False, server_header=False,
            date_header=False,  # it needs uvicorn's main loop ticking 10 times a second
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=settings.grace_seconds, **_tls(settings),
        )
        config.load()
        rate_limit_client_warnings()
        self.server = uvicorn.Server(config)
        self.server.lifespan = config.lifespan_class(config)
        self._accepted: list[asyncio.Future] = []  # connections taken from the queue at close
        self.door = Door(_nothing, self._close)
        lifecycle.doors.append(self.door)

    async def start(self) -> None:
        """Accept connections."""
        await self.server.startup(sockets=[self.socket])

    async def _close(self, grace: float) -> None:
        """Close the port, then the connections (see the module docstring). The port closes
        before the first ``await``: the lifecycle answers its held refusals right after."""
        end = time.monotonic() + grace
        self._accept_queued()
        for listener in self.server.servers:
            listener.close()
        self.socket.close()
        linger_end = time.monotonic() + min(LINGER_S, grace / 2)
        while self._any_idle() and time.monotonic() < linger_end:
            await asyncio.sleep(0.01)
        # Told again and again: a connection set up after one pass (taken from the queue,
        # through its TLS handshake) would otherwise stay open, and uvicorn wait for it.
        connections = self.server.server_state.connections
        while connections and time.monotonic() < end:
            for connection in list(connections):
                connection.shutdown()  # idle: closed now; answering: closed after the answer
            await asyncio.sleep(0.01)
        self.server.config.timeout_graceful_shutdown = max(0.1, end - time.monotonic())
        await self.server.shutdown()

    def _accept_queued(self) -> None:
        """Serve the connections waiting in the port's queue (the kernel has completed their
        handshake; the port's close would reset them)."""
        config, server = self.server.config, self.server
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(config=config, server_state=server.server_state,
                                              app_state=server.lifespan.state)

        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # none left (EAGAIN), or the port is gone
                return
            connection.setblocking(False)
            self._accepted.append(asyncio.ensure_future(
                loop.connect_accepted_socket(protocol, connection, ssl=config.ssl)))

    def _any_idle(self) -> bool:
        """A connection with no request in progress, or one from the queue not yet set up."""
        return any(not task.done() for task in self._accepted) or any(
            connection.cycle is None or connection.cycle.response_complete
            for connection in self.server.server_state.connections)


async def _nothing() -> None:
    """Not serving: the readiness route asks the data plane, which is already closed."""
