"""SIGTERM under load, against a real server process: nothing accepted is lost.

24 clients (unary Classify and ModelInfer, held-open ClassifyStream and ModelStreamInfer)
hammer the server; SIGTERM lands mid-load. Every unary call ends OK or UNAVAILABLE, never
CANCELLED; every stream message read by the server is answered, and a stream ends OK or
UNAVAILABLE. ``CIFAR10_SHUTDOWN_REPEATS`` (default 3) sets the repetitions.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import threading
import time

import grpc
import pytest

from tests.ports import free_port
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_protos.inference import grpc_service_pb2 as ipb
from cifar10_protos.inference import grpc_service_pb2_grpc as ipb_grpc
from tests.serving.test_lifecycle import IMAGE, _start

REPEATS = int(os.environ.get("CIFAR10_SHUTDOWN_REPEATS", "3"))
CLIENTS = 24
STREAMS = len(range(0, CLIENTS, 3))  # every third client holds a stream open
OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE


def classify_request(i: int = 0) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(images=[IMAGE, IMAGE], request_id=str(i))


def infer_request(i: int = 0) -> ipb.ModelInferRequest:
    tensor = ipb.ModelInferRequest.InferInputTensor(name="images", datatype="UINT8",
                                                    shape=[1, 32, 32, 3])
    return ipb.ModelInferRequest(id=str(i), inputs=[tensor],
                                 raw_input_contents=[IMAGE.raw.data])


class Outcomes:
    """Every call's and stream's end, by status code; stream messages sent vs answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.Counter = collections.Counter()
        self.streams: collections.Counter = collections.Counter()
        self.messages: collections.Counter = collections.Counter()

    def count(self, counter: collections.Counter, key) -> None:
        with self.lock:
            counter[key] += 1


def unary_client(address: str, kind: int, stop: threading.Event, out: Outcomes,
                 persistent: bool) -> None:
    with grpc.insecure_channel(address) as channel:
        call = (pb_grpc.ClassifierStub(channel).Classify if kind % 2
                else ipb_grpc.GRPCInferenceServiceStub(channel).ModelInfer)
        request = classify_request() if kind % 2 else infer_request()
        while not stop.is_set():
            try:
                call(request, timeout=30)
                out.count(out.calls, "OK")
            except grpc.RpcError as exc:
                out.count(out.calls, exc.code().name)
                if exc.code() == UNAVAILABLE and not persistent:
                    return  # goes elsewhere; a persistent one keeps calling, even the closed port


def stream_client(address: str, kind: int, stop: threading.Event, out: Outcomes,
                  persistent: bool) -> None:
    """A held-open stream: sends until told to stop or the server ends the stream; a
    persistent client then opens a new one (a stream opened during shutdown is refused like
    a unary call: held until the port closes, never CANCELLED)."""
    with grpc.insecure_channel(address) as channel:
        if kind % 2:
            call, make = pb_grpc.ClassifierStub(channel).ClassifyStream, classify_request
        else:
            call, make = ipb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer, infer_request
        while not stop.is_set():
            if one_stream(call, make, kind, stop, out) != "UNAVAILABLE" or not persistent:
                return
            time.sleep(0.002)


def one_stream(call, make, kind: int, stop: threading.Event, out: Outcomes) -> str:
    """One stream, to its end; how it ended."""
    ended = threading.Event()

    def messages():
        for i in itertools.count():
            if stop.is_set() or ended.is_set():
                return
            yield make(i)
            time.sleep(0.002)

    answers = call(messages(), timeout=60)
    expected = 0
    try:
        for answer in answers:
            error = answer.error.code if kind % 2 else answer.error_message.split(":")[0]
            ident = answer.request_id if kind % 2 else answer.infer_response.id
            assert ident == str(expected), (ident, expected)  # in order, none skipped
            expected += 1
            out.count(out.messages, error or "OK")
        code = "OK"
    except grpc.RpcError as exc:
        code = exc.code().name
    out.count(out.streams, code)
    ended.set()
    return code


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [False, True], ids=["leaving", "persistent"])
@pytest.mark.parametrize("repeat", range(REPEATS))
def test_sigterm_under_load_cancels_nothing(tiny_model_path, repeat, persistent):
    port = free_port()
    proc, channel = _start(tiny_model_path, "--grace-seconds", "10", "--reload-interval-s", "0",
                           port=port)
    address = f"127.0.0.1:{port}"
    channel.close()
    stop, out = threading.Event(), Outcomes()
    threads = [threading.Thread(target=unary_client if i % 3 else stream_client,
                                args=(address, i, stop, out, persistent), daemon=True)
               for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        end = time.monotonic() + 30
        while out.calls["OK"] < 50 and time.monotonic() < end:  # the load is going
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read()
    assert out.calls["OK"] >= 50, out.calls
    assert set(out.calls) <= {"OK", "UNAVAILABLE"}, out.calls
    assert set(out.streams) <= {"OK", "UNAVAILABLE"}, out.streams
    assert set(out.messages) <= {"OK", "UNAVAILABLE"}, out.messages
    if persistent:  # streams reopened during shutdown, each refused
        assert sum(out.streams.values()) >= STREAMS
    else:
        assert sum(out.streams.values()) == STREAMS
    assert "Traceback" not in stderr and "all finished" in stderr
    print(f"repeat {repeat} ({'persistent' if persistent else 'leaving'} clients): calls {dict(out.calls)}, streams {dict(out.streams)}, "
          f"stream messages {dict(out.messages)}")
