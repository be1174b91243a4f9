"""Channel settings shared by the sync and asyncio clients: address, TLS, retry policy."""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from .errors import RETRYABLE_CODES, ClientError

DEFAULT_ADDRESS = "localhost:8500"
ADDRESS_ENV = "CIFAR10_ADDRESS"
DEFAULT_TIMEOUT_S = 10.0

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Our own retry loop below is the only one: no hidden transparent retries policy.
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


def default_address() -> str:
    """``$CIFAR10_ADDRESS``, else ``localhost:8500``."""
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


@dataclass(frozen=True)
class TLSConfig:
    """TLS settings. ``ca_cert`` None means the system's root certificates.

    ``client_cert`` + ``client_key`` enable mutual TLS. ``server_name`` overrides the name
    checked against the server's certificate (e.g. when connecting by IP address).
    """

    ca_cert: str | os.PathLike | None = None
    client_cert: str | os.PathLike | None = None
    client_key: str | os.PathLike | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.client_cert is None) != (self.client_key is None):
            raise ClientError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a client certificate needs its key and a key needs its certificate",
            )
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def options(self) -> tuple[tuple[str, str], ...]:
        if self.server_name:
            return (("grpc.ssl_target_name_override", self.server_name),)
        return ()


def _read(path: str | os.PathLike | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientError(
            grpc.StatusCode.FAILED_PRECONDITION, f"cannot read {os.fspath(path)}: {exc.strerror or exc}"
        ) from exc


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, on UNAVAILABLE and RESOURCE_EXHAUSTED only.

    Bounded in count (``max_attempts``, the first try included) and in time: every retry
    happens within the call's deadline (``timeout``), and each attempt gets only the time
    that is left. Sleep before retry n (1-based) is uniform in
    ``[0, min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))]``.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError(f"invalid retry policy: {self}")

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return (rng or random).uniform(0.0, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def make_options(tls: TLSConfig | None, extra=()) -> list[tuple[str, object]]:
    return [*CHANNEL_OPTIONS, *(tls.options() if tls else ()), *extra]


class _Attempts:
    """The retry loop's bookkeeping, shared by the sync and async clients."""

    def __init__(self, policy: RetryPolicy, timeout: float | None) -> None:
        self.policy = policy
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.count = 0

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def next_timeout(self) -> float | None:
        self.count += 1
        return self.remaining()

    def on_error(self, error: grpc.RpcError) -> tuple[ClientError, float | None]:
        """The ClientError for this failure and how long to sleep before retrying (None: stop)."""
        failure = ClientError.from_rpc_error(error, attempts=self.count)
        if failure.code not in RETRYABLE_CODES or self.count >= self.policy.max_attempts:
            return failure, None
        sleep = self.policy.backoff(self.count)
        remaining = self.remaining()
        if remaining is not None and sleep >= remaining:
            return failure, None
        return failure, sleep


def call_with_retries(fn, request, policy: RetryPolicy, timeout: float | None, metadata=None):
    """Run a unary RPC ``fn(request, timeout=..)`` with the retry policy; raise ClientError."""
    attempts = _Attempts(policy, timeout)
    while True:
        try:
            return fn(request, timeout=attempts.next_timeout(), metadata=metadata)
        except grpc.RpcError as error:
            failure, sleep = attempts.on_error(error)
            if sleep is None:
                raise failure from None
            time.sleep(sleep)


async def call_with_retries_async(fn, request, policy: RetryPolicy, timeout: float | None, metadata=None):
    """The asyncio twin of :func:`call_with_retries`."""
    attempts = _Attempts(policy, timeout)
    while True:
        try:
            return await fn(request, timeout=attempts.next_timeout(), metadata=metadata)
        except grpc.RpcError as error:
            failure, sleep = attempts.on_error(error)
            if sleep is None:
                raise failure from None
            await asyncio.sleep(sleep)
