"""Request messages read a few at a time: a bound on the memory of messages not yet admitted.

grpc reads a unary call's whole message before its handler runs, for every call it has
received, all at once: a few clients sending large messages would hold gigabytes before
admission control (``cifar10_serving.dataplane.admission``) saw any of them
(docs/reliability.md). So every method is registered with grpc as one that reads its own
messages (``cifar10_serving.grpc_api.methods``), and each read first takes a slot of a
``ReceiveGate``: at most ``slots`` messages
are being read at once, the other calls wait their turn (first come, first served) holding
only what HTTP/2 flow control let in before the read began (``grpc.http2.bdp_probe`` off:
the 64 KiB stream window, not a window grown to the link's bandwidth). Once a message is
read and parsed it is admitted or refused by the time its slot goes to the next call.

A small message is read in one step with the call (its bytes came with the headers), so on
the hot path taking a slot is a counter; a call waits only while ``slots`` others are
receiving. The methods that carry images share one gate, every other method (health,
metadata, readiness, reflection) another: a health check never waits behind an upload.
Transport-free apart from ``context.read()``; used on the server's event loop only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol


class Readable(Protocol):
    """What a gate reads from: a grpc.aio ``ServicerContext`` of a request-streaming method."""

    async def read(self) -> Any: ...


class ReceiveGate:
    """At most ``slots`` messages read at once; the rest wait in arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a receive gate needs at least one slot")
        self.slots = slots
        self.reading = 0
        self.waits = 0  # reads that had to wait for a slot, since start
        self._waiting: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now (cancelled ones may linger until their turn)."""
        return sum(not future.done() for future in self._waiting)

    async def read(self, context: Readable) -> Any:
        """The next message of the call (``grpc.aio.EOF`` if the client sent no more)."""
        if self.reading < self.slots and not self._waiting:
            self.reading += 1
        else:
            await self._wait()
        try:
            return await context.read()
        finally:
            self._release()

    async def _wait(self) -> None:
        self.waits += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        try:
            await future  # resolved by _release: the slot is handed over, ``reading`` unchanged
        except BaseException:
            if future.done() and not future.cancelled():  # handed a slot as it was cancelled
                self._release()
            raise

    def _release(self) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():  # skip calls cancelled while they waited
                future.set_result(None)
                return
        self.reading -= 1


class Gates:
    """The gate of the methods that carry images, and the one of every other method."""

    def __init__(self, image_slots: int = 2, other_slots: int = 1) -> None:
        self.images = ReceiveGate(image_slots)
        self.other = ReceiveGate(other_slots)
