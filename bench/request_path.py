"""The Python pieces of one 1-image Classify call, each timed alone (no server, no gRPC).

What our code adds to a call on the event loop beside grpc.aio's own work: parsing the
request, the admission ticket, the raw-image fast path, the response and its
serialization, the metrics. Their sum, set against ``bench.thread_cpu``'s CPU per call of the
server and of ``bench.echo_server``, shows how much of the difference is this code and how much
is the call's suspension and the hand-off to the batcher's thread and back.

    python -m bench.request_path [--number 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable

import numpy as np


def pieces() -> dict[str, Callable[[], object]]:
    """name -> one call of that piece, on a 1-image request and its answer."""
    from cifar10_core import contract
    from cifar10_serving.grpc_api import classifier as cs
    from cifar10_serving.dataplane.admission import Admission
    from cifar10_serving.dataplane.plane import Prediction
    from cifar10_serving.observability.metrics import Metrics
    from cifar10_serving.onnx_model import ModelInfo
    from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

    metrics, admission = Metrics(), Admission(256, 1 << 27)
    request = pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(
        data=bytes(3072), height=32, width=32, channels=3))])
    data = request.SerializeToString()
    info = ModelInfo("cifar10-cnn", "1", contract.CLASS_NAMES, {})
    prediction = Prediction(np.full((1, 10), 0.1, np.float32), info)
    response = cs.build_response(prediction, 1, "")

    def admit() -> None:
        with admission.admit(len(data)):
            pass

    return {
        "parse the request": lambda: pb.ClassifyRequest.FromString(data),
        "admission ticket": admit,
        "request size (ByteSize)": lambda: cs.request_bytes(request),
        "raw images to an array": lambda: cs.raw_batch(request.images, 1024),
        "build the response": lambda: cs.build_response(prediction, 1, ""),
        "serialize the response": response.SerializeToString,
        "metrics: request count and latency": lambda: metrics.observe("Classify", "OK", 0.001),
        "metrics: images and batch size": lambda: (metrics.images.inc(1),
                                                   metrics.observe_batch(1)),
    }


def measure(number: int = 20000, repeats: int = 5) -> dict[str, float]:
    """Microseconds per call of each piece (best of ``repeats``), and their sum."""
    out = {name: round(min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6, 2)
           for name, fn in pieces().items()}
    out["sum"] = round(sum(out.values()), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings; the best is kept")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.number, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
