"""What tracing and the request log cost per request, measured where they run: in the
process of the data plane, without the doors' transport around it.

    python -m bench.observability_cost --baseline DIR [--model M] [--rounds 5] [--calls 6400]
        [--repeats 5] [--configurations never,off,...] [--out FILE]

Each configuration runs in a fresh process: a ``DataPlane`` around the model (one intra-op
thread), 64 callers each awaiting ``infer`` of 1-image raw requests, one after another; in
a traced or logged configuration each call is framed as a door frames it
(``Requests.begin`` with a ``traceparent``, then ``Observed.end``). The figure is the least,
over ``--repeats`` runs of ``--calls`` calls, of the wall time and the CPU time (every
thread of the process: the batcher's, the span exporter's) per call. Configurations:

* ``never``: the code before tracing existed (``--baseline DIR``, a folder of its
  ``cifar10_*`` packages, first on PYTHONPATH), as in ``bench.compare``;
* ``off``: this code, nothing configured;
* ``traced``: every request traced (``OTEL_EXPORTER_OTLP_ENDPOINT`` set: the SDK's batch
  span processor exports over OTLP/gRPC to ``bench.otlp_sink``, started here);
* ``traced_1pct``: ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``_ARG=0.01``, requests
  without trace context (1 in 100 traced);
* ``logged``, ``logged_1pct``: the request log at rate 1 and 0.01, to a file.

``--configurations`` measures some of them (``never,off``: more rounds of what matters for
"no cost when off" in the same time). Rounds alternate the order of the configurations; the
report gives each one's median over the rounds, and the median over the rounds of its CPU
time per call less ``never``'s in the same round (the steadier figure on a shared host).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.paths import REAL_MODEL, ROOT
from bench.stats import median

CONFIGURATIONS = ("never", "off", "traced", "traced_1pct", "logged", "logged_1pct")
CALLERS = 64
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def measure(mode: str, model_path: str, calls: int, repeats: int, log_file: str) -> dict:
    """In this process: the least wall and CPU microseconds per call over ``repeats``."""
    import numpy as np

    from cifar10_serving.dataplane.models import ModelSet, load_all
    from cifar10_serving.dataplane.plane import DataPlane
    from cifar10_serving.dataplane.repository import SingleFile, Slot
    from cifar10_serving.dataplane.request import InferenceRequest
    from cifar10_serving.onnx_model import OnnxModel

    def load(slot: Slot) -> OnnxModel:
        return OnnxModel.load(slot.path, threads=1, warmup_batch_sizes=(1, 32))

    requests = None
    if mode not in ("never", "off"):
        from cifar10_serving.observability.requests import Requests
        from cifar10_serving.settings import Settings

        rate = {"logged": 1.0, "logged_1pct": 0.01}.get(mode, 0.0)
        requests = Requests.create(Settings(model_path=model_path, request_log_rate=rate,
                                            request_log_file=log_file))
    headers = (lambda: ()) if mode == "traced_1pct" else (lambda: (("traceparent", TRACEPARENT),))

    async def run() -> dict:
        source = SingleFile(model_path)
        plane = DataPlane(ModelSet(source, load_all(source, load), load_model=load))
        images = np.zeros((1, 32, 32, 3), np.uint8)

        async def one() -> None:
            observed = None if requests is None else requests.begin(
                "grpc", "Classify", "cifar10.v2.Classifier/Classify", headers,
                lambda: "127.0.0.1:40000", attributes={"rpc.system": "grpc"})
            await plane.infer(InferenceRequest(images))
            if observed is not None:
                observed.end("OK", 0.001)

        async def caller(n: int) -> None:
            for _ in range(n):
                await one()

        runs = []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(caller(calls // CALLERS) for _ in range(CALLERS)))
            done = calls // CALLERS * CALLERS
            runs.append(((time.perf_counter() - wall) / done * 1e6,
                         (time.process_time() - cpu) / done * 1e6))
        await plane.stop(5.0)
        if requests is not None:
            await requests.close()
        return {"wall_us": round(min(r[0] for r in runs), 2),
                "cpu_us": round(min(r[1] for r in runs), 2)}

    return asyncio.run(run())


def environment(mode: str, baseline: str, sink_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CIFAR10_"))}
    if mode == "never":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
    if mode.startswith("traced"):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
    if mode == "traced_1pct":
        env.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.01")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observability_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="folder of the code before tracing's cifar10_* packages")
    parser.add_argument("--model", default=str(REAL_MODEL))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=6400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help="comma-separated, of: " + ", ".join(CONFIGURATIONS))
    parser.add_argument("--out", help="write the JSON results here")
    parser.add_argument("--one", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--log-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # a child: one configuration, its figures as JSON on stdout
        print(json.dumps(measure(args.one, args.model, args.calls, args.repeats, args.log_file)))
        return 0
    if not args.baseline:
        parser.error("--baseline is required")
    configurations = tuple(c.strip() for c in args.configurations.split(","))
    if "never" not in configurations or not set(configurations) <= set(CONFIGURATIONS):
        parser.error(f"--configurations: never and any of {', '.join(CONFIGURATIONS)}")
    baseline = str(Path(args.baseline).absolute())
    sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    results: dict = {"command": " ".join(["python -m bench.observability_cost", *(argv or sys.argv[1:])]),
                     "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "model": args.model, "baseline": baseline, "rounds": []}
    try:
        port = int(sink.stdout.readline().split()[-1])
        with tempfile.TemporaryDirectory() as folder:
            for n in range(args.rounds):
                order = configurations if n % 2 == 0 else configurations[::-1]
                figures = {}
                for mode in order:
                    done = subprocess.run(
                        [sys.executable, "-m", "bench.observability_cost", "--one", mode,
                         "--model", args.model, "--calls", str(args.calls), "--repeats",
                         str(args.repeats), "--log-file", str(Path(folder) / "requests.log")],
                        cwd=ROOT, env=environment(mode, baseline, port), capture_output=True,
                        text=True, timeout=900)
                    if done.returncode != 0:
                        raise SystemExit(f"bench.observability_cost: {mode} failed: {done.stderr[-2000:]}")
                    figures[mode] = json.loads(done.stdout.strip().splitlines()[-1])
                results["rounds"].append(figures)
    finally:
        sink.terminate()
        results["sink"] = sink.communicate(timeout=30)[0].strip()
    summary = {mode: {f: median([r[mode][f] for r in results["rounds"]]) for f in ("wall_us", "cpu_us")}
               for mode in configurations}
    for mode in configurations:
        summary[mode]["cpu_us_more_than_never"] = median(
            [r[mode]["cpu_us"] - r["never"]["cpu_us"] for r in results["rounds"]])
    results["summary"] = summary
    lines = ["| configuration | wall us per call | CPU us per call | CPU us more than never "
             "(median of rounds) |", "|---|---:|---:|---:|"]
    for mode in configurations:
        figures = summary[mode]
        lines.append(f"| {mode} | {figures['wall_us']} | {figures['cpu_us']} | "
                     f"{figures['cpu_us_more_than_never']:+.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))
    print(f"OTLP sink: {results['sink']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
