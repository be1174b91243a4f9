"""Every gRPC method registered the same way: read through a gate, parsed by us, errors mapped.

Why not grpc's own reading: grpc reads a unary call's whole message before its handler runs,
for every call received, all at once (the memory of messages not yet admitted would have no
bound), and its deserialization turns a malformed message into UNKNOWN with a traceback in
the log. So every method is registered with grpc's public handler constructors as one that
reads its own messages (``grpc.stream_unary_rpc_method_handler`` and
``grpc.stream_stream_rpc_method_handler``; the wire is the same for clients): the handler
reads with ``context.read()`` through a ``ReceiveGate`` when it is its turn, and the
deserializer never raises: it returns a ``Received`` (the message or why it did not parse,
and its size on the wire). Malformed bytes are detected here and nowhere else.

What that gives a handler reaches it as arguments:

* unary, ``Method(..., unary=handler)``: ``await handler(message, wire_bytes, context)``; a
  malformed message, or none, is INVALID_ARGUMENT before the handler runs;
* stream, ``Method(..., stream=handler)``: ``handler(messages, context)`` gets an async
  iterator of ``Received``, malformed ones included (a stream answers each on its own).

Errors become status codes in ``cifar10_serving.grpc_api.status``; a request refused because
the server is shutting down, and a stream opened then, wait on ``Lifecycle.refused()``. With
tracing or the request log on (``cifar10_serving.observability.requests``), each call, and
each message of a stream (``Received.observe``), is observed from here.
Third-party servicers (health, reflection) register through ``adopt(server)``, a stand-in
for the server that their generated ``add_*_to_server`` functions call: their handlers are
rebuilt the same way from the public fields of ``grpc.RpcMethodHandler``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from cifar10_core.errors import InvalidInputError, UnavailableError, quoted
from cifar10_serving.dataplane.admission import SHUTDOWN_RETRY_AFTER_MS
from cifar10_serving.grpc_api.receive_gate import Gates, ReceiveGate
from cifar10_serving.grpc_api.status import RequestObserver, status_of, trailers_of
from cifar10_serving.lifecycle import Lifecycle
from cifar10_serving.observability.requests import Observed, Requests, peer_address
from cifar10_serving.process.logs import RateLimitedLog

log = logging.getLogger(__name__)

MalformedObserver = Callable[[str], None]
"""``on_malformed(method)``: one message that did not parse (``Metrics.malformed_request``)."""


Track = Callable[[], Observed | None]
"""``track()`` as a request begins: its ``Observed`` if it is traced or logged, else None."""


@dataclass(slots=True)
class Received:
    """A request message as read: ``message``, or None and ``malformed`` saying why it did not
    parse; ``size`` is its length on the wire; ``observe``: its stream's ``Track`` (None:
    tracing and the request log are off)."""

    message: Any
    size: int
    malformed: str = ""
    observe: Track | None = None


@dataclass(frozen=True)
class Method:
    """One method of a service: ``unary`` or ``stream`` (bidirectional) handler, its message
    types, and whether its requests carry images (they read through the images gate)."""

    name: str
    request_type: type
    response_type: type
    unary: Callable[[Any, int, grpc.aio.ServicerContext], Awaitable[Any]] | None = None
    stream: Callable[[AsyncIterator[Received], grpc.aio.ServicerContext], AsyncIterator[Any]] | None = None
    images: bool = False


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "not a valid protobuf encoding" if "Error parsing message" in text else quoted(text)


class Methods:
    """Registers methods on a grpc.aio server (see the module docstring)."""

    def __init__(self, gates: Gates, lifecycle: Lifecycle, observe: RequestObserver | None = None,
                 on_malformed: MalformedObserver | None = None,
                 requests: Requests | None = None) -> None:
        self.gates = gates
        self.lifecycle = lifecycle
        self.observe = observe
        self.on_malformed = on_malformed
        self.requests = requests
        self._warn = RateLimitedLog(log, logging.WARNING)

    # -- parsing --------------------------------------------------------------------------

    def _deserializer(self, method: str, parse: Callable[[bytes], Any],
                      type_name: str) -> Callable[[bytes], Received]:
        def deserialize(data: bytes) -> Received:
            try:
                return Received(parse(data), len(data))
            except Exception as exc:  # DecodeError, UnicodeDecodeError, ...
                reason = f"malformed {type_name} message: {_reason(exc)}"
                if self.on_malformed is not None:
                    self.on_malformed(method)
                self._warn.log("%s: %s (%d bytes)", method, reason, len(data))
                return Received(None, len(data), reason)

        return deserialize

    @staticmethod
    async def _read_one(gate: ReceiveGate, context: grpc.aio.ServicerContext) -> Received:
        received = await gate.read(context)
        if received is grpc.aio.EOF:
            raise InvalidInputError("no request message")
        if received.malformed:
            raise InvalidInputError(received.malformed)
        return received

    @staticmethod
    async def _each(gate: ReceiveGate, context: grpc.aio.ServicerContext,
                    track: Track | None = None) -> AsyncIterator[Received]:
        while (received := await gate.read(context)) is not grpc.aio.EOF:
            received.observe = track
            yield received

    def _track(self, service: str, name: str, context: grpc.aio.ServicerContext) -> Track | None:
        """The ``Track`` of a call (of each message of a stream) to ``service/name``."""
        requests = self.requests
        if requests is None:
            return None
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        return lambda: requests.begin(
            "grpc", name, f"{service}/{name}", context.invocation_metadata,
            lambda: peer_address(context.peer()), attributes=attributes)

    # -- errors ---------------------------------------------------------------------------

    async def abort(self, context: grpc.aio.ServicerContext, exc: Exception, method: str,
                    status: tuple[grpc.StatusCode, str] | None = None) -> None:
        """End the call with the status of ``exc`` (raises AbortError); a shutdown refusal
        waits on the lifecycle first. If the call has already ended (its client's deadline
        passed, the client left), no status can be sent: CancelledError, quietly."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        code, message = status or status_of(exc, method)
        if isinstance(exc, UnavailableError) and self.lifecycle.shutting_down:
            await self.lifecycle.refused()
        try:
            await context.abort(code, message, trailing_metadata=trailers_of(exc))
        except grpc.aio.AbortError:
            raise
        except Exception:  # grpc could not send the status: the call is over
            raise asyncio.CancelledError(f"{method}: the call ended before its answer") from None

    def _observed(self, method: str, code: str, started: float,
                  observed: Observed | None = None) -> None:
        seconds = time.perf_counter() - started
        if self.observe is not None:
            self.observe(method, code, seconds)
        if observed is not None:
            observed.end(code, seconds)

    # -- our methods ----------------------------------------------------------------------

    def add(self, server: grpc.aio.Server, service: str, methods: Iterable[Method]) -> None:
        """Register ``service``'s methods on ``server``."""
        handlers = {m.name: self._handler(service, m) for m in methods}
        server.add_registered_method_handlers(service, handlers)

    def _handler(self, service: str, method: Method) -> grpc.RpcMethodHandler:
        gate = self.gates.images if method.images else self.gates.other
        deserialize = self._deserializer(method.name, method.request_type.FromString,
                                         method.request_type.__name__)
        serialize = method.response_type.SerializeToString
        if method.unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(service, method.name, method.unary, gate), deserialize, serialize)
        return grpc.stream_stream_rpc_method_handler(
            self._stream(service, method.name, method.stream, gate), deserialize, serialize)

    def _unary(self, service: str, name: str, handler, gate: ReceiveGate):
        read_one, abort, observed, track = self._read_one, self.abort, self._observed, self._track
        observing = self.requests is not None

        async def unary(_requests, context):
            started = time.perf_counter()
            observation = track(service, name, context)() if observing else None
            try:
                received = await read_one(gate, context)
                response = await handler(received.message, received.size, context)
            except asyncio.CancelledError:
                observed(name, "CANCELLED", started, observation)
                raise
            except Exception as exc:
                status = status_of(exc, name)
                observed(name, status[0].name, started, observation)
                await abort(context, exc, name, status)
            observed(name, "OK", started, observation)
            return response

        return unary

    def _stream(self, service: str, name: str, handler, gate: ReceiveGate):
        lifecycle, each, abort, observed = self.lifecycle, self._each, self.abort, self._observed
        track = self._track

        async def stream(_requests, context):
            if lifecycle.shutting_down:  # refused, held and counted like a unary call
                observed(name, "UNAVAILABLE", time.perf_counter())
                await abort(context, UnavailableError(
                    "server is shutting down", retry_after_ms=SHUTDOWN_RETRY_AFTER_MS), name)
            async for response in handler(each(gate, context, track(service, name, context)),
                                          context):
                yield response

        return stream

    # -- third-party servicers ------------------------------------------------------------

    def adopt(self, server: grpc.aio.Server) -> Adopted:
        """A stand-in for ``server`` to hand to a generated ``add_*_to_server`` function."""
        return Adopted(server, self)

    def rebuilt(self, name: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        """``handler`` reading through the other gate, parsed by us."""
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        message_type = getattr(parse, "__self__", None)
        deserialize = self._deserializer(name, parse, getattr(message_type, "__name__", "request"))
        gate, read_one, each = self.gates.other, self._read_one, self._each
        serialize = handler.response_serializer

        async def one(context):
            try:
                return (await read_one(gate, context)).message
            except InvalidInputError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        async def messages(context):
            async for received in each(gate, context):
                if received.malformed:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, received.malformed)
                yield received.message

        if not handler.request_streaming and not handler.response_streaming:
            behaviour = handler.unary_unary

            async def unary_unary(_requests, context):
                return await behaviour(await one(context), context)

            return grpc.stream_unary_rpc_method_handler(unary_unary, deserialize, serialize)
        if not handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.unary_stream, one), deserialize, serialize)
        if not handler.response_streaming:
            behaviour = handler.stream_unary

            async def stream_unary(_requests, context):
                return await behaviour(messages(context), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, deserialize, serialize)
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, messages), deserialize, serialize)


def _streaming(behaviour, requests):
    """A response-streaming handler fed by ``requests(context)``; ``behaviour`` is an async
    generator or writes with ``context.write()``."""
    if inspect.isasyncgenfunction(behaviour):
        async def generated(_requests, context):
            async for response in behaviour(await _awaited(requests(context)), context):
                yield response

        return generated

    async def writes(_requests, context):
        return await behaviour(await _awaited(requests(context)), context)

    return writes


async def _awaited(value):
    return await value if inspect.isawaitable(value) else value


class _AdoptedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, methods: Methods) -> None:
        self.inner, self.methods = inner, methods
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        handler = self._cache.get(method)
        if handler is None:
            found = self.inner.service(handler_call_details)
            if found is None:  # not ours: nothing cached for a client's made-up name
                return None
            handler = self._cache[method] = self.methods.rebuilt(method.rsplit("/", 1)[-1], found)
        return handler


class Adopted:
    """What a generated ``add_*_to_server`` function calls on the server, rebuilding each
    handler it registers (``Methods.rebuilt``)."""

    def __init__(self, server: grpc.aio.Server, methods: Methods) -> None:
        self._server, self._methods = server, methods

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_AdoptedGeneric(h, self._methods) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._methods.rebuilt(name, h) for name, h in handlers.items()})
