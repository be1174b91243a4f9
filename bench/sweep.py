"""Server settings side by side: how the batching defaults were chosen, and how to re-check them.

    python -m bench.sweep --real --set instances=1,2 --set max_batch_size=32,64,128 \\
        --scenarios 1x1,1x64,32x4 --repeats 3 --duration 4 --out sweep.json --report sweep.md

Each ``--set NAME=V1,V2,...`` varies one server setting (``CIFAR10_<NAME>``) from the
defaults; every setting varied means one more list of configurations (one setting changed at
a time, not a product), the defaults first. For each repeat, every configuration gets a
fresh ``cifar10-serve`` process and every scenario (``BxC``: B images per call, C callers,
``bench.loadgen`` in its own process); configurations are interleaved within a repeat, so the
machine's drift spreads over all of them. The report gives medians of images/s, p50, p99 and
the server's CPU per image, and each configuration's images/s as a ratio to the defaults'
run in the same repeat (the steadier figure on a shared machine). ``--config
NAME=V,NAME=V`` adds one configuration that changes several settings at once (e.g. the old
defaults next to new ones: ``--config instances=1,max_batch_size=64``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.machine import background_load
from bench.measurements import loadgen
from bench.paths import REAL_MODEL, STANDIN_MODEL
from bench.server_process import Server
from bench.stats import median


def _setting_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def parse_sets(items: list[str], combined: list[str] = ()) -> list[dict[str, str]]:
    """``["instances=1,2", "max_batch_size=32,64"]`` -> configurations, defaults first;
    each of ``combined`` (``"instances=1,max_batch_size=64"``) adds one more."""
    configs: list[dict[str, str]] = [{}]
    for item in items:
        name, _, values = item.partition("=")
        name = _setting_name(name)
        if not name or not values:
            raise SystemExit(f"--set wants NAME=V1,V2,... (got {item!r})")
        configs += [{name: v.strip()} for v in values.split(",") if v.strip()]
    for item in combined:
        config = {}
        for pair in item.split(","):
            name, _, value = pair.partition("=")
            if not _setting_name(name) or not value.strip():
                raise SystemExit(f"--config wants NAME=V,NAME=V,... (got {item!r})")
            config[_setting_name(name)] = value.strip()
        configs.append(config)
    return configs


def label(config: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "defaults"


def parse_scenarios(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        batch, _, concurrency = item.strip().partition("x")
        out.append((int(batch), int(concurrency)))
    return out


def sweep(model: str, configs: list[dict[str, str]], scenarios, args) -> dict:
    runs = {label(c): {f"{b}x{c_}": [] for b, c_ in scenarios} for c in configs}
    memory = {label(c): [] for c in configs}
    for _ in range(args.repeats):
        for config in configs:
            env = {f"CIFAR10_{k.upper()}": v for k, v in config.items()}
            server = Server(model, env)
            try:
                server.first_answer()
                for batch, concurrency in scenarios:
                    runs[label(config)][f"{batch}x{concurrency}"].append(
                        loadgen(server, "cifar10", batch, concurrency, args))
                memory[label(config)].append(server.memory_mb()["peak_rss_mb"])
            finally:
                code = server.stop()
                stderr = server.log_text()
            if code != 0:
                raise RuntimeError(f"server with {label(config)} exited {code}: {stderr[-2000:]}")
    out = {}
    base = label(configs[0])
    for name, by_scenario in runs.items():
        out[name] = {"peak_rss_mb": max(memory[name]), "scenarios": {}}
        for scenario, rs in by_scenario.items():
            ratios = [r["images_per_s"] / b["images_per_s"]
                      for r, b in zip(rs, runs[base][scenario]) if b.get("images_per_s")]
            out[name]["scenarios"][scenario] = {
                "images_per_s": median([r.get("images_per_s") for r in rs]),
                "p50_ms": median([r.get("p50_ms") for r in rs]),
                "p99_ms": median([r.get("p99_ms") for r in rs]),
                "server_cpu_us_per_image": median([r.get("server_cpu_us_per_image") for r in rs]),
                "vs_defaults": median(ratios),
                "images_per_s_all": [r.get("images_per_s") for r in rs],
                "errors": [r["errors"] for r in rs if r.get("errors")],
            }
    return out


def report(results: dict) -> str:
    lines = [f"Model: `{results['model']}`; medians of {results['repeats']} runs of "
             f"{results['duration']} s; machine load before: {results['load_before']}, after: "
             f"{results['load_after']}.", "",
             "| configuration | images/call x concurrency | images/s | vs defaults (same repeat) "
             "| p50 ms | p99 ms | server CPU us/image | server peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, config in results["configs"].items():
        for scenario, v in config["scenarios"].items():
            ratio = f"{v['vs_defaults']:.2f}" if v["vs_defaults"] is not None else "n/a"
            lines.append(f"| {name} | {scenario} | {v['images_per_s']:,.0f} | {ratio} | "
                         f"{v['p50_ms']} | {v['p99_ms']} | {v['server_cpu_us_per_image']} | "
                         f"{config['peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ONNX model (default: --real's, else required)")
    parser.add_argument("--real", action="store_true", help="models/cifar10-cnn.onnx")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=V1,V2",
                        help="a server setting to vary (repeatable)")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=V,NAME=V",
                        help="one configuration changing several settings at once (repeatable)")
    parser.add_argument("--scenarios", default="1x1,1x64,32x4", help="BxC,... (images x callers)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=0,
                        help="fixed calls per run instead of --duration (smoke tests)")
    parser.add_argument("--out", help="write the JSON results here")
    parser.add_argument("--report", help="write the Markdown table here")
    args = parser.parse_args(argv)
    args.client_processes = 1
    args.smoke = args.requests > 0
    model = args.model or str(REAL_MODEL if REAL_MODEL.exists() else STANDIN_MODEL)
    if not Path(model).exists():
        parser.error(f"no model at {model} (give --model)")
    configs = parse_sets(args.set, args.config)
    results = {"model": model, "repeats": args.repeats, "duration": args.duration,
               "command": " ".join(["python -m bench.sweep", *(argv if argv is not None else sys.argv[1:])]),
               "load_before": background_load()}
    results["configs"] = sweep(model, configs, parse_scenarios(args.scenarios), args)
    results["load_after"] = background_load()
    text = report(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.report:
        Path(args.report).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
