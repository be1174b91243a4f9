"""cifar10.v2.Classifier: protobuf in, an ``InferenceRequest`` to the data plane, protobuf out.

Raw 32x32x3 images become one uint8 array here (a join, no Pillow); any other image is handed
over as it is (encoded bytes, or raw pixels of another size) for the data plane to decode
off the event loop. Responses are flat packed fields, serialized by protobuf itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_serving.dataplane.plane import DataPlane
from cifar10_serving.dataplane.request import (
    ImageInput,
    Images,
    InferenceRequest,
    InferenceResult,
    RawImage,
    deadline_after,
)
from cifar10_serving.grpc_api.methods import Method
from cifar10_serving.grpc_api.status import RequestObserver
from cifar10_serving.grpc_api.streams import pipelined
from cifar10_serving.lifecycle import Lifecycle
from cifar10_serving.onnx_model import OnnxModel

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
_RAW_SIZE = contract.IMAGE_SIZE * contract.IMAGE_SIZE * contract.CHANNELS


def check_top_k(top_k: int) -> int:
    """The request's ``top_k`` (0 means 1); outside 0..10 -> InvalidInputError naming it."""
    if top_k == 0:
        return 1
    if not 0 < top_k <= contract.NUM_CLASSES:
        raise InvalidInputError(f"top_k must be between 0 and {contract.NUM_CLASSES}, got {top_k}")
    return top_k


class ImageInputs(Sequence):
    """The request's images as the data plane's ``ImageInput``s, each read when the data
    plane decodes it (on a decode thread, not on the event loop)."""

    def __init__(self, images: Sequence[pb.Image]) -> None:
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i: int) -> ImageInput:
        image = self._images[i]
        kind = image.WhichOneof("data")
        if kind == "raw":
            raw = image.raw
            return RawImage(raw.data, raw.height, raw.width, raw.channels)
        if kind == "encoded":
            return image.encoded
        raise InvalidInputError("no data: set either `encoded` or `raw`")


def images_of(request_images: Sequence[pb.Image], max_images: int) -> Images:
    """One uint8 [N, 32, 32, 3] array if every image is raw 32x32x3 (the fast path), else
    ``ImageInputs`` (also when there are none or too many: the data plane says so)."""
    n = len(request_images)
    if n == 0 or n > max_images:
        return ImageInputs(request_images)
    raws = []
    for image in request_images:
        if image.WhichOneof("data") != "raw":
            return ImageInputs(request_images)
        raw = image.raw
        if raw.height != 32 or raw.width != 32 or raw.channels != 3 or len(raw.data) != _RAW_SIZE:
            return ImageInputs(request_images)
        raws.append(raw.data)
    data = raws[0] if n == 1 else b"".join(raws)
    return np.frombuffer(data, dtype=np.uint8).reshape(n, *contract.INPUT_SHAPE)


def top_indices(probabilities: np.ndarray, top_k: int) -> list[int]:
    """The ``top_k`` most probable label indices of each row, flat, ties in label order."""
    if top_k == 1:
        return probabilities.argmax(axis=1).tolist()
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k].ravel().tolist()


def build_response(result: InferenceResult, top_k: int, request_id: str = "") -> pb.ClassifyResponse:
    """The ClassifyResponse for ``result`` (the classified images, in request order)."""
    info = result.model
    errors = [pb.ImageError(index=f.index, error=pb.Error(code=f.error.status_name, message=str(f.error)))
              for f in result.failures]
    return pb.ClassifyResponse(
        labels=info.labels, probabilities=result.probabilities.ravel().tolist(),
        top_indices=top_indices(result.probabilities, top_k), top_k=top_k,
        image_errors=errors, model_name=info.name, model_version=info.version,
        request_id=request_id,
    )


def _stream_error(request: pb.ClassifyRequest | None, code: str, message: str) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(request_id=request.request_id if request is not None else "",
                               error=pb.Error(code=code, message=message))


class ClassifierServicer:
    """The cifar10.v2.Classifier methods over the data plane."""

    def __init__(self, plane: DataPlane, lifecycle: Lifecycle, observe: RequestObserver | None = None):
        self.plane = plane
        self.lifecycle = lifecycle
        self.observe = observe

    def methods(self) -> list[Method]:
        return [
            Method("Classify", pb.ClassifyRequest, pb.ClassifyResponse, unary=self.classify, images=True),
            Method("ClassifyStream", pb.ClassifyRequest, pb.ClassifyResponse,
                   stream=self.classify_stream, images=True),
            Method("GetModelInfo", pb.GetModelInfoRequest, pb.ModelInfo, unary=self.get_model_info),
            Method("ListModels", pb.ListModelsRequest, pb.ListModelsResponse,
                   unary=self.list_models),
        ]

    async def _classify(self, request: pb.ClassifyRequest, wire_bytes: int,
                        timeout: float | None) -> pb.ClassifyResponse:
        top_k = check_top_k(request.top_k)
        result = await self.plane.infer(InferenceRequest(
            images_of(request.images, self.plane.limits.max_images_per_request),
            request.model_name, request.model_version, deadline_after(timeout),
            request.request_id, wire_bytes))
        return build_response(result, top_k, request.request_id)

    async def classify(self, request: pb.ClassifyRequest, wire_bytes: int,
                       context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        return await self._classify(request, wire_bytes, context.time_remaining())

    async def classify_stream(self, messages, context: grpc.aio.ServicerContext):
        """Pipelined (``cifar10_serving.grpc_api.streams``): answered in order, errors per message."""
        async for response in pipelined(
            messages, lambda request, size: self._classify(request, size, context.time_remaining()),
            _stream_error, method="ClassifyStream", observe=self.observe,
            stopping=self.lifecycle.stopping, context=context,
        ):
            yield response

    async def get_model_info(self, request: pb.GetModelInfoRequest, wire_bytes: int,
                             context: grpc.aio.ServicerContext) -> pb.ModelInfo:
        return self._model_info(self.plane.models.select(request.model_name,
                                                         request.model_version))

    async def list_models(self, request: pb.ListModelsRequest, wire_bytes: int,
                          context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        models = self.plane.models
        return pb.ListModelsResponse(models=[self._model_info(model) for model in models.served()],
                                     default_model=models.default.name)

    def _model_info(self, model: OnnxModel) -> pb.ModelInfo:
        def spec(s) -> pb.TensorSpec:
            return pb.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape), description=s.description)

        info = model.info
        return pb.ModelInfo(
            name=info.name, version=info.version, labels=list(info.labels),
            input=spec(info.input), output=spec(info.output),
            max_batch_size=self.plane.batching_of(model).max_batch_size, metadata=dict(info.metadata),
        )
