"""bench.echo_server in its own process answers both APIs through a real gRPC channel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench import loadgen
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_protos.inference import grpc_service_pb2 as oip
from cifar10_protos.inference import grpc_service_pb2_grpc as oip_grpc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def echo_address():
    process = subprocess.Popen([sys.executable, "-m", "bench.echo_server", "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield f"127.0.0.1:{int(line.split()[-1])}"
    finally:
        process.terminate()
        process.wait(30)


def test_classify(echo_address):
    request = pb.ClassifyRequest.FromString(loadgen.build_requests("cifar10", 1, "", variants=1)[0])
    with grpc.insecure_channel(echo_address) as channel:
        response = pb_grpc.ClassifierStub(channel).Classify(request, timeout=10)
    assert len(response.probabilities) == 10 and list(response.top_indices) == [0]


def test_model_infer(echo_address):
    request = oip.ModelInferRequest.FromString(
        loadgen.build_requests("oip", 1, "any-model", variants=1)[0])
    with grpc.insecure_channel(echo_address) as channel:
        response = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    output = response.outputs[0]
    assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "FP32", [1, 10])
    probabilities = np.frombuffer(response.raw_output_contents[0], "<f4")
    assert probabilities.shape == (10,) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    loadgen.check_answer("oip", 1, response.SerializeToString())  # what the load generator checks


def test_the_request_is_parsed(echo_address):
    with grpc.insecure_channel(echo_address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff", timeout=10)
    assert "Error parsing message with type 'inference.ModelInferRequest'" in caught.value.details()
