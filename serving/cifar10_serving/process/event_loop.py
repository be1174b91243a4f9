"""The server's event loop: uvloop where installed (the serve extra has it), else asyncio's.

grpc.aio runs the Python side of every call on one event loop thread, and with 1-image calls
that thread is the server's bottleneck: uvloop (libuv, in C) costs less per call
(docs/benchmarks.md). ``--event-loop asyncio`` keeps the standard one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def runner(choice: str) -> tuple[str, Callable[[Coroutine[Any, Any, Any]], Any]]:
    """(name, run) for ``--event-loop`` ``choice`` (auto, uvloop or asyncio): ``run(coro)``
    runs a coroutine on a fresh loop of that kind, like ``asyncio.run``. RuntimeError for
    uvloop asked for and not installed."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise RuntimeError("--event-loop uvloop needs the uvloop package "
                                   "(pip install 'cifar10-serving[serve]')") from None
        else:
            return "uvloop", uvloop.run
    return "asyncio", asyncio.run
