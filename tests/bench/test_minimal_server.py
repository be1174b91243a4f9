"""bench.minimal_server in its own process answers Classify through a real gRPC channel,
bare and with each of our layers it can add."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench import loadgen
from cifar10_serving.proto.cifar10.v2 import classifier_pb2 as pb
from cifar10_serving.proto.cifar10.v2 import classifier_pb2_grpc as pb_grpc
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


@pytest.mark.parametrize("flags", [(), LAYERS], ids=["bare", "layers"])
def test_classify_runs_the_model(model, flags):
    request = pb.ClassifyRequest.FromString(loadgen.build_requests("cifar10", 1, "", variants=1)[0])
    with _minimal_server(model, *flags) as address, grpc.insecure_channel(address) as channel:
        response = pb_grpc.ClassifierStub(channel).Classify(request, timeout=30)
    probabilities = np.array(response.probabilities)
    assert probabilities.shape == (10,) and abs(probabilities.sum() - 1) < 1e-4
    assert list(response.top_indices) == [int(probabilities.argmax())]
    assert response.model_name == "tiny-cnn" and len(response.labels) == 10


def test_a_malformed_request_is_invalid_argument_behind_the_guard(model):
    with _minimal_server(model, *LAYERS) as address, grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/cifar10.v2.Classifier/Classify")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
