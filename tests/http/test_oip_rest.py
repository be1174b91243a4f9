"""The Open Inference Protocol's REST API on the real server (free ports), with httpx: JSON
tensors, the binary tensor data extension, the classification extension, encoded images as
BYTES, metadata, readiness, configuration and statistics, and every refusal as JSON."""

from __future__ import annotations

import base64
import io
import json

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from cifar10_core import contract
from cifar10_protos.inference import grpc_service_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2_grpc as pb_grpc
from cifar10_serving.inference_protocol.tensors import (
    deserialize_bytes,
    serialize_bytes,
)

MAX_IMAGES = 16
MODEL = "/v2/models/tiny-cnn"
INFER = MODEL + "/infer"
HEADER_LENGTH = "Inference-Header-Content-Length"


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def tensor(array: np.ndarray, data=None, **fields) -> dict:
    return {"name": "images", "datatype": "UINT8", "shape": list(array.shape),
            "data": array.ravel().tolist() if data is None else data, **fields}


def binary_body(header: dict, *parts: bytes) -> tuple[bytes, dict]:
    document = json.dumps(header).encode()
    return document + b"".join(parts), {HEADER_LENGTH: str(len(document))}


def split_binary(response: httpx.Response) -> tuple[dict, bytes]:
    length = int(response.headers[HEADER_LENGTH])
    return json.loads(response.content[:length]), response.content[length:]


@pytest.fixture
def server(server_factory):
    return server_factory(max_images_per_request=MAX_IMAGES)


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.http_address, timeout=30) as client:
        yield client


def expected(server, batch: np.ndarray) -> np.ndarray:
    return server.plane.models.default.predict(batch)


def test_server_metadata_and_health(http):
    meta = http.get("/v2").json()
    assert meta["name"] == "cifar10-serving" and meta["version"]
    assert set(meta["extensions"]) == {"classification", "model_configuration",
                                       "binary_tensor_data", "statistics"}
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize("path", [MODEL, MODEL + "/versions/1"])
def test_model_metadata_ready_and_config(http, path):
    meta = http.get(path).json()
    assert (meta["name"], meta["versions"], meta["platform"]) == ("tiny-cnn", ["1"],
                                                                   "onnxruntime_onnx")
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 32, 32, 3]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["model_name"] == "tiny-cnn"
    ready = http.get(path + "/ready")
    assert ready.status_code == 200 and ready.json() == {"name": "tiny-cnn", "ready": True}
    config = http.get(path + "/config").json()
    assert config["max_batch_size"] == MAX_IMAGES
    assert config["input"] == [{"name": "images", "data_type": "TYPE_UINT8",
                                "format": "FORMAT_NHWC", "dims": [32, 32, 3]}]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10]}]
    assert "dynamic_batching" in config and config["instance_group"][0]["kind"] == "KIND_CPU"


@pytest.mark.parametrize("path", [
    "/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/config", "/v2/models/nope/stats",
    MODEL + "/versions/7", MODEL + "/versions/7/ready", MODEL + "/versions/7/config",
])
def test_unknown_model_or_version_is_404_naming_what_is_served(http, path):
    response = http.get(path)
    assert response.status_code == 404
    assert "tiny-cnn" in response.json()["error"]
    for infer in ("/v2/models/nope/infer", MODEL + "/versions/7/infer"):
        response = http.post(infer, json={"inputs": [tensor(images(1))]})
        assert response.status_code == 404 and "this server serves" in response.json()["error"]


def test_infer_json_flat_and_nested(server, http):
    x = images(3, seed=1)
    flat = http.post(INFER, json={"id": "req-1", "inputs": [tensor(x)]})
    assert flat.status_code == 200 and flat.headers["content-type"] == "application/json"
    answer = flat.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("tiny-cnn", "1", "req-1")
    (output,) = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [3, 10])
    probabilities = np.array(output["data"], dtype=np.float32).reshape(3, 10)
    np.testing.assert_array_equal(probabilities, expected(server, x))
    nested = http.post(MODEL + "/versions/1/infer",
                       json={"inputs": [tensor(x, data=x.tolist())]}).json()
    assert nested["outputs"][0]["data"] == output["data"] and "id" not in nested


def test_large_json_is_parsed_off_the_event_loop(server, http):
    x = images(MAX_IMAGES, seed=2)  # some 200 KB of JSON: past what is parsed on the loop
    answer = http.post(INFER, json={"inputs": [tensor(x)]}).json()
    np.testing.assert_array_equal(
        np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(MAX_IMAGES, 10),
        expected(server, x))


def test_binary_extension_in_and_out(server, http):
    x = images(4, seed=3)
    want = expected(server, x)
    header = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [4, 32, 32, 3],
                          "parameters": {"binary_data_size": x.nbytes}}]}
    body, headers = binary_body(header, x.tobytes())
    json_out = http.post(INFER, content=body, headers=headers)
    assert json_out.status_code == 200 and HEADER_LENGTH not in json_out.headers
    np.testing.assert_array_equal(
        np.array(json_out.json()["outputs"][0]["data"], dtype=np.float32).reshape(4, 10), want)

    for asked in ({"parameters": {"binary_data_output": True}},
                  {"outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}):
        body, headers = binary_body({**header, **asked}, x.tobytes())
        response = http.post(INFER, content=body, headers=headers)
        assert response.headers["content-type"] == "application/octet-stream"
        answer, data = split_binary(response)
        (output,) = answer["outputs"]
        assert output["parameters"] == {"binary_data_size": 160} and "data" not in output
        np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(4, 10), want)

    # binary_data false on the output wins over the request's binary_data_output
    body, headers = binary_body({**header, "parameters": {"binary_data_output": True}, "outputs": [
        {"name": "probabilities", "parameters": {"binary_data": False}}]}, x.tobytes())
    assert "data" in http.post(INFER, content=body, headers=headers).json()["outputs"][0]


def test_classification_json_and_binary(server, http):
    x = images(3, seed=4)
    probs = expected(server, x)
    want = [[f"{row[i]:f}:{i}:{contract.CLASS_NAMES[i]}".encode()
             for i in np.argsort(-row, kind="stable")[:3]] for row in probs]
    ask = [{"name": "probabilities", "parameters": {"classification": 3}}]
    output = http.post(INFER, json={"inputs": [tensor(x)], "outputs": ask}).json()["outputs"][0]
    assert (output["datatype"], output["shape"]) == ("BYTES", [3, 3])
    assert output["data"] == [s.decode() for row in want for s in row]

    ask[0]["parameters"]["binary_data"] = True
    answer, data = split_binary(http.post(INFER, json={"inputs": [tensor(x)], "outputs": ask}))
    assert answer["outputs"][0]["parameters"]["binary_data_size"] == len(data)
    assert deserialize_bytes(data) == [s for row in want for s in row]


def test_encoded_images_as_bytes(server, http):
    x = images(3, seed=5)
    want = expected(server, x)
    files = [png(p) for p in x]
    texts = [base64.b64encode(f).decode() for f in files]
    texts[1] = "data:image/png;base64," + texts[1]
    answers = [
        http.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [3],
                                           "data": texts}]}),
        http.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES", "shape": [3, 1],
                                           "data": [[t] for t in texts]}]}),
        http.post(INFER, **dict(zip(("content", "headers"), binary_body(
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [3],
                         "parameters": {"binary_data_size": len(serialize_bytes(files))}}]},
            serialize_bytes(files))))),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(
            np.array(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 10), want)


def test_an_undecodable_image_fails_the_request_naming_it(http):
    texts = [base64.b64encode(png(images(1)[0])).decode(),
             base64.b64encode(b"not an image").decode(), "%%%"]
    response = http.post(INFER, json={"inputs": [{"name": "images", "datatype": "BYTES",
                                                  "shape": [3], "data": texts}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "image 1: cannot decode image" in error and "image 2: the string is not valid base64" in error


def _binary(header_length: str | None, body: bytes) -> dict:
    return {"content": body, "headers": {HEADER_LENGTH: header_length} if header_length else {}}


def _uint8_header(size: int, count: int = 1) -> bytes:
    return json.dumps({"inputs": [{"name": "images", "datatype": "UINT8",
                                   "shape": [count, 32, 32, 3],
                                   "parameters": {"binary_data_size": size}}]}).encode()


ONE = images(1)
HEADER = _uint8_header(3072)
BYTES_HEADER = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": 7}}]}).encode()
BAD_REQUESTS = {
    "malformed JSON": ({"content": b'{"inputs": ['}, "malformed JSON"),
    "not an object": ({"json": [1, 2]}, "must be a JSON object"),
    "no inputs": ({"json": {"inputs": []}}, "missing input"),
    "two inputs": ({"json": {"inputs": [tensor(ONE), tensor(ONE)]}}, "exactly one input"),
    "wrong name": ({"json": {"inputs": [tensor(ONE, name="pixels")]}}, "unknown input 'pixels'"),
    "wrong datatype": ({"json": {"inputs": [tensor(ONE, datatype="FP32")]}},
                       "datatype FP32; expected UINT8"),
    "wrong shape": ({"json": {"inputs": [tensor(ONE, shape=[1, 3, 32, 32])]}},
                    "has shape [1, 3, 32, 32]"),
    "shape not integers": ({"json": {"inputs": [tensor(ONE, shape=[1, 32, 32, "3"])]}},
                           "array of integers"),
    "too many": ({"json": {"inputs": [tensor(images(MAX_IMAGES + 1))]}},
                 f"at most {MAX_IMAGES} per request"),
    "no data": ({"json": {"inputs": [{"name": "images", "datatype": "UINT8",
                                      "shape": [1, 32, 32, 3]}]}}, "has no data"),
    "short data": ({"json": {"inputs": [tensor(ONE, data=[0] * 100)]}}, "got an array of 100"),
    "nested short": ({"json": {"inputs": [tensor(ONE, data=[[[[0, 0, 0]] * 32] * 31])]}},
                     "got 2976 of shape [1, 31, 32, 3]"),
    "value over 255": ({"json": {"inputs": [tensor(ONE, data=[256] + [0] * 3071)]}},
                       "holds 256, above 255"),
    "negative value": ({"json": {"inputs": [tensor(ONE, data=[-1] + [0] * 3071)]}},
                       "holds -1, below 0"),
    "floats": ({"json": {"inputs": [tensor(ONE, data=[0.5] * 3072)]}}, "fraction"),
    "ragged": ({"json": {"inputs": [tensor(ONE, data=[[[1, 2], [3]]])]}}, "rectangular"),
    "unknown output": ({"json": {"inputs": [tensor(ONE)], "outputs": [{"name": "logits"}]}},
                       "unknown output 'logits'"),
    "bad classification": ({"json": {"inputs": [tensor(ONE)], "outputs": [
        {"name": "probabilities", "parameters": {"classification": "3"}}]}}, "int64"),
    "bad binary_data_output": ({"json": {"inputs": [tensor(ONE)],
                                         "parameters": {"binary_data_output": "yes"}}}, "boolean"),
    "header length not a number": (_binary("x", HEADER + ONE.tobytes()), HEADER_LENGTH),
    "header length past the body": (_binary("99999", HEADER + ONE.tobytes()), HEADER_LENGTH),
    "binary size vs data": (_binary(str(len(_uint8_header(3000))),
                                    _uint8_header(3000) + ONE.tobytes()),
                            "binary_data_size 3000"),
    "binary bytes vs shape": (_binary(str(len(_uint8_header(3072, 2))),
                                      _uint8_header(3072, 2) + ONE.tobytes()),
                              "needs 6144 bytes of binary data"),
    "binary without header": ({"content": HEADER}, f"no {HEADER_LENGTH} header"),
    "binary data unclaimed": (_binary(str(len(json.dumps({"inputs": [tensor(ONE)]}))),
                                      json.dumps({"inputs": [tensor(ONE)]}).encode() + b"xx"),
                              "no input has the parameter binary_data_size"),
    "BYTES not strings": ({"json": {"inputs": [{"name": "images", "datatype": "BYTES",
                                                "shape": [1], "data": [5]}]}}, "1 strings"),
    "BYTES bad shape": ({"json": {"inputs": [{"name": "images", "datatype": "BYTES",
                                              "shape": [1, 2], "data": ["a", "b"]}]}},
                        "expected [N] or [N, 1]"),
    "BYTES truncated": (_binary(str(len(BYTES_HEADER)), BYTES_HEADER + b"\x09\x00\x00\x00abc"),
                        "truncated BYTES element"),
    "bad request timeout": ({"json": {"inputs": [tensor(ONE)]},
                             "headers": {"X-Request-Timeout": "soon"}}, "X-Request-Timeout"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_client_mistakes_are_400_with_a_json_error(http, case):
    request, message = BAD_REQUESTS[case]
    response = http.post(INFER, **request)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"], response.json()
    assert http.get("/v2/health/ready").status_code == 200


def test_too_large_is_413_and_compressed_is_415(server_factory):
    server = server_factory(max_message_bytes=64 * 1024)
    with httpx.Client(base_url=server.http_address, timeout=30) as http:
        response = http.post(INFER, json={"inputs": [tensor(images(8))]})
        assert response.status_code == 413 and "--max-message-bytes" in response.json()["error"]
        response = http.post(INFER, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
        assert response.status_code == 415 and "uncompressed" in response.json()["error"]


def test_statistics_count_both_doors(server, http):
    x = images(2, seed=6)
    for _ in range(3):
        assert http.post(INFER, json={"inputs": [tensor(x)]}).status_code == 200
    assert http.post(INFER, json={"inputs": []}).status_code == 400
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="tiny-cnn", raw_input_contents=[x.tobytes()])
        request.inputs.add(name="images", datatype="UINT8", shape=[2, 32, 32, 3])
        stub.ModelInfer(request, timeout=10)
        by_grpc = stub.ModelStatistics(pb.ModelStatisticsRequest(name="tiny-cnn"), timeout=10)
    (stats,) = http.get(MODEL + "/stats").json()["model_stats"]
    assert (stats["name"], stats["version"]) == ("tiny-cnn", "1")
    assert stats["inference_count"] == 8 and stats["execution_count"] == 4
    assert stats["inference_stats"]["success"]["count"] == 4
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert stats["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}
    assert by_grpc.model_stats[0].inference_count == 8
    assert http.get("/v2/models/stats").json()["model_stats"][0]["execution_count"] == 4


def test_the_openapi_document_lists_the_routes(http):
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/v2", "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}",
                 "/v2/models/{model_name}/ready", "/v2/models/{model_name}/config",
                 "/v2/models/{model_name}/stats", "/v2/models/stats"):
        assert "get" in paths[path], path
    infer = paths["/v2/models/{model_name}/infer"]["post"]
    assert {"application/json", "application/octet-stream"} <= set(infer["requestBody"]["content"])

