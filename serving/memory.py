"""The process's memory allocator, set for a server whose big buffers come and go.

glibc serves a large allocation (a 3 MiB request, a 48 MB decoded image) from its heap
once a freed one has raised its dynamic mmap threshold, and such heap memory is rarely
returned: after a burst of big requests RSS stays near its peak. ``bound_allocator()``
fixes the threshold at 128 KiB, so every large buffer is its own mapping, returned to the
system when freed; and ``Trimmer`` hands the heap's free pages back (``malloc_trim``) once
the server has been idle a moment after work. No-op where glibc is absent.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
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
        self.trims = 0
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
                self.trims += 1
                last = now
