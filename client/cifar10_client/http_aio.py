"""The asyncio client for the HTTP door (``http://`` or ``https://``): the API of
:class:`cifar10_client.AsyncClient` over HTTP/1.1 (httpx)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from . import http_oip, http_v1
from .errors import ClientError
from .http_base import (
    LIVE,
    MODEL,
    MODELS,
    CallTries,
    ClassifyPlan,
    Exchange,
    HttpClientBase,
    json_of,
    metadata_exchange,
    model_exchange,
)
from .http_errors import transport_error
from .messages import Outcome, all_classified, each_or_refused
from .reaching import ConnectTries, stop_waiting
from .results import Classification, ModelInfo, ServedModels
from .shortcuts import AsyncClassifyShortcuts


class AsyncHttpClient(AsyncClassifyShortcuts, HttpClientBase):
    """asyncio HTTP client; the API of :class:`HttpClient <cifar10_client.HttpClient>` with
    ``await``. Create it inside a running event loop; use ``async with``; concurrent calls
    share one pool of connections."""

    pools = httpx.AsyncClient

    # -- lifecycle ------------------------------------------------------------------
    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncHttpClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self, wait: float = 0.0) -> None:
        """Like :meth:`HttpClient.connect <cifar10_client.HttpClient.connect>`."""
        tries = ConnectTries(self, wait)
        while True:
            try:
                await self._try(LIVE, tries.timeout())
                return
            except ClientError as error:
                pause = tries.after(error)
            if pause is None:
                return
            await asyncio.sleep(pause)

    async def _try(self, exchange: Exchange, seconds: float) -> httpx.Response:
        try:
            response = await self._http.request(**self._arguments(exchange, seconds))
        except httpx.TransportError as exc:
            raise transport_error(self.address, exc, seconds) from None
        return self._checked(exchange, response)

    async def _send(self, exchange: Exchange, deadline: float) -> httpx.Response:
        tries = CallTries(self.retry, deadline)
        while True:
            seconds = tries.start()
            try:
                return await self._try(exchange, seconds)
            except ClientError as error:
                await asyncio.sleep(tries.after(error))

    async def _classify(self, images: Sequence[pb.Image], top_k: int, timeout: float | None,
                  model_name: str, model_version: str, each: bool) -> list[Outcome]:
        deadline = self._deadline(timeout)
        plan = ClassifyPlan(images, top_k)
        if plan.pixels and not model_name:
            model_name = self._served or self._learned(json_of(await self._send(MODEL, deadline)))[0]
        for part in plan.parts(model_name, model_version):
            try:
                results = part.parse(await self._send(part.exchange, deadline))
            except ClientError as error:
                if not each:
                    raise
                results = each_or_refused(len(part.positions), error)
            plan.place(part, results)
        return plan.results()

    # -- API ----------------------------------------------------------------------
    async def classify_images(
        self,
        images: Sequence[pb.Image],
        *,
        top_k: int = 1,
        timeout: float | None = None,
        model_name: str = "",
        model_version: str = "",
    ) -> list[Classification]:
        """Classify protobuf ``Image`` messages; a bad image raises its ClientError."""
        outcomes = await self._classify(images, top_k, timeout, model_name, model_version, each=False)
        return all_classified(outcomes)

    async def classify_each(
        self, images: Sequence[pb.Image], *, top_k: int = 1, timeout: float | None = None,
        model_name: str = "", model_version: str = "",
    ) -> list[Classification | ClientError]:
        """Like :meth:`Client.classify_each <cifar10_client.Client.classify_each>`: a
        ClientError in each bad image's place, the others classified."""
        return await self._classify(images, top_k, timeout, model_name, model_version, each=True)

    async def model_info(self, *, timeout: float | None = None, model_name: str = "",
                   model_version: str = "") -> ModelInfo:
        """Name, version, labels, tensors and metadata of a model served (default: the
        default model's newest version; ``GET /v1/model``, then the Open Inference
        Protocol's model metadata)."""
        deadline = self._deadline(timeout)
        answer = json_of(await self._send(model_exchange(model_name, model_version), deadline))
        name, version, labels = (self._learned(answer) if not model_name
                                 else http_v1.model_of(answer))
        metadata = await self._send(metadata_exchange(name, version), deadline)
        return http_oip.model_info(json_of(metadata), labels)

    async def list_models(self, *, timeout: float | None = None) -> ServedModels:
        """Every model version served, and the default model (``GET /v1/models``, then each
        one's metadata)."""
        deadline = self._deadline(timeout)
        default, answers = http_v1.models_of(json_of(await self._send(MODELS, deadline)))
        infos = []
        for name, version, labels in answers:
            metadata = await self._send(metadata_exchange(name, version), deadline)
            infos.append(http_oip.model_info(json_of(metadata), labels))
        return ServedModels(default, infos)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """``"SERVING"`` when the server is ready (``GET /v2/health/ready``), else ``"NOT_SERVING"``."""
        return self._status(await self._send(self._health_request(service), self._deadline(timeout)))

    async def wait_until_serving(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until the server is ready (retrying while unavailable) or raise ClientError."""
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
