"""The clients over the HTTP door (an http:// or https:// address) against the real server:
the same answers, commands and outputs as over gRPC, its errors as the one ClientError,
unreachable addresses in one line, Retry-After honoured, TLS."""

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

from cifar10_client import (
    NO_RETRY,
    AsyncClient,
    AsyncHttpClient,
    Client,
    ClientError,
    HttpClient,
    RetryPolicy,
    TLSConfig,
    open_async_client,
    open_client,
)
from cifar10_client.batch import main as batch_main
from cifar10_client.cli import main as cli_main
from cifar10_core.contract import CLASS_NAMES
from tests.client.helpers import image_folder, make_certs, random_image
from tests.ports import free_port


def cli(capsys, *argv):
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def batch(*argv):
    return batch_main([str(a) for a in argv] + ["--no-progress", "--no-confusion-matrix"])


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _requests(srv, method: str, code: str) -> float:
    """HTTP calls of ``method`` the server answered with ``code`` (its Prometheus counter)."""
    return srv.metrics.registry.get_sample_value(
        "cifar10_requests_total", {"door": "http", "method": method, "code": code}) or 0.0


def test_the_client_an_address_calls_for(server):
    with open_client(server.http_address) as h, open_client(server.address) as g:
        assert isinstance(h, HttpClient) and isinstance(g, Client)
        assert h.address == server.http_address
    with pytest.raises(ClientError) as info:
        Client(server.http_address)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "use HttpClient" in info.value.message
    for bad, words in (("ftp://localhost:1", "unsupported scheme ftp://"),
                       ([server.http_address, server.address], "must come alone")):
        with pytest.raises(ClientError) as info:
            open_client(bad)
        assert words in info.value.message
    with pytest.raises(ClientError) as info:
        HttpClient(server.http_address, tls=TLSConfig())
    assert "give an https:// address" in info.value.message


def test_answers_over_http_are_those_over_grpc(server, tmp_path):
    """Files go to /v1/classify, pixels to the Open Inference Protocol's infer route: both give
    gRPC's classes and float32 probabilities, and per-image errors in their places."""
    paths = [str(p) for p in image_folder(tmp_path, per_class=2)]
    pixels = np.stack([random_image(i, size=(40, 30)) for i in range(5)])  # resized as the server would
    with HttpClient(server.http_address) as h, Client(server.address) as g:
        h.connect()
        assert h.classify_batch(paths, top_k=3) == g.classify_batch(paths, top_k=3)
        assert h.classify_batch(pixels, top_k=2) == g.classify_batch(pixels, top_k=2)
        assert h.classify_batch(paths, preprocess=True) == g.classify_batch(paths)
        single = random_image(7)
        assert (h.classify(single) == h.classify(_png(single)) == h.classify(Image.fromarray(single))
                == g.classify(single))

        mixed = [paths[0], pixels[0], b"not an image", paths[1]]
        over_http = h.classify_each([h._image(x, None) for x in mixed])
        over_grpc = g.classify_each([g._image(x, None) for x in mixed])
        assert over_http[:2] + over_http[3:] == over_grpc[:2] + over_grpc[3:]
        bad_http, bad_grpc = over_http[2], over_grpc[2]
        assert isinstance(bad_http, ClientError) and bad_http.item == "2"
        assert (bad_http.code, bad_http.message) == (bad_grpc.code, bad_grpc.message)
        assert bad_http.http_status is None  # one image's error: the call itself answered 200
        with pytest.raises(ClientError) as info:
            h.classify_batch([paths[0], b"not an image"])
        assert info.value.item == "1" and "cannot decode image" in info.value.message
        refused = h.classify_each([h._image(b"junk", None), h._image(b"junk too", None)])
        assert [(e.code, e.item, e.http_status) for e in refused] == [
            (grpc.StatusCode.INVALID_ARGUMENT, "0", 400), (grpc.StatusCode.INVALID_ARGUMENT, "1", 400)]

        info_http, info_grpc = h.model_info(), g.model_info()
        assert (info_http.name, info_http.version, info_http.labels) == ("tiny-cnn", "1", CLASS_NAMES)
        assert info_http.metadata == info_grpc.metadata and info_http.accuracy == info_grpc.accuracy
        assert (info_http.input.dtype, info_http.input.shape) == ("uint8", (-1, 32, 32, 3))
        assert (info_http.output.dtype, info_http.output.shape) == ("float32", (-1, 10))
        assert h.health() == "SERVING"
        with pytest.raises(ClientError) as info:
            h.health("cifar10.v2.Classifier")
        assert "no health service" in info.value.message


def test_the_async_client_over_http(server):
    arrays = [random_image(i) for i in range(6)]

    async def main():
        async with open_async_client(server.http_address) as h, AsyncClient(server.address) as g:
            assert isinstance(h, AsyncHttpClient)
            await h.connect()
            over_http = await asyncio.gather(*(h.classify(a, top_k=2) for a in arrays))
            over_grpc = await asyncio.gather(*(g.classify(a, top_k=2) for a in arrays))
            assert over_http == over_grpc
            assert (await h.model_info()).name == "tiny-cnn"
            await h.wait_until_serving(5)

    asyncio.run(main())


def test_cli_commands_print_the_same_over_http(server, tmp_path, capsys):
    paths = image_folder(tmp_path, per_class=1)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    files = [*map(str, paths), str(tmp_path / "bad.png"), str(tmp_path / "missing.png")]
    outputs = {}
    for address in (server.address, server.http_address):
        outputs[address] = [
            cli(capsys, "--address", address, "health"),
            cli(capsys, "--address", address, "classify", *files, "--top-k", "3"),
            cli(capsys, "classify", *files, "--json", "--address", address),
            cli(capsys, "--address", address, "classify", *files, "--preprocess", "client", "--json"),
        ]
    assert outputs[server.address] == outputs[server.http_address]
    health, table, _, _ = outputs[server.http_address]
    assert health == (0, "SERVING\n", "")
    assert table[0] == 1 and table[1].splitlines()[0].split() == ["FILE", "LABEL", "PROBABILITY", "TOP-2", "TOP-3"]

    code, out, _ = cli(capsys, "--address", server.http_address, "info")
    assert code == 0 and "name:           tiny-cnn" in out and "airplane, automobile" in out
    assert "input:          images uint8 [-1, 32, 32, 3]" in out
    code, out, _ = cli(capsys, "--address", server.http_address, "info", "--json")
    assert code == 0 and json.loads(out)["labels"] == list(CLASS_NAMES)


def test_batch_over_http_writes_what_grpc_writes(server, tmp_path):
    folder = tmp_path / "train"
    image_folder(folder, per_class=3, classes=CLASS_NAMES[:4])
    (folder / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    np.save(tmp_path / "a.npy", np.stack([random_image(i, size=(36, 40)) for i in range(30)]))
    for source, code in ((folder, 1), (tmp_path / "a.npy", 0)):
        outputs = []
        for address in (server.address, server.http_address):
            out = tmp_path / f"{source.stem}-{len(outputs)}.csv"
            assert batch(source, "-o", out, "--batch-size", "4", "--concurrency", "3", "--address", address) == code
            outputs.append(sorted(out.read_text().splitlines()))
        assert outputs[0] == outputs[1]  # the same rows, byte for byte
    # Resumable over HTTP too: a run cut short by --limit, then the rest, each item once.
    out = tmp_path / "resumed.jsonl"
    assert batch(folder, "-o", out, "--limit", "5", "--address", server.http_address) in (0, 1)
    assert batch(folder, "-o", out, "--address", server.http_address) == 1
    items = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    assert len(items) == len(set(items)) == 13


def test_error_statuses_are_client_errors_with_the_servers_message(server_factory, tmp_path, capsys):
    srv = server_factory(max_message_bytes=64 * 1024)
    with HttpClient(srv.http_address) as h:
        with pytest.raises(ClientError) as info:
            h.classify(random_image(1), model_name="no-such-model")
        assert (info.value.code, info.value.http_status) == (grpc.StatusCode.NOT_FOUND, 404)
        assert "no-such-model" in info.value.message and "tiny-cnn" in info.value.message
        with pytest.raises(ClientError) as info:
            h.classify_batch(np.stack([random_image(i) for i in range(40)]))  # 120 KiB of pixels
        error = info.value
        assert (error.code, error.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
        assert error.too_large is not None and error.too_large[1] == 64 * 1024 and not error.retryable
        assert error.message.startswith("message too large: ")
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(big)
    code, _, err = cli(capsys, "--address", srv.http_address, "classify", big)
    assert code == 6 and "message too large" in err and "Traceback" not in err


def test_unreachable_addresses_fail_at_once_in_one_line(server, tmp_path, capsys):
    port = free_port()
    cases = [
        (f"http://localhost:{port}", 3, f"cannot reach http://localhost:{port}: connection refused"),
        (f"http://localhost:{server.port}", 3,  # the gRPC port
         f"cannot reach http://localhost:{server.port}: the server does not answer HTTP/1.1 (a gRPC port?"),
        (f"https://localhost:{server.http_port}", 3,
         "TLS handshake failed (WRONG_VERSION_NUMBER): the server does not seem to use TLS"),
        # (an IPv4 address: gRPC would also try localhost's ::1, where nothing listens, and may say that)
        (f"127.0.0.1:{server.http_port}", 3, "the server answers HTTP/1.x, not gRPC (an HTTP port?"),
        ("http://nosuch.invalid:8501", 3, "cannot resolve host nosuch.invalid"),
        (f"ftp://localhost:{port}", 2, "unsupported scheme ftp://"),
    ]
    for address, code, words in cases:
        started = time.monotonic()
        got, out, err = cli(capsys, "--address", address, "--timeout", "5", "health")
        assert (got, out) == (code, ""), err
        assert words in err and len(err.splitlines()) == 1, err
        assert time.monotonic() - started < 3, address
    code, _, err = cli(capsys, "--address", server.http_address, "--tls", "health")
    assert code == 2 and "give https://" in err
    np.save(tmp_path / "a.npy", np.stack([random_image(i) for i in range(3)]))
    started = time.monotonic()
    code = batch(tmp_path / "a.npy", "-o", tmp_path / "o.jsonl", "--address", f"http://localhost:{port}")
    err = capsys.readouterr().err.splitlines()
    assert code == 3 and time.monotonic() - started < 3
    assert err == [f"cifar10-batch: error: cannot reach http://localhost:{port}: connection refused"]


def test_a_batch_over_http_rides_out_a_server_that_comes_back(server_factory, tmp_path, capsys):
    count = 1500
    np.save(tmp_path / "many.npy", np.stack([random_image(i % 97) for i in range(count)]))
    out = tmp_path / "many.jsonl"
    srv = server_factory()

    def restart_midway() -> None:
        while not out.exists() or out.read_bytes().count(b"\n") < 100:
            time.sleep(0.005)
        srv.stop(grace=0.0)
        time.sleep(1.0)
        server_factory(http_port=srv.http_port)

    restarter = threading.Thread(target=restart_midway, daemon=True)
    restarter.start()
    code = batch(tmp_path / "many.npy", "-o", out, "--address", srv.http_address, "--batch-size", "1",
                 "--retry-for", "20")
    restarter.join(10)
    assert code == 0, capsys.readouterr().err
    items = [json.loads(line)["item"] for line in out.read_text().splitlines()]
    assert sorted(items, key=int) == [str(i) for i in range(count)]  # each exactly once


def test_a_server_that_starts_later_is_waited_for(server_factory, capsys):
    port = free_port()
    timer = threading.Timer(1.0, lambda: server_factory(http_port=port))
    timer.start()
    try:
        code, out, err = cli(capsys, "--address", f"http://localhost:{port}", "--wait", "30", "health")
    finally:
        timer.join()
    assert (code, out.strip()) == (0, "SERVING"), err


def test_a_full_queue_is_retried_after_retry_after(server_factory):
    """With the model held on a gate, one call runs and one waits in the queue: the next is
    refused with 429 and Retry-After (1 s), and the client tries again that much later."""
    srv = server_factory(max_batch_size=1, max_queue_size=1, max_queue_delay_ms=0, instances=1)
    model = srv.plane.models.default
    gate, running = threading.Event(), threading.Event()
    predict = model.predict

    def gated(batch, alone=True):
        running.set()
        gate.wait(30)
        return predict(batch, alone)

    def call(outcomes: list, policy: RetryPolicy) -> threading.Thread:
        def go():
            with HttpClient(srv.http_address, retry=policy, timeout=30.0) as h:
                started = time.monotonic()
                try:
                    outcomes.append(h.classify(random_image(1)))
                except ClientError as error:
                    outcomes.append(error)
                outcomes.append(time.monotonic() - started)

        thread = threading.Thread(target=go)
        thread.start()
        return thread

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)

    model.predict = gated
    ahead, retried = [], []
    try:
        threads = [call(ahead, NO_RETRY)]
        wait_for(running.is_set, "the first call to reach the model")
        threads += [call(ahead, NO_RETRY), call(ahead, NO_RETRY)]  # one is queued, one refused
        wait_for(lambda: _requests(srv, "ModelInfer", "429") == 1, "a refusal")
        threads.append(call(retried, RetryPolicy(max_attempts=3)))
        wait_for(lambda: _requests(srv, "ModelInfer", "429") == 2, "the retried call's first refusal")
        gate.set()
        for thread in threads:
            thread.join(30)
    finally:
        gate.set()
        model.predict = predict
    result, seconds = retried
    assert result.model_name == "tiny-cnn", result
    assert seconds >= 0.9  # the server's Retry-After (1 s), not the policy's 0.1 s backoff


def test_a_request_that_can_never_fit_is_not_retried(server_factory):
    """More images than the whole queue holds: 429 without Retry-After, tried once."""
    srv = server_factory(max_batch_size=1, max_queue_size=2)
    with HttpClient(srv.http_address, retry=RetryPolicy(max_attempts=5)) as h:
        with pytest.raises(ClientError) as info:
            h.classify_batch(np.stack([random_image(i) for i in range(3)]))
    error = info.value
    assert (error.code, error.http_status, error.retry_after_s) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, None)
    assert "can never fit" in error.message
    assert _requests(srv, "ModelInfer", "429") == 1


def test_https_with_a_ca_and_a_client_certificate(server_factory, tmp_path, capsys):
    certs = make_certs(tmp_path / "certs")
    srv = server_factory(tls_cert=str(certs["server.pem"]), tls_key=str(certs["server.key"]),
                         tls_client_ca=str(certs["ca.pem"]))
    assert srv.http_address.startswith("https://")
    mutual = ["--ca-cert", certs["ca.pem"], "--client-cert", certs["client.pem"], "--client-key", certs["client.key"]]
    code, out, err = cli(capsys, "--address", srv.http_address, *mutual, "health")
    assert (code, out.strip()) == (0, "SERVING"), err
    tls = TLSConfig(certs["ca.pem"], certs["client.pem"], certs["client.key"], server_name="localhost")
    with HttpClient(srv.http_address.replace("localhost", "127.0.0.1"), tls=tls) as h:
        assert h.classify(random_image(2)).model_name == "tiny-cnn"
    code, _, err = cli(capsys, "--address", srv.http_address, "--retries", "0", "health")  # system CAs
    assert code == 3 and "CERTIFICATE_VERIFY_FAILED" in err and len(err.splitlines()) == 1
    code, _, err = cli(capsys, "--address", f"http://localhost:{srv.http_port}", "--retries", "0", "health")
    assert code == 3 and "(does it use TLS? try https://)" in err
