"""Closed-loop gRPC load generator: C concurrent callers, each sending its next request as
soon as the previous answer arrives, for a fixed time. Run it in its own process(es), never
in the server's (it would take the server's GIL).

Requests are serialized once up front and sent as bytes through a generic grpc.aio
channel, and answers are kept as bytes, so the client spends its CPU on gRPC, not on
protobuf; a sample answer of each run is decoded and checked.

    python -m bench.loadgen --address 127.0.0.1:8500 --api cifar10 --batch 1 --concurrency 16 \
        --duration 5 [--warmup 1] [--processes 1] [--requests N]

Prints one JSON object: images_per_s, requests_per_s, p50_ms, p90_ms, p99_ms, errors...
``--api cifar10`` (the default) calls our own API, cifar10.v2.Classifier/Classify, with raw
32x32x3 images; ``--api oip`` calls the Open Inference Protocol's
inference.GRPCInferenceService/ModelInfer with raw_input_contents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time

import numpy as np

CIFAR10_METHOD = "/cifar10.v2.Classifier/Classify"
OIP_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def build_requests(api: str, batch: int, model: str, variants: int = 8) -> list[bytes]:
    """A few serialized requests of ``batch`` random images each (cycled through)."""
    rng = np.random.default_rng(1234)
    out = []
    for _ in range(variants):
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        if api == "cifar10":
            from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

            request = pb.ClassifyRequest(
                images=[
                    pb.Image(raw=pb.RawImage(data=img.tobytes(), height=32, width=32, channels=3))
                    for img in images
                ]
            )
        else:
            from cifar10_protos.inference import grpc_service_pb2 as pb

            request = pb.ModelInferRequest(model_name=model)
            request.inputs.add(name="images", datatype="UINT8", shape=list(images.shape))
            request.raw_input_contents.append(images.tobytes())
        out.append(request.SerializeToString())
    return out


def check_answer(api: str, batch: int, data: bytes) -> None:
    """Decode one answer and check its shape (the load itself keeps bytes only)."""
    if api == "cifar10":
        from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

        response = pb.ClassifyResponse.FromString(data)
        assert len(response.probabilities) == batch * len(response.labels) == batch * 10
        assert len(response.top_indices) == batch and not response.image_errors
    else:
        from cifar10_protos.inference import grpc_service_pb2 as pb

        response = pb.ModelInferResponse.FromString(data)
        probs = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        assert probs.shape == (batch * 10,), probs.shape
        assert abs(float(probs[:10].sum()) - 1.0) < 1e-3


async def _run(args) -> dict:
    import grpc

    requests = build_requests(args.api, args.batch, args.model)
    method = CIFAR10_METHOD if args.api == "cifar10" else OIP_METHOD
    options = [("grpc.max_receive_message_length", 64 << 20),
               ("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(args.address, options=options) as channel:
        call = channel.unary_unary(method)  # no serializers: bytes in, bytes out
        check_answer(args.api, args.batch, await call(requests[0], timeout=30))
        latencies: list[float] = []
        errors: dict[str, int] = {}
        measuring = False
        stop = False
        sent = 0
        completed = 0  # answers, warm-up included (for the CPU cost per call)
        cpu_started = time.process_time()

        async def worker(index: int) -> None:
            nonlocal sent, completed
            i = index
            while not stop:
                if args.requests and sent >= args.requests:
                    return
                sent += 1
                data = requests[i % len(requests)]
                i += 1
                started = time.perf_counter()
                try:
                    await call(data, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    if measuring:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                completed += 1
                if measuring:
                    latencies.append(time.perf_counter() - started)

        tasks = [asyncio.ensure_future(worker(i)) for i in range(args.concurrency)]
        if not args.requests:
            await asyncio.sleep(args.warmup)
        measuring = True
        began = time.perf_counter()
        if args.requests:
            await asyncio.gather(*tasks)
        else:
            await asyncio.sleep(args.duration)
            stop = True
            elapsed_at_stop = time.perf_counter() - began
            measuring = False
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began if args.requests else elapsed_at_stop
        cpu = time.process_time() - cpu_started
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed,
            "completed": completed, "cpu_s": cpu}


def _child(args, queue) -> None:
    queue.put(asyncio.run(_run(args)))


def summarize(parts: list[dict], batch: int) -> dict:
    latencies = np.sort(np.concatenate([np.asarray(p["latencies"]) for p in parts]))
    elapsed = max(p["elapsed"] for p in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for code, count in part["errors"].items():
            errors[code] = errors.get(code, 0) + count
    n = len(latencies)
    completed = sum(p["completed"] for p in parts)
    cpu = sum(p["cpu_s"] for p in parts)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)) * 1000, 3) if n else None

    return {
        "requests": n,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed, 1) if elapsed else 0.0,
        "images_per_s": round(n * batch / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": round(float(latencies.mean()) * 1000, 3) if n else None,
        "errors": errors,
        "completed_all": completed,  # warm-up included
        "client_cpu_us_per_call": round(cpu / completed * 1e6, 1) if completed else None,
    }


def measure(args) -> dict:
    if args.processes <= 1:
        parts = [asyncio.run(_run(args))]
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        per = max(1, args.concurrency // args.processes)
        children = []
        for p in range(args.processes):
            sub = argparse.Namespace(**vars(args))
            sub.concurrency = per + (1 if p < args.concurrency - per * args.processes else 0)
            if args.requests:
                sub.requests = max(1, args.requests // args.processes)
            child = ctx.Process(target=_child, args=(sub, queue))
            child.start()
            children.append(child)
        parts = [queue.get(timeout=args.warmup + args.duration + 120) for _ in children]
        for child in children:
            child.join()
    result = summarize(parts, args.batch)
    result.update(api=args.api, batch=args.batch, concurrency=args.concurrency,
                  processes=args.processes)
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--api", choices=("cifar10", "oip"), default="cifar10")
    parser.add_argument("--model", default="", help="model name for --api oip ('' = served one)")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--requests", type=int, default=0,
                        help="send exactly this many requests instead (smoke tests)")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    print(json.dumps(measure(parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
