"""Before and after: the server of this install against a baseline copy of the code, paired.

    python -m bench.compare --baseline DIR [--model models/cifar10-cnn.onnx] [--rounds 3]
        [--duration 5] [--cold-starts 3] [--after-env NAME=VALUE ...] [--out compare.json]

``DIR`` holds importable ``cifar10_*`` packages of the old code (for example a folder of
symlinks into a ``git worktree`` of the old commit); it goes first on PYTHONPATH for the
baseline's server processes ("before"), while "after" is the code this Python imports.
Each of ``--rounds`` rounds measures both builds one right after the other (which goes
first alternates from round to round), each time on fresh processes
(``python -m cifar10_serving``, bench.server_process; metrics port off, other settings the
defaults or the CIFAR10_* environment, the same for both):

* with h2load (bench.h2load), cifar10.v2 Classify of random raw images: 1-image calls at
  concurrency 64 (``--duration`` s) and at concurrency 1 (``--c1-duration`` s), and
  32-image calls at concurrency 4 (``--duration`` s): calls/s, images/s, p50 and p99 ms,
  and the server's CPU time per call (user and system, all its processes, over the h2load
  run, warm-up included: the figure least moved by other work on a shared host);
* the resident memory of the server's processes (sum of their RSS) after that load;
* cold start: process start to the first answered Classify call, the median of
  ``--cold-starts`` fresh processes (bench.server_process.cold_start).

``--after-env NAME=VALUE`` (repeatable) sets a variable for "after"'s servers only: the same
code on both sides (``--baseline`` a folder of this install's packages) with a feature on in
"after" measures what the feature costs (``OTEL_EXPORTER_OTLP_ENDPOINT=...``: tracing).

The report gives, per figure, each build's median over the rounds and the median of the
per-round ratios after / before (the steadier figure on a shared host: both sides of a
ratio come from the same minutes). JSON with every round (``--out``) and a Markdown table
(printed). Needs h2load (Debian: ``apt-get install nghttp2-client``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import h2load
from bench.machine import background_load, cpu
from bench.paths import REAL_MODEL, ROOT
from bench.server_process import Server, cold_start
from bench.stats import median

BUILDS = ("before", "after")
# name -> (images per call, concurrency, which duration flag)
SCENARIOS = {"1x64": (1, 64, "duration"), "1x1": (1, 1, "c1_duration"), "32x4": (32, 4, "duration")}
# The figures compared (1-image calls: images/s = calls/s, given once).
FIGURES = [f"{name}_{figure}" for name, (batch, _, _) in SCENARIOS.items()
           for figure in ("calls_per_s", *(("images_per_s",) if batch > 1 else ()), "p50_ms",
                          "p99_ms", "cpu_us_per_call")] + ["rss_mb", "cold_start_s"]
HIGHER_IS_BETTER = ("calls_per_s", "images_per_s")


def build_env(baseline: str | None, extra: list[str] = ()) -> dict[str, str]:
    """The environment a build's server processes get beyond the defaults: metrics off, for
    the baseline its folder first on PYTHONPATH, and ``extra`` (``NAME=VALUE`` items)."""
    env = {"CIFAR10_METRICS_PORT": "-1"}
    if baseline:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, os.environ.get("PYTHONPATH")]))
    for item in extra:
        name, equals, value = item.partition("=")
        if not name or not equals:
            raise SystemExit(f"bench.compare: --after-env wants NAME=VALUE, got {item!r}")
        env[name] = value
    return env


def package_location(env: dict[str, str]) -> str:
    """Where a server started with ``env`` imports ``cifar10_serving`` from (not resolving
    symlinks)."""
    done = subprocess.run(
        [sys.executable, "-c", "import cifar10_serving; print(cifar10_serving.__file__)"],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"bench.compare: cannot import cifar10_serving: {done.stderr[-1000:]}")
    return str(Path(done.stdout.strip()).parent)


def measure_load(model: str, env: dict[str, str], args: argparse.Namespace) -> dict:
    """One fresh server: each scenario with h2load, then its memory; its exit status and the
    ERROR lines it logged."""
    server = Server(model, env)
    out: dict = {}
    try:
        server.first_answer()
        for name, (batch, concurrency, duration) in SCENARIOS.items():
            cpu = server.cpu_seconds()
            result = h2load.run(server.address, batch, concurrency, getattr(args, duration),
                                args.warmup, requests=args.requests)
            cpu = server.cpu_seconds() - cpu
            out[f"{name}_calls_per_s"] = result.get("requests_per_s")
            out[f"{name}_cpu_us_per_call"] = (round(cpu / result["requests"] * 1e6, 1)
                                              if result.get("requests") else None)
            for figure in ("images_per_s", "p50_ms", "p99_ms"):
                out[f"{name}_{figure}"] = result.get(figure)
            if result.get("error") or result.get("errors"):
                out.setdefault("errors", {})[name] = result.get("error") or result["errors"]
        out["rss_mb"] = server.memory_mb()["rss_mb"]
    finally:
        out["exit_code"] = server.stop()
        out["errors_logged"] = [line for line in server.log_text().splitlines()
                                if " ERROR " in line][:10]
    return out


def one_round(model: str, envs: dict[str, dict[str, str]], order: tuple[str, ...],
              args: argparse.Namespace) -> dict:
    """Both builds in ``order``: the load on one server, then the cold starts."""
    out: dict = {"order": list(order)}
    for build in order:
        figures = measure_load(model, envs[build], args)
        cold = cold_start(model, args.cold_starts, envs[build])
        figures["cold_start_s"], figures["cold_starts_s"] = cold["seconds"], cold["all"]
        out[build] = figures
    return out


def ratio(after: float | None, before: float | None) -> float | None:
    return round(after / before, 3) if after is not None and before else None


def summarize(rounds: list[dict]) -> dict:
    """Per figure: each build's median over the rounds, and the median (and the list) of
    the per-round ratios after / before."""
    out = {build: {f: median([r[build].get(f) for r in rounds]) for f in FIGURES}
           for build in BUILDS}
    per_round = {f: [ratio(r["after"].get(f), r["before"].get(f)) for r in rounds] for f in FIGURES}
    out["ratio"] = {f: median(values) for f, values in per_round.items()}
    out["ratios_by_round"] = per_round
    return out


def table(summary: dict) -> str:
    """The Markdown table: figure, before, after, median of the per-round ratios."""
    lines = ["| figure | before | after | after / before (median of rounds) | better |",
             "|---|---:|---:|---:|---|"]
    for figure in FIGURES:
        cells = [summary[build][figure] for build in BUILDS]
        ratios = ", ".join("n/a" if r is None else f"{r:.3f}"
                           for r in summary["ratios_by_round"][figure])
        better = "higher" if figure.endswith(HIGHER_IS_BETTER) else "lower"
        value = summary["ratio"][figure]
        lines.append(f"| {figure} | {'n/a' if cells[0] is None else cells[0]} | "
                     f"{'n/a' if cells[1] is None else cells[1]} | "
                     f"{'n/a' if value is None else f'{value:.3f}'} ({ratios}) | {better} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True,
                        help="folder of the baseline's cifar10_* packages (first on PYTHONPATH)")
    parser.add_argument("--model", default=str(REAL_MODEL), help="the ONNX model both serve")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of each concurrency-64 and 32-image run")
    parser.add_argument("--c1-duration", type=float, default=4.0,
                        help="seconds of each concurrency-1 run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each run")
    parser.add_argument("--cold-starts", type=int, default=3, help="fresh starts per build and round")
    parser.add_argument("--requests", type=int, default=0,
                        help="fixed calls per run instead of the durations (smoke tests)")
    parser.add_argument("--after-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for the after build's servers only (repeatable)")
    parser.add_argument("--out", help="write the JSON results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    baseline = str(Path(args.baseline).absolute())
    envs = {"before": build_env(baseline), "after": build_env(None, args.after_env)}
    packages = {build: package_location(env) for build, env in envs.items()}
    if not Path(packages["before"]).is_relative_to(baseline):
        print(f"bench.compare: the baseline's servers would import cifar10_serving from "
              f"{packages['before']}, not from {baseline}", file=sys.stderr)
        return 2
    if h2load.binary() is None:
        print("bench.compare: h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    results: dict = {
        "command": " ".join(["python -m bench.compare", *(argv if argv is not None else sys.argv[1:])]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": args.model, "baseline": baseline, "packages": packages,
        "after_env": args.after_env,
        "environment": {"cpus": os.cpu_count(), "cpu": cpu(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_before": background_load()},
        "rounds": [],
    }
    for n in range(args.rounds):
        order = BUILDS if n % 2 == 0 else BUILDS[::-1]
        results["rounds"].append(one_round(args.model, envs, order, args))
    results["environment"]["load_after"] = background_load()
    results["summary"] = summarize(results["rounds"])
    text = table(results["summary"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    failed = [(build, r[build]["exit_code"]) for r in results["rounds"] for build in BUILDS
              if r[build]["exit_code"] != 0 or r[build].get("errors")]
    if failed:
        print(f"bench.compare: runs with errors or a non-zero exit: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
