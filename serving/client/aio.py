"""The asyncio client for the ``cifar10.v1.Classifier`` service (``grpc.aio``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from cifar10_serving.proto.cifar10.v1 import classifier_pb2 as pb
from cifar10_serving.proto.cifar10.v1 import classifier_pb2_grpc as pb_grpc

from .connection import (
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    TLSConfig,
    call_with_retries_async,
    default_address,
    make_options,
)
from .errors import ClientError
from .inputs import ImageInput, to_image, to_images
from .results import Classification, ModelInfo
from .sync import _health_modules, build_request, responses_to_results


class AsyncClient:
    """asyncio client; same API as :class:`cifar10_serving.client.Client`, with ``await``.

    Create it inside a running event loop; use ``async with``. Concurrent calls share one
    channel (HTTP/2 multiplexing).
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
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.address, tls.credentials(), options=options)
        self._stub = pb_grpc.ClassifierStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, method, request, timeout: float | None):
        return await call_with_retries_async(
            method, request, self.retry, self.timeout if timeout is None else timeout
        )

    async def classify(
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
        results = await self.classify_images(
            [to_image(image, pre)], top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )
        return results[0]

    async def classify_batch(
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
        return await self.classify_images(
            to_images(images, pre), top_k=top_k, timeout=timeout,
            model_name=model_name, model_version=model_version,
        )

    async def classify_images(
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
        response = await self._call(self._stub.Classify, request, timeout)
        results = responses_to_results(response)
        if len(results) != len(images):
            raise ClientError(
                grpc.StatusCode.INTERNAL,
                f"server answered {len(results)} results for {len(images)} images",
            )
        return results

    async def classify_each(
        self, images: Sequence[pb.Image], *, top_k: int = 1, timeout: float | None = None
    ) -> list[Classification | ClientError]:
        """Like :meth:`classify_images`, but a bad image gets a ClientError in its place
        (found by bisecting a batch the server refused); other failures still raise."""
        images = list(images)
        try:
            return list(await self.classify_images(images, top_k=top_k, timeout=timeout))
        except ClientError as error:
            if error.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            if len(images) == 1:
                return [error]
        middle = len(images) // 2
        return await self.classify_each(images[:middle], top_k=top_k, timeout=timeout) + (
            await self.classify_each(images[middle:], top_k=top_k, timeout=timeout)
        )

    async def classify_stream(
        self,
        batches: AsyncIterator[Sequence[pb.Image]] | Iterable[Sequence[pb.Image]],
        *,
        top_k: int = 1,
        timeout: float | None = None,
    ) -> AsyncIterator[list[Classification] | ClientError]:
        """Send batches over one ``ClassifyStream`` call; yield, in order, one list of
        results per batch, or a ClientError for a batch the server refused.

        ``timeout`` bounds the whole stream (default: the client's timeout; pass a longer
        one for long streams). A stream is not retried: a transport failure raises
        ClientError.
        """

        async def requests():
            index = 0
            if hasattr(batches, "__aiter__"):
                async for batch in batches:
                    yield _req(batch, top_k, index)
                    index += 1
            else:
                for batch in batches:
                    yield _req(batch, top_k, index)
                    index += 1

        call = self._stub.ClassifyStream(requests(), timeout=self.timeout if timeout is None else timeout)
        try:
            async for response in call:
                if response.HasField("error") and response.error.code:
                    code = getattr(grpc.StatusCode, response.error.code, grpc.StatusCode.UNKNOWN)
                    yield ClientError(code, response.error.message, attempts=1, item=response.request_id)
                else:
                    yield responses_to_results(response)
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error) from None

    async def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        return ModelInfo.from_proto(await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout))

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        health_pb2, health_pb2_grpc = _health_modules()
        stub = health_pb2_grpc.HealthStub(self._channel)
        response = await self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def wait_until_serving(self, timeout: float = 30.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if await self.health(service, timeout=max(0.01, min(remaining, 2.0))) == "SERVING":
                    return
            except ClientError as error:
                if time.monotonic() >= deadline or error.code not in (
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
                ):
                    raise
            if time.monotonic() >= deadline:
                raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"not SERVING after {timeout} s")
            await asyncio.sleep(0.1)


def _req(batch: Sequence[pb.Image], top_k: int, index: int) -> pb.ClassifyRequest:
    request = build_request(batch, top_k, "", "")
    request.request_id = str(index)
    return request
