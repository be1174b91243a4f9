"""The server's files one 1-image Classify call crosses, in the order it enters them.

    python -m bench.request_path [--model models/cifar10-cnn.onnx]

Runs the server in-process (``cifar10_serving.testing.BackgroundServer``), warms it up, then
profiles one call on every thread (``threading.setprofile``) and prints the distinct files
of ours it entered and the sequence of file changes (the event loop's and the batcher
thread's interleaved, in time order). A measure of how far a reader follows one image.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import grpc

import cifar10_core
import cifar10_serving
from bench.paths import REAL_MODEL
from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc
from cifar10_serving.settings import Settings
from cifar10_serving.testing import BackgroundServer

ROOTS = [os.path.dirname(os.path.realpath(m.__file__)) for m in (cifar10_serving, cifar10_core)]


def trace(model: str) -> list[tuple[str, str]]:
    """(file, function) each time the call enters another file of ours."""
    path: list[tuple[str, str]] = []
    lock, tracing = threading.Lock(), threading.Event()

    def profile(frame, event, _arg):
        if event != "call" or not tracing.is_set():
            return
        filename = os.path.realpath(frame.f_code.co_filename)
        if any(filename.startswith(root) for root in ROOTS):
            name = os.path.relpath(filename, os.path.dirname(ROOTS[0]))
            with lock:
                if not path or path[-1][0] != name:
                    path.append((name, frame.f_code.co_name))

    threading.setprofile(profile)  # the server's threads start after this
    sys.setprofile(profile)
    settings = Settings(model_path=model, port=0, http_port=-1, metrics_port=-1, reload_interval_s=0)
    image = pb.Image(raw=pb.RawImage(data=bytes(3072), height=32, width=32, channels=3))
    request = pb.ClassifyRequest(images=[image])
    try:
        with BackgroundServer(settings) as server, grpc.insecure_channel(server.address) as channel:
            classify = pb_grpc.ClassifierStub(channel).Classify
            for _ in range(3):
                classify(request, timeout=10)
            time.sleep(0.2)  # the warm-up's last steps are over
            tracing.set()
            classify(request, timeout=10)
            time.sleep(0.2)  # the batcher thread's last steps after the answer
            tracing.clear()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REAL_MODEL))
    path = trace(parser.parse_args().model)
    print(f"{len({name for name, _ in path})} files, {len(path) - 1} changes of file")
    print("\n".join(f"  {name}: {function}" for name, function in path))


if __name__ == "__main__":
    main()
