"""The request log: one JSON line per sampled request, through Python's logging.

``--request-log-rate`` (0 to 1) of the requests, drawn at random as each arrives, are
logged by the logger ``cifar10_serving.requests`` (not passed on to the root logger's
handlers) to stderr or ``--request-log-file`` (appended to). The fields are in
``cifar10_serving.observability.requests`` (``Observed.end``); never an image's bytes.

The lines are written in batches, on the event loop: at most ``FLUSH_S`` after they were
logged, at once past ``BATCH_LINES`` lines. A write per line (a system call that lets the
batcher's threads take the GIL from the event loop each time), or a thread of its own
(woken for each line), cost several times more per line under load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from typing import Any, TextIO

LOGGER = "cifar10_serving.requests"
FLUSH_S = 1.0
BATCH_LINES = 256


class _Batched(logging.Handler):
    """Keeps formatted lines; ``flush()`` writes them to ``stream`` in one write."""

    def __init__(self, stream: TextIO, owned: bool) -> None:
        super().__init__()
        self.stream, self.owned = stream, owned
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if len(self.lines) >= BATCH_LINES:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if self.lines:
                lines, self.lines = self.lines, []
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.owned:
            self.stream.close()
        super().close()


class RequestLog:
    """Draws the requests to log and writes their lines (``write``, on the event loop);
    ``close()`` at the end."""

    def __init__(self, rate: float, path: str | None = None) -> None:
        self.rate = rate
        self.logger = logging.getLogger(LOGGER)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # the line is the whole record: no level, no prefix
        stream = open(path, "a", encoding="utf-8") if path else sys.stderr  # noqa: SIM115
        self._handler = _Batched(stream, owned=bool(path))
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        # Only this log's lines: another server in the process has a handler of its own.
        self._handler.addFilter(lambda record: getattr(record, "request_log", None) is self)
        self.logger.addHandler(self._handler)
        self._flush: asyncio.TimerHandle | None = None

    def sampled(self) -> bool:
        """Log the request that has just arrived?"""
        return self.rate >= 1.0 or random.random() < self.rate

    def write(self, entry: dict[str, Any]) -> None:
        """One line: ``entry`` as JSON, its ``time`` (seconds since the epoch) in ISO 8601 UTC."""
        entry["time"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry["time"]))
                         + f".{int(entry['time'] % 1 * 1000):03d}Z")
        self.logger.info(json.dumps(entry), extra={"request_log": self})
        if self._flush is None and self._handler.lines:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_S, self._flushed)

    def _flushed(self) -> None:
        self._flush = None
        self._handler.flush()

    def close(self) -> None:
        """Write the lines still held, then stop."""
        if self._flush is not None:
            self._flush.cancel()
        self.logger.removeHandler(self._handler)
        self._handler.close()
