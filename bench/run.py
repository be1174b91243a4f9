"""The benchmark, all in one run on one machine: ceiling, our server, perf_analyzer, floor.

    python -m bench                       # tiny test model: a quick check that it all works
    python -m bench --real                # models/cifar10-cnn.onnx (or the seed-CNN stand-in)
    python -m bench --model PATH --repeats 5 --duration 5 --out results.json --report report.md
    python -m bench --smoke               # seconds, tiny request counts (tests/bench)
    python -m bench --workers 2           # the server as 2 processes (CIFAR10_WORKERS=2)

(a) ceiling: raw onnxruntime in-process images/s at batch 1..256 (bench.ceiling, own process);
(b) our server (a fresh ``python -m cifar10_serving`` process, default settings, ports
    picked here; with ``--workers N``, CIFAR10_WORKERS=N, here and for the cold starts) over
    cifar10.v2 Classify with our closed-loop load generator (bench.loadgen, own process):
    1-image calls at concurrency 1, 4, 16, 64 and 32-image calls at concurrency 1, 4;
    images/s and p50/p99 latency; cold start (process start to the first answer, several
    fresh processes); memory of the server's processes (all of them) after the load;
(c) the same calls through the Open Inference Protocol with Triton's perf_analyzer;
(d) the gRPC floor: 1-image calls at concurrency 1 and 64 against ``bench.echo_server``, a
    grpc.aio server that parses each request and computes nothing: the most calls/s and the
    least latency any grpcio server can give with this client on these CPUs;
(e) (b) and (d) again with h2load (bench.h2load), a C HTTP/2 client that leaves the server
    more of the shared CPUs than a Python client does, over both APIs: cifar10.v2 Classify
    and the Open Inference Protocol's ModelInfer (skipped when h2load is not installed).
(f) the single-image targets' figures side by side (bench.paired_floor, with h2load): in
    each repeat a short ceiling (R), then the echo server and ours one right after the
    other at concurrency 64 and 1, per API, so that each repeat's share of F and
    concurrency-1 limit come from the same minutes.
Each figure is the median of ``--repeats`` runs (scenarios interleaved, so slow drift of
the machine's load spreads over all of them). Results: JSON (``--out``) and a Markdown
report (``--report``, also printed), with the composed floor (``floor``: E, R, F) and the
serving-speed targets (``targets``, issue 14; bench.targets) marked met or not.

This module runs the parts in order; the servers' processes are in bench.server_process,
the measuring processes in bench.measurements, the targets in bench.targets and the
Markdown in bench.report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench import paired_floor, perf_analyzer
from bench.machine import background_load
from bench.machine import cpu as machine_cpu
from bench.measurements import loadgen, paired_ceiling, run_ceiling, run_h2load, run_loadgen, use_h2load
from bench.paths import REAL_MODEL, ROOT, STANDIN_MODEL
from bench.report import render
from bench.server_process import Server, cold_start, echo_server
from bench.stats import summarize_runs
from bench.targets import H2LOAD_KEYS, floor, targets

SCENARIOS = [(1, 1), (1, 4), (1, 16), (1, 64), (32, 1), (32, 4)]  # (images per call, concurrency)
FLOOR_SCENARIOS = [(1, 1), (1, 64)]


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The settings bench gives the server processes it starts (beyond model and port)."""
    return {"CIFAR10_WORKERS": str(args.workers)} if args.workers else {}


def run_server_parts(model: str, model_name: str, args: argparse.Namespace) -> dict:
    """(b), (c) and (e) against one fresh server; its memory, exit status, children left
    running after it exited, and logged errors."""
    server = Server(model, server_env(args))
    out: dict = {}
    try:
        out["first_answer_s"] = round(server.first_answer(), 3)
        ours = {s: [] for s in SCENARIOS}
        ours_oip = {s: [] for s in SCENARIOS}
        theirs = {s: [] for s in SCENARIOS}
        paired = []  # (ceiling just before, 32x4 run) per repeat
        for _ in range(args.repeats):
            for batch, concurrency in SCENARIOS:
                if (batch, concurrency) == (32, 4):
                    # The ceiling again, right before this run: on a shared machine the
                    # share of the ceiling is steadier than either figure alone.
                    paired.append(paired_ceiling(model, args.smoke))
                ours[(batch, concurrency)].append(
                    loadgen(server, "cifar10", batch, concurrency, args))
                if (batch, concurrency) == (32, 4):
                    run = ours[(32, 4)][-1]["images_per_s"]
                    layouts = paired[-1]
                    best, one_run = max(layouts.values()), layouts[1]
                    paired[-1] = {"ceiling_images_per_s": best, "images_per_s": run,
                                  "share": round(run / best, 3),
                                  "one_run_ceiling_images_per_s": one_run,
                                  "share_one_run": round(run / one_run, 3)}
                if args.oip_loadgen:
                    ours_oip[(batch, concurrency)].append(
                        loadgen(server, "oip", batch, concurrency, args))
        out["paired_32x4_vs_ceiling"] = paired
        out["memory_after_load"] = server.memory_mb()
        if not args.no_perf_analyzer:
            for _ in range(args.repeats):
                for batch, concurrency in SCENARIOS:
                    theirs[(batch, concurrency)].append(perf_analyzer.run(
                        model_name, server.address, batch, concurrency,
                        window_ms=args.pa_window_ms,
                        request_count=max(concurrency, 8) * 2 if args.smoke else 0))
        if use_h2load(args):
            for api, figures in run_h2load(server.address, SCENARIOS, args, model_name).items():
                out[H2LOAD_KEYS[api][0]] = figures
            out["paired_floor"] = paired_floor.run(model, server.address, model_name, args)
        out["memory_end"] = server.memory_mb()
        out["cifar10_loadgen"] = {f"{b}x{c}": summarize_runs(ours[(b, c)]) for b, c in SCENARIOS}
        if args.oip_loadgen:
            out["oip_loadgen"] = {f"{b}x{c}": summarize_runs(ours_oip[(b, c)])
                                 for b, c in SCENARIOS}
        if not args.no_perf_analyzer:
            out["oip_perf_analyzer"] = {f"{b}x{c}": summarize_runs(theirs[(b, c)])
                                       for b, c in SCENARIOS}
    finally:
        out["exit_code"] = server.stop()
        out["children_left_after_exit"] = server.children_left
        stderr = server.log_text()
        out["server_errors_logged"] = [line for line in stderr.splitlines() if " ERROR " in line][:10]
    return out


def run_grpc_floor(model_name: str, args: argparse.Namespace) -> tuple[dict, dict | None]:
    """(d): the same 1-image load against bench.echo_server (no model, no batching), with
    bench.loadgen, and with h2load over both APIs for (e), the same requests as for our
    server (None without h2load)."""
    with echo_server() as address:
        runs = {s: [] for s in FLOOR_SCENARIOS}
        for _ in range(args.repeats):
            for batch, concurrency in FLOOR_SCENARIOS:
                runs[(batch, concurrency)].append(
                    run_loadgen(address, "cifar10", batch, concurrency, args))
        lean = run_h2load(address, FLOOR_SCENARIOS, args, model_name) if use_h2load(args) else None
        return {f"{b}x{c}": summarize_runs(runs[(b, c)]) for b, c in FLOOR_SCENARIOS}, lean


def resolve_model(args: argparse.Namespace, tmp: str) -> str:
    """``--model``; with ``--real`` the trained model or the stand-in (built once); else the
    tiny test model, written into ``tmp``."""
    if args.model:
        return args.model
    if args.real:
        if REAL_MODEL.exists():
            return str(REAL_MODEL)
        if not STANDIN_MODEL.exists():
            from bench.standin_model import build

            build(STANDIN_MODEL)
        return str(STANDIN_MODEL)
    sys.path.insert(0, str(ROOT))
    from tests.tiny_model import write_tiny_model

    return str(write_tiny_model(Path(tmp) / "tiny-cnn.onnx"))


def build_parser() -> argparse.ArgumentParser:
    """``python -m bench``'s flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ONNX model (default: the tiny test model)")
    parser.add_argument("--real", action="store_true",
                        help=f"{REAL_MODEL.relative_to(ROOT)}, or the seed-CNN stand-in while "
                             "it does not exist")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--client-processes", type=int, default=1,
                        help="load generator processes")
    parser.add_argument("--pa-window-ms", type=int, default=3000,
                        help="perf_analyzer measurement window")
    parser.add_argument("--no-perf-analyzer", action="store_true")
    parser.add_argument("--no-h2load", action="store_true",
                        help="skip part (e), the runs with h2load (skipped anyway without it)")
    parser.add_argument("--oip-loadgen", "--v2-loadgen", dest="oip_loadgen", action="store_true",
                        help="also drive the Open Inference Protocol (ModelInfer) with our load "
                             "generator (--v2-loadgen: its older name, as in earlier runs' commands)")
    parser.add_argument("--workers", type=int, default=0,
                        help="server processes (CIFAR10_WORKERS) of the servers started here; "
                             "0: not set, the server's default")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny request counts, 1 repeat: checks the machinery only")
    parser.add_argument("--out", help="write the JSON results here")
    parser.add_argument("--report", help="write the Markdown report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run every part, write the JSON and the report, print the report."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.repeats, args.cold_starts = 1, 1
        args.pa_window_ms = 500

    import grpc
    import onnxruntime

    from cifar10_serving.onnx_model import OnnxModel
    from cifar10_serving.settings import available_cpus

    with tempfile.TemporaryDirectory() as tmp:
        model = resolve_model(args, tmp)
        loaded = OnnxModel.load(model, threads=1)
        results: dict = {
            "model": {"path": os.path.relpath(model, ROOT) if model.startswith(str(ROOT)) else model,
                      "name": loaded.name, "version": loaded.version},
            "repeats": args.repeats, "smoke": args.smoke,
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": {
                "cpus": available_cpus(), "cpu": machine_cpu(), "python": platform.python_version(),
                "onnxruntime": onnxruntime.__version__, "grpcio": grpc.__version__,
                "platform": platform.platform(), "load_before": background_load(),
            },
        }
        from cifar10_serving.settings import Settings

        # What Server() starts: no flags, the environment as here plus server_env.
        served = Settings.from_args([], {**os.environ, **server_env(args)})
        results["server_settings"] = {k: getattr(served, k) for k in (
            "instances", "threads", "max_batch_size", "max_queue_delay_ms")}
        results["server_settings"]["workers"] = args.workers or getattr(served, "workers", 1)
        results["ceiling"] = run_ceiling(model, args.repeats, args.smoke)
        results["cold_start"] = cold_start(model, args.cold_starts, server_env(args))
        results["server"] = run_server_parts(model, loaded.name, args)
        results["grpc_floor"], lean_floor = run_grpc_floor(loaded.name, args)
        for api, figures in (lean_floor or {}).items():
            results[H2LOAD_KEYS[api][1]] = figures
        results["environment"]["load_after"] = background_load()
        results["floor"] = floor(results)
        results["targets"] = targets(results, results["floor"])
    text = render(results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(text)
    print(text)
    return 0
