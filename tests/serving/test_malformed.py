"""Malformed protobuf on every method of every service: INVALID_ARGUMENT, streams go on."""

from __future__ import annotations

import logging

import grpc
import pytest

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2 as ipb

# wire-format garbage (field number 0), a length past the end
GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\x64abc"]
BAD_UTF8 = b"\xc3\x28"

UNARY = [
    "/cifar10.v2.Classifier/Classify",
    "/cifar10.v2.Classifier/GetModelInfo",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
    "/inference.GRPCInferenceService/ModelReady",
    "/inference.GRPCInferenceService/ServerMetadata",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelConfig",
    "/inference.GRPCInferenceService/ModelStatistics",
    "/grpc.health.v1.Health/Check",
]


def identity(data: bytes) -> bytes:
    return data


@pytest.fixture
def metered(server_factory):
    return server_factory(metrics_port=0)


@pytest.mark.parametrize("method", UNARY)
def test_unary_methods_answer_invalid_argument(metered, method):
    with grpc.insecure_channel(metered.address) as channel:
        call = channel.unary_unary(method, request_serializer=identity,
                                   response_deserializer=identity)
        for data in GARBAGE:
            with pytest.raises(grpc.RpcError) as info:
                call(data, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, data)
            assert "malformed" in info.value.details() and len(info.value.details()) < 200
    name = method.rsplit("/", 1)[-1]
    assert metered.metrics.malformed.labels(name)._value.get() == len(GARBAGE)


@pytest.mark.parametrize("method, field", [
    ("/cifar10.v2.Classifier/Classify", 3),  # model_name
    ("/inference.GRPCInferenceService/ModelInfer", 1),  # model_name
    ("/inference.GRPCInferenceService/ModelReady", 1),  # name
    ("/grpc.health.v1.Health/Check", 1),  # service
])
def test_invalid_utf8_in_a_string_field_is_invalid_argument(server, method, field):
    data = bytes([field << 3 | 2, len(BAD_UTF8)]) + BAD_UTF8
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary(method, request_serializer=identity,
                                   response_deserializer=identity)
        with pytest.raises(grpc.RpcError) as info:
            call(data, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_watch_answers_invalid_argument(server):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=identity,
                                    response_deserializer=identity)
        with pytest.raises(grpc.RpcError) as info:
            list(call(GARBAGE[0], timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reflection_stream_ends_with_invalid_argument(server):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                     request_serializer=identity, response_deserializer=identity)
        with pytest.raises(grpc.RpcError) as info:
            list(call(iter([GARBAGE[1]]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def good_classify() -> bytes:
    image = pb.Image(raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))
    return pb.ClassifyRequest(images=[image], request_id="ok").SerializeToString()


def good_infer() -> bytes:
    tensor = ipb.ModelInferRequest.InferInputTensor(name="images", datatype="UINT8",
                                                    shape=[1, 32, 32, 3])
    return ipb.ModelInferRequest(id="ok", inputs=[tensor],
                                 raw_input_contents=[bytes(3072)]).SerializeToString()


@pytest.mark.parametrize("method, good, parse, failed", [
    ("/cifar10.v2.Classifier/ClassifyStream", good_classify, pb.ClassifyResponse.FromString,
     lambda r: r.error.code == "INVALID_ARGUMENT" and "malformed" in r.error.message),
    ("/inference.GRPCInferenceService/ModelStreamInfer", good_infer,
     ipb.ModelStreamInferResponse.FromString,
     lambda r: r.error_message.startswith("INVALID_ARGUMENT: malformed")),
])
def test_a_bad_message_on_a_stream_gets_an_error_answer_and_the_stream_goes_on(
        server, method, good, parse, failed):
    messages = [good(), *GARBAGE, b"\x1a\x02" + BAD_UTF8, good()]
    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(method, request_serializer=identity,
                                     response_deserializer=parse)
        answers = list(call(iter(messages), timeout=10))
    assert len(answers) == len(messages)
    assert [failed(a) for a in answers] == [False, True, True, True, False]


def test_warnings_are_rate_limited_and_carry_no_traceback(server, caplog):
    caplog.set_level(logging.WARNING, logger="cifar10_serving")
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/cifar10.v2.Classifier/Classify",
                                   request_serializer=identity, response_deserializer=identity)
        for _ in range(50):
            with pytest.raises(grpc.RpcError):
                call(GARBAGE[0], timeout=10)
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert 1 <= len(lines) <= 2 and all(r.levelno == logging.WARNING and not r.exc_info
                                        for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
