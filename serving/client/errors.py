"""The one exception type of the client library.

Every failure a client call can meet (a gRPC status from the server or the channel, a TLS
file that cannot be read, an image that cannot be read or converted locally) surfaces as
:class:`ClientError`, carrying the gRPC status code and the server's (or our) message.
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """A failed client call.

    Attributes:
        code: the ``grpc.StatusCode`` (local input problems use INVALID_ARGUMENT, a local
            file or certificate that cannot be read uses FAILED_PRECONDITION).
        message: the server's status details, or the local reason.
        attempts: how many RPC attempts were made (0 when the call never reached gRPC).
        item: optional name of the input the error belongs to (a path, an index).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        attempts: int = 0,
        item: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.attempts = attempts
        self.item = item
        super().__init__(f"{code.name}: {message}")

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``"UNAVAILABLE"``."""
        return self.code.name

    @property
    def retryable(self) -> bool:
        """Whether the client's retry policy retries this code."""
        return self.code in RETRYABLE_CODES

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, attempts: int = 1) -> "ClientError":
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        if not isinstance(code, grpc.StatusCode):
            code = grpc.StatusCode.UNKNOWN
        return cls(code, details or code.name, attempts=attempts)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code.name, "message": self.message}


RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""Only these codes are retried: the request was not processed, or the server asked us to
back off. Anything else (a bad image, a passed deadline, an internal error) is final."""
