"""Logging set-up for ``cifar10-serve``: text or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once: text or JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class RateLimitedLog:
    """At most one log line per ``interval_s``, with the count of the lines held back (for
    what clients can trigger at will: a flood must not fill the disk)."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING,
                 interval_s: float = 10.0) -> None:
        self.logger, self.level, self.interval_s = logger, level, interval_s
        self._next = 0.0
        self.suppressed = 0

    def log(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + self.interval_s
        if self.suppressed:
            msg += " (and %d more like it in the last %.0f s)"
            args = (*args, self.suppressed, self.interval_s)
            self.suppressed = 0
        self.logger.log(self.level, msg, *args)
