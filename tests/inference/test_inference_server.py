"""The Open Inference Protocol service on the real server (port 0), with our own stubs.

Runs without the Triton venv; tests/inference/test_triton_client.py repeats the important
cases with Triton's own client.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2_grpc as pb_grpc
from cifar10_serving.inference_protocol.descriptions import extensions
from cifar10_serving.inference_protocol.tensors import (
    deserialize_bytes,
    serialize_bytes,
)


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def infer_request(array: np.ndarray, model="tiny-cnn", typed=False, **fields):
    request = pb.ModelInferRequest(model_name=model, **fields)
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=list(array.shape))
    if typed:
        tensor.contents.uint_contents.extend(array.reshape(-1).tolist())
    else:
        request.raw_input_contents.append(array.tobytes())
    return request


@pytest.fixture
def stub(server, channel):
    return pb_grpc.GRPCInferenceServiceStub(channel)


def test_infer_raw_typed_and_classification(server, stub):
    x = images(4)
    raw = stub.ModelInfer(infer_request(x, id="a"), timeout=10)
    typed = stub.ModelInfer(infer_request(x, typed=True), timeout=10)
    assert raw.id == "a" and (raw.model_name, raw.model_version) == ("tiny-cnn", "1")
    assert raw.raw_output_contents == typed.raw_output_contents
    probs = np.frombuffer(raw.raw_output_contents[0], dtype="<f4").reshape(4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    want = server.plane.models.default.predict(x)
    np.testing.assert_allclose(probs, want, rtol=1e-6)

    request = infer_request(x)
    request.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
    reply = stub.ModelInfer(request, timeout=10)
    assert reply.outputs[0].datatype == "BYTES" and list(reply.outputs[0].shape) == [4, 2]
    strings = deserialize_bytes(reply.raw_output_contents[0])
    best = int(np.argmax(probs[0]))
    assert strings[0].decode().split(":")[1:] == [str(best), server.plane.models.default.info.labels[best]]


def test_bad_requests_are_invalid_argument_and_server_keeps_serving(server, stub):
    cases = [
        infer_request(images(1), model="nope"),
        infer_request(images(1), model_version="7"),
        pb.ModelInferRequest(model_name="tiny-cnn"),
        infer_request(images(0)),
        infer_request(images(server.plane.limits.max_images_per_request + 1)),
    ]
    short = infer_request(images(2))
    short.raw_input_contents[0] = short.raw_input_contents[0][:100]
    cases.append(short)
    for i, request in enumerate(cases):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        # a model or version not served: NOT_FOUND
        code = grpc.StatusCode.NOT_FOUND if i < 2 else grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.code() == code, info.value.details()
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_metadata_config_ready(server, stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny-cnn")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="other")).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny-cnn"))
    assert list(meta.inputs[0].shape) == [-1, 32, 32, 3] and meta.inputs[0].datatype == "UINT8"
    config = stub.ModelConfig(pb.ModelConfigRequest(name="tiny-cnn")).config
    assert config.input[0].data_type == pb.TYPE_UINT8 and list(config.input[0].dims) == [32, 32, 3]
    assert config.HasField("dynamic_batching")
    assert [g.count for g in config.instance_group] == [server.plane.batching.instances]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelConfig(pb.ModelConfigRequest(name="other"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_in_order_with_errors(stub):
    requests = [infer_request(images(1, i), id=str(i)) for i in range(20)]
    requests.insert(5, pb.ModelInferRequest(model_name="tiny-cnn", id="bad"))
    replies = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert [r.infer_response.id for r in replies] == [r.id for r in requests]
    assert replies[5].error_message.startswith("INVALID_ARGUMENT: missing input")
    assert all(not r.error_message for i, r in enumerate(replies) if i != 5)


def test_statistics_extension_only_for_integer_versions():
    assert "statistics" in extensions("3")
    assert "statistics" not in extensions("2026.11.28-0413")
    assert "classification" in extensions("x")


def test_large_typed_request(server, stub):
    x = images(40, seed=9)  # above the size converted off the event loop
    typed = stub.ModelInfer(infer_request(x, typed=True), timeout=30)
    raw = stub.ModelInfer(infer_request(x), timeout=30)
    assert typed.raw_output_contents == raw.raw_output_contents
    assert list(typed.outputs[0].shape) == [40, 10]


def test_health_and_reflection_name_the_service(server, channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]))
    names = {s.name for s in answer.list_services_response.service}
    assert "inference.GRPCInferenceService" in names


def long_name_requests() -> list:
    """Requests that each echo a 64 KiB client string in their error."""
    long = "x" * 65536
    renamed = infer_request(images(1))
    renamed.inputs[0].name = long
    datatype = infer_request(images(1))
    datatype.inputs[0].datatype = long
    output = infer_request(images(1))
    output.outputs.add(name=long)
    parameter = infer_request(images(1))
    parameter.outputs.add(name="probabilities").parameters["classification"].string_param = long
    shape = infer_request(images(1))
    shape.inputs[0].shape.extend([1] * 10000)
    return [infer_request(images(1), model=long), infer_request(images(1), model_version=long),
            renamed, datatype, output, parameter, shape]


def test_long_client_strings_are_quoted_short(stub):
    for i, request in enumerate(long_name_requests()):
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        code = grpc.StatusCode.NOT_FOUND if i < 2 else grpc.StatusCode.INVALID_ARGUMENT  # model, version
        assert info.value.code() == code, info.value.details()[:200]
        assert len(info.value.details()) < 400
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="m" * 65536), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "(65536 chars)" in info.value.details()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_encoded_images_as_bytes(server, stub):
    """BYTES elements are encoded images, in contents.bytes_contents or serialized in
    raw_input_contents; one that does not decode fails the request, naming it."""
    x = images(2, seed=7)
    files = [png(p) for p in x]
    typed = pb.ModelInferRequest(model_name="tiny-cnn")
    typed.inputs.add(name="images", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(files)
    raw = pb.ModelInferRequest(model_name="tiny-cnn", raw_input_contents=[serialize_bytes(files)])
    raw.inputs.add(name="images", datatype="BYTES", shape=[2, 1])
    for request in (typed, raw):
        reply = stub.ModelInfer(request, timeout=10)
        np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(2, 10),
                                      server.plane.models.default.predict(x))
    bad = pb.ModelInferRequest(model_name="tiny-cnn")
    bad.inputs.add(name="images", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [files[0], b"junk"])
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(bad, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 1: cannot decode image" in info.value.details()
