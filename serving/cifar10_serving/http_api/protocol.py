"""The HTTP/1.1 connection: uvicorn's httptools protocol, with what a client can provoke
below the application answered and logged the way the rest of the server does it.

uvicorn answers bytes that do not parse as an HTTP/1.1 request with a plain-text 400, and
logs a WARNING for each of those and for each upgrade it does not take (WebSocket, h2c);
python-multipart logs one for each malformed multipart body. Here the answer is the JSON
error form of every other error answer (``{"error": ...}``, ``Connection: close``), and those
warnings are rate-limited like the gRPC door's malformed messages (``RateLimitedLog``): a
client cannot flood the log.
"""

from __future__ import annotations

import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cifar10_serving.process.logs import RateLimitedLog

log = logging.getLogger("cifar10_serving.server")

MALFORMED = json.dumps({"error": "malformed HTTP/1.1 request"}).encode()
_MALFORMED_ANSWER = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                     % (len(MALFORMED), MALFORMED))


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's protocol; a request that does not parse gets the JSON 400."""

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_MALFORMED_ANSWER)
        self.transport.close()


CLIENT_WARNING_LOGGERS = ("uvicorn.error", "python_multipart.multipart")
"""Loggers whose warnings are about what a client sent (a filter applies to the records of
the logger it is on, not of its children: hence the full names)."""


class _ClientWarnings(logging.Filter):
    """Warnings pass through one ``RateLimitedLog`` instead; other records unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self._limited = RateLimitedLog(log)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        self._limited.log("HTTP: %s", record.getMessage())
        return False


_CLIENT_WARNINGS = _ClientWarnings()


def rate_limit_client_warnings() -> None:
    """Install the filter on those loggers (idempotent)."""
    for name in CLIENT_WARNING_LOGGERS:
        logging.getLogger(name).addFilter(_CLIENT_WARNINGS)
