"""Admission control: a bound on the requests and bytes in flight, taken before any decoding.

The data plane asks for a ``Ticket`` (``Admission.admit(nbytes)``) as soon as a request has
named a model it serves, before its images are decoded or queued, and gives it back when
the request is answered. Past ``max_requests`` requests or ``max_bytes`` request bytes in flight the request
is refused at once with ``OverloadedError`` (RESOURCE_EXHAUSTED with a pushback hint), so the
memory a flood can hold is bounded whatever the clients do. One request alone is always
admitted, however large (``max_message_bytes`` bounds it). Transport-free; used on the
server's event loop (not thread-safe by design: no lock on the hot path).
"""

from __future__ import annotations

from cifar10_core.errors import OverloadedError, UnavailableError

RETRY_AFTER_MS = 50
"""Pushback hint for a refused request: the typical time for the work in flight to drain."""

SHUTDOWN_RETRY_AFTER_MS = 250
"""Pushback for a request refused at shutdown: by then the server is gone and the client's
channel retries elsewhere, instead of hammering a closing server."""


class Ticket:
    """One admitted request; ``release()`` (or leaving the ``with``) when it is answered."""

    __slots__ = ("_admission", "nbytes")

    def __init__(self, admission: Admission, nbytes: int) -> None:
        self._admission, self.nbytes = admission, nbytes

    def release(self) -> None:
        admission = self._admission
        if admission is not None:
            self._admission = None
            admission.requests -= 1
            admission.bytes -= self.nbytes

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Admission:
    """Counts requests and request bytes in flight; refuses past either limit."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self.seen = 0  # requests that asked to be admitted, since start
        self.closed = False

    def admit(self, nbytes: int) -> Ticket:
        """A ticket for a request of ``nbytes``; OverloadedError past a limit,
        UnavailableError once ``close()`` was called (shutting down)."""
        self.seen += 1
        if self.closed:
            raise UnavailableError("server is shutting down", retry_after_ms=SHUTDOWN_RETRY_AFTER_MS)
        if self.requests and (self.requests >= self.max_requests
                              or self.bytes + nbytes > self.max_bytes):
            raise OverloadedError(
                f"server busy: {self.requests} requests ({self.bytes} bytes) in flight, at most "
                f"{self.max_requests} ({self.max_bytes} bytes); retry later",
                retry_after_ms=RETRY_AFTER_MS,
            )
        self.requests += 1
        self.bytes += nbytes
        return Ticket(self, nbytes)

    def close(self) -> None:
        """Refuse every new request (UNAVAILABLE); those admitted finish."""
        self.closed = True
