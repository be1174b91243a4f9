"""The HTTP door's server: uvicorn on the server's own event loop, beside grpc.aio.

One process, one loop (as MLServer runs uvicorn beside grpc.aio): a request reaches the
same data plane, admission and dynamic batcher whichever door it came through. uvicorn is
started and stopped by its ``startup``/``shutdown`` steps, not ``serve()``, which would take
SIGTERM and SIGINT from our lifecycle (``cifar10_serving.service`` owns the signals). The
lifecycle gets a ``Door``: at shutdown the port closes, idle keep-alive connections close,
and the requests in flight are answered first (uvicorn's graceful shutdown, within the
grace period).
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl

import uvicorn

from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.http_api.app import build_app
from cifar10_serving.http_api.context import Context
from cifar10_serving.http_api.calls import Calls, Observer
from cifar10_serving.inference_protocol.statistics import InferenceStatistics
from cifar10_serving.lifecycle import Door, Lifecycle
from cifar10_serving.observability.requests import Requests
from cifar10_serving.settings import Settings

log = logging.getLogger("cifar10_serving.server")


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
            self.app, loop="none", http="httptools", lifespan="off", log_config=None,
            access_log=False, proxy_headers=False, server_header=False,
            date_header=False,  # it needs uvicorn's main loop ticking 10 times a second
            timeout_graceful_shutdown=settings.grace_seconds, **_tls(settings),
        )
        config.load()
        self.server = uvicorn.Server(config)
        self.server.lifespan = config.lifespan_class(config)
        lifecycle.doors.append(Door(_nothing, self._close))

    async def start(self) -> None:
        """Accept connections."""
        await self.server.startup(sockets=[self.socket])

    async def _close(self, grace: float) -> None:
        self.server.config.timeout_graceful_shutdown = max(0.1, grace)
        await self.server.shutdown(sockets=[self.socket])


async def _nothing() -> None:
    """Not serving: the readiness route asks the data plane, which is already closed."""
