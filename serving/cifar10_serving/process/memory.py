"""The process's memory allocator, set for a server whose big buffers come and go.

glibc serves a large allocation (a 3 MiB request, a 48 MB decoded image) from its heap
once a freed one has raised its dynamic mmap threshold, and such heap memory is rarely
returned: after a burst of big requests RSS stays near its peak. ``bound_allocator()``
fixes the threshold at 128 KiB, so every large buffer is its own mapping, returned to the
system when freed; and ``Trimmer`` hands the heap's free pages back (``malloc_trim``) once
the server has been idle a moment after work. No-op where glibc is absent.

``CycleCollector`` frees reference cycles soon after a call ends in error: an error path
leaves a cycle (exception, traceback, the frames, grpc's own call state) that holds the
request's protobuf message, whose payload lives in protobuf's native arena, which Python's
collector does not count: left to the collector's own schedule, a burst of large requests
that failed would keep their payloads alive (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def bound_allocator() -> bool:
    """Fix glibc's mmap threshold (see the module docstring); True if it was set."""
    libc = _libc()
    try:
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except AttributeError:
        ok = False
    log.debug("malloc mmap threshold %s", "fixed at 128 KiB" if ok else "left as it is")
    return ok


class Trimmer:
    """Every ``interval_s``: if requests came since the last look (``seen()`` changed) and
    none is in flight now (``idle()``), ``malloc_trim(0)``: after a burst, the heap's free
    pages go back to the system."""

    def __init__(self, seen: Callable[[], int], idle: Callable[[], bool],
                 interval_s: float = 2.0) -> None:
        self.seen, self.idle, self.interval_s = seen, idle, interval_s
        self._trim = getattr(_libc(), "malloc_trim", None)

    async def run(self) -> None:
        if self._trim is None:
            return
        last = self.seen()
        while True:
            await asyncio.sleep(self.interval_s)
            now = self.seen()
            if now != last and self.idle():
                self._trim(0)
                last = now


class CycleCollector:
    """``note_error()`` after a call ends in error: one ``gc.collect()`` soon after, at most
    one per ``min_interval_s`` (on the event loop). ``freeze()`` once the server is up: what
    exists then lives as long as the server, and a collection only walks what came since
    (a fraction of a full collection over the loaded model).

    ``pause()`` at process start: no collection runs while the process imports and loads
    (it allocates only what lives until exit, and collections during imports lengthen the
    cold start); ``freeze()`` turns collection back on."""

    def __init__(self, min_interval_s: float = 0.05) -> None:
        self.min_interval_s = min_interval_s
        self._scheduled = False
        self._last = 0.0

    @staticmethod
    def pause() -> None:
        gc.disable()

    @staticmethod
    def freeze() -> None:
        gc.freeze()
        gc.enable()

    def note_error(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        delay = max(0.0, self._last + self.min_interval_s - time.monotonic())
        asyncio.get_running_loop().call_later(delay, self._collect)

    def _collect(self) -> None:
        self._scheduled = False
        gc.collect()
        self._last = time.monotonic()
