"""Fuzzed request bytes for every method: random and mutated valid messages."""

from __future__ import annotations

import io
import random

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from PIL import Image

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2 as ipb

CLASSIFIER = "/cifar10.v2.Classifier/"
INFERENCE = "/inference.GRPCInferenceService/"


def _png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), "blue").save(buf, "PNG")
    return buf.getvalue()


def _raw(n: int = 1) -> list[pb.Image]:
    return [pb.Image(raw=pb.RawImage(data=bytes(range(256)) * 12, height=32, width=32,
                                     channels=3))] * n


def _infer(typed: bool = False) -> ipb.ModelInferRequest:
    request = ipb.ModelInferRequest(id="fuzz")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=[2, 32, 32, 3])
    if typed:
        tensor.contents.uint_contents.extend([7] * 2 * 3072)
    else:
        request.raw_input_contents.append(bytes(2 * 3072))
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
    return request


def seeds() -> dict[str, list[bytes]]:
    """Valid request messages for each unary method and each stream (as bytes)."""
    classify = [pb.ClassifyRequest(images=_raw(2), top_k=3, request_id="fuzz"),
                pb.ClassifyRequest(images=[pb.Image(encoded=_png(40))], model_name="tiny-cnn")]
    infer = [_infer(), _infer(typed=True)]
    model = [ipb.ModelReadyRequest(name="tiny-cnn", version="1")]
    messages = {
        CLASSIFIER + "Classify": classify,
        CLASSIFIER + "GetModelInfo": [pb.GetModelInfoRequest()],
        CLASSIFIER + "ClassifyStream": classify,
        INFERENCE + "ServerLive": [ipb.ServerLiveRequest()],
        INFERENCE + "ServerReady": [ipb.ServerReadyRequest()],
        INFERENCE + "ModelReady": model,
        INFERENCE + "ServerMetadata": [ipb.ServerMetadataRequest()],
        INFERENCE + "ModelMetadata": [ipb.ModelMetadataRequest(name="tiny-cnn")],
        INFERENCE + "ModelConfig": [ipb.ModelConfigRequest(name="tiny-cnn")],
        INFERENCE + "ModelStatistics": [ipb.ModelStatisticsRequest(name="tiny-cnn")],
        INFERENCE + "ModelInfer": infer,
        INFERENCE + "ModelStreamInfer": infer,
        "/grpc.health.v1.Health/Check": [health_pb2.HealthCheckRequest(service="")],
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="cifar10.v2.Classifier"),
        ],
    }
    return {method: [m.SerializeToString() for m in ms] for method, ms in messages.items()}


STREAMS = {CLASSIFIER + "ClassifyStream", INFERENCE + "ModelStreamInfer",
           "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random change: flipped bytes, a cut, an insertion, a repeat, or fresh garbage."""
    kind = rng.randrange(6)
    if kind == 0 or not data:
        return rng.randbytes(rng.randrange(1, 64))
    buf = bytearray(data)
    if kind == 1:
        for _ in range(rng.randrange(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 2:
        del buf[rng.randrange(len(buf)):]
    elif kind == 3:
        at = rng.randrange(len(buf))
        buf[at:at] = rng.randbytes(rng.randrange(1, 16))
    elif kind == 4:
        at = rng.randrange(len(buf))
        buf[at:at] = buf[at:at + rng.randrange(1, 64)] * rng.randrange(2, 5)
    else:  # a varint field with a huge value (e.g. top_k past uint32), then the message
        buf[0:0] = bytes([rng.choice((0x10, 0x08, 0x18))]) + b"\xff\xff\xff\xff\x1f"
    return bytes(buf)
