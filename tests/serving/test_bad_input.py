"""Table-driven bad input over real gRPC: INVALID_ARGUMENT naming the problem, server lives on."""

from __future__ import annotations

import asyncio

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

MAX_IMAGES = 4
MAX_PIXELS = 100_000


def png(width=32, height=32, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), "red" if mode == "RGB" else 128).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def raw(data: bytes | None = None, h=32, w=32, c=3) -> pb.Image:
    if data is None:
        data = bytes(h * w * c)
    return pb.Image(raw=pb.RawImage(data=data, height=h, width=w, channels=c))


def enc(data: bytes) -> pb.Image:
    return pb.Image(encoded=data)


GOOD = raw()
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n0 0 moveto showpage\n"

CASES = [
    ("zero images", pb.ClassifyRequest(), "no images"),
    ("too many images", pb.ClassifyRequest(images=[GOOD] * (MAX_IMAGES + 1)), "too many images"),
    ("raw byte length", pb.ClassifyRequest(images=[raw(bytes(3000))]), "needs 3072 bytes, got 3000"),
    ("raw channels", pb.ClassifyRequest(images=[raw(bytes(2048), c=2)]), "channels in (1, 3, 4)"),
    ("raw zero side", pb.ClassifyRequest(images=[raw(b"", h=0)]), "height>0"),
    ("raw pixel bomb", pb.ClassifyRequest(images=[raw(b"", h=1000, w=1000)]), "exceeds the limit"),
    ("undecodable", pb.ClassifyRequest(images=[enc(b"definitely not an image")]), "cannot decode image"),
    ("truncated", pb.ClassifyRequest(images=[enc(png(64, 64)[:-30])]), "cannot decode image"),
    ("empty bytes", pb.ClassifyRequest(images=[enc(b"")]), "empty"),
    ("no data", pb.ClassifyRequest(images=[pb.Image()]), "no data"),
    ("pixel bomb", pb.ClassifyRequest(images=[enc(png_header_only(100_000, 100_000))]),
     "decompression bomb"),
    ("bomb under Pillow's limit", pb.ClassifyRequest(images=[enc(png_header_only(5000, 5000))]),
     "25000000 pixels exceeds the limit"),
    ("too many pixels", pb.ClassifyRequest(images=[enc(png(400, 400))]), "exceeds the limit"),
    ("every image bad", pb.ClassifyRequest(images=[enc(b"junk"), pb.Image()]),
     "image 0: cannot decode image"),
    ("top_k", pb.ClassifyRequest(images=[GOOD], top_k=11), "top_k"),
    ("unknown model", pb.ClassifyRequest(images=[GOOD], model_name="resnet"),
     "unknown model 'resnet'"),
    ("unknown version", pb.ClassifyRequest(images=[GOOD], model_version="7"),
     "unknown version '7'"),
    ("top_k past uint32", pb.ClassifyRequest(images=[GOOD], top_k=2**32 + 3), "got 4294967299"),
    ("negative top_k", pb.ClassifyRequest(images=[GOOD], top_k=-1), "top_k"),
    ("EPS refused", pb.ClassifyRequest(images=[enc(EPS)]), "not one of the accepted formats"),
    ("64 KiB model name", pb.ClassifyRequest(images=[GOOD], model_name="m" * 65536),
     "(65536 chars)"),
    ("64 KiB version", pb.ClassifyRequest(images=[GOOD], model_version="v" * 65536),
     "(65536 chars)"),
]

NOT_FOUND = {"unknown model", "unknown version", "64 KiB model name", "64 KiB version"}


@pytest.fixture(scope="module")
def stub():
    from cifar10_serving.testing import BackgroundServer
    from cifar10_serving.settings import Settings
    from tests.tiny_model import write_tiny_model
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_model(f"{tmp}/tiny.onnx")
        settings = Settings(model_path=str(path), host="127.0.0.1", port=0, http_port=0, metrics_port=-1,
                            max_images_per_request=MAX_IMAGES, max_image_pixels=MAX_PIXELS,
                            max_message_bytes=1_000_000, reload_interval_s=0)
        with BackgroundServer(settings) as srv:
            with grpc.insecure_channel(srv.address) as channel:
                yield pb_grpc.ClassifierStub(channel)


@pytest.mark.parametrize("name, request_, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_invalid_argument_and_server_keeps_serving(stub, name, request_, message):
    # a model or version not served is NOT_FOUND, as over HTTP (404)
    code = grpc.StatusCode.NOT_FOUND if name in NOT_FOUND else grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request_, timeout=10)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details() and len(info.value.details()) < 400
    # the same problem on the stream: an error in that message, the stream goes on
    replies = list(stub.ClassifyStream(iter([request_, pb.ClassifyRequest(images=[GOOD])]), timeout=10))
    assert replies[0].error.code == code.name and message in replies[0].error.message
    assert not replies[1].HasField("error") and len(replies[1].probabilities) == 10
    # and the server still answers
    assert len(stub.Classify(pb.ClassifyRequest(images=[GOOD]), timeout=10).probabilities) == 10


def test_every_bad_image_is_named_when_all_fail(stub):
    bad = [enc(b"junk"), pb.Image(), raw(bytes(5)), enc(b""), enc(b"more junk")]
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(pb.ClassifyRequest(images=bad[:MAX_IMAGES]), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert "image 0: cannot decode image" in details and "image 1: no data" in details
    assert "image 2: " in details and details.endswith("and 1 more")


@pytest.mark.parametrize("method", ["Classify", "ClassifyStream"])
def test_some_bad_images_fail_alone_and_the_others_are_classified(stub, method):
    images = [GOOD, enc(b"junk"), raw(np.full(3072, 7, np.uint8).tobytes()), pb.Image()]
    request = pb.ClassifyRequest(images=images, top_k=2, request_id="r")
    if method == "Classify":
        resp = stub.Classify(request, timeout=10)
    else:
        (resp,) = stub.ClassifyStream(iter([request]), timeout=10)
        assert not resp.HasField("error")
    assert [e.index for e in resp.image_errors] == [1, 3]
    assert [e.error.code for e in resp.image_errors] == ["INVALID_ARGUMENT"] * 2
    assert "cannot decode image" in resp.image_errors[0].error.message
    assert "no data" in resp.image_errors[1].error.message
    alone = stub.Classify(pb.ClassifyRequest(images=[images[0], images[2]], top_k=2), timeout=10)
    assert list(resp.probabilities) == list(alone.probabilities) and len(resp.probabilities) == 20
    assert list(resp.top_indices) == list(alone.top_indices) and resp.top_k == 2
    assert resp.request_id == "r" and list(resp.labels) == list(alone.labels)


def test_message_over_the_size_limit_is_resource_exhausted(stub):
    big = pb.ClassifyRequest(images=[enc(bytes(1_100_000))])
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(big, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(stub.Classify(pb.ClassifyRequest(images=[GOOD]), timeout=10).probabilities) == 10


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_valid_images_in_any_mode_and_size(stub, mode):
    image = enc(png(50, 20, mode))
    rgba = raw(np.full((7, 9, 4), 200, np.uint8).tobytes(), h=7, w=9, c=4)
    gray = raw(bytes(16 * 16), h=16, w=16, c=1)
    resp = stub.Classify(pb.ClassifyRequest(images=[image, rgba, gray], top_k=0), timeout=10)
    assert not resp.image_errors and resp.top_k == 1
    assert len(resp.probabilities) == 3 * 10 and len(resp.top_indices) == 3


def test_the_data_plane_names_wrong_dtype_shape_and_count_for_every_door(tiny_model_path):
    """A door may hand the data plane any array: the plane names what is wrong with it."""
    from cifar10_core.errors import InvalidInputError
    from cifar10_serving.assembly import build_plane
    from cifar10_serving.dataplane.request import InferenceRequest
    from cifar10_serving.settings import Settings

    plane = build_plane(Settings(model_path=str(tiny_model_path), reload_interval_s=0,
                                 max_images_per_request=4))

    async def scenario():
        cases = [
            (np.zeros((1, 32, 32, 3), np.float32), "must be uint8, got float32"),
            (np.zeros((1, 32, 32), np.uint8), r"shape \[N, 32, 32, 3\], got \[1, 32, 32\]"),
            (np.zeros((5, 32, 32, 3), np.uint8), "too many images in one request: 5 > 4"),
            ([], "the request holds no images"),
        ]
        for images, message in cases:
            with pytest.raises(InvalidInputError, match=message):
                await plane.infer(InferenceRequest(images))
        assert plane.inflight == 0
        result = await plane.infer(InferenceRequest(np.zeros((2, 32, 32, 3), np.uint8)))
        assert result.probabilities.shape == (2, 10) and result.model.name == "tiny-cnn"
        await plane.stop(5)

    asyncio.run(scenario())
