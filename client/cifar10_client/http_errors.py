"""What goes wrong over HTTP, as the one ``ClientError``: an error answer (its status becomes
the matching gRPC code, its JSON ``{"error": ...}`` the message) or a connection that fails
(refused, a name that does not resolve, TLS, a port that does not speak HTTP/1.1), worded
as the gRPC client words it."""

from __future__ import annotations

import re
import socket
import ssl

import grpc
import httpx

from .errors import ClientError, UnreachableError

# The codes gRPC gives the same conditions (an unknown model is NOT_FOUND here: the HTTP
# door says 404; the size limit 413 is a message too large: RESOURCE_EXHAUSTED).
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# How the server words a body over its limit (cifar10_serving's HTTP door).
_TOO_LARGE = re.compile(r"request body of (\d+) bytes or more is over the limit of (\d+) bytes")
_SSL_REASON = re.compile(r"\[SSL: ([A-Z_]+)\]\s*([^(]*)")


def code_of(status: int) -> grpc.StatusCode:
    """The gRPC code of an HTTP error status (other 4xx: INVALID_ARGUMENT; other 5xx: INTERNAL)."""
    if status in _CODES:
        return _CODES[status]
    if 400 <= status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL if status >= 500 else grpc.StatusCode.UNKNOWN


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds; an HTTP date is not used), else None."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def message_of(response: httpx.Response) -> str:
    """The server's JSON ``error`` message, else the status line (a proxy's own page)."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str) and document["error"]:
        return document["error"]
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def error_of(response: httpx.Response) -> ClientError:
    """The ClientError for an error answer (4xx or 5xx)."""
    status, message = response.status_code, message_of(response)
    too_large = None
    if status == 413:
        match = _TOO_LARGE.search(message)
        if match:
            too_large = (int(match.group(1)), int(match.group(2)))
            message = f"message too large: {too_large[0]} bytes, limit {too_large[1]}"
    return ClientError(code_of(status), message, attempts=1, too_large=too_large, http_status=status,
                       retry_after_s=retry_after_s(response))


def transport_error(address: str, exc: httpx.TransportError, timeout: float) -> ClientError:
    """The ClientError for a request that got no answer: UnreachableError, in one line naming
    the address and what happened, when no connection was made (refused, a name that does
    not resolve, TLS, a port that does not speak HTTP/1.1); UNAVAILABLE when a connection
    was lost mid-call; DEADLINE_EXCEEDED when the call's time ran out."""
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return UnreachableError(f"cannot reach {address}: no answer within {timeout:g} s")
        return ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:g} s", attempts=1)
    cause = _os_error(exc)
    if isinstance(cause, socket.gaierror):
        host = httpx.URL(address).host
        return UnreachableError(f"cannot resolve host {host}: {cause.strerror or cause}")
    if isinstance(cause, ConnectionRefusedError):
        return UnreachableError(f"cannot reach {address}: connection refused")
    if isinstance(cause, ssl.SSLError):
        return UnreachableError(f"cannot reach {address}: {_tls_failure(cause)}")
    if isinstance(exc, httpx.RemoteProtocolError):
        https = address.lower().startswith("https:")
        if "illegal request line" in str(exc) or "illegal status line" in str(exc):
            return UnreachableError(f"cannot reach {address}: the server does not answer HTTP/1.1 "
                                    f"(a gRPC port? give host:port, without {'https' if https else 'http'}://)")
        if "without sending a response" in str(exc):
            hint = "" if https else " (does it use TLS? try https://)"
            return UnreachableError(f"cannot reach {address}: the server closed the connection "
                                    f"without an answer{hint}")
    if isinstance(exc, httpx.ConnectError):
        return UnreachableError(f"cannot reach {address}: {exc}")
    return ClientError(grpc.StatusCode.UNAVAILABLE, f"connection to {address} lost: {exc or type(exc).__name__}",
                       attempts=1)


def _os_error(exc: BaseException) -> OSError | None:
    """The socket's own error under httpx's and httpcore's wrappers, if there is one: the
    innermost (asyncio's "All connection attempts failed" holds the last attempt's)."""
    found, seen = None, exc
    while seen is not None:
        if isinstance(seen, OSError):
            found = seen
        seen = seen.__cause__ or seen.__context__
    return found


def _tls_failure(error: ssl.SSLError) -> str:
    """``TLS handshake failed (REASON): what it means``, as the gRPC client says it."""
    match = _SSL_REASON.search(str(error))
    if not match:
        return f"TLS handshake failed: {error}"
    reason, detail = match.group(1), match.group(2).strip()
    if reason == "WRONG_VERSION_NUMBER":
        detail = "the server does not seem to use TLS"
    return f"TLS handshake failed ({reason})" + (f": {detail}" if detail else "")
