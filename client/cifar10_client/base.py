"""What the sync and asyncio clients share: their settings, channel, stub and input handling."""

from __future__ import annotations

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
)
from .errors import ClientError
from .inputs import ImageInput, to_image, to_images
from .schemes import uses_http

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
        if uses_http(self.addresses):
            raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{self.addresses[0]} is an HTTP address: use HttpClient or "
                              "AsyncHttpClient, or open_client(), which picks the client by the address")
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
