"""bench.minimal_server in its own process answers Classify through a real gRPC channel,
bare and with each of our layers it can add."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from cifar10_client.inputs import raw_image
from cifar10_serving.onnx_model import OnnxModel
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from tests.tiny_model import write_tiny_model

ROOT = Path(__file__).resolve().parents[2]


LAYERS = ("--guard", "--metrics", "--options")


@contextmanager
def _minimal_server(model: Path, *flags: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.minimal_server", "--model", str(model), "--port", "0", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), process.stderr.read()[-2000:]
        yield f"127.0.0.1:{int(line.split()[-1])}"
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-cnn.onnx")


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _request(image: np.ndarray) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(images=[raw_image(image)])


@pytest.mark.parametrize("flags", [(), LAYERS, ("--loop-batcher",)],
                         ids=["bare", "layers", "loop-batcher"])
def test_classify_runs_the_model(model, flags):
    """Each image's answer is the model's own for it, alone or batched with others."""
    images = _images(40)
    expected = OnnxModel.load(model).predict(images)
    with _minimal_server(model, *flags) as address:
        responses = asyncio.run(_classify_all(address, images))
    for image_expected, response in zip(expected, responses, strict=True):
        probabilities = np.array(response.probabilities)
        np.testing.assert_allclose(probabilities, image_expected, atol=1e-5)
        assert list(response.top_indices) == [int(probabilities.argmax())]
        assert response.model_name == "tiny-cnn" and len(response.labels) == 10


async def _classify_all(address: str, images: np.ndarray) -> list[pb.ClassifyResponse]:
    """One image alone, then the rest at once (batched by the server)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        first = await stub.Classify(_request(images[0]), timeout=30)
        rest = await asyncio.gather(*(stub.Classify(_request(image), timeout=30)
                                      for image in images[1:]))
    return [first, *rest]


def test_a_malformed_request_is_invalid_argument_behind_the_guard(model):
    with _minimal_server(model, *LAYERS) as address, grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/cifar10.v2.Classifier/Classify")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
