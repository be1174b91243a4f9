"""The real server in-process: health, reflection, model info, metrics, TLS and mTLS."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from cifar10_core import contract
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from tests.serving.models import model_runs

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def image(seed=0) -> pb.Image:
    data = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8).tobytes()
    return pb.Image(raw=pb.RawImage(data=data, height=32, width=32, channels=3))


def test_model_info(channel):
    info = pb_grpc.ClassifierStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    assert (info.name, info.version) == ("tiny-cnn", "1")
    assert list(info.labels) == list(contract.CLASS_NAMES)
    assert (info.input.name, info.input.dtype, list(info.input.shape)) == ("images", "uint8", [-1, 32, 32, 3])
    assert (info.output.name, info.output.dtype, list(info.output.shape)) == ("probabilities", "float32", [-1, 10])
    assert info.max_batch_size == 32
    assert set(contract.REQUIRED_METADATA) <= set(info.metadata)


def test_answers_match_the_model_and_top_k_is_sorted(server, channel):
    stub = pb_grpc.ClassifierStub(channel)
    images = [image(i) for i in range(5)]
    resp = stub.Classify(pb.ClassifyRequest(images=images, top_k=10))
    batch = np.stack([np.frombuffer(i.raw.data, np.uint8).reshape(32, 32, 3) for i in images])
    expected = server.plane.models.default.predict(batch)
    assert list(resp.labels) == list(contract.CLASS_NAMES) and resp.top_k == 10
    assert not resp.image_errors
    probabilities = np.array(resp.probabilities, np.float32).reshape(5, 10)
    tops = np.array(resp.top_indices).reshape(5, 10)
    for row, got, top in zip(expected, probabilities, tops):
        np.testing.assert_allclose(got, row, rtol=1e-6)
        assert list(top) == list(np.argsort(-row, kind="stable"))


def test_health_serving_then_not_serving_from_the_start_of_shutdown(server, channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "cifar10.v2.Classifier"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(watch).status == SERVING
    server.begin_stop(grace=2.0)
    assert next(watch).status == NOT_SERVING
    watch.cancel()


def test_reflection_lists_every_service(channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"cifar10.v2.Classifier", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services
    try:
        import cifar10_serving.grpc_api.inference  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        assert "inference.GRPCInferenceService" in services


def test_metrics_endpoint(server_factory):
    srv = server_factory(metrics_port=0)
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        for _ in range(3):
            stub.Classify(pb.ClassifyRequest(images=[image(), image(1)]))
        with pytest.raises(grpc.RpcError):
            stub.Classify(pb.ClassifyRequest())
        list(stub.ClassifyStream(iter([pb.ClassifyRequest(images=[image()])])))
    text = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5).read().decode()
    assert 'cifar10_requests_total{code="OK",door="grpc",method="Classify"} 3.0' in text
    assert 'cifar10_requests_total{code="INVALID_ARGUMENT",door="grpc",method="Classify"} 1.0' in text
    assert 'cifar10_requests_total{code="OK",door="grpc",method="ClassifyStream"} 1.0' in text
    assert 'cifar10_request_duration_seconds_bucket{door="grpc",le="0.005",method="Classify"}' in text
    assert 'cifar10_images_total{model="tiny-cnn",version="1"} 7.0' in text
    assert 'cifar10_batch_size_count{model="tiny-cnn",version="1"}' in text
    assert "cifar10_queue_depth_images 0.0" in text
    assert 'cifar10_model_info{name="tiny-cnn",version="1"} 1.0' in text
    assert "cifar10_ready 1.0" in text


def test_http_health_probes_on_the_metrics_port(server_factory):
    srv = server_factory(metrics_port=0)
    base = f"http://127.0.0.1:{srv.metrics_port}"
    for path, body in (("/v2/health/live", b"live\n"), ("/v2/health/ready", b"ready\n")):
        with urllib.request.urlopen(base + path, timeout=5) as answer:
            assert answer.status == 200 and answer.read() == body
    srv.metrics.set_ready(False)  # what the server does as it starts and as it stops
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/v2/health/ready", timeout=5)
    assert info.value.code == 503 and info.value.read() == b"not ready\n"
    with urllib.request.urlopen(base + "/v2/health/live", timeout=5) as answer:
        assert answer.status == 200
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert "cifar10_ready 0.0" in text


# -- TLS -------------------------------------------------------------------------------------


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate, via openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=d)
    return d


def _classify(address, credentials):
    with grpc.secure_channel(address, credentials) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        return stub.Classify(pb.ClassifyRequest(images=[image()]), timeout=10)


def test_tls(server_factory, pki):
    srv = server_factory(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"))
    ca = (pki / "ca.pem").read_bytes()
    assert len(_classify(srv.address, grpc.ssl_channel_credentials(ca)).probabilities) == 10
    with grpc.insecure_channel(srv.address) as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(images=[image()]), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(server_factory, pki):
    srv = server_factory(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                         tls_client_ca=str(pki / "ca.pem"))
    ca = (pki / "ca.pem").read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        _classify(srv.address, grpc.ssl_channel_credentials(ca))  # no client certificate
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    creds = grpc.ssl_channel_credentials(
        ca, private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    assert len(_classify(srv.address, creds).probabilities) == 10


def run_clients(call, clients: int, calls: int) -> list[Exception]:
    """``call(client, i)`` from ``clients`` threads, ``calls`` times each; the errors raised."""
    errors: list[Exception] = []

    def client(seed):
        try:
            for i in range(calls):
                call(seed, i)
        except Exception as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_clients_are_batched(server_factory):
    """16 clients sending one image at a time, and a batch that runs only when full (a queue
    delay far longer than the test): each run merges one request of every client."""
    clients, calls = 16, 20
    srv = server_factory(max_batch_size=clients, max_queue_delay_ms=3_600_000)
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)

        def call(seed, i):
            resp = stub.Classify(pb.ClassifyRequest(images=[image(seed)]), timeout=60)
            assert len(resp.probabilities) == 10 and len(resp.top_indices) == 1

        assert not run_clients(call, clients=clients, calls=calls)
    assert model_runs(srv) == (calls, clients * calls)


def test_two_instances_run_batches_side_by_side_with_correct_answers(server_factory):
    """--instances 2: two batcher workers, elastic threads (a wide and a narrow session);
    every answer is still its own."""
    srv = server_factory(instances=2, threads=2)
    assert len([t for t in threading.enumerate() if t.name.startswith("batcher-")]) == 2
    assert len(srv.plane.models.default.sessions.all()) == 2

    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)

        def call(seed, i):
            img = image(seed * 100 + i)
            resp = stub.Classify(pb.ClassifyRequest(images=[img]), timeout=10)
            pixels = np.frombuffer(img.raw.data, np.uint8).reshape(1, 32, 32, 3)
            expected = srv.plane.models.default.predict(pixels)[0]
            got = list(resp.probabilities)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)

        assert not run_clients(call, clients=8, calls=10)
    assert model_runs(srv)[1] == 80


def test_stop_after_the_server_ended_on_its_own_returns_at_once(server_factory):
    """Regression: a stop requested while the loop was ending used to wait 30 s for nothing."""
    import time

    for i in range(30):
        srv = server_factory()
        srv.begin_stop(grace=0.0)  # the server ends by itself...
        time.sleep(i * 0.0005)  # (sweep the moment so that some stops land as its loop ends)
        started = time.monotonic()
        srv.stop(grace=0.0, timeout=10.0)  # ...while this request races with its loop's end
        assert time.monotonic() - started < 5.0
        assert not srv._thread.is_alive()
        srv.stop()  # and again, once everything is closed


def test_a_lone_request_runs_on_every_thread_and_a_busy_server_on_its_share(server_factory):
    """Elastic threads: the wide session for a request alone in the server, the narrow one
    for a batch merged from several requests (others are waiting or running)."""
    srv = server_factory(instances=2, threads=2, max_batch_size=4, max_queue_delay_ms=3_600_000)
    sessions = srv.plane.models.default.sessions
    runs, acquire = {"wide": 0, "narrow": 0}, sessions.acquire

    @contextlib.contextmanager
    def recorded(alone=True):  # which session each run got
        with acquire(alone) as session:
            runs["wide" if session is sessions.wide else "narrow"] += 1
            yield session

    sessions.acquire = recorded
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        full = stub.Classify(pb.ClassifyRequest(images=[image(0)] * 4), timeout=30)  # alone
        assert len(full.probabilities) == 40 and runs == {"wide": 1, "narrow": 0}
        # four 1-image calls: a batch runs only when full, so all four are in flight in it
        assert not run_clients(lambda seed, i: stub.Classify(
            pb.ClassifyRequest(images=[image(seed)]), timeout=30), clients=4, calls=1)
    assert runs == {"wide": 1, "narrow": 1}
