"""Pipelined bidirectional streams, shared by ClassifyStream and ModelStreamInfer.

Up to ``window`` messages are answered at once (each its own task, so their images can share
a batch); the answers go out in request order. A message that fails, or does not parse
(``Received.malformed``), gets an error answer built by the servicer, and the stream goes
on. Each message is recorded like an RPC (``observe(method, code, seconds)``), and traced
or logged like one when its stream says so (``Received.observe``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from cifar10_core.errors import InvalidInputError
from cifar10_serving.grpc_api.methods import Received
from cifar10_serving.grpc_api.status import RequestObserver, status_of

STREAM_WINDOW = 64
"""Messages in flight per stream."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def pipelined(
    requests: AsyncIterable[Received],
    answer: Callable[[Req, int], Awaitable[Resp]],
    error_answer: Callable[[Req | None, str, str], Resp],
    *,
    method: str,
    observe: RequestObserver | None = None,
    window: int = STREAM_WINDOW,
    stopping: asyncio.Event | None = None,
    context: grpc.aio.ServicerContext | None = None,
) -> AsyncIterator[Resp]:
    """``answer(message, wire_bytes)`` for each message, in order; ``error_answer(message,
    code name, text)`` for one that raised (``message`` None: it did not parse).

    Once ``stopping`` is set (the server shuts down), no further message is read; those read
    are answered, then the stream ends with UNAVAILABLE (``context``) so that the client
    sends the rest elsewhere. A stream the client closed first ends OK as usual.
    """
    pending: asyncio.Queue = asyncio.Queue(maxsize=window)
    done = object()
    state = {"reading": False, "stopped": False}

    async def one(received: Received) -> Resp:
        started = time.perf_counter()
        observed = received.observe() if received.observe is not None else None
        request = received.message
        try:
            if received.malformed:
                raise InvalidInputError(received.malformed)
            response = await answer(request, received.size)
            code = "OK"
        except asyncio.CancelledError:
            if observed is not None:
                observed.end("CANCELLED", time.perf_counter() - started)
            raise
        except Exception as exc:
            status, message = status_of(exc, method)
            code = status.name
            response = error_answer(request, code, message)
        seconds = time.perf_counter() - started
        if observe is not None:
            observe(method, code, seconds)
        if observed is not None:
            observed.end(code, seconds)
        return response

    async def read() -> None:
        iterator = aiter(requests)
        try:
            while not state["stopped"]:
                state["reading"] = True
                try:
                    request = await anext(iterator)
                except StopAsyncIteration:
                    break
                finally:
                    state["reading"] = False
                await pending.put(asyncio.ensure_future(one(request)))
        except asyncio.CancelledError:
            if not state["stopped"]:
                raise
        finally:
            await pending.put(done)

    reader = asyncio.ensure_future(read())

    def stop(_: object = None) -> None:
        state["stopped"] = True
        if state["reading"]:  # waiting for the client's next message: stop waiting
            reader.cancel()

    watcher = None
    if stopping is not None:
        watcher = asyncio.ensure_future(stopping.wait())
        watcher.add_done_callback(stop)
    try:
        while True:
            item = await pending.get()
            if item is done:
                break
            yield await item
        await reader  # re-raise a reader failure, if any
        if state["stopped"] and context is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                "server shutting down: every message read was answered; "
                                "send the rest elsewhere")
    finally:
        if watcher is not None:
            watcher.cancel()
        reader.cancel()
        while not pending.empty():
            item = pending.get_nowait()
            if item is not done:
                item.cancel()
