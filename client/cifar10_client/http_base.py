"""What the sync and asyncio HTTP clients share: their settings, the requests each call makes,
the schedule of a call's tries, and how a classify call's images travel.

A classify call sends encoded images (files, bytes) as files to ``POST /v1/classify`` and
pixels (arrays, PIL images, ``preprocess=True``) as one ``UINT8 [N, 32, 32, 3]`` tensor to the
Open Inference Protocol's ``POST /v2/models/{name}/infer`` with the binary tensor data
extension; pixels of another size are first resized here by the one shared preprocessing
(``cifar10_core.images``), which the server would run on them. A batch holding both kinds
makes one request of each, within the one deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import httpx
import numpy as np

from cifar10_core import images as shared_images
from cifar10_core.errors import InvalidInputError
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from . import http_oip, http_v1
from .connection import DEFAULT_TIMEOUT_S, RetryPolicy, TLSConfig, default_address
from .errors import ClientError, UnreachableError
from .http_errors import error_of
from .inputs import ImageInput, to_image, to_images
from .messages import Outcome
from .schemes import check_scheme, is_http, is_https, url_scheme

DEFAULT_HTTP_ADDRESS = "http://localhost:8501"
TIMEOUT_HEADER = "X-Request-Timeout"
MAX_CONNECTIONS = 100


def http_address(address: str | None) -> str:
    """The base URL of the server: ``address`` (``host:port`` means ``http://host:port``);
    none: ``$CIFAR10_ADDRESS`` when it is an HTTP one, else ``http://localhost:8501``."""
    if address is None:
        address = default_address()
        address = address if is_http(address) else DEFAULT_HTTP_ADDRESS
    address = address.strip()
    check_scheme(address)
    if url_scheme(address) is None:
        address = "http://" + address
    if not is_http(address):
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{address} is not an HTTP address: use Client or AsyncClient for gRPC")
    try:
        host = httpx.URL(address).host
    except httpx.InvalidURL as exc:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"not a URL: {address!r} ({exc})") from None
    if not host:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"no host in {address!r}")
    return address.rstrip("/")


@dataclass(frozen=True)
class Exchange:
    """One request, as often as it is tried. ``answers``: error statuses that are an answer
    to the caller rather than a failure (a server not ready: 503)."""

    method: str
    path: str
    params: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    answers: tuple[int, ...] = ()


LIVE = Exchange("GET", http_oip.LIVE_PATH)
READY = Exchange("GET", http_oip.READY_PATH, answers=(503,))
MODEL = Exchange("GET", http_v1.MODEL_PATH)
MODELS = Exchange("GET", http_v1.MODELS_PATH)


def model_exchange(name: str, version: str) -> Exchange:
    """``/v1/model`` for the model named (the default model for none)."""
    if not name and not version:
        return MODEL
    return Exchange("GET", http_v1.MODEL_PATH,
                    params={k: v for k, v in (("model", name), ("version", version)) if v})


def metadata_exchange(name: str, version: str) -> Exchange:
    return Exchange("GET", http_oip.model_path(name, version))


def json_of(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        raise ClientError(grpc.StatusCode.INTERNAL, f"malformed response: not JSON "
                          f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no type')})",
                          attempts=1) from None


def _retried(error: ClientError) -> bool:
    """What the retry policy retries over HTTP, as gRPC does: UNAVAILABLE (a connection that
    failed, 503, a proxy's 502) and RESOURCE_EXHAUSTED with the server's pushback (429 with
    ``Retry-After``; without one the server says that trying again cannot help); never a
    body over the size limit."""
    if error.too_large is not None:
        return False
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after_s is not None


class CallTries:
    """The schedule of one call's tries within its deadline, by the client's RetryPolicy:
    at most ``max_attempts`` tries of what :func:`_retried` allows, paused for the server's
    ``Retry-After`` or else a random time up to the backoff (``initial_backoff_s``, times
    ``multiplier`` per retry, at most ``max_backoff_s``); with ``wait_for_ready``, a server
    not reached is tried again until the deadline, however many tries that takes."""

    def __init__(self, retry: RetryPolicy, deadline: float) -> None:
        self.retry = retry
        self.deadline = deadline
        self.attempts = 0
        self.backoff = retry.initial_backoff_s

    def start(self) -> float:
        """The seconds the next try may take (what is left of the deadline)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", attempts=1)
        self.attempts += 1
        return left

    def after(self, error: ClientError) -> float:
        """The pause before the next try after ``error``; raise ``error`` when there is none."""
        waiting = self.retry.wait_for_ready and isinstance(error, UnreachableError)
        if not (waiting or (self.attempts < self.retry.max_attempts and _retried(error))):
            raise error
        if error.retry_after_s is not None:
            pause = error.retry_after_s
        else:
            pause = random.uniform(0, self.backoff)
            self.backoff = min(self.retry.max_backoff_s, self.backoff * self.retry.multiplier)
        if time.monotonic() + pause >= self.deadline:
            raise error
        return pause


@dataclass
class Part:
    """One request of a classify call: the positions of its images in the call, and how its
    answer becomes their outcomes."""

    positions: list[int]
    exchange: Exchange
    parse: Callable[[httpx.Response], list[Outcome]]


class ClassifyPlan:
    """A classify call's images by how they travel (see the module docstring); pixels that
    cannot be used fail here, each alone."""

    def __init__(self, images: Sequence[pb.Image], top_k: int) -> None:
        if not 0 <= int(top_k) <= 10:
            raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"top_k must be in 0..10, got {top_k}")
        self.top_k = int(top_k)
        self.outcomes: list[Outcome | None] = [None] * len(images)
        self.encoded: list[int] = []
        self.pixels: list[int] = []
        self._files: list[bytes] = []
        self._arrays: list[np.ndarray] = []
        for i, image in enumerate(images):
            kind = image.WhichOneof("data")
            if kind == "encoded":
                self.encoded.append(i)
                self._files.append(image.encoded)
                continue
            try:
                if kind != "raw":
                    raise InvalidInputError("no data: an image is either encoded bytes or raw pixels")
                raw = image.raw
                self._arrays.append(shared_images.from_raw_bytes(raw.data, raw.height, raw.width, raw.channels))
                self.pixels.append(i)
            except InvalidInputError as exc:
                self.outcomes[i] = ClientError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), item=str(i))

    def parts(self, model_name: str, model_version: str) -> list[Part]:
        """The requests to send (``model_name``: the served model's when pixels go)."""
        parts = []
        if self.encoded:
            body, headers = http_v1.multipart(self._files)
            parts.append(Part(self.encoded, Exchange(
                "POST", http_v1.CLASSIFY_PATH, params=http_v1.query(self.top_k, model_name, model_version),
                content=body, headers=headers), self._files_outcomes))
        if self.pixels:
            body, headers = http_oip.infer_request(np.stack(self._arrays))
            parts.append(Part(self.pixels, Exchange(
                "POST", http_oip.model_path(model_name, model_version) + "/infer", content=body,
                headers=headers), self._pixels_outcomes))
        return parts

    def _files_outcomes(self, response: httpx.Response) -> list[Outcome]:
        return http_v1.outcomes(json_of(response), len(self.encoded))

    def _pixels_outcomes(self, response: httpx.Response) -> list[Outcome]:
        rows, name, version = http_oip.probabilities(
            response.content, response.headers.get(http_oip.HEADER_LENGTH), len(self.pixels))
        return list(http_oip.classifications(rows, self.top_k, name, version))

    def place(self, part: Part, results: list[Outcome]) -> None:
        for position, result in zip(part.positions, results):
            if isinstance(result, ClientError):
                result.item = str(position)
            self.outcomes[position] = result

    def results(self) -> list[Outcome]:
        return list(self.outcomes)  # type: ignore[arg-type] - every place is filled by now


class HttpClientBase:
    """Settings of an HTTP client: the server's base URL (``http://host:port`` or
    ``https://...``, a path prefix allowed), the default deadline of a call, TLS for https
    (``TLSConfig``: the CA, a client certificate, the name to check; none: the system's
    CAs), the retry policy, and a pool of up to ``max_connections`` kept-alive connections
    (``pools``: ``httpx.Client`` or ``httpx.AsyncClient``)."""

    pools: type = httpx.Client

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls: TLSConfig | None = None,
        retry: RetryPolicy | None = None,
        preprocess: bool = False,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.address = http_address(address)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.preprocess = preprocess
        https = is_https(self.address)
        if tls is not None and not https:
            raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"TLS settings for {self.address}: give an https:// address")
        self._extensions = {"sni_hostname": tls.server_name} if tls and tls.server_name else None
        self._http = self.pools(
            base_url=self.address,
            verify=(tls or TLSConfig()).ssl_context() if https else True,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=timeout,
        )
        self._served: str | None = None  # the served model's name (OIP's paths need one), once learned

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _arguments(self, exchange: Exchange, seconds: float) -> dict:
        """httpx's request arguments for one try of ``seconds`` (also sent as the server's deadline)."""
        return {"method": exchange.method, "url": exchange.path, "params": exchange.params,
                "content": exchange.content,
                "headers": {**exchange.headers, TIMEOUT_HEADER: f"{seconds:.3f}"},
                "timeout": seconds, "extensions": self._extensions}

    @staticmethod
    def _checked(exchange: Exchange, response: httpx.Response) -> httpx.Response:
        if response.is_success or response.status_code in exchange.answers:
            return response
        raise error_of(response)

    def _learned(self, answer: object) -> tuple[str, str, tuple[str, ...]]:
        """The served model's name, version and labels from a ``/v1/model`` answer; the name
        is kept for OIP's paths."""
        name, version, labels = http_v1.model_of(answer)
        self._served = name
        return name, version, labels

    @staticmethod
    def _health_request(service: str) -> Exchange:
        if service:
            raise ClientError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"no health service {service!r} over HTTP: its health is the server's "
                              f"readiness ({http_oip.READY_PATH}); give no service")
        return READY

    @staticmethod
    def _status(response: httpx.Response) -> str:
        return "SERVING" if response.is_success else "NOT_SERVING"


    def _image(self, image: ImageInput, preprocess: bool | None) -> pb.Image:
        return to_image(image, self.preprocess if preprocess is None else preprocess)

    def _images(self, images, preprocess: bool | None) -> list[pb.Image]:
        return to_images(images, self.preprocess if preprocess is None else preprocess)
