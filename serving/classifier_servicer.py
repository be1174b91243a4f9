"""cifar10.v1.Classifier: a thin adapter between protobuf and the serving core.

Decoding follows ``cifar10_core.images`` (the one shared preprocessing); errors become status
codes in ``cifar10_serving.grpc_status``. Raw 32x32x3 images skip Pillow entirely.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np

from cifar10_core import contract, images
from cifar10_serving.core import Prediction, ServingCore, deadline_after
from cifar10_core.errors import InvalidInputError, ServingError
from cifar10_serving.grpc_status import RequestObserver, rpc
from cifar10_serving.streams import pipelined
from cifar10_serving.proto.cifar10.v1 import classifier_pb2 as pb
from cifar10_serving.proto.cifar10.v1 import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Classifier"].full_name
_RAW_SIZE = contract.IMAGE_SIZE * contract.IMAGE_SIZE * contract.CHANNELS
_OFFLOAD_BYTES = 256 * 1024  # decode bigger encoded payloads on a worker thread

ClassScore = pb.ClassScore
Classification = pb.Classification


def check_top_k(top_k: int) -> int:
    if top_k == 0:
        return 1
    if top_k > contract.NUM_CLASSES:
        raise InvalidInputError(f"top_k must be between 0 and {contract.NUM_CLASSES}, got {top_k}")
    return top_k


def decode_images(request_images, max_images: int, max_pixels: int) -> np.ndarray:
    """The request's images as uint8 [N, 32, 32, 3]; InvalidInputError naming the image."""
    n = len(request_images)
    if n == 0:
        raise InvalidInputError("the request holds no images")
    if n > max_images:
        raise InvalidInputError(f"too many images in one request: {n} > {max_images}")
    # Fast path: every image raw 32x32x3 -> one join, one frombuffer, no Pillow.
    raws = []
    for image in request_images:
        if image.WhichOneof("data") != "raw":
            break
        raw = image.raw
        if raw.height != 32 or raw.width != 32 or raw.channels != 3 or len(raw.data) != _RAW_SIZE:
            break
        raws.append(raw.data)
    else:
        data = raws[0] if n == 1 else b"".join(raws)
        return np.frombuffer(data, dtype=np.uint8).reshape(n, *contract.INPUT_SHAPE)
    out = np.empty((n, *contract.INPUT_SHAPE), dtype=np.uint8)
    for i, image in enumerate(request_images):
        kind = image.WhichOneof("data")
        try:
            if kind == "raw":
                raw = image.raw
                out[i] = images.from_raw_bytes(raw.data, raw.height, raw.width, raw.channels, max_pixels)
            elif kind == "encoded":
                out[i] = images.decode(image.encoded, max_pixels)
            else:
                raise InvalidInputError("no data: set either `encoded` or `raw`")
        except InvalidInputError as exc:
            raise type(exc)(f"image {i}: {exc}") from None
    return out


def _encoded_bytes(request_images) -> int:
    return sum(len(image.encoded) for image in request_images)


def build_response(pred: Prediction, top_k: int, request_id: str = "") -> pb.ClassifyResponse:
    labels = pred.model.labels
    probs = pred.probabilities
    rows = probs.tolist()
    if top_k == 1:
        tops = [[j] for j in probs.argmax(axis=1).tolist()]
    else:
        tops = np.argsort(-probs, axis=1, kind="stable")[:, :top_k].tolist()
    indices = range(len(labels))
    results = [
        Classification(
            scores=[ClassScore(index=i, label=labels[i], probability=row[i]) for i in indices],
            top=[ClassScore(index=j, label=labels[j], probability=row[j]) for j in top],
        )
        for row, top in zip(rows, tops)
    ]
    return pb.ClassifyResponse(
        results=results, model_name=pred.model.name, model_version=pred.model.version,
        request_id=request_id,
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(data)) + data


class ResponseEncoder:
    """Writes ClassifyResponse wire bytes directly, vectorised over the batch.

    Building ~11 ClassScore messages per image through the protobuf API costs ~35 us per
    image; this costs a few. The bytes are plain proto3 wire format (test_encoding.py checks
    that they parse to exactly what ``build_response`` builds).
    """

    def __init__(self, labels: tuple[str, ...]):
        self.labels = labels
        # ClassScore body for label i, float last: 08 i | 12 len label | 1d <float32 LE>
        self._heads = [b"\x08" + _varint(i) + _field(0x12, label.encode()) + b"\x1d"
                       for i, label in enumerate(labels)]
        self._score_len = [len(h) + 4 for h in self._heads]
        template = bytearray()
        self._offsets = []
        for head, length in zip(self._heads, self._score_len):
            template += b"\x0a" + _varint(length) + head  # Classification.scores entry
            self._offsets.append(len(template))
            template += b"\0\0\0\0"
        self._template = np.frombuffer(bytes(template), dtype=np.uint8)
        self._entries = [b"\x0a" + _varint(length) + head
                         for head, length in zip(self._heads, self._score_len)]
        self._top_heads = [b"\x12" + _varint(length) + head  # Classification.top entry
                           for head, length in zip(self._heads, self._score_len)]

    def encode(self, pred: Prediction, top_k: int, request_id: str = "") -> bytes:
        probs = np.ascontiguousarray(pred.probabilities, dtype="<f4")
        n, classes = probs.shape
        if n == 1:
            return self._encode_one(probs, top_k, pred.model, request_id)
        rows = np.tile(self._template, (n, 1))
        as_bytes = probs.view(np.uint8).reshape(n, classes, 4)
        for i, offset in enumerate(self._offsets):
            rows[:, offset:offset + 4] = as_bytes[:, i]
        if top_k == 1:
            tops = probs.argmax(axis=1).reshape(n, 1).tolist()
        else:
            tops = np.argsort(-probs, axis=1, kind="stable")[:, :top_k].tolist()
        flat = probs.tobytes()
        top_heads = self._top_heads
        parts = []
        for r, (row, top) in enumerate(zip(rows, tops)):
            base = r * classes
            body = row.tobytes() + b"".join(
                [top_heads[j] + flat[(base + j) * 4:(base + j) * 4 + 4] for j in top]
            )
            parts.append(b"\x0a" + _varint(len(body)) + body)
        return b"".join(parts) + self._tail(pred.model, request_id)

    @staticmethod
    def _tail(info, request_id: str) -> bytes:
        tail = _field(0x12, info.name.encode()) + _field(0x1a, info.version.encode())
        if request_id:
            tail += _field(0x22, request_id.encode())
        return tail

    def _encode_one(self, probs: np.ndarray, top_k: int, info, request_id: str) -> bytes:
        """One image: plain bytes joins beat numpy's per-call overhead."""
        flat = probs.tobytes()
        floats = [flat[i:i + 4] for i in range(0, len(flat), 4)]
        if top_k == 1:
            top = [int(probs[0].argmax())]
        else:
            top = np.argsort(-probs[0], kind="stable")[:top_k].tolist()
        body = b"".join([e + f for e, f in zip(self._entries, floats)]
                        + [self._top_heads[j] + floats[j] for j in top])
        return b"\x0a" + _varint(len(body)) + body + self._tail(info, request_id)


def _serialize(response) -> bytes:
    """ClassifyResponse messages or bytes already in its wire format."""
    return response if isinstance(response, bytes) else response.SerializeToString()


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, core: ServingCore, observe: RequestObserver | None = None):
        self.core = core
        self.observe = observe
        self._max_pixels = core.max_image_pixels
        self._encoders: dict[tuple[str, ...], ResponseEncoder] = {}

    def _encode(self, pred: Prediction, top_k: int, request_id: str) -> bytes:
        encoder = self._encoders.get(pred.model.labels)
        if encoder is None:
            encoder = self._encoders[pred.model.labels] = ResponseEncoder(pred.model.labels)
        return encoder.encode(pred, top_k, request_id)

    async def _classify(self, request: pb.ClassifyRequest, timeout: float | None) -> bytes:
        """Serialized ClassifyResponse bytes (see ResponseEncoder)."""
        core = self.core
        top_k = check_top_k(request.top_k)
        model = core.select(request.model_name, request.model_version)
        if len(request.images) > 1 and _encoded_bytes(request.images) > _OFFLOAD_BYTES:
            batch = await asyncio.to_thread(
                decode_images, request.images, core.max_images_per_request, self._max_pixels
            )
        else:
            batch = decode_images(request.images, core.max_images_per_request, self._max_pixels)
        pred = await core.classify(batch, model=model, deadline=deadline_after(timeout))
        return self._encode(pred, top_k, request.request_id)

    @rpc("Classify")
    async def Classify(self, request, context):
        return await self._classify(request, context.time_remaining())

    async def ClassifyStream(self, request_iterator, context):
        """Pipelined (``cifar10_serving.streams``): answered in order, errors per message."""
        async for response in pipelined(
            request_iterator, lambda request: self._classify(request, context.time_remaining()),
            _stream_error, method="ClassifyStream", observe=self.observe,
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
    """Register the servicer; return the full service names (for health and reflection).

    Same as the generated ``add_ClassifierServicer_to_server`` except that Classify and
    ClassifyStream responses may be pre-encoded bytes (ResponseEncoder).
    """
    servicer = ClassifierServicer(core, observe)
    handlers = {
        "Classify": grpc.unary_unary_rpc_method_handler(
            servicer.Classify, request_deserializer=pb.ClassifyRequest.FromString,
            response_serializer=_serialize,
        ),
        "ClassifyStream": grpc.stream_stream_rpc_method_handler(
            servicer.ClassifyStream, request_deserializer=pb.ClassifyRequest.FromString,
            response_serializer=_serialize,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo, request_deserializer=pb.GetModelInfoRequest.FromString,
            response_serializer=pb.ModelInfo.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    return [SERVICE_NAME]


__all__ = ["ClassifierServicer", "add_to_server", "SERVICE_NAME", "ServingError"]
