"""The server's shutdown, owned in one place for every door, unary calls and streams alike.

``Lifecycle.shutdown(grace)``, in order:

1. the data plane refuses new requests (UNAVAILABLE with a pushback hint), every door says
   it is not serving (gRPC health NOT_SERVING), and ``stopping`` is set: streams stop
   reading and end UNAVAILABLE once they have answered what they read;
2. every admitted request is answered while the ports are open (the drain);
3. from then on a refusal is held, not answered (``refused()``): a client's next call waits
   in our hands instead of racing the close (grpc's stop cancels the calls it has received
   and not yet handed over). Once no request or stream was refused for ``quiet_s`` (counted
   from the end of the drain at the earliest: clients whose calls were all in flight until
   then send their next call the moment they are answered), the doors close (GOAWAY), and
   only then are the held refusals answered: a client's retry meets a closed port;
4. the data plane stops (queued work finished, threads ended).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cifar10_serving.dataplane.plane import DataPlane

log = logging.getLogger("cifar10_serving.server")

QUIET_S = 0.1
"""At shutdown, the doors close once no request was refused for this long."""


@dataclass(frozen=True)
class Door:
    """What shutdown asks of a door: ``not_serving()`` when it begins (health checks fail),
    ``close(grace)`` to close the port once clients have stopped sending."""

    not_serving: Callable[[], Awaitable[None]]
    close: Callable[[float], Awaitable[None]]


class Lifecycle:
    """Serving until ``shutdown``; then refuse, drain, wait for quiet, close the doors, stop."""

    def __init__(self, plane: DataPlane, quiet_s: float = QUIET_S) -> None:
        self.plane = plane
        self.quiet_s = quiet_s
        self.doors: list[Door] = []
        self.stopping = asyncio.Event()  # set when shutdown begins: streams stop reading
        self.stopped = asyncio.Event()
        self._last_refusal = 0.0
        self._held: asyncio.Event | None = None  # set once the doors are closing
        self._task: asyncio.Task | None = None

    @property
    def shutting_down(self) -> bool:
        return self.stopping.is_set()

    async def refused(self) -> None:
        """A request or stream was refused because the server is shutting down: the quiet
        time starts again, and once the doors are about to close the refusal waits for that."""
        self._last_refusal = time.monotonic()
        if self._held is not None:
            await self._held.wait()

    def shutdown(self, grace: float) -> asyncio.Task:
        """Begin the shutdown (idempotent); await the task for its end."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._shutdown(grace))
        return self._task

    async def _shutdown(self, grace: float) -> None:
        started = time.monotonic()
        log.info("shutting down: health NOT_SERVING, refusing new requests, %.1f s grace", grace)
        self.plane.close()
        self.stopping.set()
        for door in self.doors:
            await door.not_serving()
        inflight = self.plane.inflight
        finished = await self.plane.drained(grace)
        log.info("%d request(s) in flight at shutdown: %s", inflight,
                 "all finished" if finished else f"{self.plane.inflight} still running")
        self._held = asyncio.Event()
        drained = time.monotonic()
        left = max(0.0, grace - min(1.0, grace / 2) - (drained - started))
        if not await self._quiet(drained, left) and left > self.quiet_s:
            log.warning("clients kept sending during the %.1f s grace; closing the port", grace)
        remaining = max(0.0, grace - (time.monotonic() - started))
        closing = [asyncio.ensure_future(door.close(remaining)) for door in self.doors]
        await asyncio.sleep(0)  # the close has begun: the port is closed, GOAWAY sent
        self._held.set()
        await asyncio.gather(*closing)
        await self.plane.stop(timeout=max(1.0, grace - (time.monotonic() - started)))
        log.info("stopped after %.2f s", time.monotonic() - started)
        self.stopped.set()

    async def _quiet(self, since: float, timeout: float) -> bool:
        """Wait (polling) until no refusal for ``quiet_s``, counted from ``since`` at the
        earliest, at most ``timeout``; True if so."""
        end = since + timeout
        while time.monotonic() - max(self._last_refusal, since) < self.quiet_s:
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(0.005)
        return True
