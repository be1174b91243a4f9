"""What a lone model run costs depending on which thread runs it: the same one each time, or
threads taking turns; back to back, or after an idle gap (as a server sees at concurrency 1).

Why it matters: the batcher's workers used to wake in turn (a condition variable's order), so
at concurrency 1 consecutive runs came from different threads; a worker now takes the next
run if it went idle last (``cifar10_serving.dataplane.batching.Batcher._wake``). Raw onnxruntime through
``cifar10_serving.onnx_model.OnnxModel`` (the server's session options), no gRPC.

    python -m bench.handoff --model models/cifar10-cnn.onnx [--runs 1000] [--repeats 3]

Prints one JSON object: for each case (threads per run, workers taking turns, idle gap),
the median run's wall time and its thread's CPU time in us (the median over repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np

GAP_S = 0.0005
"""An idle gap like a concurrency-1 client's round trip between two calls."""


def one_case(model, workers: int, gap: float, runs: int) -> tuple[float, float]:
    """(wall us, CPU us of the running thread) per run, medians: ``workers`` threads take
    turns, each run followed by ``gap`` seconds of sleep."""
    images = np.zeros((1, 32, 32, 3), np.uint8)
    cond = threading.Condition()
    state = {"turn": 0}
    walls: list[float] = []
    cpus: list[float] = []

    def work(index: int) -> None:
        while True:
            with cond:
                while state["turn"] % workers != index and state["turn"] < runs:
                    cond.wait()
                if state["turn"] >= runs:
                    return
            wall, cpu = time.perf_counter(), time.thread_time()
            model.predict(images)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.thread_time() - cpu)
            if gap:
                time.sleep(gap)
            with cond:
                state["turn"] += 1
                cond.notify_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statistics.median(walls) * 1e6, statistics.median(cpus) * 1e6


def measure(model_path: str, runs: int, repeats: int) -> dict:
    from cifar10_serving.onnx_model import OnnxModel

    models = {threads: OnnxModel.load(model_path, threads=threads) for threads in (1, 2)}
    cases = [(threads, workers, gap) for threads in (1, 2) for workers in (1, 2)
             for gap in (0.0, GAP_S)]
    results: dict[tuple, list[tuple[float, float]]] = {case: [] for case in cases}
    for _ in range(repeats):  # interleaved: host noise hits every case alike
        for threads, workers, gap in cases:
            results[(threads, workers, gap)].append(one_case(models[threads], workers, gap, runs))
    out = []
    for (threads, workers, gap), values in results.items():
        out.append({
            "threads_per_run": threads, "workers_taking_turns": workers,
            "idle_gap_ms": gap * 1000,
            "wall_us_per_run": round(statistics.median(v[0] for v in values), 1),
            "cpu_us_per_run": round(statistics.median(v[1] for v in values), 1),
        })
    return {"runs": runs, "repeats": repeats, "cases": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=1000, help="runs per case and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.runs, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
