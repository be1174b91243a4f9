"""The asyncio client for the ``cifar10.v2.Classifier`` service (``grpc.aio``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from .base import ClientBase
from .connection import call_unary_async
from .errors import ClientError
from .messages import Outcome, all_classified, build_request, each_or_refused, error_from_proto, outcomes
from .reaching import ConnectTries, stop_waiting
from .results import Classification, ModelInfo
from .shortcuts import AsyncClassifyShortcuts


class AsyncClient(AsyncClassifyShortcuts, ClientBase):
    """asyncio client; same API as :class:`cifar10_client.Client`, with ``await``.

    Create it inside a running event loop; use ``async with``. Concurrent calls share one
    channel (HTTP/2 multiplexing).
    """

    channels = grpc.aio

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self, wait: float = 0.0) -> None:
        """Like :meth:`Client.connect <cifar10_client.Client.connect>`: return once a server
        answers (``wait`` 0: one try; else within ``wait`` seconds) or raise UnreachableError."""
        tries = ConnectTries(self, wait)
        while True:
            channel, method, request = self._probe()
            try:
                await call_unary_async(method, request, tries.timeout())
                pause = None
            except ClientError as error:
                pause = tries.after(error)
            finally:
                await channel.close()
            if pause is None:
                break
            await asyncio.sleep(pause)
        try:  # this client's channel too (see Client.connect)
            await asyncio.wait_for(self._channel.channel_ready(), self.timeout)
        except asyncio.TimeoutError:
            raise tries.not_ready() from None

    async def _call(self, method, request, timeout: float | None):
        return await call_unary_async(method, request, self._deadline(timeout))

    async def _classify(self, request: pb.ClassifyRequest, timeout: float | None) -> list[Outcome]:
        return outcomes(await self._call(self._stub.Classify, request, timeout), len(request.images))

    async def classify_images(
        self,
        images: Sequence[pb.Image],
        *,
        top_k: int = 1,
        timeout: float | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> list[Classification]:
        """Classify already-built protobuf ``Image`` messages in one call; a bad image
        raises its ClientError (see :meth:`classify_each` to keep the others)."""
        request = build_request(images, top_k, model_name, model_version)
        return all_classified(await self._classify(request, timeout))

    async def classify_each(
        self, images: Sequence[pb.Image], *, top_k: int = 1, timeout: float | None = None,
        model_name: str = "", model_version: str = "",
    ) -> list[Classification | ClientError]:
        """Like :meth:`Client.classify_each <cifar10_client.Client.classify_each>`:
        one call, a ClientError in each bad image's place."""
        request = build_request(images, top_k, model_name, model_version)
        try:
            return await self._classify(request, timeout)
        except ClientError as error:
            return each_or_refused(len(request.images), error)

    async def classify_stream(
        self,
        batches: AsyncIterator[Sequence[pb.Image]] | Iterable[Sequence[pb.Image]],
        *,
        top_k: int = 1,
        timeout: float | None = None,
    ) -> AsyncIterator[list[Classification | ClientError] | ClientError]:
        """Send batches over one ``ClassifyStream`` call; yield, in order, per batch either
        its list of outcomes (a ClientError in a bad image's place, as
        :meth:`classify_each`) or a ClientError for a batch the server refused as a whole.

        ``timeout`` bounds the whole stream (default: the client's timeout; pass a longer
        one for long streams). A stream is not retried: a transport failure raises
        ClientError.
        """
        sizes: dict[str, int] = {}

        def request(batch: Sequence[pb.Image]) -> pb.ClassifyRequest:
            request_id = str(len(sizes))
            sizes[request_id] = len(batch)
            return build_request(batch, top_k, request_id=request_id)

        async def requests():
            if hasattr(batches, "__aiter__"):
                async for batch in batches:
                    yield request(batch)
            else:
                for batch in batches:
                    yield request(batch)

        call = self._stub.ClassifyStream(requests(), timeout=self._deadline(timeout))
        try:
            async for response in call:
                count = sizes.pop(response.request_id, 0)
                if response.HasField("error") and response.error.code:
                    yield error_from_proto(response.error, item=response.request_id)
                else:
                    yield outcomes(response, count)
        except grpc.RpcError as error:
            raise ClientError.from_rpc_error(error) from None

    async def model_info(self, *, timeout: float | None = None, model_name: str = "",
                         model_version: str = "") -> ModelInfo:
        request = pb.GetModelInfoRequest(model_name=model_name, model_version=model_version)
        return ModelInfo.from_proto(await self._call(self._stub.GetModelInfo, request, timeout))

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        check, request, statuses = self._health_check(service)
        return statuses.Name((await self._call(check, request, timeout)).status)

    async def wait_until_serving(self, timeout: float = 30.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            error = None
            try:
                if await self.health(service, timeout=max(0.01, min(remaining, 2.0))) == "SERVING":
                    return
            except ClientError as exc:
                error = exc
            stop_waiting(error, deadline, timeout)
            await asyncio.sleep(0.1)
