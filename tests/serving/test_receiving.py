"""The receive gate (cifar10_serving.grpc_api.receive_gate): at most `slots` reads at once, the rest in
arrival order, nothing lost when a waiting call is cancelled; and a request-less call."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cifar10_serving.grpc_api.classifier import ClassifierServicer
from cifar10_serving.grpc_api.inference import InferenceServicer
from cifar10_serving.grpc_api.receive_gate import ReceiveGate


class Upload:
    """A call whose message arrives when ``arrive()`` is called."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.arrived = asyncio.Event()

    async def read(self) -> str:
        self.log.append(f"start {self.name}")
        await self.arrived.wait()
        self.log.append(f"end {self.name}")
        return self.name

    def arrive(self) -> None:
        self.arrived.set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_at_most_slots_reads_at_once_and_the_rest_in_arrival_order():
    async def scenario():
        gate, log = ReceiveGate(2), []
        uploads = [Upload(str(i), log) for i in range(5)]
        reads = [asyncio.ensure_future(gate.read(u)) for u in uploads]
        await settle()
        assert log == ["start 0", "start 1"] and gate.reading == 2 and gate.waiting == 3
        uploads[1].arrive()
        await settle()
        assert log[2:] == ["end 1", "start 2"]
        for u in uploads:
            u.arrive()
        assert await asyncio.gather(*reads) == ["0", "1", "2", "3", "4"]
        starts = [entry for entry in log if entry.startswith("start")]
        assert starts == [f"start {i}" for i in range(5)]
        assert gate.reading == 0 and gate.waiting == 0 and gate.waits == 3

    asyncio.run(scenario())


def three_reads(gate: ReceiveGate, log: list[str], middle: str):
    """Three calls reading through ``gate`` in order (first, ``middle``, last): their
    uploads and the futures of their reads."""
    uploads = [Upload(name, log) for name in ("first", middle, "last")]
    return uploads, [asyncio.ensure_future(gate.read(upload)) for upload in uploads]


def test_a_call_cancelled_while_waiting_gives_up_its_place_not_a_slot():
    async def scenario():
        gate, log = ReceiveGate(1), []
        (first, _, last), (reading, waiting, behind) = three_reads(gate, log, "gone")
        await settle()
        waiting.cancel()
        first.arrive()
        last.arrive()
        assert await reading == "first" and await behind == "last"
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert "start gone" not in log
        assert gate.reading == 0

    asyncio.run(scenario())


def test_a_call_cancelled_just_as_it_is_handed_a_slot_passes_it_on():
    async def scenario():
        gate, log = ReceiveGate(1), []
        (first, _, last), (reading, handed, behind) = three_reads(gate, log, "unlucky")
        await settle()
        first.arrive()
        while not reading.done():  # its slot goes to `unlucky`, woken but not yet run
            await asyncio.sleep(0)
        assert "start unlucky" not in log
        handed.cancel()
        last.arrive()
        assert await asyncio.wait_for(behind, 5) == "last"
        assert handed.cancelled() and "start unlucky" not in log
        assert gate.reading == 0

    asyncio.run(scenario())


def test_a_failed_read_frees_its_slot():
    class Broken:
        async def read(self):
            raise ConnectionError("client went away")

    async def scenario():
        gate = ReceiveGate(1)
        with pytest.raises(ConnectionError):
            await gate.read(Broken())
        assert gate.reading == 0

    asyncio.run(scenario())


def test_image_methods_and_the_others_have_separate_gates(server_factory):
    srv = server_factory(receive_slots=3)
    gates = srv.service.grpc.gates
    assert gates.images.slots == 3 and gates.other.slots == 1
    lifecycle = srv.service.lifecycle
    carry = {m.name for servicer in (ClassifierServicer(srv.plane, lifecycle),
                                     InferenceServicer(srv.plane, lifecycle))
             for m in servicer.methods() if m.images}
    assert carry == {"Classify", "ClassifyStream", "ModelInfer", "ModelStreamInfer"}
    with pytest.raises(ValueError):
        ReceiveGate(0)


def test_a_call_without_a_request_message_is_invalid_argument(server):
    with grpc.insecure_channel(server.address) as channel:
        for method in ("/cifar10.v2.Classifier/Classify",
                       "/inference.GRPCInferenceService/ModelInfer",
                       "/grpc.health.v1.Health/Check"):
            call = channel.stream_unary(method)
            with pytest.raises(grpc.RpcError) as info:
                call(iter(()), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert info.value.details() == "no request message"


def test_a_unary_call_waits_for_its_turn_to_be_read(server_factory):
    """Unary methods are registered with grpc's public request-streaming constructors so that
    their handler reads the message itself, through the gate (cifar10_serving.grpc_api.methods):
    with the one image slot held by an idle stream, a unary Classify waits; it is read and
    answered as soon as the slot is free. Fails if a grpc release stops honouring that."""
    from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
    from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
    import queue
    import time

    srv = server_factory(receive_slots=1)
    image = pb.Image(raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.ClassifierStub(channel)
        stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)  # connected
        outbox: queue.Queue = queue.Queue()
        stream = stub.ClassifyStream(iter(outbox.get, None), timeout=30)  # reads: holds the slot
        time.sleep(0.3)
        unary = stub.Classify.future(pb.ClassifyRequest(images=[image]), timeout=30)
        time.sleep(0.5)
        assert not unary.done()  # waiting for the slot
        outbox.put(pb.ClassifyRequest(images=[image], request_id="s"))  # the stream's read ends
        assert len(unary.result(timeout=10).probabilities) == 10
        assert next(stream).request_id == "s"
        outbox.put(None)
        assert list(stream) == []
