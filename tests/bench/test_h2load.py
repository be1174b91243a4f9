"""bench.h2load: the pre-framed request, the connection layout, and real runs against the
real server (skipped where Debian's nghttp2-client is not installed; CI installs it)."""

from __future__ import annotations

import re
import struct
import urllib.request

import grpc
import numpy as np
import pytest

from bench import h2load, loadgen
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2 as oip

needs_h2load = pytest.mark.skipif(h2load.binary() is None, reason="h2load not installed (nghttp2-client)")
MODEL_NAME = "tiny-cnn"  # tests/tiny_model.py


@pytest.fixture
def counted_server(server_factory):
    """The real server with its metrics port on (for the count of images it classified)."""
    return server_factory(metrics_port=0)


def images_classified(server) -> float:
    """``cifar10_images_total`` from the server's /metrics."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(map(float, re.findall(r"^cifar10_images_total\{.*\} (\S+)$", text, re.M)))


def test_frame_holds_the_request():
    message = h2load.request_message(3)
    frame = h2load.grpc_frame(message)
    assert frame[0] == 0 and struct.unpack(">I", frame[1:5])[0] == len(message)
    request = pb.ClassifyRequest.FromString(frame[5:])
    assert len(request.images) == 3
    raw = request.images[0].raw
    assert (raw.height, raw.width, raw.channels, len(raw.data)) == (32, 32, 3, 3072)


def test_oip_request_is_a_model_infer_request():
    message = h2load.request_message(3, "oip", "cifar10-cnn")
    request = oip.ModelInferRequest.FromString(h2load.grpc_frame(message)[5:])
    assert request.model_name == "cifar10-cnn" and len(request.inputs) == 1
    tensor = request.inputs[0]
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("images", "UINT8", [3, 32, 32, 3])
    assert len(request.raw_input_contents) == 1 and len(request.raw_input_contents[0]) == 3 * 3072


def test_grpc_command_spreads_streams_over_four_connections():
    url = "http://127.0.0.1:1/cifar10.v2.Classifier/Classify"
    cmd = h2load.command(url, "body.bin", h2load.GRPC_HEADERS, 16, 5, 1, 0, "log.tsv")
    assert cmd[-1] == url and "--h1" not in cmd
    assert cmd[cmd.index("-c") + 1] == "4" and cmd[cmd.index("-m") + 1] == "4"
    assert "content-type: application/grpc" in cmd


def test_http1_command_opens_a_connection_per_request_in_flight():
    cmd = h2load.command("http://127.0.0.1:1/v1/classify", "body.bin",
                         ("content-type: image/jpeg",), 64, 5, 1, 0, "log.tsv", http1=True)
    assert "--h1" in cmd and cmd[cmd.index("-c") + 1] == "64" and cmd[cmd.index("-m") + 1] == "1"
    assert cmd[cmd.index("-H") + 1] == "content-type: image/jpeg"


@pytest.mark.parametrize("concurrency, expected", [(1, (1, 1)), (4, (4, 1)), (16, (4, 4)), (64, (4, 16))])
def test_layout(concurrency, expected):
    assert h2load.layout(concurrency) == expected


def test_layout_refuses_uneven_concurrency():
    with pytest.raises(ValueError, match="not a multiple"):
        h2load.layout(6)


def test_parse_reads_summary_and_log(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("".join(f"1700000000{i:06d}\t200\t{1000 + 10 * i}\n" for i in range(100)))
    stdout = ("finished in 2.00s, 50.00 req/s, 1KB/s\n"
              "requests: 101 total, 101 started, 100 done, 99 succeeded, 1 failed, 1 errored, 0 timeout\n")
    out = h2load.parse(stdout, str(log), batch=32)
    assert out["images_per_s"] == 1600.0 and out["requests"] == 99
    assert out["errors"] == {"failed": 1, "errored": 1, "not done": 1}
    assert out["p50_ms"] == pytest.approx(1.495) and out["p99_ms"] == pytest.approx(1.98, abs=0.001)


def test_unreadable_summary_is_an_error(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("")
    assert "cannot read" in h2load.parse("connect failed", str(log), batch=1)["error"]


def test_check_request_refuses_a_request_the_server_rejects(server):
    bad = pb.ClassifyRequest().SerializeToString()  # no images: INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        h2load.check_request(server.address, bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    h2load.check_request(server.address, h2load.request_message(2))  # a good one passes


def test_check_request_checks_the_oip_answer(server):
    h2load.check_request(server.address, h2load.request_message(2, "oip", MODEL_NAME), "oip")
    with pytest.raises(grpc.RpcError) as caught:
        h2load.check_request(server.address, h2load.request_message(2, "oip", "no-such-model"), "oip")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown model 'no-such-model'" in caught.value.details()


@needs_h2load
@pytest.mark.parametrize("batch, concurrency", [(1, 1), (4, 16)])
def test_run_against_the_real_server(counted_server, batch, concurrency):
    server = counted_server
    before = images_classified(server)
    out = h2load.run(server.address, batch, concurrency, requests=40)
    assert "error" not in out, out
    assert out["errors"] == {} and out["requests"] >= 40
    assert out["images_per_s"] > 0 and 0 < out["p50_ms"] <= out["p99_ms"]
    # Every request reached the model (the check request included): none failed unseen.
    assert images_classified(server) - before == batch * (out["requests"] + 1)


@needs_h2load
def test_oip_run_against_the_real_server(counted_server):
    server = counted_server
    before = images_classified(server)
    out = h2load.run(server.address, 2, 4, requests=20, api="oip", model_name=MODEL_NAME)
    assert "error" not in out, out
    assert out["api"] == "oip" and out["errors"] == {} and out["requests"] >= 20
    assert images_classified(server) - before == 2 * (out["requests"] + 1)


@needs_h2load
def test_a_rejected_request_is_an_error_not_a_measurement(server, monkeypatch):
    from cifar10_protos.cifar10.v2 import classifier_pb2

    monkeypatch.setattr(h2load, "request_message", lambda batch, api, model_name: classifier_pb2.ClassifyRequest().SerializeToString())
    out = h2load.run(server.address, 1, 1, requests=4)
    assert out["error"].startswith("the server did not answer the request OK: INVALID_ARGUMENT")


def test_missing_binary_is_reported(monkeypatch):
    monkeypatch.setenv("H2LOAD", "/nonexistent/h2load")
    out = h2load.run("127.0.0.1:1", 1, 1, requests=1)
    assert out == {"error": "h2load not found: apt-get install nghttp2-client"}


@pytest.mark.parametrize("api", ["cifar10", "oip"])
def test_request_is_loadgens(api):
    assert h2load.request_message(2, api) == loadgen.build_requests(api, 2, "")[0]
    request = pb.ClassifyRequest.FromString(h2load.request_message(2))
    pixels = np.frombuffer(request.images[1].raw.data, np.uint8)
    assert pixels.shape == (3072,) and pixels.std() > 0  # random images, not zeros
