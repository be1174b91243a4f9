"""One HTTP call's frame, the same for every route (as ``grpc_api.methods`` is for gRPC).

``Calls.run(method, request, work)`` gives ``work`` a ``Call``: the request id (the
``X-Request-Id`` header, else a new one; echoed in the answer's header), the deadline (the
``X-Request-Timeout`` header, in seconds) and the body read with a size limit (413 past
``--max-message-bytes``, before reading it when ``Content-Length`` says so). Whatever
``work`` raises becomes an answer in ``cifar10_serving.http_api.errors``; every call is
observed (method, HTTP status, seconds) for the metrics. During shutdown a refusal waits for
the doors to close (``Lifecycle.refused``), and every answer says ``Connection: close`` so
that keep-alive clients reconnect, and meet the closed port, instead of reusing a connection
that is about to close. With tracing or the request log on, each call is observed here
(``cifar10_serving.observability.requests``).

A client that closes its connection once its body is read (it timed out, it was killed)
cancels its work, as a gRPC client's cancellation does: the data plane drops its queued
images instead of computing answers nobody reads (counted as 499, nginx's code).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from cifar10_core.errors import UnavailableError, quoted
from cifar10_serving.dataplane.request import deadline_after
from cifar10_serving.http_api.errors import CLIENT_CLOSED, HttpError, error_response
from cifar10_serving.lifecycle import Lifecycle
from cifar10_serving.observability.requests import Observed, Requests

REQUEST_ID = "X-Request-Id"
TIMEOUT = "X-Request-Timeout"
MAX_REQUEST_ID = 128  # characters of a client's request id kept

Observer = Callable[[str, str, float], None]
"""``observe(method, status, seconds)``: one finished call (``Metrics.observer("http")``)."""


@dataclass(slots=True)
class Call:
    """What a route's work gets: the request, its id and deadline, and its body on demand."""

    request: Request
    request_id: str
    deadline: float | None
    max_body_bytes: int
    watcher: asyncio.Task | None = None  # cancels the work if the client leaves
    client_left: bool = False

    async def body(self) -> bytes:
        """The whole body; HttpError 413 once it is larger than the limit."""
        limit = self.max_body_bytes
        declared = self.request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise HttpError(400, f"malformed Content-Length header {quoted(declared)}")
            if int(declared) > limit:
                raise HttpError(413, _too_large(int(declared), limit))
        chunks, size = [], 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, _too_large(size, limit))
            chunks.append(chunk)
        self.watcher = asyncio.ensure_future(self._cancel_when_gone(asyncio.current_task()))
        return b"".join(chunks)

    async def _cancel_when_gone(self, work: asyncio.Task) -> None:
        # With the body read, the server's next message is the disconnect, if it comes.
        while (await self.request.receive())["type"] != "http.disconnect":
            pass
        self.client_left = True
        work.cancel()

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


def _too_large(size: int, limit: int) -> str:
    return (f"request body of {size} bytes or more is over the limit of {limit} bytes "
            f"(the server's --max-message-bytes)")


def _deadline(request: Request) -> float | None:
    raw = request.headers.get(TIMEOUT)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise HttpError(400, f"{TIMEOUT} must be a positive number of seconds, got {quoted(raw)}")
    return deadline_after(seconds)


class Calls:
    """Runs every route's work in the same frame (see the module docstring)."""

    def __init__(self, lifecycle: Lifecycle, observe: Observer | None, max_body_bytes: int,
                 requests: Requests | None = None) -> None:
        self.lifecycle = lifecycle
        self.observe = observe
        self.max_body_bytes = max_body_bytes
        self.requests = requests

    async def run(self, method: str, request: Request,
                  work: Callable[[Call], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID, "")[:MAX_REQUEST_ID] or uuid.uuid4().hex
        observed = self._begin(method, request, request_id) if self.requests is not None else None
        call = None
        try:
            call = Call(request, request_id, _deadline(request), self.max_body_bytes)
            response = await work(call)
        except asyncio.CancelledError:
            if call is None or not call.client_left:
                if observed is not None:  # no answer: nginx's 499, the client closed the request
                    observed.end("499", time.perf_counter() - started)
                raise
            asyncio.current_task().uncancel()  # our own cancellation: the client has gone
            response = Response(status_code=CLIENT_CLOSED)
        except Exception as exc:  # noqa: BLE001 - every error becomes an answer, here
            if isinstance(exc, UnavailableError) and self.lifecycle.shutting_down:
                await self.lifecycle.refused()
            response = error_response(exc, method)
        finally:
            if call is not None:
                call.stop_watching()
        response.headers[REQUEST_ID] = request_id
        if self.lifecycle.shutting_down:
            response.headers["Connection"] = "close"
        seconds = time.perf_counter() - started
        if self.observe is not None:
            self.observe(method, str(response.status_code), seconds)
        if observed is not None:
            observed.end(str(response.status_code), seconds)
        return response

    def _begin(self, method: str, request: Request, request_id: str) -> Observed | None:
        route = getattr(request.scope.get("route"), "path", request.url.path)
        attributes = {"http.request.method": request.method, "http.route": route,
                      "url.path": request.url.path}
        return self.requests.begin("http", method, f"{request.method} {route}",
                                   request.headers.items, lambda: _peer(request), request_id,
                                   attributes)


def _peer(request: Request) -> str:
    client = request.client
    if client is None:
        return ""
    return f"[{client.host}]:{client.port}" if ":" in client.host else f"{client.host}:{client.port}"
