"""Unit tests of cifar10_serving.grpc_api.inference_codec (Open Inference Protocol messages
<-> numpy) and of the protocol's shared tensors (cifar10_serving.inference_protocol.tensors)."""

from __future__ import annotations

import numpy as np
import pytest

from cifar10_core import contract
from cifar10_core.errors import InvalidInputError
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_serving.grpc_api.inference_codec import (
    decode_images,
    encode_response,
    output_request,
)
from cifar10_serving.inference_protocol.tensors import (
    IMAGE_BYTES,
    OutputRequest,
    classification_strings,
    deserialize_bytes,
    serialize_bytes,
)

MAX_IMAGES = 8


def make_request(
    images: np.ndarray | None = None,
    *,
    raw: bool = True,
    name: str = "images",
    datatype: str = "UINT8",
    shape: list[int] | None = None,
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    if images is None:
        images = np.arange(2 * IMAGE_BYTES, dtype=np.uint64).astype(np.uint8).reshape(2, 32, 32, 3)
    tensor = request.inputs.add(name=name, datatype=datatype)
    tensor.shape.extend(shape if shape is not None else images.shape)
    if raw:
        request.raw_input_contents.append(images.tobytes())
    else:
        tensor.contents.uint_contents.extend(images.reshape(-1).tolist())
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_decode_round_trips(raw):
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    decoded = decode_images(make_request(images, raw=raw), MAX_IMAGES)
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(decoded, images)


def _no_inputs():
    return pb.ModelInferRequest(model_name="m")


def _two_inputs():
    request = make_request()
    request.inputs.add(name="extra", datatype="UINT8", shape=[1])
    return request


def _raw_and_typed():
    request = make_request()
    request.inputs[0].contents.uint_contents.extend([0] * (2 * IMAGE_BYTES))
    return request


def _two_raw_entries():
    request = make_request()
    request.raw_input_contents.append(b"x")
    return request


def _no_data():
    request = make_request()
    del request.raw_input_contents[:]
    return request


def _typed_wrong_field():
    request = make_request()
    del request.raw_input_contents[:]
    request.inputs[0].contents.int_contents.extend([0] * (2 * IMAGE_BYTES))
    return request


def _typed_over_255():
    request = make_request(raw=False)
    request.inputs[0].contents.uint_contents[5] = 256
    return request


def _typed_short():
    request = make_request(raw=False)
    del request.inputs[0].contents.uint_contents[-1]
    return request


def _raw_short():
    request = make_request()
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    return request


def _zero_images():
    return make_request(np.zeros((0, 32, 32, 3), np.uint8))


def _too_many():
    return make_request(np.zeros((MAX_IMAGES + 1, 32, 32, 3), np.uint8))


def _bytes_request(shape, elements=(b"a", b"b"), raw=False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=shape)
    if raw:
        request.raw_input_contents.append(serialize_bytes(list(elements)))
    else:
        tensor.contents.bytes_contents.extend(elements)
    return request


def test_decode_encoded_images():
    assert list(decode_images(_bytes_request([2]), MAX_IMAGES)) == [b"a", b"b"]
    assert decode_images(_bytes_request([2, 1], raw=True), MAX_IMAGES) == [b"a", b"b"]


BAD_REQUESTS = {
    "no inputs": (_no_inputs, "missing input"),
    "two inputs": (_two_inputs, "exactly one input"),
    "wrong input name": (lambda: make_request(name="pixels"), "unknown input 'pixels'"),
    "wrong datatype": (lambda: make_request(datatype="FP32"), "datatype FP32; expected UINT8"),
    "empty datatype": (lambda: make_request(datatype=""), "datatype ''"),
    "shape without batch": (lambda: make_request(shape=[32, 32, 3]), "has shape [32, 32, 3]"),
    "shape NCHW": (lambda: make_request(shape=[2, 3, 32, 32]), "has shape [2, 3, 32, 32]"),
    "shape too small": (lambda: make_request(shape=[2, 16, 16, 3]), "expected [N, 32, 32, 3]"),
    "negative batch": (lambda: make_request(shape=[-1, 32, 32, 3]), "negative batch"),
    "zero images": (_zero_images, "zero images"),
    "too many images": (_too_many, f"at most {MAX_IMAGES} per request"),
    "raw and typed": (_raw_and_typed, "both raw_input_contents and contents"),
    "two raw entries": (_two_raw_entries, "raw_input_contents has 2 entries"),
    "raw byte length": (_raw_short, f"needs {2 * IMAGE_BYTES} bytes"),
    "shape vs raw bytes": (lambda: make_request(shape=[3, 32, 32, 3]), f"got {2 * IMAGE_BYTES}"),
    "no data": (_no_data, "has no data"),
    "typed in wrong field": (_typed_wrong_field, "contents.uint_contents, got contents.int_contents"),
    "typed value over 255": (_typed_over_255, "holds 256, above 255"),
    "typed element count": (_typed_short, f"got {2 * IMAGE_BYTES - 1}"),
    "BYTES shape": (lambda: _bytes_request([2, 2]), "expected [N] or [N, 1]"),
    "BYTES count": (lambda: _bytes_request([3]), "needs 3 values in contents.bytes_contents"),
    "BYTES raw count": (lambda: _bytes_request([3], raw=True), "2 elements, its shape says 3"),
    "BYTES raw extra": (lambda: _bytes_request([1], raw=True), "after the 1 elements"),
    "BYTES typed field": (lambda: _bytes_request([2], elements=()), "has no data"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_inputs_name_the_problem(case):
    build, message = BAD_REQUESTS[case]
    with pytest.raises(InvalidInputError) as info:
        decode_images(build(), MAX_IMAGES)
    assert message in str(info.value)
    assert info.value.status_name == "INVALID_ARGUMENT"


def _with_output(name="probabilities", **parameters):
    request = make_request()
    output = request.outputs.add(name=name)
    for key, value in parameters.items():
        output.parameters[key].CopyFrom(value)
    return request


def test_requested_output_default_and_classification():
    assert output_request(make_request()) == OutputRequest()
    assert output_request(_with_output()) == OutputRequest()
    k3 = pb.InferParameter(int64_param=3)
    assert output_request(_with_output(classification=k3)) == OutputRequest(top_k=3)
    k99 = pb.InferParameter(int64_param=99)
    assert output_request(_with_output(classification=k99)) == OutputRequest(top_k=10)
    k0 = pb.InferParameter(int64_param=0)
    assert output_request(_with_output(classification=k0)) == OutputRequest()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: _with_output(name="logits"), "unknown output 'logits'"),
        (lambda: _with_output(classification=pb.InferParameter(int64_param=-1)), ">= 1, got -1"),
        (lambda: _with_output(classification=pb.InferParameter(string_param="3")), "int64"),
        (lambda: _with_output(classification=pb.InferParameter(bool_param=True)), "int64"),
    ],
    ids=["unknown output", "negative k", "string k", "bool k"],
)
def test_bad_requested_outputs(build, message):
    with pytest.raises(InvalidInputError, match=message):
        output_request(build())


def test_two_requested_outputs_rejected():
    request = _with_output()
    request.outputs.add(name="probabilities")
    with pytest.raises(InvalidInputError, match="at most one requested output"):
        output_request(request)


def test_bytes_serialization_round_trips():
    elements = [b"", b"a", "é:1:cat".encode(), bytes(range(256))]
    data = serialize_bytes(elements)
    assert data[:4] == b"\x00\x00\x00\x00" and data[4:8] == b"\x01\x00\x00\x00"
    assert deserialize_bytes(data) == elements
    with pytest.raises(ValueError):
        deserialize_bytes(data[:-1])


def test_classification_strings_are_triton_formatted():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    strings = classification_strings(probs, 2, ["a", "b", "c"])
    assert strings == [b"0.700000:1:b", b"0.200000:2:c", b"0.500000:0:a", b"0.250000:1:b"]


def test_encode_response_tensor_and_classification():
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=3).astype(np.float32)
    response = encode_response(pb.ModelInferResponse(), probs, OutputRequest(), contract.CLASS_NAMES)
    (tensor,) = response.outputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("probabilities", "FP32", [3, 10])
    decoded = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 10)
    np.testing.assert_array_equal(decoded, probs)

    response = encode_response(
        pb.ModelInferResponse(), probs, OutputRequest(top_k=2), contract.CLASS_NAMES
    )
    (tensor,) = response.outputs
    assert (tensor.datatype, list(tensor.shape)) == ("BYTES", [3, 2])
    strings = deserialize_bytes(response.raw_output_contents[0])
    assert len(strings) == 6
    best = int(np.argmax(probs[0]))
    assert strings[0] == f"{probs[0, best]:f}:{best}:{contract.CLASS_NAMES[best]}".encode()
