"""POST /v1/classify and GET /v1/model over real HTTP (httpx) against a real server: the
three bodies (raw, multipart, JSON with base64 or data: URLs), per-image errors as gRPC
Classify has them, and every refusal as JSON naming the problem."""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from cifar10_core import contract
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc
from cifar10_serving.settings import Settings
from cifar10_serving.testing import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BUNDLED = ROOT / "models" / "cifar10-cnn.onnx"
CAT = (EXAMPLES / "cat.jpg").read_bytes()
DOG = (EXAMPLES / "dog.jpg").read_bytes()
SHIP_PNG = (EXAMPLES / "ship-256.png").read_bytes()
NOT_AN_IMAGE = b"these are words, not pixels\n"


@pytest.fixture(scope="module")
def server():
    """The bundled model (it knows a cat from a dog), shared by this module's tests."""
    settings = Settings(model_path=str(BUNDLED), host="127.0.0.1", port=0, http_port=0,
                        metrics_port=-1, reload_interval_s=0.0)
    with BackgroundServer(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_address, timeout=30.0) as client:
        yield client


def check_classified(result: dict, label: str, top_k: int = 3) -> None:
    """A classified image's answer is whole and consistent: ten probabilities summing to 1,
    the top k best first, the label the best of them."""
    assert "error" not in result
    assert result["label"] == label
    probabilities = result["probabilities"]
    assert len(probabilities) == contract.NUM_CLASSES
    assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-4)
    top = result["top"]
    assert len(top) == top_k
    assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert top[0] == {"label": result["label"], "probability": result["probability"]}
    for entry in top:
        assert entry["probability"] == probabilities[contract.CLASS_NAMES.index(entry["label"])]


def check_error(response: httpx.Response, status: int, *words: str) -> str:
    """A refusal: the status, a JSON body {"error": ...} naming the problem, the request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    for word in words:
        assert word in body["error"]
    assert response.headers["x-request-id"]
    return body["error"]


@pytest.mark.parametrize("content_type, image, label", [
    ("image/jpeg", CAT, "cat"),
    ("application/octet-stream", DOG, "dog"),
    ("image/png", SHIP_PNG, "ship"),  # 256x256: resized by the server
])
def test_a_raw_body_is_one_image(http, content_type, image, label):
    response = http.post("/v1/classify", content=image, headers={
        "Content-Type": content_type, "X-Request-Id": "raw-1"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == {"name": "cifar10-cnn", "version": answer["model"]["version"]}
    assert answer["model"]["version"]
    assert answer["request_id"] == "raw-1" == response.headers["x-request-id"]
    assert answer["labels"] == list(contract.CLASS_NAMES)
    [result] = answer["results"]
    assert result["index"] == 0 and result["filename"] is None
    check_classified(result, label)


def test_the_answer_is_grpc_classifys(server, http):
    """The same image gives the same probabilities through both doors (float32 exactly)."""
    answer = http.post("/v1/classify", content=CAT, headers={"Content-Type": "image/jpeg"}).json()
    with grpc.insecure_channel(server.address) as channel:
        reply = classifier_pb2_grpc.ClassifierStub(channel).Classify(
            pb.ClassifyRequest(images=[pb.Image(encoded=CAT)], top_k=3), timeout=10)
    assert answer["results"][0]["probabilities"] == pytest.approx(list(reply.probabilities), abs=1e-7)
    assert answer["model"] == {"name": reply.model_name, "version": reply.model_version}


def test_multipart_several_files_one_broken(http):
    """The broken file fails alone, named by its index and filename; the others are classified."""
    response = http.post("/v1/classify", params={"top_k": 2}, files=[
        ("images", ("cat.jpg", CAT, "image/jpeg")),
        ("images", ("notes.txt", NOT_AN_IMAGE, "text/plain")),
        ("photo", ("dog.jpg", DOG, "image/jpeg")),  # any field name
    ])
    assert response.status_code == 200, response.text
    cat, broken, dog = response.json()["results"]
    assert (cat["index"], cat["filename"]) == (0, "cat.jpg")
    check_classified(cat, "cat", top_k=2)
    assert broken == {"index": 1, "filename": "notes.txt", "error": broken["error"]}
    assert "cannot decode image" in broken["error"]
    assert (dog["index"], dog["filename"]) == (2, "dog.jpg")
    check_classified(dog, "dog", top_k=2)


def test_files_past_a_mebibyte_each(http):
    """Multipart parts are not held to a per-part limit (Starlette's form parser has 1 MiB):
    only the whole body is, by --max-message-bytes. Bodies this large are read off the event
    loop."""
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    big = buffer.getvalue()
    assert len(big) > 1024 * 1024
    response = http.post("/v1/classify", files=[("images", ("noise.png", big, "image/png")),
                                                ("images", ("noise-too.png", big, "image/png"))])
    assert response.status_code == 200, response.text
    assert [r["filename"] for r in response.json()["results"]] == ["noise.png", "noise-too.png"]
    assert all(len(r["probabilities"]) == 10 for r in response.json()["results"])


def test_json_base64_and_data_urls(http):
    """Standard base64, a data: URL, and base64 as other encoders write it (URL-safe alphabet,
    wrapped lines, no padding); the body's top_k wins over the query's."""
    plain = base64.b64encode(CAT).decode()
    wrapped = "\n".join(plain[i:i + 76] for i in range(0, len(plain), 76))
    url_safe = base64.urlsafe_b64encode(DOG).decode().rstrip("=")
    data_url = "data:image/png;base64," + base64.b64encode(SHIP_PNG).decode()
    response = http.post("/v1/classify", params={"top_k": 5},
                         json={"images": [plain, data_url, wrapped, url_safe], "top_k": 1})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert all(r["filename"] is None for r in results)
    for result, label in zip(results, ["cat", "ship", "cat", "dog"]):
        check_classified(result, label, top_k=1)


def test_no_image_that_can_be_read_fails_the_request(http):
    """As gRPC Classify: when every image fails, the request does (400), naming each."""
    response = http.post("/v1/classify", files=[("images", ("a.txt", NOT_AN_IMAGE, "text/plain")),
                                                ("images", ("b.txt", b"", "text/plain"))])
    error = check_error(response, 400, "image 0: cannot decode image", "image 1:")
    assert "empty" in error


@pytest.mark.parametrize("content_type, body, words", [
    ("text/plain", b"hello", ["unsupported Content-Type 'text/plain'", "image/*", "multipart/form-data"]),
    ("application/x-www-form-urlencoded", CAT, ["unsupported Content-Type"]),  # curl -d without -H
])
def test_an_unsupported_media_type_is_415(http, content_type, body, words):
    response = http.post("/v1/classify", content=body, headers={"Content-Type": content_type})
    check_error(response, 415, *words)
    assert "multipart/form-data" in response.headers["accept-post"]


@pytest.mark.parametrize("body, words", [
    (b'{"images": ["not base64!"]}', ["images[0] is not valid base64"]),
    (b'{"images": ["data:image/png;base64,@@@@"]}', ["images[0] is not valid base64"]),
    (b'{"images": ["data:image/png;base64"]}', ["images[0] is a data: URL without a comma"]),
    (b'{"images": [', ["malformed JSON body"]),
    (b'\xff\xfe\x00garbage', ["malformed JSON body"]),
    (b'[1, 2]', ['must be an object {"images"']),
    (b'{"images": []}', ['"images" must be a list of one or more']),
    (b'{"image": ["x"]}', ["unknown key 'image'"]),
    (b'{"images": [42]}', ["images[0] must be a string"]),
    (b'{"images": ["x"], "top_k": "3"}', ['"top_k" must be an integer']),
    (b'{"images": ["AAAA"], "top_k": 11}', ["top_k must be an integer from 1 to 10, got '11'"]),
])
def test_a_malformed_json_body_is_400_naming_the_problem(http, body, words):
    response = http.post("/v1/classify", content=body, headers={"Content-Type": "application/json"})
    check_error(response, 400, *words)


def test_malformed_multipart_is_400(http):
    no_boundary = http.post("/v1/classify", content=b"--x\r\n",
                            headers={"Content-Type": "multipart/form-data"})
    check_error(no_boundary, 400, "without a boundary")
    head = (b"--b\r\nContent-Disposition: form-data; name=images; filename=cat.jpg\r\n"
            b"Content-Type: image/jpeg\r\n\r\n")
    truncated = http.post("/v1/classify", content=head + CAT[:100],
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
    check_error(truncated, 400, "ends before its closing boundary")
    field = http.post("/v1/classify", data={"top_k": "3"}, files=[("images", ("c.jpg", CAT))])
    check_error(field, 400, "form field 'top_k' is not a file", "query string")
    only_fields = http.post("/v1/classify", content=b"--b--\r\n",
                            headers={"Content-Type": "multipart/form-data; boundary=b"})
    check_error(only_fields, 400, "holds no file part")


@pytest.mark.parametrize("top_k", ["0", "11", "three", ""])
def test_top_k_out_of_range_is_400(http, top_k):
    response = http.post("/v1/classify", params={"top_k": top_k}, content=CAT,
                         headers={"Content-Type": "image/jpeg"})
    check_error(response, 400, "top_k must be an integer from 1 to 10")


def test_an_empty_raw_body_is_400(http):
    response = http.post("/v1/classify", content=b"", headers={"Content-Type": "image/jpeg"})
    check_error(response, 400, "the body is empty")


@pytest.mark.parametrize("params, words", [
    ({"model": "resnet"}, ["unknown model 'resnet'", "cifar10-cnn"]),
    ({"version": "0"}, ["unknown version '0'"]),
])
def test_an_unknown_model_or_version_is_404(http, params, words):
    response = http.post("/v1/classify", params=params, content=CAT,
                         headers={"Content-Type": "image/jpeg"})
    check_error(response, 404, *words)
    check_error(http.get("/v1/model", params=params), 404, *words)


def test_a_model_named_with_its_version_is_served(http):
    version = http.get("/v1/model").json()["version"]
    response = http.post("/v1/classify", params={"model": "cifar10-cnn", "version": version},
                         content=CAT, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    assert response.json()["model"]["version"] == version


def test_too_large_is_413_and_too_many_images_400(server_factory):
    srv = server_factory(max_message_bytes=20_000, max_images_per_request=2)
    with httpx.Client(base_url=srv.http_address, timeout=30.0) as http:
        big = http.post("/v1/classify", content=bytes(30_000), headers={"Content-Type": "image/png"})
        check_error(big, 413, "over the limit of 20000 bytes", "--max-message-bytes")
        many = http.post("/v1/classify", files=[("images", (f"{i}.jpg", CAT)) for i in range(3)])
        check_error(many, 400, "too many images in one request: 3 > 2")
        two = http.post("/v1/classify", files=[("images", (f"{i}.jpg", CAT)) for i in range(2)])
        assert two.status_code == 200 and len(two.json()["results"]) == 2


def test_the_model_and_its_accuracy(http):
    answer = http.get("/v1/model").json()
    assert answer["name"] == "cifar10-cnn"
    assert answer["labels"] == list(contract.CLASS_NAMES)
    assert answer["accuracy"]["test"] == {"accuracy": 0.858, "images": 2500}
    assert answer["accuracy"]["validation"]["images"] == 2500
    assert answer["created"] and "cifar10" in answer["dataset"]


def test_a_model_without_accuracy_figures_says_none(server_factory):
    """The tiny test model carries no metrics: no accuracy, not an error."""
    srv = server_factory()
    answer = httpx.get(srv.http_address + "/v1/model", timeout=10).json()
    assert (answer["name"], answer["version"]) == ("tiny-cnn", "1")
    assert "test" not in answer["accuracy"]
