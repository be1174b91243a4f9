"""Fuzzed HTTP requests against a real server: never a 500, never a traceback, never a hang.

Valid requests for every route (``SEEDS``) are mutated (their method, path, query string,
headers and body; bodies by ``tests/reliability/fuzzing.mutate``) and sent with httpx from
several threads; a share are sent as raw bytes, mutated as bytes, so that some do not parse
as HTTP at all. Every answer must be a success, a redirect (a path with a trailing slash) or
a JSON error ``{"error": ...}``: a status under 500 except 503 and 504 (a tiny
``X-Request-Timeout``); the server must keep serving, with no ERROR in its log and a WARNING
every 10 s at most. ``CIFAR10_HTTP_FUZZ_CALLS`` sets the number of requests (default 1,000;
more on demand), ``CIFAR10_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import logging
import os
import random
import socket
import string
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from tests.reliability.fuzzing import mutate

log = logging.getLogger(__name__)

CALLS = int(os.environ.get("CIFAR10_HTTP_FUZZ_CALLS", "1000"))
SEED = int(os.environ.get("CIFAR10_FUZZ_SEED", "13"))
THREADS = 8
RAW_SHARE = 0.25  # of the requests, sent as mutated bytes on a socket of their own


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "blue").save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
PIXELS = bytes(range(256)) * 12
TENSOR = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 32, 32, 3],
                      "data": list(PIXELS)}],
          "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}
BYTES_TENSOR = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                            "data": [base64.b64encode(PNG).decode()]}]}
HEADER = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 32, 32, 3],
                                 "parameters": {"binary_data_size": len(PIXELS)}}]}).encode()
MULTIPART = (b"--b\r\nContent-Disposition: form-data; name=images; filename=a.png\r\n"
             b"Content-Type: image/png\r\n\r\n" + PNG + b"\r\n--b--\r\n")
JSON_TYPE = {"Content-Type": "application/json"}

SEEDS: list[tuple[str, str, dict[str, str], bytes]] = [
    *[("GET", path, {}, b"") for path in (
        "/", "/docs", "/openapi.json", "/v2", "/v2/health/live", "/v2/health/ready",
        "/v2/models/stats", "/v2/models/tiny-cnn", "/v2/models/tiny-cnn/versions/1",
        "/v2/models/tiny-cnn/ready", "/v2/models/tiny-cnn/config", "/v2/models/tiny-cnn/stats",
        "/v1/model")],
    ("POST", "/v1/classify", {"Content-Type": "image/png"}, PNG),
    ("POST", "/v1/classify?top_k=5", {"Content-Type": "multipart/form-data; boundary=b"}, MULTIPART),
    ("POST", "/v1/classify", JSON_TYPE,
     json.dumps({"images": [base64.b64encode(PNG).decode()], "top_k": 2}).encode()),
    ("POST", "/v2/models/tiny-cnn/infer", JSON_TYPE, json.dumps(TENSOR).encode()),
    ("POST", "/v2/models/tiny-cnn/versions/1/infer", JSON_TYPE, json.dumps(BYTES_TENSOR).encode()),
    ("POST", "/v2/models/tiny-cnn/infer",
     {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(HEADER))},
     HEADER + PIXELS),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FETCH"]
CONTENT_TYPES = ["image/png", "image/jpeg", "application/json", "application/octet-stream",
                 "multipart/form-data", "multipart/form-data; boundary=", "text/plain",
                 "application/json; charset=utf-16", "image/", "*/*", ";;;"]
ALLOWED_5XX = {503, 504}
SUCCESS_TYPES = ("application/json", "application/octet-stream", "text/html", "text/css",
                 "text/javascript", "application/javascript", "image/svg+xml", "image/png")


def _text(rng: random.Random, most: int = 24) -> str:
    return "".join(rng.choice(string.printable[:94]) for _ in range(rng.randrange(most)))


def _path(path: str, rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return path + "/" + _text(rng).replace("?", "").replace("#", "")
    if kind == 1:
        return path.replace("tiny-cnn", rng.choice(["", "%ff", "%00", "x" * 5000, "..", "%2F"]))
    if kind == 2:
        return "/" + "/".join(rng.choice(["v1", "v2", "models", "infer", "%zz", "ü", ""])
                              for _ in range(rng.randrange(1, 6)))
    if kind == 3:
        return path + "?" + "&".join(f"{rng.choice(['top_k', 'model', 'version', 'x'])}="
                                     f"{rng.choice(['-1', '0', '3', '11', '1e9', '%ff', _text(rng)])}"
                                     for _ in range(rng.randrange(1, 4)))
    return path


def _headers(headers: dict[str, str], rng: random.Random) -> dict[str, str]:
    out = dict(headers)
    if rng.random() < 0.3:
        out["Content-Type"] = rng.choice(CONTENT_TYPES + [_text(rng)])
    if rng.random() < 0.2:
        out["X-Request-Timeout"] = rng.choice(["0.0001", "0.001", "-1", "nan", "1e400", "30",
                                               _text(rng, 8)])
    if rng.random() < 0.2:
        out["X-Request-Id"] = _text(rng, 300)
    if rng.random() < 0.2:
        out["Inference-Header-Content-Length"] = rng.choice(["-1", "0", "99999999", "x",
                                                             str(rng.randrange(2000))])
    if rng.random() < 0.1:
        out["Content-Encoding"] = rng.choice(["gzip", "br", "identity", _text(rng, 8)])
    return out


def fuzzed(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    method, path, headers, body = rng.choice(SEEDS)
    if rng.random() < 0.2:
        method = rng.choice(METHODS)
    if rng.random() < 0.4:
        path = _path(path, rng)
    if rng.random() < 0.6:
        body = mutate(body, rng)
    return method, path, _headers(headers, rng), body


def problem_with(status: int, headers, body: bytes, method: str) -> str:
    """What breaks a promise in one answer ('' if nothing)."""
    if status >= 500 and status not in ALLOWED_5XX:
        return f"status {status}"
    if b"Traceback" in body:
        return "a traceback in the body"
    if method == "HEAD" or status in (204, 304):
        return ""
    if 300 <= status < 400:  # Starlette's redirect of a path with a trailing slash
        return "" if headers.get("location") else f"{status} without a Location"
    content_type = headers.get("content-type", "")
    if status >= 400:
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"{status} without a JSON error: {content_type} {body[:100]!r}"
        return "" if isinstance(error, str) and error else f"{status}: error is {error!r}"
    if not content_type.startswith(SUCCESS_TYPES):
        return f"{status} with Content-Type {content_type!r}"
    return ""


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Send ``data``, end the sending side, read the first answer (None if none came: a
    request cut short is never answered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    if not received:
        return None
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return int(lines[0].split()[1]), headers, body


def test_fuzzed_http_requests_get_deliberate_answers_and_the_server_stays_healthy(
        server_factory, record_property, caplog):
    server = server_factory(metrics_port=0, max_images_per_request=64,
                            max_message_bytes=4 * 1024 * 1024)
    by_status: collections.Counter = collections.Counter()
    problems: list[tuple[str, str, str, bytes]] = []
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(seed: int) -> None:
        rng = random.Random(seed)
        method, path, headers, body = fuzzed(rng)
        if rng.random() < RAW_SHARE:
            data = raw_request(method, path, headers, body)
            answer = raw_exchange(server.http_port, mutate(data, rng) if rng.random() < 0.5 else data)
            if answer is None:
                key, problem = "no answer", ""
            else:
                status, answer_headers, answer_body = answer
                key, problem = str(status), problem_with(status, answer_headers, answer_body, method)
        else:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=server.http_address, timeout=30)
                with lock:
                    clients.append(local.client)
            try:
                response = local.client.request(method, path, headers=headers, content=body)
            except httpx.InvalidURL:  # refused by httpx itself: never sent
                return
            key = str(response.status_code)
            problem = problem_with(response.status_code, response.headers, response.content, method)
        with lock:
            by_status[key] += 1
            if problem:
                problems.append((problem, method, path, body[:200]))

    started = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, (SEED * 1_000_003 + i for i in range(CALLS))))
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()
    record_property("http_fuzz_statuses", dict(by_status))
    log.info("%d fuzzed HTTP requests: %s", CALLS, dict(sorted(by_status.items())))
    assert not problems, problems[:5]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no bug
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 1 + elapsed / 10, warnings[:5]  # no flood: one per 10 s at most
    with httpx.Client(base_url=server.http_address, timeout=10) as http:  # still serving
        assert http.get("/v2/health/ready").json() == {"ready": True}
        answer = http.post("/v1/classify", content=PNG, headers={"Content-Type": "image/png"})
        assert answer.status_code == 200
    assert by_status["200"] > 0 and by_status["400"] > 0 and by_status["404"] > 0
