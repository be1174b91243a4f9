"""SIGTERM under HTTP load, against a real server process: nothing the server accepted is lost.

24 clients, each an httpx client keeping its connection alive, POST back to back to
/v1/classify (a raw image body, or multipart files) or to the Open Inference Protocol's infer
(JSON, or a binary tensor); every third one pauses up to 50 ms between calls, so
that idle keep-alive connections exist when the signal lands and when the port closes.
SIGTERM lands mid-load. Every request sent is answered 200 or 503 (with ``Retry-After`` and
``Connection: close``), or finds the port closed (``ConnectError``: never sent); none meets a
connection closed or reset after it was sent. "Leaving" clients stop at their first refusal
(they go elsewhere); "persistent" ones keep calling until the process has ended.
``CIFAR10_SHUTDOWN_REPEATS`` (default 3) sets the repetitions, as for the gRPC test.

HTTP/1.1 has no GOAWAY: a request sent on an idle connection at the instant the server closes
it cannot be answered. The server makes that instant late and rare
(``cifar10_serving.http_api.server``); what stays is said in docs/reliability.md.
"""

from __future__ import annotations

import collections
import io
import json
import random
import signal
import threading
import time

import httpx
import pytest
from PIL import Image

from tests.ports import free_port
from tests.reliability.test_shutdown import REPEATS
from tests.serving.test_lifecycle import _start

CLIENTS = 24
THINK_S = 0.05


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
PIXELS = bytes(range(256)) * 12
INFER_HEADER = json.dumps({"inputs": [{"name": "images", "datatype": "UINT8",
                                       "shape": [1, 32, 32, 3],
                                       "parameters": {"binary_data_size": len(PIXELS)}}]}).encode()
REQUESTS = [  # (path, keyword arguments of httpx's post): each client sends one of them
    ("/v1/classify", {"content": PNG, "headers": {"Content-Type": "image/png"}}),
    ("/v1/classify", {"files": [("images", ("a.png", PNG))]}),
    ("/v2/models/tiny-cnn/infer", {"json": {"inputs": [
        {"name": "images", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": list(PIXELS)}]}}),
    ("/v2/models/tiny-cnn/infer", {"content": INFER_HEADER + PIXELS, "headers": {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(INFER_HEADER))}}),
]


class Outcomes:
    """Every call's end: an HTTP status, or the transport error that ended it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.broken: list[str] = []  # answers that break a promise, and why

    def count(self, key: str, problem: str = "") -> None:
        with self.lock:
            self.calls[key] += 1
            if problem:
                self.broken.append(problem)


def client(url: str, kind: int, stop: threading.Event, ended: threading.Event, out: Outcomes,
           persistent: bool) -> None:
    rng = random.Random(kind)
    thinks = kind % 3 == 0
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            try:
                path, request = REQUESTS[kind % len(REQUESTS)]
                response = http.post(path, **request)
            except httpx.ConnectError:  # the port has closed: this request was never sent
                out.count("ConnectError")
                if not persistent or ended.is_set():
                    return
                time.sleep(0.01)
                continue
            except httpx.TransportError as exc:  # sent, and no answer: the promise broken
                out.count(type(exc).__name__, repr(exc))
                return
            status = response.status_code
            problem = ""
            if status == 503 and (response.headers.get("retry-after") != "1"
                                  or response.headers.get("connection") != "close"):
                problem = f"503 without Retry-After or Connection: close: {response.headers}"
            elif status not in (200, 503):
                problem = f"{status}: {response.text[:200]}"
            out.count(str(status), problem)
            if status == 503 and not persistent:
                return
            if thinks:
                time.sleep(rng.random() * THINK_S)


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [False, True], ids=["leaving", "persistent"])
@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sigterm_under_http_load_loses_no_accepted_request(tiny_model_path, repeat, persistent):
    http_port = free_port()
    proc, channel = _start(tiny_model_path, "--grace-seconds", "10", "--reload-interval-s", "0",
                           "--http-port", str(http_port))
    channel.close()
    url = f"http://127.0.0.1:{http_port}"
    stop, ended, out = threading.Event(), threading.Event(), Outcomes()
    threads = [threading.Thread(target=client, args=(url, i, stop, ended, out, persistent),
                                daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        end = time.monotonic() + 30
        while out.calls["200"] < 100 and time.monotonic() < end:  # the load is going
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        ended.set()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    print(f"repeat {repeat} ({'persistent' if persistent else 'leaving'} clients): "
          f"{dict(out.calls)}")
    assert out.calls["200"] >= 100, out.calls
    assert set(out.calls) <= {"200", "503", "ConnectError"}, (out.calls, out.broken[:3])
    assert not out.broken, out.broken[:3]
    if not persistent:  # each ended with one refusal, or the closed port
        assert out.calls["503"] + out.calls["ConnectError"] == CLIENTS
    assert "Traceback" not in stderr and "ERROR" not in stderr
    assert "all finished" in stderr
