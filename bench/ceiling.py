"""The ceiling: raw onnxruntime, in-process, images/s at each batch size.

Uses the server's model runner (``cifar10_serving.onnx_model.OnnxModel``), so the session
options (threads, no spinning, graph optimizations) are exactly the server's. Run in its own
process by bench.run.

    python -m bench.ceiling --model PATH [--batches 1,8,32,256] [--seconds 2] [--threads 0]
                            [--instances 1]

``--instances K`` runs K model runs side by side on one session, each from its own thread,
with ``threads / K`` intra-op threads (the server's ``--instances``); images/s is their sum.
``p50_ms`` is the median time of one run (one ``predict`` call) at that batch size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import numpy as np

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def measure(model_path: str, batches, seconds: float, threads: int, runs: int = 0,
            instances: int = 1) -> dict:
    from cifar10_serving.onnx_model import OnnxModel
    from cifar10_serving.settings import Settings

    # K runs side by side get what the server gives overlapping runs (threads / K each).
    threads = threads or Settings(instances=instances).overlap_threads
    model = OnnxModel.load(model_path, threads=threads)  # shared, as in the server
    rng = np.random.default_rng(0)
    out = {"threads": threads, "instances": instances, "batches": {}}
    for batch in batches:
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        for _ in range(3):  # warm-up for this shape
            model.predict(images)
        counts = [0] * instances
        durations: list[float] = []  # of every run, all threads (list.append is atomic)
        began, cpu_began = time.perf_counter(), time.process_time()
        stop = began + seconds

        def loop(i: int) -> None:
            while True:
                run_began = time.perf_counter()
                model.predict(images)
                durations.append(time.perf_counter() - run_began)
                counts[i] += 1
                if (runs and counts[i] >= runs) or (not runs and time.perf_counter() >= stop):
                    break

        workers = [threading.Thread(target=loop, args=(i,)) for i in range(instances)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        count = sum(counts)
        out["batches"][str(batch)] = {
            "images_per_s": round(count * batch / elapsed, 1),
            "cpu_us_per_image": round(cpu / (count * batch) * 1e6, 2),
            "ms_per_run": round(elapsed / count * 1000 * instances, 3),
            "p50_ms": round(statistics.median(durations) * 1000, 3),
            "runs": count,
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--runs", type=int, default=0, help="fixed runs per batch (smoke)")
    parser.add_argument("--threads", type=int, default=0,
                        help="per instance; 0: the CPUs we may use / instances")
    parser.add_argument("--instances", type=int, default=1, help="sessions run side by side")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    print(json.dumps(measure(args.model, batches, args.seconds, args.threads, args.runs,
                             args.instances)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
