"""Requests parsed by us, not by grpc: a malformed message is INVALID_ARGUMENT, never UNKNOWN.

grpc's own deserialization turns a ``DecodeError`` (wire-format garbage, a length past the
end, invalid UTF-8 in a string field) into UNKNOWN and an ERROR with a traceback in the log.
``GuardedServer`` stands in for the ``grpc.aio.Server`` handed to the generated
``add_*_to_server`` functions (ours, health's, reflection's) and gives every method handler
a deserializer that never raises: a message that does not parse becomes a ``Malformed``
placeholder, counted (``on_malformed(method)``) and logged at WARNING at most once per
10 s. What the placeholder becomes:

* a unary request (any method, health's included): INVALID_ARGUMENT ``malformed
  <Type> message: <reason>``, before the handler runs (``@rpc`` handlers check it
  themselves, which saves the hot path a wrapper);
* a message on one of our streams (handlers marked ``per_message_errors``, i.e.
  ``cifar10_serving.grpc_api.streams.pipelined``): an error answer to that message; the stream goes on;
* a message on any other stream (reflection): the stream ends with INVALID_ARGUMENT.

Every handler also reads its own request messages, through a gate
(``cifar10_serving.grpc_api.receive_gate``), instead of letting grpc read them all before it runs: grpc
sees every method as request-streaming, clients see no difference.
"""

from __future__ import annotations

import inspect
import logging
from contextvars import ContextVar
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import grpc

from cifar10_core.errors import InvalidInputError, quoted
from cifar10_serving.process.logs import RateLimitedLog
from cifar10_serving.grpc_api.receive_gate import Gates, ReceiveGate

log = logging.getLogger(__name__)

_request_size: ContextVar[int | None] = ContextVar("cifar10_request_size", default=None)

MalformedObserver = Callable[[str], None]
"""``on_malformed(method)``: one message that did not parse (``Metrics.malformed``)."""


class Malformed:
    """Stands in for a request message that did not parse."""

    __slots__ = ("type_name", "reason", "_type")

    def __init__(self, message_type: type | None, reason: str) -> None:
        self._type = message_type
        self.type_name = getattr(message_type, "__name__", "request")
        self.reason = reason

    @property
    def message(self) -> str:
        return f"malformed {self.type_name} message: {self.reason}"

    def error(self) -> InvalidInputError:
        return InvalidInputError(self.message)

    def empty(self) -> Any:
        """An empty message of the expected type (to build an error answer on a stream)."""
        return self._type() if self._type is not None else None


def per_message_errors(handler):
    """Mark a stream handler that answers a ``Malformed`` message itself (and goes on)."""
    handler.per_message_errors = True
    return handler


def checks_malformed(handler):
    """Mark a unary handler that raises ``Malformed.error()`` itself (``@rpc`` does)."""
    handler.checks_malformed = True
    return handler


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "not a valid protobuf encoding" if "Error parsing message" in text else quoted(text)


class _Guard:
    """Makes guarded method handlers: one per method, sharing the count and the log."""

    def __init__(self, on_malformed: MalformedObserver | None, gates: Gates) -> None:
        self.on_malformed = on_malformed
        self.gates = gates
        self.last_size = 0  # bytes of the message deserialized last (on the event loop)
        self.warn = RateLimitedLog(log, logging.WARNING)

    def deserializer(self, method: str, parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        message_type = getattr(parse, "__self__", None)
        guard = self

        def deserialize(data: bytes) -> Any:
            guard.last_size = len(data)
            try:
                return parse(data)
            except Exception as exc:  # DecodeError, UnicodeDecodeError, ...
                malformed = Malformed(message_type, _reason(exc))
                if guard.on_malformed is not None:
                    guard.on_malformed(method)
                guard.warn.log("%s: %s (%d bytes)", method, malformed.message, len(data))
                return malformed

        return deserialize

    def handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler is None or handler.request_deserializer is None:
            return handler
        deserializer = self.deserializer(method, handler.request_deserializer)
        streaming = handler.response_streaming
        if not handler.request_streaming:
            field = "unary_stream" if streaming else "unary_unary"
            behaviour = getattr(handler, field)
            gate = self.gates.for_handler(behaviour)
            if not getattr(behaviour, "checks_malformed", False):
                behaviour = (_unary_stream if streaming else _unary_unary)(behaviour)
            # grpc would read the message before the handler runs; we read it (gated)
            changes = {field: None, "stream_stream" if streaming else "stream_unary":
                       _read_one(behaviour, gate, self), "request_streaming": True}
        else:
            field = "stream_stream" if streaming else "stream_unary"
            behaviour = getattr(handler, field)
            gate = self.gates.for_handler(behaviour)
            if not getattr(behaviour, "per_message_errors", False):
                behaviour = (_stream_stream if streaming else _stream_unary)(behaviour)
            changes = {field: _read_each(behaviour, gate)}
        return handler._replace(request_deserializer=deserializer, **changes)


def _read_one(behaviour, gate: ReceiveGate, guard: _Guard):
    """A request-streaming handler that reads the one request through ``gate``."""
    if inspect.isasyncgenfunction(behaviour):
        async def read_one_streaming(_requests, context):
            request = await _one(gate, context, guard)
            async for response in behaviour(request, context):
                yield response

        return read_one_streaming

    async def read_one(_requests, context):
        return await behaviour(await _one(gate, context, guard), context)

    return read_one


async def _one(gate: ReceiveGate, context, guard: _Guard) -> Any:
    request = await gate.read(context)
    if request is grpc.aio.EOF:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
    # grpc deserialized it in this same step of this call's task: the size is its own
    _request_size.set(guard.last_size)
    return request


def request_size() -> int | None:
    """The wire size of the request the current unary call read (None on a stream, whose
    messages a handler may read ahead of the one it works on): admission's byte count,
    without ``ByteSize()`` (which serializes) or copying the payloads to measure them."""
    return _request_size.get()


async def _messages(gate: ReceiveGate, context) -> AsyncIterator:
    while (request := await gate.read(context)) is not grpc.aio.EOF:
        yield request


def _read_each(behaviour, gate: ReceiveGate):
    """The stream handler fed by ``gate`` instead of grpc's own request iterator."""
    if inspect.isasyncgenfunction(behaviour):
        async def read_each_streaming(_requests, context):
            async for response in behaviour(_messages(gate, context), context):
                yield response

        return read_each_streaming

    async def read_each(_requests, context):
        return await behaviour(_messages(gate, context), context)

    return read_each


def _unary_unary(behaviour):
    async def guarded(request, context):
        if type(request) is Malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return await behaviour(request, context)

    return guarded


def _unary_stream(behaviour):
    if not inspect.isasyncgenfunction(behaviour):  # writes with context.write()
        return _unary_unary(behaviour)

    async def guarded(request, context):
        if type(request) is Malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        async for response in behaviour(request, context):
            yield response

    return guarded


async def _checked(requests: AsyncIterable, context) -> AsyncIterator:
    async for request in requests:
        if type(request) is Malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _stream_unary(behaviour):
    async def guarded(requests, context):
        return await behaviour(_checked(requests, context), context)

    return guarded


def _stream_stream(behaviour):
    if not inspect.isasyncgenfunction(behaviour):  # writes with context.write()
        return _stream_unary(behaviour)

    async def guarded(requests, context):
        async for response in behaviour(_checked(requests, context), context):
            yield response

    return guarded


class _GuardedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, guard: _Guard) -> None:
        self.inner, self.guard = inner, guard
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        guarded = self._cache.get(method)
        if guarded is None:
            handler = self.inner.service(handler_call_details)
            if handler is None:  # not ours: nothing cached for a client's made-up name
                return None
            guarded = self._cache[method] = self.guard.handler(method.rsplit("/", 1)[-1], handler)
        return guarded


class GuardedServer:
    """A ``grpc.aio.Server`` as the generated ``add_*_to_server`` functions see it: every
    handler they register is guarded (see the module docstring). Other calls pass through."""

    def __init__(self, server: grpc.aio.Server, on_malformed: MalformedObserver | None = None,
                 gates: Gates | None = None):
        self._server = server
        self.gates = gates if gates is not None else Gates()
        self._guard = _Guard(on_malformed, self.gates)

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGeneric(h, self._guard) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._guard.handler(name, h) for name, h in handlers.items()})

    def __getattr__(self, name: str):
        return getattr(self._server, name)
