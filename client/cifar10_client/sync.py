"""The synchronous client for the ``cifar10.v2.Classifier`` service."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

from .base import ClientBase
from .connection import call_unary
from .errors import ClientError
from .messages import Outcome, all_classified, build_request, each_or_refused, outcomes
from .reaching import ConnectTries, stop_waiting
from .results import Classification, ModelInfo, ServedModels
from .shortcuts import ClassifyShortcuts


class Client(ClassifyShortcuts, ClientBase):
    """Blocking client. Thread-safe; one channel, reused; use as a context manager.

    Every call has a deadline (``timeout`` seconds, the client's default unless given) that
    also bounds its retries; every failure raises :class:`ClientError`.

    >>> with Client("localhost:8500") as client:              # doctest: +SKIP
    ...     result = client.classify("cat.png")
    ...     print(result.label, result.probability)
    """

    # -- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self, wait: float = 0.0) -> None:
        """Make sure a server answers at the address before the first call, so that a wrong
        address or a stopped server fails at once, naming it: UnreachableError
        (``cannot reach localhost:8599: connection refused``, ``cannot resolve host ...``).

        ``wait`` 0: one try (within the client's timeout). ``wait`` > 0: try again until a
        server answers or ``wait`` seconds have passed (a server that is starting). Then it
        waits (within the timeout) for the client's own channel to be connected. Calls
        themselves keep the retry policy, ``wait_for_ready`` included."""
        tries = ConnectTries(self, wait)
        while True:
            channel, method, request = self._probe()
            try:
                call_unary(method, request, tries.timeout())
                pause = None
            except ClientError as error:
                pause = tries.after(error)
            finally:
                channel.close()
            if pause is None:
                break
            time.sleep(pause)
        # A server answers; this client's channel may still be waiting out a failed try's
        # backoff (the server was down a moment ago): connected means that channel is.
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.timeout)
        except grpc.FutureTimeoutError:
            raise tries.not_ready() from None

    def _call(self, method, request, timeout: float | None):
        return call_unary(method, request, self._deadline(timeout))

    def _classify(self, request: pb.ClassifyRequest, timeout: float | None) -> list[Outcome]:
        return outcomes(self._call(self._stub.Classify, request, timeout), len(request.images))

    # -- API ----------------------------------------------------------------------
    def classify_images(
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
        return all_classified(self._classify(request, timeout))

    def classify_each(
        self, images: Sequence[pb.Image], *, top_k: int = 1, timeout: float | None = None,
        model_name: str = "", model_version: str = "",
    ) -> list[Classification | ClientError]:
        """Like :meth:`classify_images`, in one call, but a bad image does not fail the others:
        the list holds a ClientError (INVALID_ARGUMENT, ``item``: the image's index) in its
        place. A request the server refuses as a whole with INVALID_ARGUMENT (every image
        bad) gives that error for each image; other failures raise."""
        request = build_request(images, top_k, model_name, model_version)
        try:
            return self._classify(request, timeout)
        except ClientError as error:
            return each_or_refused(len(request.images), error)

    def model_info(self, *, timeout: float | None = None, model_name: str = "",
                   model_version: str = "") -> ModelInfo:
        """Name, version, labels and input spec of a model served (default: the default
        model's newest version; NOT_FOUND for one not served)."""
        request = pb.GetModelInfoRequest(model_name=model_name, model_version=model_version)
        return ModelInfo.from_proto(self._call(self._stub.GetModelInfo, request, timeout))

    def list_models(self, *, timeout: float | None = None) -> ServedModels:
        """Every model version served, and the default model."""
        answer = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return ServedModels(answer.default_model, [ModelInfo.from_proto(m) for m in answer.models])

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status name (``"SERVING"``, ``"NOT_SERVING"``, ...) of ``service``
        (``""``: the whole server)."""
        check, request, statuses = self._health_check(service)
        return statuses.Name(self._call(check, request, timeout).status)

    def wait_until_serving(self, timeout: float = 30.0, service: str = "") -> None:
        """Block until health says SERVING (retrying while unavailable) or raise ClientError."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            error = None
            try:
                if self.health(service, timeout=max(0.01, min(remaining, 2.0))) == "SERVING":
                    return
            except ClientError as exc:
                error = exc
            stop_waiting(error, deadline, timeout)
            time.sleep(0.1)
