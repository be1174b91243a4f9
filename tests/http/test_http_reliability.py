"""The HTTP door keeps the gRPC door's promises (docs/reliability.md), over real HTTP (httpx,
raw sockets) against a real server: admission limits 429 and shutdown 503 with Retry-After,
413 for bodies too large however they are sent, JSON 400 for what does not parse as HTTP,
404/405 as JSON, X-Request-Timeout deadlines (504), TLS and mutual TLS, metrics labelled by
door, and never a traceback or an ERROR for what a client did."""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import socket
import ssl
import threading
import time
import urllib.request

import grpc
import httpx
import pytest
from PIL import Image

from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from tests.client.helpers import make_certs


def png(size: int = 32, color: str = "blue") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


PNG = png()
IMAGE = {"Content-Type": "image/png"}


def classify(client: httpx.Client, body: bytes = PNG, **headers: str) -> httpx.Response:
    return client.post("/v1/classify", content=body, headers=IMAGE | headers)


def check_error(response: httpx.Response, status: int, *words: str) -> str:
    """The answer is ``status`` with a JSON ``{"error": ...}`` naming the problem."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert all(word in error for word in words), error
    assert "Traceback" not in response.text
    return error


def in_background(call):
    """``call()`` on a thread; ``.result()`` waits for what it returned."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()

    class Pending:
        @staticmethod
        def result(timeout: float = 30.0):
            thread.join(timeout)
            return out[0]

    return Pending()


def until(condition, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.002)


# -- admission, shutdown, deadlines ----------------------------------------------------------


def test_past_the_in_flight_limit_is_429_with_retry_after(server_factory):
    srv = server_factory(max_inflight_requests=1, max_queue_delay_ms=300.0)
    with httpx.Client(base_url=srv.http_address, timeout=30) as first, \
            httpx.Client(base_url=srv.http_address, timeout=30) as second:
        pending = in_background(lambda: classify(first))
        until(lambda: srv.plane.inflight == 1)  # waiting 300 ms for its batch to fill
        refused = classify(second)
        check_error(refused, 429, "1 requests", "in flight")
        assert refused.headers["retry-after"] == "1"  # 50 ms, in HTTP's whole seconds
        assert pending.result().status_code == 200


def test_a_full_queue_is_429_with_retry_after_and_a_request_that_never_fits_without(server_factory):
    srv = server_factory(max_queue_size=4, max_batch_size=4, max_queue_delay_ms=300.0)
    with httpx.Client(base_url=srv.http_address, timeout=30) as first, \
            httpx.Client(base_url=srv.http_address, timeout=30) as second:
        files = [("images", (f"{i}.png", PNG)) for i in range(3)]
        pending = in_background(lambda: first.post("/v1/classify", files=files))
        until(lambda: srv.plane.queued == 3)
        full = second.post("/v1/classify", files=files[:2])
        check_error(full, 429, "request queue is full")
        assert full.headers["retry-after"] == "1"
        assert pending.result().status_code == 200
        never = second.post("/v1/classify", files=[("images", (f"{i}.png", PNG)) for i in range(5)])
        check_error(never, 429, "can never fit in the queue")
        assert "retry-after" not in never.headers  # retrying would not help


def test_during_shutdown_in_flight_is_answered_and_new_is_503_with_retry_after(server_factory):
    """The answers say Connection: close, so a keep-alive client does not reuse a connection
    that is about to close."""
    srv = server_factory(max_queue_delay_ms=300.0, grace_seconds=5.0)
    with httpx.Client(base_url=srv.http_address, timeout=30) as first, \
            httpx.Client(base_url=srv.http_address, timeout=30) as second:
        assert classify(second).headers.get("connection") != "close"  # keep-alive while serving
        pending = in_background(lambda: classify(first))
        until(lambda: srv.plane.inflight == 1)
        stopping = srv.begin_stop(5.0)
        until(lambda: srv.service.lifecycle.shutting_down)
        refused = classify(second)  # on the kept-alive connection
        answered = pending.result()
        stopping.result(20)
    check_error(refused, 503, "shutting down")
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    assert answered.status_code == 200 and answered.headers["connection"] == "close"


def test_a_request_on_a_kept_alive_connection_after_the_port_closed_is_still_answered(
        server_factory):
    """HTTP/1.1 has no GOAWAY: a connection idle when the port closes stays open a moment
    (LINGER_S), so that a request its client sends meanwhile is answered, not reset."""
    srv = server_factory(grace_seconds=5.0)
    with httpx.Client(base_url=srv.http_address, timeout=30) as http:
        assert classify(http).status_code == 200  # the connection is kept alive
        stopping = srv.begin_stop(5.0)

        def port_closed() -> bool:
            try:
                socket.create_connection(("127.0.0.1", srv.http_port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        until(port_closed)
        refused = classify(http)  # on the idle connection, after the port has closed
        stopping.result(20)
    check_error(refused, 503, "shutting down")
    assert refused.headers["retry-after"] == "1" and refused.headers["connection"] == "close"


def test_connections_waiting_in_the_port_s_queue_when_it_closes_are_served(server_factory):
    """The kernel completes a connection's handshake before the server accepts it: closing
    the port would reset the connections still in its queue, after their clients sent."""
    srv = server_factory(grace_seconds=5.0)
    blocked = threading.Event()

    def block_then_close() -> None:
        blocked.set()
        time.sleep(0.5)  # the loop is busy: connections made meanwhile wait in the queue
        asyncio.ensure_future(srv.service.http.door.close(5.0))  # runs before they are accepted

    srv.loop.call_soon_threadsafe(block_then_close)
    blocked.wait(10)
    waiting = [socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
               for _ in range(4)]
    for sock in waiting:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = []
    for sock in waiting:
        with sock:
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            answers.append(received)
    assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b'{"live":true}') for a in answers), answers
    with pytest.raises(ConnectionRefusedError):  # the port did close
        socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)


def test_a_deadline_that_passes_while_queued_is_504(server_factory, caplog):
    srv = server_factory(max_queue_delay_ms=500.0)
    caplog.set_level(logging.WARNING)
    with httpx.Client(base_url=srv.http_address, timeout=30) as http:
        started = time.monotonic()
        expired = classify(http, **{"X-Request-Timeout": "0.05"})
        check_error(expired, 504, "deadline expired while the request was queued")
        assert time.monotonic() - started < 5
        assert classify(http, **{"X-Request-Timeout": "30"}).status_code == 200
        for bad in ("0", "-1", "soon", "nan", "inf", "1e400"):
            check_error(classify(http, **{"X-Request-Timeout": bad}), 400,
                        "X-Request-Timeout must be a positive number of seconds")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_deadlines_and_clients_that_give_up_anywhere_on_the_way_are_quiet(server_factory, caplog):
    """As tests/reliability/test_deadlines.py for gRPC: deadlines that pass while reading,
    queued or answering, and clients that leave before their answer, end with no ERROR."""
    srv = server_factory(metrics_port=0)
    caplog.set_level(logging.WARNING)
    stop = threading.Event()
    codes: list[str] = []

    def client(seed: int) -> None:
        with httpx.Client(base_url=srv.http_address, timeout=10) as http:
            files = [("images", (f"{i}.png", PNG)) for i in range(1 + seed % 8)]
            i = 0
            while not stop.is_set():
                i += 1
                timeout = 0.0005 * (1 + (seed + i) % 8)
                try:
                    if i % 2:  # the server's deadline
                        response = http.post("/v1/classify", files=files,
                                             headers={"X-Request-Timeout": str(timeout)})
                        codes.append(str(response.status_code))
                    else:  # the client gives up and closes its connection
                        http.post("/v1/classify", files=files, timeout=timeout * 4)
                        codes.append("200")
                except httpx.TimeoutException:
                    codes.append("gave up")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert codes.count("504") > 10 and codes.count("gave up") > 10, collections.Counter(codes)
    assert set(codes) <= {"200", "504", "gave up"}, collections.Counter(codes)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:  # still serving
        assert classify(http).status_code == 200


# -- what the door refuses before the data plane ----------------------------------------------


@pytest.mark.parametrize("sent", ["content-length", "chunked"])
def test_a_body_past_the_limit_is_413_however_it_is_sent(server_factory, sent):
    srv = server_factory(max_message_bytes=20_000)
    body = PNG + bytes(30_000)
    content = body if sent == "content-length" else iter([body[i:i + 4096] for i in range(0, len(body), 4096)])
    with httpx.Client(base_url=srv.http_address, timeout=30) as http:
        response = http.post("/v1/classify", content=content, headers=IMAGE)
        check_error(response, 413, "over the limit of 20000 bytes", "--max-message-bytes")
        assert ("transfer-encoding" in response.request.headers) == (sent == "chunked")
        assert classify(http).status_code == 200  # the connection, or a new one, still serves


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a fresh connection; the answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x01b\r\n\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 without an upgrade: not served here
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64),  # TLS to a plaintext port
], ids=["garbage", "control-character", "negative-length", "length-and-chunked", "bad-chunk",
        "http2", "tls"])
def test_what_does_not_parse_as_http_is_a_json_400_and_a_warning_at_most(server_factory,
                                                                             caplog, data):
    srv = server_factory()
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        status, headers, body = raw_exchange(srv.http_port, data)
        assert (status, headers["content-type"], headers["connection"]) == (
            400, "application/json", "close")
        assert body == b'{"error": "malformed HTTP/1.1 request"}'
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 1 and all("Invalid HTTP request" in w for w in warnings), warnings


def test_unknown_paths_and_methods_are_json(server_factory):
    srv = server_factory()
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        check_error(http.get("/v3/nothing"), 404, "Not Found")
        check_error(http.delete("/v1/classify"), 405, "Method Not Allowed")
        upgrade = http.get("/v2/health/live", headers={"Connection": "Upgrade",
                                                       "Upgrade": "websocket"})
        assert upgrade.status_code == 200  # no WebSocket here: an ordinary request


def test_a_client_that_leaves_mid_body_is_no_error(server_factory, caplog):
    srv = server_factory(metrics_port=0)
    caplog.set_level(logging.WARNING)
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000\r\n\r\n" + PNG)  # and leaves
    until(lambda: _count(srv, "Classify", "499") == 1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        assert classify(http).status_code == 200


def test_a_client_that_leaves_while_its_request_waits_cancels_it(server_factory, caplog):
    """As a gRPC client's cancellation: the queued work is dropped, not computed for nobody."""
    srv = server_factory(metrics_port=0, max_queue_delay_ms=3000.0)  # a lone image waits 3 s
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(PNG), PNG))
        until(lambda: srv.plane.inflight == 1)
    until(lambda: srv.plane.inflight == 0 and _count(srv, "Classify", "499") == 1)
    assert time.monotonic() - started < 2.5  # before the batch's 3 s wait was over
    assert _count(srv, "Classify", "200") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        assert classify(http).status_code == 200


def test_a_bug_in_a_route_is_a_json_500_and_the_traceback_only_in_the_log(server_factory, caplog):
    srv = server_factory()

    async def broken():
        raise RuntimeError("a secret detail")

    srv.service.http.app.add_api_route("/broken", broken)
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        error = check_error(http.get("/broken"), 500, "internal server error")
        assert "secret" not in error
        assert http.get("/v2/health/ready").status_code == 200  # still serving
    assert any(r.exc_info and "a secret detail" in str(r.exc_info[1]) for r in caplog.records)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("pki"))


def tls_context(pki, client_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    if client_certificate:
        context.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    return context


def test_tls_serves_https_on_the_http_port(server_factory, pki):
    srv = server_factory(tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]))
    assert srv.http_address.startswith("https://localhost:")
    with httpx.Client(base_url=srv.http_address, verify=tls_context(pki), timeout=10) as http:
        assert classify(http).status_code == 200
    with pytest.raises(httpx.TransportError):  # plaintext to the TLS port
        httpx.get(f"http://localhost:{srv.http_port}/v2/health/live", timeout=10)
    with pytest.raises(httpx.ConnectError):  # a certificate the client does not trust
        httpx.get(srv.http_address + "/v2/health/live", timeout=10)


def test_mutual_tls_needs_a_client_certificate(server_factory, pki):
    srv = server_factory(tls_cert=str(pki["server.pem"]), tls_key=str(pki["server.key"]),
                         tls_client_ca=str(pki["ca.pem"]))
    with pytest.raises(httpx.TransportError):
        with httpx.Client(base_url=srv.http_address, verify=tls_context(pki), timeout=10) as http:
            classify(http)
    with httpx.Client(base_url=srv.http_address, verify=tls_context(pki, client_certificate=True),
                      timeout=10) as http:
        assert classify(http).status_code == 200


# -- metrics -----------------------------------------------------------------------------------


def _count(srv, method: str, code: str, door: str = "http") -> float:
    return sum(s.value for m in srv.metrics.requests.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels == {"door": door, "method": method,
                                                            "code": code})


def test_metrics_are_labelled_by_door(server_factory):
    srv = server_factory(metrics_port=0)
    with httpx.Client(base_url=srv.http_address, timeout=10) as http:
        assert classify(http).status_code == 200
        check_error(classify(http, body=b"not an image"), 400)
    with grpc.insecure_channel(srv.address) as channel:
        pb_grpc.ClassifierStub(channel).Classify(pb.ClassifyRequest(images=[pb.Image(encoded=PNG)]),
                                                 timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics",
                                  timeout=10).read().decode()
    for series in ('cifar10_requests_total{code="200",door="http",method="Classify"} 1.0',
                   'cifar10_requests_total{code="400",door="http",method="Classify"} 1.0',
                   'cifar10_requests_total{code="OK",door="grpc",method="Classify"} 1.0',
                   'cifar10_request_duration_seconds_count{door="http",method="Classify"} 2.0',
                   'cifar10_request_duration_seconds_count{door="grpc",method="Classify"} 1.0'):
        assert series in text, series
