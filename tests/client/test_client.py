"""The client library against the real server (tests/conftest.py `server`, tiny model)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from tests.ports import free_port
from cifar10_core import images
from cifar10_client import (
    AsyncClient,
    Classification,
    Client,
    NO_RETRY,
    ClientError,
    RetryPolicy,
    TLSConfig,
)
from cifar10_core.contract import CLASS_NAMES
from tests.client.helpers import grpc_attempts, make_certs, random_image, write_png


@pytest.fixture
def client(server):
    with Client(server.address, timeout=10.0) as c:
        yield c


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_classify_every_input_kind_gives_typed_results(client, tmp_path):
    array = random_image(1)
    path = write_png(tmp_path / "a.png", array)
    results = [
        client.classify(path),
        client.classify(str(path)),
        client.classify(path.read_bytes()),
        client.classify(Image.fromarray(array)),
        client.classify(array),
        client.classify(array, preprocess=True),
    ]
    first = results[0]
    assert isinstance(first, Classification)
    assert first.labels == CLASS_NAMES
    assert len(first.probabilities) == 10
    assert abs(sum(first.probabilities) - 1.0) < 1e-4
    assert first.index == int(np.argmax(first.probabilities))
    assert first.label == CLASS_NAMES[first.index]
    assert first.probability == first.probabilities[first.index]
    assert first.model_name == "tiny-cnn" and first.model_version == "1"
    for other in results[1:]:
        assert other.probabilities == first.probabilities


def test_batches_list_and_array_and_top_k(client):
    batch = np.stack([random_image(i) for i in range(5)])
    from_array = client.classify_batch(batch, top_k=3)
    from_list = client.classify_batch(list(batch), top_k=3)
    assert len(from_array) == 5
    assert [r.probabilities for r in from_array] == [r.probabilities for r in from_list]
    for r in from_array:
        assert len(r.top) == 3
        probs = [s.probability for s in r.top]
        assert probs == sorted(probs, reverse=True)
        assert r.top[0].label == r.label


@pytest.mark.parametrize("size,channels", [((32, 32), 3), ((45, 37), 3), ((32, 32), 4), ((50, 40), 1)])
def test_raw_and_encoded_give_the_same_answer(client, tmp_path, size, channels):
    """Lossless file sent as-is (server decodes), raw pixels (server resizes), and local
    preprocessing (32x32 raw) all agree, for any size and mode."""
    array = random_image(7, size=size, channels=channels)
    path = write_png(tmp_path / "p.png", array)
    encoded = client.classify(path)
    raw = client.classify(array)
    local = client.classify(path, preprocess=True)
    expected = images.decode(path.read_bytes())
    assert np.array_equal(images.from_array(array), expected)
    assert encoded.probabilities == raw.probabilities == local.probabilities


def test_bad_image_is_one_client_error_with_server_message(client):
    with pytest.raises(ClientError) as info:
        client.classify(b"definitely not an image")
    error = info.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "decode" in error.message
    assert error.attempts == 1  # never retried


def test_local_input_problems_are_client_errors(client, tmp_path):
    with pytest.raises(ClientError) as info:
        client.classify(tmp_path / "missing.png")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "missing.png" in info.value.message
    with pytest.raises(ClientError):
        client.classify(np.zeros((32, 32, 3), dtype=np.float32))
    with pytest.raises(ClientError):
        client.classify(object())
    with pytest.raises(ClientError):
        client.classify_batch(np.zeros((32, 32), dtype=np.uint8))


def test_classify_each_reports_bad_items_in_one_call(client, server):
    from cifar10_client.inputs import to_image

    good = [to_image(random_image(i)) for i in range(6)]
    mixed = good[:2] + [to_image(b"junk")] + good[2:5] + [to_image(b"\x89PNG broken")] + good[5:]
    model = server.plane.models.default
    predict, sent = model.predict, []

    def counted(batch, alone=True):
        sent.append(len(batch))
        return predict(batch, alone)

    model.predict = counted
    try:
        results = client.classify_each(mixed)
    finally:
        model.predict = predict
    assert sum(sent) == 6  # each good image reaches the model once: no bisecting
    assert [isinstance(r, ClientError) for r in results] == [False, False, True, False, False, False, True, False]
    assert [(r.code, r.item) for r in results if isinstance(r, ClientError)] == [
        (grpc.StatusCode.INVALID_ARGUMENT, "2"), (grpc.StatusCode.INVALID_ARGUMENT, "6")
    ]
    assert "cannot decode image" in results[2].message
    expected = client.classify_images(good)
    assert [r for r in results if not isinstance(r, ClientError)] == expected
    with pytest.raises(ClientError) as info:  # the strict call raises the bad image's error
        client.classify_images(mixed)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.item == "2"


def test_classify_each_when_every_image_is_bad(client):
    """The server refuses the request as a whole; each image gets that error."""
    from cifar10_client.inputs import to_image

    results = client.classify_each([to_image(b"junk"), to_image(b"more junk")])
    assert [(r.code, r.item) for r in results] == [
        (grpc.StatusCode.INVALID_ARGUMENT, "0"), (grpc.StatusCode.INVALID_ARGUMENT, "1")
    ]
    assert all("image 0: cannot decode image" in r.message for r in results)


def test_deadline_exceeded_is_a_client_error(client):
    with pytest.raises(ClientError) as info:
        client.classify_batch(np.stack([random_image(i) for i in range(64)]), timeout=1e-4)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_model_info_and_health(client):
    info = client.model_info()
    assert info.name == "tiny-cnn" and info.version == "1"
    assert info.labels == CLASS_NAMES
    assert info.input.dtype == "uint8" and list(info.input.shape) == [-1, 32, 32, 3]
    assert info.max_batch_size >= 1
    assert client.health() == "SERVING"
    assert client.health("cifar10.v2.Classifier") == "SERVING"


def test_retry_policy_renders_grpc_service_config():
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=0.25, multiplier=2.0)
    options = dict(policy.channel_options())
    assert options["grpc.enable_retries"] == 1
    (method,) = json.loads(options["grpc.service_config"])["methodConfig"]
    assert method["name"] == [{}] and method["waitForReady"] is True
    assert method["retryPolicy"] == {
        "maxAttempts": 3, "initialBackoff": "0.100s", "maxBackoff": "0.250s", "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["RESOURCE_EXHAUSTED", "UNAVAILABLE"],
    }
    no_retry = dict(NO_RETRY.channel_options())
    assert no_retry["grpc.enable_retries"] == 0
    assert json.loads(no_retry["grpc.service_config"])["methodConfig"] == [{"name": [{}], "waitForReady": False}]
    for bad in ({"max_attempts": 0}, {"max_attempts": 6}, {"initial_backoff_s": 0}, {"multiplier": 0.5}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_a_server_that_is_not_up_fails_within_the_deadline():
    address = f"localhost:{free_port()}"  # nothing listens there
    with Client(address, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1)) as c:
        with pytest.raises(ClientError) as info:
            c.classify(random_image(0), timeout=1.0)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED  # waited for it, in vain
    with Client(address, retry=NO_RETRY) as c:
        with pytest.raises(ClientError) as info:
            c.model_info(timeout=30.0)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE  # at once, long before the deadline
        assert info.value.attempts == 1


def test_unavailable_is_retried_until_the_server_comes_up(server_factory):
    port = free_port()
    started = []
    timer = threading.Timer(1.0, lambda: started.append(server_factory(port=port)))
    timer.start()
    try:
        policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=0.3)
        with Client(f"localhost:{port}", retry=policy, timeout=30.0) as c:
            assert not started  # nothing listens yet when the call begins
            result = c.classify(random_image(3))
            assert started and result.model_name == "tiny-cnn"
    finally:
        timer.join()


def _refusals(srv) -> float:
    """Classify calls the server refused with RESOURCE_EXHAUSTED (its Prometheus counter)."""
    return srv.metrics.registry.get_sample_value(
        "cifar10_requests_total", {"door": "grpc", "method": "Classify", "code": "RESOURCE_EXHAUSTED"}
    ) or 0.0


def _wait_for(condition, what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_full_queue_is_retried_after_the_servers_pushback(server_factory):
    """One model run at a time, one image queued: with the model held on a gate, one call
    runs, one waits in the queue and one more is refused. A call with the retry policy is
    refused too (with pushback) until the gate opens; gRPC's retry then gets it through."""
    srv = server_factory(max_batch_size=1, max_queue_size=1, max_queue_delay_ms=0, instances=1)
    model = srv.plane.models.default
    gate, running = threading.Event(), threading.Event()
    predict = model.predict

    def gated(batch, alone=True):
        running.set()
        gate.wait(30)
        return predict(batch, alone)

    outcomes: dict[str, object] = {}

    def call(name: str, policy: RetryPolicy) -> threading.Thread:
        def go():
            with Client(srv.address, retry=policy, timeout=30.0) as c:
                try:
                    outcomes[name] = c.classify(random_image(len(name)))
                except ClientError as error:
                    outcomes[name] = error

        thread = threading.Thread(target=go)
        thread.start()
        return thread

    model.predict = gated
    try:
        threads = [call("running", NO_RETRY)]
        _wait_for(running.is_set, "the first call to reach the model")
        threads += [call("queued-a", NO_RETRY), call("queued-b", NO_RETRY)]  # one fits, one is refused
        _wait_for(lambda: _refusals(srv) == 1, "a refusal")
        threads.append(call("retried", RetryPolicy(max_attempts=5)))
        _wait_for(lambda: _refusals(srv) == 2, "the retried call's first refusal")
        gate.set()
        for thread in threads:
            thread.join(30)
    finally:
        gate.set()
        model.predict = predict
    refused = [o for o in outcomes.values() if isinstance(o, ClientError)]
    assert len(outcomes) == 4 and len(refused) == 1
    assert refused[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in refused[0].message
    assert refused[0].retryable and refused[0].too_large is None
    assert isinstance(outcomes["retried"], Classification), outcomes["retried"]
    assert _refusals(srv) >= 2  # refused at least once, then it succeeded: gRPC retried it


def test_a_request_that_can_never_fit_is_not_retried(server_factory):
    """More images than the whole queue holds: the server's pushback says "do not retry"."""
    srv = server_factory(max_batch_size=1, max_queue_size=2)
    with Client(srv.address, retry=RetryPolicy(max_attempts=5)) as c:
        attempts = grpc_attempts(srv.address)
        with pytest.raises(ClientError) as info:
            c.classify_batch(np.stack([random_image(i) for i in range(3)]))
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "can never fit" in info.value.message
        assert grpc_attempts(srv.address) - attempts == 1
    assert _refusals(srv) == 1


def test_an_oversized_message_is_not_retried_and_says_so(server_factory):
    srv = server_factory(max_message_bytes=300_000)  # above gRPC's 256 KiB retry buffer
    with Client(srv.address, retry=RetryPolicy(max_attempts=5)) as c:
        assert c.classify(random_image(1)).model_name == "tiny-cnn"
        attempts = grpc_attempts(srv.address)
        with pytest.raises(ClientError) as info:
            c.classify(bytes(400_000))
        error = info.value
        assert grpc_attempts(srv.address) - attempts == 1  # never retried
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and not error.retryable
    size, limit = error.too_large
    assert limit == 300_000 and 400_000 < size < 400_100
    assert error.message == f"message too large: {size} bytes, limit 300000"


def test_async_client(server, tmp_path):
    array = random_image(5)
    path = write_png(tmp_path / "a.png", array)

    async def go():
        async with AsyncClient(server.address, timeout=10.0) as c:
            single = await c.classify(path)
            batch = await asyncio.gather(*(c.classify_batch([array, path.read_bytes()]) for _ in range(4)))
            info = await c.model_info()
            health = await c.health()
            with pytest.raises(ClientError) as bad:
                await c.classify(b"junk")
            with pytest.raises(ClientError) as late:
                await c.classify_batch(np.stack([array] * 64), timeout=1e-4)
            from cifar10_client.inputs import to_image

            batches = [[to_image(array)], [to_image(b"junk")], [to_image(path), to_image(b"junk")]]
            streamed = [r async for r in c.classify_stream(batches)]
            each = await c.classify_each([to_image(b"junk"), to_image(array)])
            return single, batch, info, health, bad.value, late.value, streamed, each

    single, batch, info, health, bad, late, streamed, each = asyncio.run(go())
    assert all(r.probabilities == single.probabilities for b in batch for r in b)
    assert info.name == "tiny-cnn" and health == "SERVING"
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert late.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert streamed[0][0].probabilities == single.probabilities
    assert isinstance(streamed[1], ClientError) and streamed[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert streamed[2][0].probabilities == single.probabilities
    assert isinstance(streamed[2][1], ClientError) and streamed[2][1].item == "1"
    assert isinstance(each[0], ClientError) and each[0].code == grpc.StatusCode.INVALID_ARGUMENT
    assert each[1].probabilities == single.probabilities


def test_tls_and_mutual_tls(server_factory, tmp_path):
    certs = make_certs(tmp_path / "certs")
    srv = server_factory(tls_cert=str(certs["server.pem"]), tls_key=str(certs["server.key"]),
                         tls_client_ca=str(certs["ca.pem"]))
    tls = TLSConfig(ca_cert=certs["ca.pem"], client_cert=certs["client.pem"], client_key=certs["client.key"])
    with Client(srv.address, tls=tls, timeout=10.0) as c:
        assert c.classify(random_image(1)).model_name == "tiny-cnn"
    no_retry = NO_RETRY  # fail at once: no retries, no waiting for a server that never gets ready
    with Client(srv.address, tls=TLSConfig(ca_cert=certs["ca.pem"]), retry=no_retry, timeout=5.0) as c:
        with pytest.raises(ClientError) as info:  # the server demands a client certificate
            c.model_info()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with Client(srv.address, retry=no_retry, timeout=5.0) as c:  # plaintext to a TLS port
        with pytest.raises(ClientError):
            c.model_info()
    with pytest.raises(ClientError) as info:
        Client(srv.address, tls=TLSConfig(ca_cert=tmp_path / "nope.pem"))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
