"""The one place where exceptions become gRPC status codes.

``ServingError.status_name`` names the code (``cifar10_core.errors``); anything else is a bug on
our side: INTERNAL with a generic message, the traceback goes to the log, and the server
keeps serving. Servicers wrap their async unary handlers with ``@rpc("Method")``, which
also records the request through the servicer's ``observe`` (``Metrics.observe`` or None)::

    class MyServicer(my_pb2_grpc.MyServicer):
        def __init__(self, core, observe=None): self.core, self.observe = core, observe

        @rpc("MyMethod")
        async def MyMethod(self, request, context): ...

For streams, ``status_of(exc)`` gives ``(code, message)`` to report per message
(``cifar10_serving.grpc_api.streams``). A full queue (``OverloadedError``) also sends gRPC's
``grpc-retry-pushback-ms`` trailer, which the clients' retry policy obeys (``trailers_of``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import grpc

from cifar10_core.errors import OverloadedError, ServingError, UnavailableError
from cifar10_serving.grpc_api.parsing import Malformed, checks_malformed

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


def rpc(method: str):
    """Decorate an async unary handler ``(self, request, context)``: map errors, count, time;
    a request that did not parse (``cifar10_serving.grpc_api.parsing``) is INVALID_ARGUMENT."""

    def decorate(handler):
        @functools.wraps(handler)
        async def wrapper(self, request, context):
            observe = self.observe
            started = time.perf_counter()
            try:
                if type(request) is Malformed:
                    raise request.error()
                response = await handler(self, request, context)
            except asyncio.CancelledError:
                if observe is not None:
                    observe(method, "CANCELLED", time.perf_counter() - started)
                raise
            except grpc.aio.AbortError:  # the handler aborted on its own
                if observe is not None:
                    code = context.code() if hasattr(context, "code") else None
                    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                    observe(method, name, time.perf_counter() - started)
                raise
            except Exception as exc:
                if isinstance(exc, UnavailableError) and exc.hold is not None:
                    await exc.hold.wait()  # shutdown: answer once the port is closing
                code, message = status_of(exc, method)
                if observe is not None:
                    observe(method, code.name, time.perf_counter() - started)
                await context.abort(code, message, trailing_metadata=trailers_of(exc))
            if observe is not None:
                observe(method, "OK", time.perf_counter() - started)
            return response

        return checks_malformed(wrapper)

    return decorate
