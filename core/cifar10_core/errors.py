"""One exception hierarchy for the serving core.

Each class names the gRPC status code it becomes; the transport layer
(``cifar10_serving.grpc_api.status``) does the mapping in one place, so the core never imports grpc.
"""

from __future__ import annotations

QUOTE_LIMIT = 64
"""Characters of a client-supplied string that an error message quotes."""


def quoted(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of a client-supplied value, cut to a short prefix (an error message that
    echoes a 64 KiB name would pass gRPC clients' metadata limits and arrive as
    RESOURCE_EXHAUSTED): ``'abc...' (70000 chars)``."""
    if not isinstance(text, str):
        text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} chars)"


class ServingError(Exception):
    """Base of every error the serving core raises on purpose."""

    status_name = "INTERNAL"


class InvalidInputError(ServingError):
    """The client sent something we cannot classify (bad image, shape, dtype, count...)."""

    status_name = "INVALID_ARGUMENT"


class ImageDecodeError(InvalidInputError):
    """Bytes that Pillow cannot decode, or a truncated image."""


class ImageTooLargeError(InvalidInputError):
    """An image whose pixel count exceeds the limit (decompression-bomb guard)."""


class UnknownModelError(ServingError):
    """A request named a model name or version this server does not serve."""

    status_name = "NOT_FOUND"


class OverloadedError(ServingError):
    """The request queue is full: back off and retry.

    ``retry_after_ms`` is the server's hint, sent as gRPC's ``grpc-retry-pushback-ms``
    trailer (the client's retry policy waits that long); None: retrying cannot help.
    """

    status_name = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_ms: int | None = 100) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class UnavailableError(ServingError):
    """The server is starting up or shutting down (``retry_after_ms``: as for
    OverloadedError; None sends no hint)."""

    status_name = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExceededError(ServingError):
    """The caller's deadline passed before the request was computed."""

    status_name = "DEADLINE_EXCEEDED"


class NonFiniteOutputError(ServingError):
    """The model produced NaN or infinity; never returned to a client (INTERNAL)."""


class ModelLoadError(ServingError):
    """A model file is missing, unreadable or breaks the model contract."""

    status_name = "FAILED_PRECONDITION"
