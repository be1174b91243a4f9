"""The gRPC floor: a grpc.aio server on our Classify method that computes nothing.

It parses each request like the real server and answers a fixed, valid one-image
ClassifyResponse, so with the same load generator on the same CPUs it measures what the
gRPC layer alone (grpcio's C core, its Python bindings and asyncio) costs per call: no
server built on grpcio can answer more calls per second than this one.

    python -m bench.echo_server --port 8500      # prints "listening on PORT" when ready
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from cifar10_core import contract
from cifar10_serving.proto.cifar10.v2 import classifier_pb2 as pb

SERVICE = "cifar10.v2.Classifier"


def fixed_response() -> bytes:
    return pb.ClassifyResponse(
        labels=contract.CLASS_NAMES, probabilities=[0.1] * contract.NUM_CLASSES, top_indices=[0],
        top_k=1, model_name="echo", model_version="0",
    ).SerializeToString()


async def serve(port: int) -> None:
    answer = fixed_response()

    async def classify(request: pb.ClassifyRequest, context) -> bytes:
        return answer

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.unary_unary_rpc_method_handler(
        classify, request_deserializer=pb.ClassifyRequest.FromString, response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Classify": handler}),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on {bound}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
