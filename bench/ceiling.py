"""The ceiling: raw onnxruntime, in-process, images/s at each batch size.

Uses serving.model.OnnxModel, so the session options (threads, no spinning, graph
optimizations) are exactly the server's. Run in its own process by bench.run.

    python -m bench.ceiling --model PATH [--batches 1,8,32,256] [--seconds 2] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def measure(model_path: str, batches, seconds: float, threads: int, runs: int = 0) -> dict:
    from serving.model import OnnxModel
    from serving.settings import available_cpus

    threads = threads or available_cpus()
    model = OnnxModel.load(model_path, threads=threads, spinning=False)
    rng = np.random.default_rng(0)
    out = {"threads": threads, "batches": {}}
    for batch in batches:
        images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        for _ in range(3):  # warm-up for this shape
            model.predict(images)
        count, began, cpu_began = 0, time.perf_counter(), time.process_time()
        while True:
            model.predict(images)
            count += 1
            elapsed = time.perf_counter() - began
            if (runs and count >= runs) or (not runs and elapsed >= seconds):
                break
        cpu = time.process_time() - cpu_began
        out["batches"][str(batch)] = {
            "images_per_s": round(count * batch / elapsed, 1),
            "cpu_us_per_image": round(cpu / (count * batch) * 1e6, 2),
            "ms_per_run": round(elapsed / count * 1000, 3),
            "runs": count,
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    parser.add_argument("--runs", type=int, default=0, help="fixed runs per batch (smoke)")
    parser.add_argument("--threads", type=int, default=0, help="0: the CPUs we may use")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    print(json.dumps(measure(args.model, batches, args.seconds, args.threads, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
