"""The one place where exceptions become HTTP answers.

Every error answer is JSON ``{"error": "<what is wrong>"}`` (the Open Inference Protocol's
REST error form), with a status from the exception's class:

* ``UnknownModelError`` 404; any other ``InvalidInputError`` 400;
* ``OverloadedError`` (in-flight limits, a full queue) 429, ``UnavailableError`` (starting,
  shutting down) 503, both with ``Retry-After`` when the server has a hint;
* ``DeadlineExceededError`` 504; ``ModelLoadError`` 503;
* the client left before its request was read (``ClientDisconnect``): 499, nginx's code for
  it, only for the metrics (no one reads the answer), and nothing logged;
* ``HttpError``: what the door itself refuses (a body too large 413, malformed JSON 400, an
  unsupported media type 415), with its own status;
* anything else is a bug on our side: 500 with a generic message, the traceback goes to the
  log, and the server keeps serving. No traceback ever reaches a client.
"""

from __future__ import annotations

import logging
import math

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from cifar10_core.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelLoadError,
    OverloadedError,
    ServingError,
    UnavailableError,
    UnknownModelError,
)

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error (details in the server log)"
CLIENT_CLOSED = 499


class HttpError(Exception):
    """A request the HTTP door refuses before the data plane sees it."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def status_of(exc: BaseException, method: str = "") -> tuple[int, str, dict[str, str]]:
    """(HTTP status, message, extra headers) for an exception; logs unexpected ones with a
    traceback."""
    if isinstance(exc, HttpError):
        return exc.status, str(exc), exc.headers
    if isinstance(exc, UnknownModelError):
        return 404, str(exc), {}
    if isinstance(exc, InvalidInputError):
        return 400, str(exc), {}
    if isinstance(exc, OverloadedError):
        return 429, str(exc), _retry_after(exc.retry_after_ms)
    if isinstance(exc, UnavailableError):
        return 503, str(exc), _retry_after(exc.retry_after_ms)
    if isinstance(exc, DeadlineExceededError):
        return 504, str(exc), {}
    if isinstance(exc, ModelLoadError):
        return 503, str(exc), {}
    if isinstance(exc, ClientDisconnect):
        return CLIENT_CLOSED, "the client closed the connection before its request was read", {}
    if isinstance(exc, ServingError):
        log.error("%s failed: %s", method or "request", exc)
        return 500, INTERNAL_MESSAGE, {}
    log.error("%s failed unexpectedly", method or "request", exc_info=exc)
    return 500, INTERNAL_MESSAGE, {}


def _retry_after(retry_after_ms: int | None) -> dict[str, str]:
    """``Retry-After`` in whole seconds (HTTP has no finer unit: at least 1); none without a hint."""
    if retry_after_ms is None or retry_after_ms < 0:
        return {}
    return {"Retry-After": str(max(1, math.ceil(retry_after_ms / 1000)))}


def error_response(exc: BaseException, method: str = "") -> JSONResponse:
    status, message, headers = status_of(exc, method)
    return JSONResponse({"error": message}, status_code=status, headers=headers)
