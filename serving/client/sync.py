"""The synchronous client for the ``cifar10.v1.Classifier`` service."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from cifar10_serving.proto.cifar10.v1 import classifier_pb2 as pb
from cifar10_serving.proto.cifar10.v1 import classifier_pb2_grpc as pb_grpc

from .connection import (
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    TLSConfig,
    call_with_retries,
    default_address,
    make_options,
)
from .errors import ClientError
from .inputs import ImageInput, to_image, to_images
from .results import Classification, ModelInfo

HEALTH_HINT = (
    "the health check needs the 'grpcio-health-checking' package: "
    "pip install 'cifar10-serving[client]'"
)


def _health_modules():
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError as exc:  # tritonclient-style message for a missing extra
        raise ImportError(HEALTH_HINT) from exc
    return health_pb2, health_pb2_grpc


def responses_to_results(response: pb.ClassifyResponse) -> list[Classification]:
    results = response.results
    if not results:
        return []
    name, version = response.model_name, response.model_version
    first = Classification.from_proto(results[0], name, version)
    labels = first.labels
    return [first] + [Classification.from_proto(r, name, version, labels) for r in results[1:]]


def build_request(images: Sequence[pb.Image], top_k: int, model_name: str, model_version: str) -> pb.ClassifyRequest:
    if not 0 <= int(top_k) <= 10:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be in 0..10, got {top_k}")
    return pb.ClassifyRequest(
        images=list(images), top_k=int(top_k), model_name=model_name, model_version=model_version
    )


def isolate_failures(classify_images, images: list[pb.Image]):
    """Classify ``images``; on INVALID_ARGUMENT for the whole request, bisect to find the bad
    ones. Returns one Classification or ClientError per image (sync helper)."""
    try:
        return list(classify_images(images))
    except ClientError as error:
        if error.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        if len(images) == 1:
            return [error]
    middle = len(images) // 2
    return isolate_failures(classify_images, images[:middle]) + isolate_failures(
        classify_images, images[middle:]
    )


class Client:
    """Blocking client. Thread-safe; one channel, reused; use as a context manager.

    Every call has a deadline (``timeout`` seconds, the client's default unless given) that
    also bounds its retries; every failure raises :class:`ClientError`.

    >>> with Client("localhost:8500") as client:              # doctest: +SKIP
    ...     result = client.classify("cat.png")
    ...     print(result.label, result.probability)
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls: TLSConfig | None = None,
        retry: RetryPolicy | None = None,
        preprocess: bool = False,
        channel_options: Iterable[tuple[str, object]] = (),
    ) -> None:
        self.address = address or default_address()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.preprocess = preprocess
        options = make_options(tls, channel_options, self.retry)
        if tls is None:
            self._channel = grpc.insecure_channel(self.address, options=options)
        else:
            self._channel = grpc.secure_channel(self.address, tls.credentials(), options=options)
        self._stub = pb_grpc.ClassifierStub(self._channel)

    # -- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None):
        return call_with_retries(
            method, request, self.retry, self.timeout if timeout is None else timeout
        )

    # -- API ----------------------------------------------------------------------
    def classify(
        self,
        image: ImageInput,
        *,
        top_k: int = 1,
        timeout: float | None = None,
        preprocess: bool | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> Classification:
        """Classify one image (a path, encoded bytes, a PIL image or a uint8 array)."""
        pre = self.preprocess if preprocess is None else preprocess
        results = self.classify_images(
            [to_image(image, pre)], top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )
        return results[0]

    def classify_batch(
        self,
        images: Iterable[ImageInput],
        *,
        top_k: int = 1,
        timeout: float | None = None,
        preprocess: bool | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> list[Classification]:
        """Classify a batch in one call: a sequence of images or an NxHxW[xC] uint8 array."""
        pre = self.preprocess if preprocess is None else preprocess
        return self.classify_images(
            to_images(images, pre), top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )

    def classify_images(
        self,
        images: Sequence[pb.Image],
        *,
        top_k: int = 1,
        timeout: float | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> list[Classification]:
        """Classify already-built protobuf ``Image`` messages in one call."""
        request = build_request(images, top_k, model_name, model_version)
        response = self._call(self._stub.Classify, request, timeout)
        results = responses_to_results(response)
        if len(results) != len(images):
            raise ClientError(
                grpc.StatusCode.INTERNAL,
                f"server answered {len(results)} results for {len(images)} images",
            )
        return results

    def classify_each(
        self, images: Sequence[pb.Image], *, top_k: int = 1, timeout: float | None = None
    ) -> list[Classification | ClientError]:
        """Like :meth:`classify_images`, but a bad image does not fail the others: the list
        holds a ClientError (INVALID_ARGUMENT) in its place. Other failures still raise."""
        return isolate_failures(
            lambda batch: self.classify_images(batch, top_k=top_k, timeout=timeout), list(images)
        )

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        """Name, version, labels and input spec of the served model."""
        return ModelInfo.from_proto(self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status name (``"SERVING"``, ``"NOT_SERVING"``, ...) of ``service``
        (``""``: the whole server)."""
        health_pb2, health_pb2_grpc = _health_modules()
        stub = health_pb2_grpc.HealthStub(self._channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until health says SERVING (retrying while unavailable) or raise ClientError."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if self.health(service, timeout=max(0.01, min(remaining, 2.0))) == "SERVING":
                    return
            except ClientError as error:
                if time.monotonic() >= deadline:
                    raise
                if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            if time.monotonic() >= deadline:
                raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"not SERVING after {timeout} s")
            time.sleep(0.1)
