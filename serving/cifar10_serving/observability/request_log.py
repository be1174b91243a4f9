"""The request log: one JSON line per sampled request, through Python's logging.

``--request-log-rate`` (0 to 1) of the requests, drawn at random as each arrives, are
logged by the logger ``cifar10_serving.requests`` (not passed on to the root logger's
handlers) to stderr or ``--request-log-file`` (appended to). The line is written on a
thread of its own (``logging.handlers.QueueListener``): the event loop only formats it. The
fields are in ``cifar10_serving.observability.requests`` (``Observed.end``); never an
image's bytes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import random
import sys
import time
from typing import Any

LOGGER = "cifar10_serving.requests"


class RequestLog:
    """Draws the requests to log and writes their lines (``write``); ``close()`` at the end."""

    def __init__(self, rate: float, path: str | None = None) -> None:
        self.rate = rate
        self.logger = logging.getLogger(LOGGER)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # the line is the whole record: no level, no prefix
        target = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
        target.setFormatter(logging.Formatter("%(message)s"))
        lines: queue.SimpleQueue = queue.SimpleQueue()
        self._handler = logging.handlers.QueueHandler(lines)
        # Only this log's lines: another server in the process has a handler of its own.
        self._handler.addFilter(lambda record: getattr(record, "request_log", None) is self)
        self._listener = logging.handlers.QueueListener(lines, target)
        self._listener.start()
        self.logger.addHandler(self._handler)

    def sampled(self) -> bool:
        """Log the request that has just arrived?"""
        return self.rate >= 1.0 or random.random() < self.rate

    def write(self, entry: dict[str, Any]) -> None:
        """One line: ``entry`` as JSON, its ``time`` (seconds since the epoch) in ISO 8601 UTC."""
        entry["time"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(entry["time"]))
                         + f".{int(entry['time'] % 1 * 1000):03d}Z")
        self.logger.info(json.dumps(entry), extra={"request_log": self})

    def close(self) -> None:
        """Write the lines still queued, then stop."""
        self.logger.removeHandler(self._handler)
        self._listener.stop()
        for handler in self._listener.handlers:
            handler.close()
