"""The one place where exceptions become gRPC status codes.

``ServingError.status_name`` names the code (``cifar10_core.errors``); anything else is a bug on
our side: INTERNAL with a generic message, the traceback goes to the log, and the server
keeps serving. ``cifar10_serving.grpc_api.methods`` ends unary calls with it, and streams
report it per message (``cifar10_serving.grpc_api.streams``). A full queue (``OverloadedError``) also sends gRPC's
``grpc-retry-pushback-ms`` trailer, which the clients' retry policy obeys (``trailers_of``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from cifar10_core.errors import OverloadedError, ServingError, UnavailableError

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error (details in the server log)"

RequestObserver = Callable[[str, str, float], None]
"""``observe(method, status code name, seconds)``: one finished request (``Metrics.observe``)."""


def code_of(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)


def status_of(exc: BaseException, method: str = "") -> tuple[grpc.StatusCode, str]:
    """(status code, message) for an exception; logs unexpected ones with a traceback."""
    if isinstance(exc, ServingError):
        code = code_of(exc.status_name)
        if code is grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s", method or "request", exc)
        return code, str(exc)
    log.error("%s failed unexpectedly", method or "request", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def trailers_of(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """Trailing metadata for an error: a full queue tells gRPC clients when to retry
    (``grpc-retry-pushback-ms``; negative: do not), and so does a shutdown refusal that
    carries a hint; anything else adds nothing."""
    if isinstance(exc, OverloadedError):
        pushback = -1 if exc.retry_after_ms is None else max(0, int(exc.retry_after_ms))
        return (("grpc-retry-pushback-ms", str(pushback)),)
    if isinstance(exc, UnavailableError) and exc.retry_after_ms is not None:
        return (("grpc-retry-pushback-ms", str(max(0, int(exc.retry_after_ms)))),)
    return ()
