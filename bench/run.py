"""The benchmark, all in one run on one machine (issue 4): ceiling, our server, perf_analyzer.

    python -m bench                       # tiny test model: a quick check that it all works
    python -m bench --real                # models/cifar10-cnn.onnx (or the seed-CNN stand-in)
    python -m bench --model PATH --repeats 5 --duration 5 --out results.json --report report.md
    python -m bench --smoke               # seconds, tiny request counts (tests/bench)

(a) ceiling: raw onnxruntime in-process images/s at batch 1..256 (bench.ceiling, own process);
(b) our server (a fresh ``cifar10-serve`` process, default settings, port picked here) over
    cifar10.v2 Classify with our closed-loop load generator (bench.loadgen, own process):
    1-image calls at concurrency 1, 4, 16, 64 and 32-image calls at concurrency 1, 4;
    images/s and p50/p99 latency; cold start (process start to the first answer, several
    fresh processes); resident memory of the server process after the load;
(c) the same calls through the Open Inference Protocol with Triton's perf_analyzer;
(d) the gRPC floor: 1-image calls at concurrency 1 and 64 against ``bench.echo_server``, a
    grpc.aio server that parses each request and computes nothing: the most calls/s and the
    least latency any grpcio server can give with this client on these CPUs;
(e) (b) and (d) again with h2load (bench.h2load), a C HTTP/2 client that leaves the server
    more of the shared CPUs than a Python client does (skipped when h2load is not installed).
Each figure is the median of ``--repeats`` runs (scenarios interleaved, so slow drift of
the machine's load spreads over all of them). Results: JSON (``--out``) and a Markdown
report (``--report``, also printed), with the issue-4 targets marked met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import h2load, perf_analyzer

ROOT = Path(__file__).resolve().parent.parent
REAL_MODEL = ROOT / "models" / "cifar10-cnn.onnx"
STANDIN_MODEL = ROOT / ".cache" / "bench" / "seed-cnn-standin.onnx"
SCENARIOS = [(1, 1), (1, 4), (1, 16), (1, 64), (32, 1), (32, 4)]  # (images per call, concurrency)
SERVER_CODE = "import sys; from cifar10_serving.server import main; sys.exit(main())"

TARGETS = {
    "batch32_c4_vs_ceiling": 0.90,
    "batch32_c4_vs_one_run_ceiling": 0.90,
    "single_c64_images_per_s": 3000.0,
    "single_c1_p99_ms": 1.5,
    "single_c64_images_per_s_h2load": 3000.0,
    "single_c1_p99_ms_h2load": 1.5,
    "cold_start_s": 1.5,
    "rss_mb": 150.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def python_json(args: list[str], timeout: float) -> dict:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_ticks() -> dict[int, tuple[str, int, int]]:
    """pid -> (name, nice, utime + stime ticks) for every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            out[int(stat.parent.name)] = (name, int(fields[16]), int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def background_load(seconds: float = 1.0) -> dict:
    """The machine's load around a measurement: load average and the processes that used
    more than 10% of a CPU over ``seconds`` (name, nice value, % of one CPU)."""
    hz = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    busy = []
    for pid, (name, nice, ticks) in after.items():
        if pid in before and pid != os.getpid():
            share = (ticks - before[pid][2]) / hz / seconds * 100
            if share > 10:
                busy.append(f"{name} (nice {nice}, {share:.0f}%)")
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "busy_processes": sorted(busy)}


# -- the server process ---------------------------------------------------------------------

class Server:
    """``cifar10-serve`` in its own process with default settings (port and model aside)."""

    def __init__(self, model: str, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        env = dict(os.environ)
        env.update({"CIFAR10_MODEL_PATH": model, "CIFAR10_PORT": str(self.port),
                    "CIFAR10_HOST": "127.0.0.1", "CIFAR10_METRICS_PORT": "0"})
        env.update(extra_env or {})
        # Its log goes to a file, not a pipe: a pipe nobody reads until stop would block a
        # server that logs more than the pipe holds (64 KB) during a long run.
        self._log = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-c", SERVER_CODE], env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=self._log)
        self.address = f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the server has written to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def first_answer(self, timeout: float = 60.0) -> float:
        """Seconds from process start to the first Classify answer."""
        import grpc
        import numpy as np

        from cifar10_serving.proto.cifar10.v2 import classifier_pb2 as pb
        from cifar10_serving.proto.cifar10.v2 import classifier_pb2_grpc as pb_grpc

        request = pb.ClassifyRequest(images=[pb.Image(raw=pb.RawImage(
            data=np.zeros(3072, np.uint8).tobytes(), height=32, width=32, channels=3))])
        options = [("grpc.initial_reconnect_backoff_ms", 5), ("grpc.min_reconnect_backoff_ms", 5),
                   ("grpc.max_reconnect_backoff_ms", 20)]
        with grpc.insecure_channel(self.address, options=options) as channel:
            stub = pb_grpc.ClassifierStub(channel)
            stub.Classify(request, timeout=timeout, wait_for_ready=True)
        return time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> dict:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
                  if line.startswith(("VmRSS", "VmHWM"))}
        return {"rss_mb": round(values["VmRSS"] / 1024, 1), "peak_rss_mb": round(values["VmHWM"] / 1024, 1)}

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


# -- the parts ----------------------------------------------------------------------------

def ceiling_instances() -> list[int]:
    """The session layouts the ceiling tries: one run on every CPU, and one run per CPU pair
    share (the server's ``--instances 2``) where there are at least two CPUs."""
    from cifar10_serving.settings import available_cpus

    return [1, 2] if available_cpus() >= 2 else [1]


def run_ceiling(model: str, repeats: int, smoke: bool) -> dict:
    """Medians per batch size for each layout; ``images_per_s`` is the best layout's."""
    args = ["-m", "bench.ceiling", "--model", model]
    args += ["--batches", "1,8,32", "--runs", "3"] if smoke else ["--seconds", "2"]
    runs = {k: [] for k in ceiling_instances()}
    for _ in range(repeats):  # layouts interleaved, like the load scenarios
        for k in runs:
            runs[k].append(python_json(args + ["--instances", str(k)], timeout=600))
    first = runs[1][0]
    out = {"threads": first["threads"], "instances": list(runs),
           "threads_by_instances": {str(k): rs[0]["threads"] for k, rs in runs.items()}, "batches": {}}
    for batch in first["batches"]:
        layouts = {
            str(k): {
                "images_per_s": median([r["batches"][batch]["images_per_s"] for r in rs]),
                "cpu_us_per_image": median([r["batches"][batch]["cpu_us_per_image"] for r in rs]),
                "all": [r["batches"][batch]["images_per_s"] for r in rs],
            }
            for k, rs in runs.items()
        }
        best = max(layouts, key=lambda k: layouts[k]["images_per_s"])
        out["batches"][batch] = {**layouts[best], "best_instances": int(best), "by_instances": layouts}
    return out


def paired_ceiling(model: str, smoke: bool) -> dict[int, float]:
    """The best batch-8..128 images/s of each layout (instances), measured now (for the
    32x4 share)."""
    best = {}
    for k in ceiling_instances():
        cargs = ["-m", "bench.ceiling", "--model", model, "--batches", "8,32,64,128",
                 "--instances", str(k)]
        cargs += ["--runs", "2"] if smoke else ["--seconds", "1"]
        ceiling = python_json(cargs, timeout=300)
        best[k] = max(v["images_per_s"] for v in ceiling["batches"].values())
    return best


def run_cold_start(model: str, repeats: int) -> dict:
    times, codes = [], []
    for _ in range(repeats):
        server = Server(model)
        try:
            times.append(round(server.first_answer(), 3))
        finally:
            codes.append(server.stop())
    return {"seconds": median(times), "all": times, "exit_codes": codes}


def loadgen(server: Server, api: str, batch: int, concurrency: int, args) -> dict:
    """One load run; adds the server's CPU time per image over the whole run."""
    cpu_before = server.cpu_seconds()
    result = _loadgen(server.address, api, batch, concurrency, args)
    cpu = server.cpu_seconds() - cpu_before
    images = result["completed_all"] * batch
    result["server_cpu_us_per_image"] = round(cpu / images * 1e6, 1) if images else None
    return result


def _loadgen(address: str, api: str, batch: int, concurrency: int, args) -> dict:
    cmd = ["-m", "bench.loadgen", "--address", address, "--api", api, "--batch", str(batch),
           "--concurrency", str(concurrency), "--processes", str(args.client_processes)]
    if args.smoke:
        cmd += ["--requests", str(max(concurrency, 8))]
    else:
        cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    return python_json(cmd, timeout=args.duration + args.warmup + 300)


def summarize_runs(runs: list[dict]) -> dict:
    return {
        "images_per_s": median([r.get("images_per_s") for r in runs]),
        "p50_ms": median([r.get("p50_ms") for r in runs]),
        "p99_ms": median([r.get("p99_ms") for r in runs]),
        "images_per_s_all": [r.get("images_per_s") for r in runs],
        "server_cpu_us_per_image": median([r.get("server_cpu_us_per_image") for r in runs]),
        "client_cpu_us_per_call": median([r.get("client_cpu_us_per_call") for r in runs]),
        "unstable_runs": sum(1 for r in runs if r.get("unstable_windows")),
        "errors": [r["errors"] for r in runs if r.get("errors")] +
                  [r["error"] for r in runs if r.get("error")],
    }


def run_server_parts(model: str, model_name: str, args) -> dict:
    server = Server(model)
    out: dict = {}
    try:
        out["first_answer_s"] = round(server.first_answer(), 3)
        ours = {s: [] for s in SCENARIOS}
        ours_v2 = {s: [] for s in SCENARIOS}
        theirs = {s: [] for s in SCENARIOS}
        paired = []  # (ceiling just before, 32x4 run) per repeat
        for _ in range(args.repeats):
            for batch, concurrency in SCENARIOS:
                if (batch, concurrency) == (32, 4):
                    # The ceiling again, right before this run: on a shared machine the
                    # share of the ceiling is steadier than either figure alone.
                    paired.append(paired_ceiling(model, args.smoke))
                ours[(batch, concurrency)].append(
                    loadgen(server, "v1", batch, concurrency, args))
                if (batch, concurrency) == (32, 4):
                    run = ours[(32, 4)][-1]["images_per_s"]
                    layouts = paired[-1]
                    best, one_run = max(layouts.values()), layouts[1]
                    paired[-1] = {"ceiling_images_per_s": best, "images_per_s": run,
                                  "share": round(run / best, 3),
                                  "one_run_ceiling_images_per_s": one_run,
                                  "share_one_run": round(run / one_run, 3)}
                if args.v2_loadgen:
                    ours_v2[(batch, concurrency)].append(
                        loadgen(server, "v2", batch, concurrency, args))
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
            out["v1_h2load"] = run_h2load(server.address, SCENARIOS, args)
        out["memory_end"] = server.memory_mb()
        out["v1_loadgen"] = {f"{b}x{c}": summarize_runs(ours[(b, c)]) for b, c in SCENARIOS}
        if args.v2_loadgen:
            out["v2_loadgen"] = {f"{b}x{c}": summarize_runs(ours_v2[(b, c)])
                                 for b, c in SCENARIOS}
        if not args.no_perf_analyzer:
            out["v2_perf_analyzer"] = {f"{b}x{c}": summarize_runs(theirs[(b, c)])
                                       for b, c in SCENARIOS}
    finally:
        out["exit_code"] = server.stop()
        stderr = server.log_text()
        out["server_errors_logged"] = [line for line in stderr.splitlines() if " ERROR " in line][:10]
    return out


def use_h2load(args) -> bool:
    return not args.no_h2load and h2load.binary() is not None


def run_h2load(address: str, scenarios, args) -> dict:
    """(e): the scenarios with h2load, ``--repeats`` times, interleaved; medians."""
    runs = {s: [] for s in scenarios}
    for _ in range(args.repeats):
        for batch, concurrency in scenarios:
            runs[(batch, concurrency)].append(h2load.run(
                address, batch, concurrency, args.duration, args.warmup,
                requests=max(concurrency, 8) if args.smoke else 0))
    return {f"{b}x{c}": summarize_runs(runs[(b, c)]) for b, c in scenarios}


FLOOR_SCENARIOS = [(1, 1), (1, 64)]


def run_grpc_floor(args) -> tuple[dict, dict | None]:
    """(d): the same 1-image load against bench.echo_server (no model, no batching), with
    bench.loadgen, and with h2load for (e) (None without h2load)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.echo_server", "--port", str(port)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if not process.stdout.readline().startswith("listening"):
            raise RuntimeError(f"bench.echo_server did not start: {process.stderr.read()[-2000:]}")
        runs = {s: [] for s in FLOOR_SCENARIOS}
        for _ in range(args.repeats):
            for batch, concurrency in FLOOR_SCENARIOS:
                runs[(batch, concurrency)].append(
                    _loadgen(f"127.0.0.1:{port}", "v1", batch, concurrency, args))
        lean = run_h2load(f"127.0.0.1:{port}", FLOOR_SCENARIOS, args) if use_h2load(args) else None
        return {f"{b}x{c}": summarize_runs(runs[(b, c)]) for b, c in FLOOR_SCENARIOS}, lean
    finally:
        process.terminate()
        process.wait(30)


# -- report -------------------------------------------------------------------------------

def targets(results: dict) -> dict:
    ceiling = results["ceiling"]["batches"]
    big = [v["images_per_s"] for b, v in ceiling.items() if int(b) >= 8]
    ceiling_max = max(big) if big else None
    v1 = results["server"]["v1_loadgen"]
    b32c4 = v1["32x4"]["images_per_s"]
    mem = results["server"]["memory_end"]
    paired = results["server"].get("paired_32x4_vs_ceiling") or []
    lean = results["server"].get("v1_h2load") or {}
    figures = {
        # Median over repeats of (32x4 images/s) / (ceiling measured just before it).
        "batch32_c4_vs_ceiling": median([p["share"] for p in paired]) if paired else (
            round(b32c4 / ceiling_max, 3) if ceiling_max else None),
        # The same against one run on all threads: the issue's and the design notes' ceiling.
        "batch32_c4_vs_one_run_ceiling": median([p["share_one_run"] for p in paired])
        if paired else None,
        "single_c64_images_per_s": v1["1x64"]["images_per_s"],
        "single_c1_p99_ms": v1["1x1"]["p99_ms"],
        # The same two through h2load, the lean client (part (e)); None without h2load.
        "single_c64_images_per_s_h2load": lean.get("1x64", {}).get("images_per_s"),
        "single_c1_p99_ms_h2load": lean.get("1x1", {}).get("p99_ms"),
        "cold_start_s": results["cold_start"]["seconds"],
        "rss_mb": max(mem["rss_mb"], results["server"]["memory_after_load"]["rss_mb"]),
    }
    out = {}
    for name, limit in TARGETS.items():
        value = figures[name]
        higher_is_better = name in ("batch32_c4_vs_ceiling", "batch32_c4_vs_one_run_ceiling",
                                    "single_c64_images_per_s", "single_c64_images_per_s_h2load")
        met = None if value is None else (value >= limit if higher_is_better else value <= limit)
        out[name] = {"value": value, "target": limit, "met": met}
    out["ceiling_images_per_s_batch8_256_max"] = ceiling_max
    return out


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report_h2load(results: dict) -> list[str]:
    """Part (e): our server and the echo server with h2load as the client."""
    ours, echo = results["server"].get("v1_h2load"), results.get("grpc_floor_h2load") or {}
    if not ours:
        return []
    lines = ["(e) The same cifar10.v2 calls with h2load (a C HTTP/2 client; bench.h2load) as the "
             "client, our server and, for 1-image calls, bench.echo_server:", "",
             "| images/call | concurrency | our server images/s | p50 ms | p99 ms | echo calls/s "
             "| echo p50 ms | echo p99 ms | our server / echo |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, row in ours.items():
        batch, concurrency = key.split("x")
        floor = echo.get(key, {})
        share = (f"{row['images_per_s'] / floor['images_per_s']:.2f}"
                 if row.get("images_per_s") and floor.get("images_per_s") else "")
        lines.append(f"| {batch} | {concurrency} | {fmt(row['images_per_s'], ',.0f')} | "
                     f"{fmt(row['p50_ms'], '.2f')} | {fmt(row['p99_ms'], '.2f')} | "
                     f"{fmt(floor.get('images_per_s'), ',.0f') if floor else ''} | "
                     f"{fmt(floor.get('p50_ms'), '.2f') if floor else ''} | "
                     f"{fmt(floor.get('p99_ms'), '.2f') if floor else ''} | {share} |")
    return [*lines, ""]


def report(results: dict) -> str:
    lines = []
    env = results["environment"]
    lines.append(f"Model: `{results['model']['path']}` ({results['model']['name']} "
                 f"version {results['model']['version']}); {env['cpus']} CPUs, "
                 f"onnxruntime {env['onnxruntime']}, grpcio {env['grpcio']}, "
                 f"Python {env['python']}; medians of {results['repeats']} runs"
                 f"{' (SMOKE: tiny request counts, figures meaningless)' if results['smoke'] else ''}.")
    before, after = env["load_before"], env["load_after"]
    lines.append(f"Machine load: 1-min load average {before['loadavg_1m']} before, "
                 f"{after['loadavg_1m']} after; other busy processes (share of one CPU) before: "
                 f"{', '.join(before['busy_processes']) or 'none'}; after: "
                 f"{', '.join(after['busy_processes']) or 'none'}.")
    served = results.get("server_settings")
    if served:
        lines.append("Server settings (defaults unless CIFAR10_* set): " + ", ".join(
            f"{k} {v}" for k, v in served.items()) + ".")
    lines.append("")
    cpus = env["cpus"]
    layouts = results["ceiling"]["instances"]
    threads = results["ceiling"]["threads_by_instances"]
    names = [f"{k} x {threads[str(k)]} threads" for k in layouts]
    lines.append("(a) Ceiling, raw onnxruntime in-process, images/s for each layout (instances x "
                 "intra-op threads; K instances = K runs side by side on one session, from K threads); "
                 "CPU cost of the best layout:")
    lines.append("")
    lines.append("| batch | " + " | ".join(names) + f" | CPU us/image | images/s if {cpus} CPUs were all ours |")
    lines.append("|---:|" + "---:|" * (len(names) + 2))
    for batch, value in results["ceiling"]["batches"].items():
        by = value.get("by_instances") or {"1": value}
        cells = [f"{by[str(k)]['images_per_s']:,.0f}" if str(k) in by else "n/a" for k in layouts]
        cost = value.get("cpu_us_per_image")
        tail = f"{cost} | {cpus * 1e6 / cost:,.0f}" if cost else "n/a | n/a"
        lines.append(f"| {batch} | " + " | ".join(cells) + f" | {tail} |")
    lines.append("")
    lines.append("(b) our server over cifar10.v2 (bench.loadgen) and (c) over the Open Inference "
                 "Protocol (perf_analyzer):")
    lines.append("")
    server = results["server"]
    has_v2_ours = "v2_loadgen" in server
    lines.append("| images/call | concurrency | v1 images/s | v1 p50 ms | v1 p99 ms "
                 "| v2 (perf_analyzer) images/s | p50 ms | p99 ms |"
                 + (" v2 (bench.loadgen) images/s | p50 ms | p99 ms |" if has_v2_ours else ""))
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if has_v2_ours else ""))
    for batch, concurrency in SCENARIOS:
        key = f"{batch}x{concurrency}"
        ours = server["v1_loadgen"][key]
        theirs = server.get("v2_perf_analyzer", {}).get(key, {})
        lines.append(
            f"| {batch} | {concurrency} | {fmt(ours['images_per_s'], ',.0f')} | "
            f"{fmt(ours['p50_ms'], '.2f')} | {fmt(ours['p99_ms'], '.2f')} | "
            f"{fmt(theirs.get('images_per_s'), ',.0f')}{'*' if theirs.get('unstable_runs') else ''} | "
            f"{fmt(theirs.get('p50_ms'), '.2f')} | "
            f"{fmt(theirs.get('p99_ms'), '.2f')} |"
            + (f" {fmt(server['v2_loadgen'][key]['images_per_s'], ',.0f')} | "
               f"{fmt(server['v2_loadgen'][key]['p50_ms'], '.2f')} | "
               f"{fmt(server['v2_loadgen'][key]['p99_ms'], '.2f')} |" if has_v2_ours else ""))
    errors = {f"{part} {k}": v["errors"] for part in ("v1_loadgen", "v2_loadgen", "v2_perf_analyzer", "v1_h2load")
              for k, v in server.get(part, {}).items() if v["errors"]}
    if any(v.get("unstable_runs") for v in server.get("v2_perf_analyzer", {}).values()):
        lines.append("")
        lines.append("\\* perf_analyzer found no 3 consecutive windows within 30% of each other in "
                     "at least one run; such a run counts with the median of its windows "
                     "(no percentiles).")
    lines.append("")
    lines.append("CPU cost per image (whole runs, warm-up included; server: all threads of the "
                 "server process; client: the load generator process):")
    lines.append("")
    lines.append(f"| API | images/call | concurrency | server CPU us/image | client CPU us/call "
                 f"| server images/s if {cpus} CPUs were all its own |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for part, api in (("v1_loadgen", "v1"), ("v2_loadgen", "v2")):
        for batch, concurrency in SCENARIOS:
            row = server.get(part, {}).get(f"{batch}x{concurrency}")
            if not row or not row.get("server_cpu_us_per_image"):
                continue
            cost = row["server_cpu_us_per_image"]
            lines.append(f"| {api} | {batch} | {concurrency} | {cost} | "
                         f"{row['client_cpu_us_per_call']} | {cpus * 1e6 / cost:,.0f} |")
    lines.append("")
    cold = results["cold_start"]
    lines.append(f"Cold start (process start to first answer): median {cold['seconds']} s "
                 f"of {cold['all']}. Server memory: {server['memory_after_load']['rss_mb']} MB "
                 f"RSS after (b), {server['memory_end']['rss_mb']} MB after (c), peak "
                 f"{server['memory_end']['peak_rss_mb']} MB. Server exit status on SIGTERM: "
                 f"{server['exit_code']}. Request errors: {errors or 'none'}.")
    lines.append("")
    floor = results.get("grpc_floor")
    if floor:
        lines.append("(d) The gRPC floor: the same 1-image calls (bench.loadgen, cifar10.v2) against "
                     "bench.echo_server, which parses each request and answers without computing:")
        lines.append("")
        lines.append("| images/call | concurrency | echo calls/s | p50 ms | p99 ms | our server images/s "
                     "| our server / echo |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|")
        for key, row in floor.items():
            batch, concurrency = key.split("x")
            ours = server["v1_loadgen"][key]["images_per_s"]
            share = f"{ours / row['images_per_s']:.2f}" if ours and row["images_per_s"] else "n/a"
            lines.append(f"| {batch} | {concurrency} | {row['images_per_s']:,.0f} | {row['p50_ms']:.2f} "
                         f"| {row['p99_ms']:.2f} | {ours:,.0f} | {share} |")
        lines.append("")
    lines += report_h2load(results)
    paired = server.get("paired_32x4_vs_ceiling") or []
    if paired:
        lines.append("32-image calls at concurrency 4 against the ceiling (batch 8-128, best) "
                     "measured right before each run: " + "; ".join(
                         f"{p['images_per_s']:,.0f} / {p['ceiling_images_per_s']:,.0f} = "
                         f"{p['share']:.2f}" for p in paired) + ".")
        lines.append("The same against the one-run layout alone (one onnxruntime run on all "
                     "threads, as the issue's ceiling was measured): " + "; ".join(
                         f"{p['images_per_s']:,.0f} / {p['one_run_ceiling_images_per_s']:,.0f} "
                         f"= {p['share_one_run']:.2f}" for p in paired) + ".")
        lines.append("")
    lines.append("| target | measured | limit | met |")
    lines.append("|---|---:|---:|---|")
    names = {
        "batch32_c4_vs_ceiling": "32-image calls, concurrency 4, share of the ceiling (best layout)",
        "batch32_c4_vs_one_run_ceiling": "32-image calls, concurrency 4, share of the one-run "
                                         "ceiling (the issue's)",
        "single_c64_images_per_s": "1-image calls, concurrency 64, images/s",
        "single_c1_p99_ms": "1-image calls, concurrency 1, p99 ms",
        "single_c64_images_per_s_h2load": "the same with h2load as the client: images/s",
        "single_c1_p99_ms_h2load": "the same with h2load as the client: p99 ms",
        "cold_start_s": "cold start, s",
        "rss_mb": "server resident memory, MB",
    }
    for name, label in names.items():
        t = results["targets"][name]
        met = {True: "yes", False: "NO", None: "n/a"}[t["met"]]
        lines.append(f"| {label} | {t['value']} | {t['target']} | {met} |")
    return "\n".join(lines) + "\n"


def resolve_model(args, tmp: str) -> str:
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


def main(argv=None) -> int:
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
    parser.add_argument("--v2-loadgen", action="store_true",
                        help="also drive the v2 API (ModelInfer) with our load generator")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny request counts, 1 repeat: checks the machinery only")
    parser.add_argument("--out", help="write the JSON results here")
    parser.add_argument("--report", help="write the Markdown report here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.cold_starts = 1, 1
        args.pa_window_ms = 500

    import grpc
    import onnxruntime

    from cifar10_serving.model import OnnxModel
    from cifar10_serving.settings import available_cpus

    with tempfile.TemporaryDirectory() as tmp:
        model = resolve_model(args, tmp)
        info = OnnxModel.load(model, threads=1).info
        results: dict = {
            "model": {"path": os.path.relpath(model, ROOT) if model.startswith(str(ROOT)) else model,
                      "name": info.name, "version": info.version},
            "repeats": args.repeats, "smoke": args.smoke,
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": {
                "cpus": available_cpus(), "python": platform.python_version(),
                "onnxruntime": onnxruntime.__version__, "grpcio": grpc.__version__,
                "platform": platform.platform(), "load_before": background_load(),
            },
        }
        from cifar10_serving.settings import Settings

        served = Settings.from_args([], os.environ)  # what Server() starts: flags none, env as here
        results["server_settings"] = {k: getattr(served, k) for k in (
            "instances", "threads", "max_batch_size", "max_queue_delay_ms")}
        results["ceiling"] = run_ceiling(model, args.repeats, args.smoke)
        results["cold_start"] = run_cold_start(model, args.cold_starts)
        results["server"] = run_server_parts(model, info.name, args)
        results["grpc_floor"], lean_floor = run_grpc_floor(args)
        if lean_floor is not None:
            results["grpc_floor_h2load"] = lean_floor
        results["environment"]["load_after"] = background_load()
        results["targets"] = targets(results)
    text = report(results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(text)
    print(text)
    return 0
