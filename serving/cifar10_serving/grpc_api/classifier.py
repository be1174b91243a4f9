"""cifar10.v2.Classifier: a thin adapter between protobuf and the serving core.

Decoding follows ``cifar10_core.images`` (the one shared preprocessing); errors become status
codes in ``cifar10_serving.grpc_api.status``. A request is admitted (``core.admit``) before its
images are decoded. Raw 32x32x3 images skip Pillow and decode inline; any other goes through
Pillow on the core's decode threads, within a per-request pixel budget and the deadline. A batch
whose images are partly undecodable is classified without them; each gets an ImageError.
Responses are flat packed fields, serialized by protobuf itself (no hand-written encoding).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np

from cifar10_core import contract, images
from cifar10_serving.dataplane.plane import Prediction, ServingCore, deadline_after
from cifar10_core.errors import InvalidInputError, ServingError
from cifar10_serving.grpc_api.status import RequestObserver, rpc
from cifar10_serving.grpc_api.parsing import per_message_errors, request_size
from cifar10_serving.grpc_api.receive_gate import carries_images
from cifar10_serving.grpc_api.streams import pipelined
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
_RAW_SIZE = contract.IMAGE_SIZE * contract.IMAGE_SIZE * contract.CHANNELS
_ERRORS_IN_MESSAGE = 3  # per-image problems quoted when every image of a request fails


def check_top_k(top_k: int) -> int:
    """The request's ``top_k`` (0 means 1); outside 0..10 -> InvalidInputError naming it."""
    if top_k == 0:
        return 1
    if not 0 < top_k <= contract.NUM_CLASSES:
        raise InvalidInputError(f"top_k must be between 0 and {contract.NUM_CLASSES}, got {top_k}")
    return top_k


def _decode_one(image: pb.Image, max_pixels: int, budget: images.PixelBudget) -> np.ndarray:
    kind = image.WhichOneof("data")
    if kind == "raw":
        raw = image.raw
        pixels = raw.height * raw.width
        if pixels != contract.IMAGE_SIZE * contract.IMAGE_SIZE and 0 < pixels <= max_pixels:
            budget.spend(raw.width, raw.height)  # to be resized by Pillow: the same CPU bound
        return images.from_raw_bytes(raw.data, raw.height, raw.width, raw.channels, max_pixels)
    if kind == "encoded":
        return images.decode(image.encoded, max_pixels, budget)
    raise InvalidInputError("no data: set either `encoded` or `raw`")


def raw_batch(request_images: Sequence[pb.Image], max_images: int) -> np.ndarray | None:
    """The request's images as uint8 [N, 32, 32, 3] if every one is raw 32x32x3 (the fast
    path: one join, no Pillow, no thread hop), else None. InvalidInputError for no images
    or too many."""
    n = len(request_images)
    if n == 0:
        raise InvalidInputError("the request holds no images")
    if n > max_images:
        raise InvalidInputError(f"too many images in one request: {n} > {max_images}")
    raws = []
    for image in request_images:
        if image.WhichOneof("data") != "raw":
            return None
        raw = image.raw
        if raw.height != 32 or raw.width != 32 or raw.channels != 3 or len(raw.data) != _RAW_SIZE:
            return None
        raws.append(raw.data)
    data = raws[0] if n == 1 else b"".join(raws)
    return np.frombuffer(data, dtype=np.uint8).reshape(n, *contract.INPUT_SHAPE)


def decode_each(
    request_images: Sequence[pb.Image], max_pixels: int, max_request_pixels: int,
    check: Callable[[], None] = lambda: None,
) -> tuple[np.ndarray, list[pb.ImageError]]:
    """Every image through Pillow (blocking: run it off the loop, ``core.offload``): the
    decodable ones as uint8 [G, 32, 32, 3] and an ImageError per other image.

    At most ``max_request_pixels`` pixels are decoded in all (images past that budget fail);
    ``check()`` runs between images (raises once the deadline passed). InvalidInputError
    when no image is decodable (the message names the images and their problems).
    """
    n = len(request_images)
    budget = images.PixelBudget(max_request_pixels)
    out = np.empty((n, *contract.INPUT_SHAPE), dtype=np.uint8)
    failed: list[tuple[int, InvalidInputError]] = []
    for i, image in enumerate(request_images):
        check()
        try:
            out[i - len(failed)] = _decode_one(image, max_pixels, budget)
        except InvalidInputError as exc:
            # without its traceback: kept, it would tie this frame (and the request) in a cycle
            failed.append((i, exc.with_traceback(None)))
    if len(failed) == n:
        quoted = "; ".join(f"image {i}: {exc}" for i, exc in failed[:_ERRORS_IN_MESSAGE])
        more = n - _ERRORS_IN_MESSAGE
        raise InvalidInputError(quoted + (f"; and {more} more" if more > 0 else ""))
    errors = [pb.ImageError(index=i, error=pb.Error(code=exc.status_name, message=str(exc)))
              for i, exc in failed]
    return out[:n - len(failed)], errors


def request_bytes(request: pb.ClassifyRequest) -> int:
    """The request's size for admission: its wire size (a unary call's, from the parse), else
    exact for small requests and the image payloads for large ones (``ByteSize``
    serializes: 2 ms for 1024 images)."""
    size = request_size()
    if size is not None:
        return size
    if len(request.images) <= 64:
        return request.ByteSize()
    return sum(len(image.raw.data) + len(image.encoded) for image in request.images)


def top_indices(probabilities: np.ndarray, top_k: int) -> list[int]:
    """The ``top_k`` most probable label indices of each row, flat, ties in label order."""
    if top_k == 1:
        return probabilities.argmax(axis=1).tolist()
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k].ravel().tolist()


def build_response(
    pred: Prediction, top_k: int, request_id: str = "", image_errors: list[pb.ImageError] | None = None
) -> pb.ClassifyResponse:
    """The ClassifyResponse for ``pred`` (the classified images, in request order)."""
    info = pred.model
    return pb.ClassifyResponse(
        labels=info.labels, probabilities=pred.probabilities.ravel().tolist(),
        top_indices=top_indices(pred.probabilities, top_k), top_k=top_k,
        image_errors=image_errors, model_name=info.name, model_version=info.version,
        request_id=request_id,
    )


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, core: ServingCore, observe: RequestObserver | None = None):
        self.core = core
        self.observe = observe
        self._max_pixels = core.max_image_pixels

    async def _classify(self, request: pb.ClassifyRequest, timeout: float | None) -> pb.ClassifyResponse:
        core = self.core
        top_k = check_top_k(request.top_k)
        model = core.select(request.model_name, request.model_version)
        deadline = deadline_after(timeout)
        with core.admit(request_bytes(request)):
            batch, errors = raw_batch(request.images, core.max_images_per_request), None
            if batch is None:
                batch, errors = await core.offload(functools.partial(
                    decode_each, request.images, self._max_pixels, core.max_request_pixels,
                ), deadline)
            pred = await core.classify(batch, model=model, deadline=deadline, admitted=True)
        return build_response(pred, top_k, request.request_id, errors)

    @carries_images
    @rpc("Classify")
    async def Classify(self, request, context):
        return await self._classify(request, context.time_remaining())

    @carries_images
    @per_message_errors
    async def ClassifyStream(self, request_iterator, context):
        """Pipelined (``cifar10_serving.grpc_api.streams``): answered in order, errors per message."""
        async for response in pipelined(
            request_iterator, lambda request: self._classify(request, context.time_remaining()),
            _stream_error, method="ClassifyStream", observe=self.observe,
            stopping=self.core.stopping, context=context,
        ):
            yield response

    @rpc("GetModelInfo")
    async def GetModelInfo(self, request, context):
        return model_info_message(self.core)


def model_info_message(core: ServingCore) -> pb.ModelInfo:
    info = core.info

    def spec(s) -> pb.TensorSpec:
        return pb.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape), description=s.description)

    return pb.ModelInfo(
        name=info.name, version=info.version, labels=list(info.labels),
        input=spec(info.input), output=spec(info.output),
        max_batch_size=core.max_batch_size, metadata=dict(info.metadata),
    )


def _stream_error(request: pb.ClassifyRequest, code: str, message: str) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(request_id=request.request_id, error=pb.Error(code=code, message=message))


def add_to_server(server, core: ServingCore, observe: RequestObserver | None = None) -> list[str]:
    """Register the servicer; return the full service names (for health and reflection)."""
    pb_grpc.add_ClassifierServicer_to_server(ClassifierServicer(core, observe), server)
    return [SERVICE_NAME]


__all__ = ["ClassifierServicer", "add_to_server", "SERVICE_NAME", "ServingError"]
