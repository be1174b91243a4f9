"""Pipelined bidirectional streams, shared by ClassifyStream and ModelStreamInfer.

Up to ``window`` messages are answered at once (each its own task, so their images can share
a batch); the answers go out in request order. A message that fails, or does not parse
(``cifar10_serving.parsing.Malformed``), gets an error answer built by the servicer, and the
stream goes on. Each message is recorded like an RPC
(``observe(method, code, seconds)``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from cifar10_serving.grpc_status import RequestObserver, status_of
from cifar10_serving.parsing import Malformed

STREAM_WINDOW = 64
"""Messages in flight per stream."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def pipelined(
    requests: AsyncIterable[Req],
    answer: Callable[[Req], Awaitable[Resp]],
    error_answer: Callable[[Req, str, str], Resp],
    *,
    method: str,
    observe: RequestObserver | None = None,
    window: int = STREAM_WINDOW,
) -> AsyncIterator[Resp]:
    """``answer(request)`` for each request, in order; ``error_answer(request, code name,
    message)`` for one that raised."""
    pending: asyncio.Queue = asyncio.Queue(maxsize=window)
    done = object()

    async def one(request: Req) -> Resp:
        started = time.perf_counter()
        try:
            if type(request) is Malformed:
                request, exc = request.empty(), request.error()
                raise exc
            response = await answer(request)
            code = "OK"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status, message = status_of(exc, method)
            code = status.name
            response = error_answer(request, code, message)
        if observe is not None:
            observe(method, code, time.perf_counter() - started)
        return response

    async def read() -> None:
        try:
            async for request in requests:
                await pending.put(asyncio.ensure_future(one(request)))
        finally:
            await pending.put(done)

    reader = asyncio.ensure_future(read())
    try:
        while True:
            item = await pending.get()
            if item is done:
                break
            yield await item
        await reader  # re-raise a reader failure, if any
    finally:
        reader.cancel()
        while not pending.empty():
            item = pending.get_nowait()
            if item is not done:
                item.cancel()
