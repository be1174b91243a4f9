"""What the sync and asyncio clients share: their settings, channel, stub and input handling."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import ModuleType

import grpc

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

from .connection import (
    DEFAULT_TIMEOUT_S,
    NO_RETRY,
    Addresses,
    RetryPolicy,
    TLSConfig,
    channel_target,
    make_options,
    split_addresses,
    unreachable,
)
from .errors import ClientError, UnreachableError
from .inputs import ImageInput, to_image, to_images

HEALTH_HINT = (
    "the health check needs the 'grpcio-health-checking' package: "
    "pip install 'cifar10-serving[client]'"
)


def health_modules() -> tuple[ModuleType, ModuleType]:
    """``(health_pb2, health_pb2_grpc)``; ImportError saying what to install when missing."""
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError as exc:  # tritonclient-style message for a missing extra
        raise ImportError(HEALTH_HINT) from exc
    return health_pb2, health_pb2_grpc


class ClientBase:
    """Settings, channel and stub of a client; ``channels`` is ``grpc`` or ``grpc.aio``.

    ``address``: ``host:port``; several replicas as a list or comma-separated
    (``"a:8500,b:8500"``), or a name whose every DNS address is a replica
    (``"dns:///cifar10:8500"``). Calls are spread over the replicas with gRPC's round_robin
    policy, and a try that fails with UNAVAILABLE is retried on the next one. With TLS and
    several addresses, each certificate must be valid for the first address's host (or
    ``TLSConfig.server_name``). Default: ``$CIFAR10_ADDRESS``, else ``localhost:8500``.
    """

    channels: ModuleType = grpc

    def __init__(
        self,
        address: Addresses | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls: TLSConfig | None = None,
        retry: RetryPolicy | None = None,
        preprocess: bool = False,
        channel_options: Iterable[tuple[str, object]] = (),
    ) -> None:
        self.addresses = split_addresses(address or None)
        self.address = ",".join(self.addresses)
        self.target = channel_target(self.addresses)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.preprocess = preprocess
        authority = [("grpc.default_authority", self.addresses[0])] if self.target != self.address else []
        self._tls = tls
        self._credentials = tls.credentials() if tls else None
        self._extra_options = [*authority, *channel_options]
        self._channel = self._open_channel(self.retry)
        self._stub = pb_grpc.ClassifierStub(self._channel)

    def _open_channel(self, retry: RetryPolicy, *extra: tuple[str, object]):
        """A new channel to the target with this client's TLS and options, ``retry`` and
        the ``extra`` options."""
        options = make_options(self._tls, [*self._extra_options, *extra], retry)
        if self._credentials is None:
            return self.channels.insecure_channel(self.target, options=options)
        return self.channels.secure_channel(self.target, self._credentials, options=options)

    def _probe(self):
        """connect()'s one try: a channel of its own that neither retries nor waits (so that
        its call fails at once, with gRPC's reason, when the connection does) and connects
        afresh (its own subchannels, not a failed one in backoff that another channel of this
        process left in gRPC's shared pool), the call (GetModelInfo: every cifar10.v2 server
        answers it, cheaply) and its request."""
        channel = self._open_channel(NO_RETRY, ("grpc.use_local_subchannel_pool", 1))
        return channel, pb_grpc.ClassifierStub(channel).GetModelInfo, pb.GetModelInfoRequest()

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _image(self, image: ImageInput, preprocess: bool | None) -> pb.Image:
        return to_image(image, self.preprocess if preprocess is None else preprocess)

    def _images(self, images: Iterable[ImageInput], preprocess: bool | None) -> list[pb.Image]:
        return to_images(images, self.preprocess if preprocess is None else preprocess)

    def _health_check(self, service: str):
        """The health stub's Check method, its request, and the status enum."""
        health_pb2, health_pb2_grpc = health_modules()
        stub = health_pb2_grpc.HealthStub(self._channel)
        return stub.Check, health_pb2.HealthCheckRequest(service=service), health_pb2.HealthCheckResponse.ServingStatus


class ConnectTries:
    """The schedule of ``connect(wait)``: one try when ``wait`` is 0, else tries until one
    reaches the server or ``wait`` seconds have passed, paused at the retry policy's pace
    (``initial_backoff_s``, times ``multiplier``, at most ``max_backoff_s``)."""

    def __init__(self, client: ClientBase, wait: float) -> None:
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
