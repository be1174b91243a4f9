"""Admission control: limits on requests and bytes in flight, refusal at shutdown."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from cifar10_core.errors import OverloadedError, UnavailableError
from cifar10_serving.dataplane.admission import RETRY_AFTER_MS, Admission
from cifar10_serving.grpc_api.status import trailers_of


def test_requests_past_either_limit_are_refused_with_pushback():
    admission = Admission(max_requests=2, max_bytes=100)
    first = admission.admit(60)
    with pytest.raises(OverloadedError) as info:
        admission.admit(41)  # 101 bytes in flight
    assert trailers_of(info.value) == (("grpc-retry-pushback-ms", str(RETRY_AFTER_MS)),)
    second = admission.admit(40)
    with pytest.raises(OverloadedError):
        admission.admit(0)  # a third request
    first.release()
    first.release()  # twice is once
    assert (admission.requests, admission.bytes) == (1, 40)
    with admission.admit(10):
        assert admission.requests == 2
    second.release()
    assert (admission.requests, admission.bytes) == (0, 0)


def test_one_request_alone_is_admitted_however_large():
    admission = Admission(max_requests=1, max_bytes=10)
    with admission.admit(1_000_000):
        assert admission.bytes == 1_000_000


def test_after_close_requests_are_unavailable_with_a_pushback_hint():
    admission = Admission(max_requests=4, max_bytes=100)
    ticket = admission.admit(1)
    admission.close()
    with pytest.raises(UnavailableError) as info:
        admission.admit(1)
    assert trailers_of(info.value)[0][0] == "grpc-retry-pushback-ms"
    ticket.release()  # admitted before the close: still answered
    assert admission.requests == 0 and admission.seen == 2


@pytest.mark.parametrize("api", ["cifar10.v2", "kserve"])
def test_the_server_admits_a_unary_request_by_its_size_on_the_wire(server_factory, api):
    # the first request waits 300 ms for a batch to fill; the second, of another size, finds
    # it in flight and is refused: the refusal names the bytes the first was admitted with
    import grpc

    from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
    from cifar10_protos.inference import grpc_service_pb2 as kpb

    srv = server_factory(max_inflight_bytes=4000, max_queue_delay_ms=300.0)
    rng = np.random.default_rng(0)

    def request(images: int) -> bytes:
        data = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
        if api == "cifar10.v2":
            return pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(
                data=d.tobytes(), height=32, width=32, channels=3)) for d in data]).SerializeToString()
        tensor = kpb.ModelInferRequest.InferInputTensor(
            name="images", datatype="UINT8", shape=[images, 32, 32, 3])
        return kpb.ModelInferRequest(model_name="tiny-cnn", inputs=[tensor],
                                     raw_input_contents=[data.tobytes()]).SerializeToString()

    method = ("/cifar10.v2.Classifier/Classify" if api == "cifar10.v2"
              else "/inference.GRPCInferenceService/ModelInfer")
    first, second = request(1), request(2)
    with grpc.insecure_channel(srv.address) as channel:
        call = channel.unary_unary(method)
        pending = call.future(first, timeout=10)
        time.sleep(0.1)
        with pytest.raises(grpc.RpcError) as info:
            call(second, timeout=10)
        pending.result()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"1 requests ({len(first)} bytes) in flight" in info.value.details()


def test_refusals_are_held_until_the_doors_close_and_the_quiet_time_counts_from_the_drain(
        tiny_model_path):
    """Clients whose calls were all in flight during the drain were refused nothing, yet send
    their next call the moment they are answered: the quiet time counts from the end of the
    drain (not from the last refusal, long past), and a refusal meanwhile extends it. A
    refusal then waits until the doors close. (A close right after the drain cancelled such
    calls in grpc's hands: CANCELLED, not UNAVAILABLE, in tests/serving/test_lifecycle.py.)"""
    from cifar10_serving.assembly import build_plane
    from cifar10_serving.lifecycle import Door, Lifecycle
    from cifar10_serving.settings import Settings

    plane = build_plane(Settings(model_path=str(tiny_model_path), reload_interval_s=0))
    quiet, drain = 1.0, 1.5
    events: list[tuple[str, float]] = []

    async def scenario():
        lifecycle = Lifecycle(plane, quiet_s=quiet)
        started = time.monotonic()

        async def not_serving():
            events.append(("not serving", time.monotonic() - started))

        async def close(grace):
            events.append(("close", time.monotonic() - started))

        lifecycle.doors.append(Door(not_serving, close))
        in_flight = plane.admission.admit(100)  # a request admitted before the shutdown
        task = lifecycle.shutdown(grace=30)
        await asyncio.sleep(drain)
        in_flight.release()  # answered: the drain ends here
        await asyncio.sleep(0.5)
        with pytest.raises(UnavailableError):
            plane.admission.admit(100)  # a client's next call, refused
        held = asyncio.ensure_future(lifecycle.refused())
        await asyncio.sleep(0.7)  # past drain + quiet, but not past the refusal + quiet
        assert not held.done() and [name for name, _ in events] == ["not serving"]
        await task
        assert held.done()
        return dict(events)

    times = asyncio.run(scenario())
    assert times["not serving"] < 0.5
    assert times["close"] >= drain + 0.5 + quiet
