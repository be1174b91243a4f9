"""The least a batching model server on grpc.aio can do: the echo server plus our batcher.

cifar10.v2 Classify only, 1-image raw requests: parse (grpc), the image to an array, one
``Batcher.submit`` (our dynamic batcher: worker threads, the model's elastic sessions, the
same settings as the server's defaults), the ClassifyResponse built by our servicer's
``build_response`` and serialized by grpc. No admission, receive gate, deadlines, metrics,
health or reflection. It answers what a server that only composes gRPC and onnxruntime
reaches on these CPUs, so that the distance from it to ``cifar10-serve`` is what our other
layers cost (docs/benchmarks.md). Optional layers of ours, to measure them one at a time:

* ``--guard``: requests read through ``cifar10_serving.grpc_api.parsing.GuardedServer`` (our own
  parsing, every method request-streaming and read through the receive gate);
* ``--metrics``: the handler wrapped in ``@rpc`` (error mapping) with
  ``Metrics.observe`` (Prometheus);
* ``--options``: the server's grpc options (``cifar10_serving.grpc_api.server.grpc_options``).

``--loop-batcher`` replaces our batcher with ``bench.loop_batcher`` (scheduling on the event
loop, onnxruntime's ``run_async``): an experiment, measured beside this server.

    python -m bench.minimal_server --model models/cifar10-cnn.onnx --port 8500 [--guard]
                                   [--metrics] [--options] [--loop-batcher]
                                   # prints "listening on PORT" when ready
"""

from __future__ import annotations

import argparse
import sys

import grpc
import numpy as np

from cifar10_core import contract
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

SERVICE = "cifar10.v2.Classifier"


def _handler(args: argparse.Namespace, batcher, info):
    from cifar10_serving.grpc_api.classifier import build_response
    from cifar10_serving.dataplane.plane import Prediction

    async def classify(request, context):
        raw = request.images[0].raw
        images = np.frombuffer(raw.data, np.uint8).reshape(1, *contract.INPUT_SHAPE)
        return build_response(Prediction(await batcher.submit(images), info), 1)

    if not args.metrics:
        return classify
    from cifar10_serving.grpc_api.status import rpc
    from cifar10_serving.observability.metrics import Metrics

    class Servicer:
        observe = Metrics().observe

        @rpc("Classify")
        async def Classify(self, request, context):
            return await classify(request, context)

    return Servicer().Classify


async def serve(args: argparse.Namespace) -> None:
    from cifar10_serving.dataplane.batching import Batcher
    from cifar10_serving.onnx_model import OnnxModel
    from cifar10_serving.grpc_api.parsing import GuardedServer
    from cifar10_serving.grpc_api.receive_gate import Gates
    from cifar10_serving.grpc_api.server import grpc_options
    from cifar10_serving.settings import Settings

    settings = Settings.from_args([])  # the CIFAR10_* environment, as the server reads it
    model = OnnxModel.load(args.model, threads=settings.threads,
                           overlap_threads=settings.overlap_threads)
    # As the server runs it: ``instances`` workers, a busy worker's run on the narrow session.
    if args.loop_batcher:
        from bench.loop_batcher import LoopBatcher, async_session

        batcher = LoopBatcher(model, [async_session(args.model) for _ in range(settings.instances)],
                              settings.max_batch_size)
    else:
        batcher = Batcher(lambda batch, key: model.predict(batch, alone=len(batch) == 1 and
                                                           batcher.queued == 0),
                          max_batch_size=settings.max_batch_size, workers=settings.instances)
    options = grpc_options(settings) if args.options else [
        ("grpc.max_receive_message_length", settings.max_message_bytes)]
    server = grpc.aio.server(options=options)
    method = _handler(args, batcher, model.info)
    target = server
    if args.guard:
        target = GuardedServer(server, None, Gates(image_slots=settings.receive_slots))
    handlers = {"Classify": grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=pb.ClassifyRequest.FromString,
        response_serializer=pb.ClassifyResponse.SerializeToString)}
    target.add_registered_method_handlers(SERVICE, handlers)
    bound = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"listening on {bound}", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        batcher.close_nowait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--guard", action="store_true", help="our parsing guard and receive gate")
    parser.add_argument("--metrics", action="store_true", help="@rpc with Prometheus metrics")
    parser.add_argument("--options", action="store_true", help="the server's grpc options")
    parser.add_argument("--loop-batcher", action="store_true",
                        help="bench.loop_batcher instead of our batcher (an experiment)")
    parser.add_argument("--event-loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    args = parser.parse_args(argv)
    from cifar10_serving.process.event_loop import runner

    _, run = runner(args.event_loop)
    try:
        run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
