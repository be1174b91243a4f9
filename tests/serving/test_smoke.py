"""Smoke: the real server answers Classify, GetModelInfo and health on port 0."""

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc


def raw(seed=0):
    data = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8).tobytes()
    return pb.Image(raw=pb.RawImage(data=data, height=32, width=32, channels=3))


def test_classify_and_info(server, channel):
    stub = pb_grpc.ClassifierStub(channel)
    resp = stub.Classify(pb.ClassifyRequest(images=[raw(0), raw(1)], top_k=3, request_id="x"))
    assert len(resp.probabilities) == 2 * 10 and resp.request_id == "x"
    assert resp.model_name == "tiny-cnn" and resp.model_version == "1" and len(resp.labels) == 10
    assert resp.top_k == 3 and len(resp.top_indices) == 2 * 3
    for r in range(2):
        row = resp.probabilities[r * 10:(r + 1) * 10]
        assert abs(sum(row) - 1) < 1e-5
        assert row[resp.top_indices[r * 3]] == max(row)
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.name == "tiny-cnn" and list(info.input.shape) == [-1, 32, 32, 3]
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "cifar10.v2.Classifier"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == 1


def test_stream(server, channel):
    stub = pb_grpc.ClassifierStub(channel)
    reqs = [pb.ClassifyRequest(images=[raw(i)], request_id=str(i)) for i in range(50)]
    reqs.insert(10, pb.ClassifyRequest(request_id="bad"))
    resps = list(stub.ClassifyStream(iter(reqs)))
    assert [r.request_id for r in resps] == [r.request_id for r in reqs]
    bad = resps[10]
    assert bad.error.code == "INVALID_ARGUMENT" and "no images" in bad.error.message
    assert all(not r.HasField("error") for i, r in enumerate(resps) if i != 10)
