"""The one exception type of the client library.

Every failure a client call can meet (a gRPC status from the server or the channel, an HTTP
error status or a failed connection, a TLS file that cannot be read, an image that cannot be
read or converted locally) surfaces as :class:`ClientError`, carrying a gRPC status code
(an HTTP status becomes the matching one: ``cifar10_client.http_errors``) and the server's
(or our) message, whichever transport the client uses.
"""

from __future__ import annotations

import re

import grpc

# How gRPC words a message over a size limit (the server's receive limit, or ours to send).
_TOO_LARGE = re.compile(r"(?:Received|Sent) message larger than max \((\d+) vs\. (\d+)\)")


class ClientError(Exception):
    """A failed client call.

    Attributes:
        code: the ``grpc.StatusCode`` (local input problems use INVALID_ARGUMENT, a local
            file or certificate that cannot be read uses FAILED_PRECONDITION).
        message: the server's status details, or the local reason.
        attempts: 1 when the call reached gRPC (gRPC's own retries inside it are not
            counted), 0 when it never did.
        item: optional name of the input the error belongs to (a path, an index).
        too_large: ``(size, limit)`` in bytes when the request (or answer) was over a gRPC
            message size limit (HTTP: the server's body limit, 413): RESOURCE_EXHAUSTED that
            no retry can cure.
        http_status: the HTTP status of the server's answer (HTTP clients), else None.
        retry_after_s: the server's ``Retry-After`` in seconds (HTTP 429 and 503), else None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        attempts: int = 0,
        item: str | None = None,
        too_large: tuple[int, int] | None = None,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.attempts = attempts
        self.item = item
        self.too_large = too_large
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        super().__init__(f"{code.name}: {message}")

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``"UNAVAILABLE"``."""
        return self.code.name

    @property
    def local(self) -> bool:
        """Whether the problem was found here, before any call (a file that cannot be read,
        an image that cannot be converted): no server or channel gave this status."""
        return self.attempts == 0

    @property
    def retryable(self) -> bool:
        """Whether the client's retry policy retries this failure."""
        return self.code in RETRYABLE_CODES and self.too_large is None

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, attempts: int = 1) -> "ClientError":
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        match = _TOO_LARGE.search(details or "") if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
        if match:
            size, limit = int(match.group(1)), int(match.group(2))
            return cls(code, f"message too large: {size} bytes, limit {limit}", attempts=attempts,
                       too_large=(size, limit))
        return cls(code, details or code.name, attempts=attempts)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.name, "message": self.message}


class UnreachableError(ClientError):
    """No server could be reached at the address (UNAVAILABLE): the message says which
    address and what happened (``cannot reach localhost:8599: connection refused``,
    ``cannot resolve host nosuch.invalid``), and reads on its own, without the code."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, message, attempts=1)


RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""Only these codes are retried: the request was not processed, or the server asked us to
back off. Anything else (a bad image, a passed deadline, an internal error) is final, and so
is a message over a size limit (see RetryPolicy)."""
