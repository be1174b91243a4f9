"""How a client reaches its server, whatever the transport: ``connect(wait)``'s schedule of
tries, and when ``wait_until_serving`` stops trying."""

from __future__ import annotations

import time
from typing import Protocol

import grpc

from .connection import RetryPolicy, unreachable
from .errors import ClientError, UnreachableError


class Reaching(Protocol):
    """What the schedule needs of a client (gRPC or HTTP)."""

    address: str
    timeout: float
    retry: RetryPolicy


class ConnectTries:
    """The schedule of ``connect(wait)``: one try when ``wait`` is 0, else tries until one
    reaches the server or ``wait`` seconds have passed, paused at the retry policy's pace
    (``initial_backoff_s``, times ``multiplier``, at most ``max_backoff_s``)."""

    def __init__(self, client: Reaching, wait: float) -> None:
        self.client = client
        self.wait = wait
        self.deadline = time.monotonic() + wait
        self.pause = client.retry.initial_backoff_s
        self.last_timeout = client.timeout

    def timeout(self) -> float:
        """The deadline of the next try: the client's timeout, within what is left of ``wait``."""
        if self.wait > 0:
            self.last_timeout = max(0.05, min(self.client.timeout, self.deadline - time.monotonic()))
        return self.last_timeout

    def after(self, error: ClientError) -> float | None:
        """After a try that failed with ``error``: None when the server answered all the same
        (any status other than UNAVAILABLE or DEADLINE_EXCEEDED comes from a server); else
        the pause before the next try, or raise UnreachableError when time is up."""
        if error.code not in _TRANSIENT:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise unreachable(self.client.address, error, self.last_timeout)
        pause, retry = self.pause, self.client.retry
        self.pause = min(retry.max_backoff_s, pause * retry.multiplier)
        return min(pause, left)

    def not_ready(self) -> UnreachableError:
        """The error when a server answered the probe but the client's own channel did not
        connect within the client's timeout (the time connect() gives it: a channel that
        failed before reconnects at the retry policy's pace, within ``max_backoff_s``)."""
        return UnreachableError(f"cannot reach {self.client.address}: a server answered, but this "
                                f"client's channel did not connect within {self.client.timeout:g} s")


def stop_waiting(error: ClientError | None, deadline: float, timeout: float) -> None:
    """wait_until_serving's check after a try that was not SERVING (``error``: why, if the
    call failed): raise unless it is worth trying again before ``deadline``."""
    late = time.monotonic() >= deadline
    if error is not None and (late or error.code not in _TRANSIENT):
        raise error
    if late:
        raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"not SERVING after {timeout} s")


_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
