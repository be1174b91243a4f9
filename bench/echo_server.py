"""The gRPC floor: a grpc.aio server on our two APIs' methods that computes nothing.

It parses each request with the generated protobuf classes and answers a fixed, valid
one-image response, so with the same client on the same CPUs it measures what the gRPC layer
alone (grpcio's C core, its Python bindings and the event loop) costs per call: no server
built on grpcio can answer more calls per second than this one. ``--event-loop`` takes the
same choices as ``cifar10-serve``'s (auto: uvloop where installed), so that the floor runs
on the server's kind of event loop. It serves cifar10.v2.Classifier/Classify (a
ClassifyResponse) and the Open Inference Protocol's inference.GRPCInferenceService/ModelInfer
(a ModelInferResponse with the FP32 [1, 10] output "probabilities", any model name).

    python -m bench.echo_server --port 8500 [--event-loop auto|uvloop|asyncio]
                                                 # prints "listening on PORT" when ready
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
import numpy as np

from cifar10_core import contract
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.inference import grpc_service_pb2 as oip

SERVICE = "cifar10.v2.Classifier"
OIP_SERVICE = "inference.GRPCInferenceService"


def fixed_response() -> bytes:
    """A serialized one-image ClassifyResponse."""
    return pb.ClassifyResponse(
        labels=contract.CLASS_NAMES, probabilities=[0.1] * contract.NUM_CLASSES, top_indices=[0],
        top_k=1, model_name="echo", model_version="0",
    ).SerializeToString()


def fixed_infer_response() -> bytes:
    """A serialized one-image ModelInferResponse: "probabilities", FP32 [1, 10], raw contents."""
    response = oip.ModelInferResponse(model_name="echo", model_version="0")
    response.outputs.add(name="probabilities", datatype="FP32", shape=[1, contract.NUM_CLASSES])
    response.raw_output_contents.append(
        np.full(contract.NUM_CLASSES, 1 / contract.NUM_CLASSES, "<f4").tobytes())
    return response.SerializeToString()


def _fixed_answer(answer: bytes, request_type) -> grpc.RpcMethodHandler:
    """A unary method that parses its request as ``request_type`` and answers ``answer``."""

    async def method(request, context) -> bytes:
        return answer

    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request_type.FromString, response_serializer=None)


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(
            SERVICE, {"Classify": _fixed_answer(fixed_response(), pb.ClassifyRequest)}),
        grpc.method_handlers_generic_handler(
            OIP_SERVICE, {"ModelInfer": _fixed_answer(fixed_infer_response(), oip.ModelInferRequest)}),
    ))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on {bound}", flush=True)
    await server.wait_for_termination()


def runner(choice: str):
    """(name, run) for ``--event-loop`` ``choice``: ``run(coro)`` runs a coroutine on a fresh
    loop of that kind."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("--event-loop uvloop: the uvloop package is not installed")
        else:
            return "uvloop", uvloop.run
    return "asyncio", asyncio.run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                        help="as cifar10-serve's --event-loop (default auto: uvloop if installed)")
    args = parser.parse_args(argv)
    name, run = runner(args.event_loop)
    print(f"event loop: {name}", file=sys.stderr, flush=True)
    try:
        run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
