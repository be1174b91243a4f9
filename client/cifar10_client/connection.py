"""Channel settings shared by the sync and asyncio clients: address(es), TLS, retry policy
and load balancing."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from .errors import RETRYABLE_CODES, ClientError, UnreachableError
from .schemes import url_scheme

DEFAULT_ADDRESS = "localhost:8500"
ADDRESS_ENV = "CIFAR10_ADDRESS"
DEFAULT_TIMEOUT_S = 10.0
MAX_ATTEMPTS_LIMIT = 5  # gRPC caps a retry policy's maxAttempts at 5

CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


# Every channel spreads its calls over all the addresses its target resolves to (gRPC's
# own round_robin policy): several replicas given, or every address of one name. A target
# with one address behaves as under gRPC's default (pick_first).
LOAD_BALANCING_CONFIG = [{"round_robin": {}}]

Addresses = str | Sequence[str]


def default_address() -> str:
    """``$CIFAR10_ADDRESS``, else ``localhost:8500``."""
    return os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def split_addresses(address: Addresses | None) -> list[str]:
    """The addresses given: a string (comma-separated for several) or a sequence of them;
    none means :func:`default_address`. A target with a scheme (``dns:///name:port``,
    ``ipv4:a:1,b:2``, ``unix:path``, ``http://host:port``) stays whole."""
    if address is None:
        address = default_address()
    items = [address] if isinstance(address, str) else list(address)
    found: list[str] = []
    for item in items:
        if _has_scheme(item) or url_scheme(item):
            found.append(item.strip())
        else:
            found.extend(part.strip() for part in item.split(",") if part.strip())
    if not found:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, "no server address given")
    return found


def _has_scheme(address: str) -> bool:
    scheme, sep, _ = address.strip().partition(":")
    return bool(sep) and scheme in ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock")


def channel_target(addresses: Sequence[str]) -> str:
    """The gRPC target for ``addresses`` (from :func:`split_addresses`).

    One address is used as it is (gRPC resolves a name with DNS, every address it returns
    being a replica). Several ``host:port`` become one static ``ipv4:``/``ipv6:`` target
    (names resolved once, here; give one ``dns:///name:port`` to follow DNS instead).
    """
    if len(addresses) == 1:
        return addresses[0]
    if any(_has_scheme(a) for a in addresses):
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"a target with a scheme must come alone: {', '.join(addresses)}")
    resolved = [_resolve(a) for a in addresses]
    for family, scheme, form in ((socket.AF_INET, "ipv4", "{}:{}"), (socket.AF_INET6, "ipv6", "[{}]:{}")):
        if all(family in r for r in resolved):
            return scheme + ":" + ",".join(form.format(ip, port) for r in resolved for ip, port in r[family])
    raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                      f"{', '.join(addresses)}: not all IPv4 nor all IPv6; use a dns:/// name")


def _resolve(address: str) -> dict[int, list[tuple[str, int]]]:
    """``{family: [(ip, port), ...]}`` for ``host:port`` (``[v6]:port`` for IPv6 literals)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"not host:port: {address!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnreachableError(f"cannot resolve host {host}: {exc.strerror}") from None
    found: dict[int, list[tuple[str, int]]] = {}
    for family, _, _, _, sockaddr in infos:
        entry = (str(ipaddress.ip_address(sockaddr[0])), int(port))
        if entry not in found.setdefault(family, []):
            found[family].append(entry)
    return found


# How gRPC words why it could not connect: "connections to all backends failing; last error:
# UNKNOWN: ipv4:127.0.0.1:8599: Failed to connect to remote host: Connection refused",
# "errors resolving nosuch.invalid:8500: [... Domain name not found]" (older releases: "failed
# to connect to all addresses", "DNS resolution failed for"), "... Tls handshake failed
# (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:
# WRONG_VERSION_NUMBER: ...", "Failed parsing HTTP/2 (...) (Trying to connect an http1.x server
# (HTTP status 400))". Only the part that says what happened is kept.
_LAST_ERROR = re.compile(r"^.*last error: (?:[A-Z_]+: )?(?:(?:ipv4|ipv6|unix|unix-abstract|vsock):\S+: )?", re.S)
_RESOLVING = re.compile(r"errors resolving|DNS resolution failed|lookup failed", re.I)
_TLS_REASON = re.compile(r"OPENSSL_internal:([A-Z_]+)")


def unreachable(address: str, error: ClientError, timeout: float) -> UnreachableError:
    """The one-line error for a server not reached at ``address``: ``error`` is the UNAVAILABLE
    or DEADLINE_EXCEEDED of a call that tried (``timeout``: its deadline), reworded to say
    what happened (refused, a name that does not resolve, a failed TLS handshake); one
    already worded so (the HTTP client's) stays as it is."""
    if isinstance(error, UnreachableError):
        return error
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return UnreachableError(f"cannot reach {address}: no answer within {timeout:g} s")
    details = error.message
    if _RESOLVING.search(details):
        reason = details.rstrip("]").rpartition(": ")[2]
        return UnreachableError(f"cannot resolve host {_host(address)}: {reason}")
    if "Connection refused" in details:
        what = "connection refused"
    elif "http1.x server" in details:
        what = "the server answers HTTP/1.x, not gRPC (an HTTP port? give http://host:port)"
    elif "handshake failed" in details.lower():
        reason = _TLS_REASON.search(details)
        what = "TLS handshake failed" + (f" ({reason.group(1)})" if reason else "")
        if reason and reason.group(1) == "WRONG_VERSION_NUMBER":
            what += ": the server does not seem to use TLS"
    else:
        what = _LAST_ERROR.sub("", details)
    return UnreachableError(f"cannot reach {address}: {what}")


def _host(address: str) -> str:
    """The host name of ``host:port`` or ``dns:[//authority/]host:port``."""
    target = re.sub(r"^dns:(?://[^/]*/)?", "", address.split(",")[0])
    host, sep, port = target.rpartition(":")
    return host if sep and port.isdigit() else target


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

    def _check_pair(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ClientError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a client certificate needs its key and a key needs its certificate",
            )

    def credentials(self) -> grpc.ChannelCredentials:
        self._check_pair()
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_cert),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def options(self) -> tuple[tuple[str, str], ...]:
        if self.server_name:
            return (("grpc.ssl_target_name_override", self.server_name),)
        return ()

    def ssl_context(self) -> ssl.SSLContext:
        """The same settings for the HTTP client (``server_name`` goes with each request)."""
        self._check_pair()
        ca = _read(self.ca_cert)
        try:
            context = ssl.create_default_context(cadata=ca.decode("ascii", "replace") if ca else None)
            if self.client_cert is not None:
                for path in (self.client_cert, self.client_key):
                    _read(path)  # an unreadable file is said as for gRPC
                context.load_cert_chain(self.client_cert, self.client_key)
        except ssl.SSLError as exc:
            raise ClientError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"cannot use the TLS files: {exc.reason or exc}") from exc
        return context


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
    """How calls are retried, rendered into gRPC's own retry policy (the channel's service
    config, which also holds the load balancing policy, round_robin).

    gRPC retries UNAVAILABLE and RESOURCE_EXHAUSTED, at most ``max_attempts`` tries in all
    (the first included; gRPC allows 5 at most), within the call's deadline (``timeout``).
    Before retry n it waits a random time in
    ``[0, min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))]``, or exactly what
    the server asks for in its ``grpc-retry-pushback-ms`` trailer (a full queue does).
    What cannot succeed is never retried: other codes, and requests larger than gRPC's
    per-call retry buffer (``retry_buffer_bytes``), among them a message over the server's
    size limit (which must be at least that large). ``wait_for_ready`` makes a call wait,
    within its deadline, for a server that is not up yet instead of failing at once.
    Each try picks the next ready replica, so a retried UNAVAILABLE goes to another one.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    wait_for_ready: bool = True
    retry_buffer_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"max_attempts must be 1..{MAX_ATTEMPTS_LIMIT} (gRPC's limit), got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s < self.initial_backoff_s or self.multiplier < 1:
            raise ValueError(f"invalid retry policy: {self}")

    def service_config(self) -> str:
        """The channel's service config (JSON): round_robin, and this policy for every method."""
        method: dict[str, object] = {"name": [{}], "waitForReady": self.wait_for_ready}
        if self.max_attempts > 1:
            method["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                "maxBackoff": f"{self.max_backoff_s:.3f}s",
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": sorted(code.name for code in RETRYABLE_CODES),
            }
        return json.dumps({"loadBalancingConfig": LOAD_BALANCING_CONFIG, "methodConfig": [method]})

    def channel_options(self) -> list[tuple[str, object]]:
        """gRPC channel options: retries on (off for one attempt), the service config, and
        reconnection at the policy's pace so that a server that comes up is found soon.
        A service config published in DNS is ignored: ours applies."""
        return [
            ("grpc.enable_retries", int(self.max_attempts > 1)),
            ("grpc.service_config", self.service_config()),
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.per_rpc_retry_buffer_size", self.retry_buffer_bytes),
            ("grpc.initial_reconnect_backoff_ms", max(100, int(self.initial_backoff_s * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(100, int(self.initial_backoff_s * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(100, int(self.max_backoff_s * 1000))),
        ]


NO_RETRY = RetryPolicy(max_attempts=1, wait_for_ready=False)


def make_options(tls: TLSConfig | None, extra=(), retry: RetryPolicy | None = None) -> list[tuple[str, object]]:
    """Channel options: ours, the retry policy's, TLS's, then the caller's (which win)."""
    return [*CHANNEL_OPTIONS, *(retry or RetryPolicy()).channel_options(), *(tls.options() if tls else ()), *extra]


def call_unary(fn, request, timeout: float | None):
    """Run a unary RPC ``fn(request, timeout=..)``; raise ClientError. Retries happen inside
    gRPC (the channel's service config, see RetryPolicy)."""
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as error:
        raise ClientError.from_rpc_error(error) from None


async def call_unary_async(fn, request, timeout: float | None):
    """The asyncio twin of :func:`call_unary`."""
    try:
        return await fn(request, timeout=timeout)
    except grpc.RpcError as error:
        raise ClientError.from_rpc_error(error) from None
