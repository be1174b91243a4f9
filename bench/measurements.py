"""The measuring parts, each in its own process: the onnxruntime ceiling (bench.ceiling), the
load generator (bench.loadgen) and h2load (bench.h2load); each returns its JSON figures."""

from __future__ import annotations

import json
import subprocess
import sys

from bench import h2load
from bench.paths import ROOT
from bench.server_process import Server
from bench.stats import median, summarize_runs


def python_json(args: list[str], timeout: float) -> dict:
    """Run ``python ARGS`` from the repository root; the JSON of its last stdout line."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ceiling_instances() -> list[int]:
    """The session layouts the ceiling tries: one run on every CPU, and one run per CPU pair
    share (the server's ``--instances 2``) where there are at least two CPUs."""
    from cifar10_serving.settings import available_cpus

    return [1, 2] if available_cpus() >= 2 else [1]


def run_ceiling(model: str, repeats: int, smoke: bool) -> dict:
    """Medians per batch size for each layout (images/s, CPU us per image, p50 ms per run);
    ``images_per_s`` and the rest at the top of each batch are the best layout's."""
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
                "p50_ms": median([r["batches"][batch]["p50_ms"] for r in rs]),
                "all": [r["batches"][batch]["images_per_s"] for r in rs],
            }
            for k, rs in runs.items()
        }
        best = max(layouts, key=lambda k: layouts[k]["images_per_s"])
        out["batches"][batch] = {**layouts[best], "best_instances": int(best), "by_instances": layouts}
    return out


def ceiling_now(model: str, batches: str, smoke: bool, smoke_runs: int) -> dict[int, dict]:
    """A short ceiling now: ``{instances: {batch: figures}}`` for each layout, 1 s per batch
    size (``smoke_runs`` runs in a smoke run)."""
    out = {}
    for k in ceiling_instances():
        cargs = ["-m", "bench.ceiling", "--model", model, "--batches", batches,
                 "--instances", str(k)]
        cargs += ["--runs", str(smoke_runs)] if smoke else ["--seconds", "1"]
        out[k] = python_json(cargs, timeout=300)["batches"]
    return out


def paired_ceiling(model: str, smoke: bool) -> dict[int, float]:
    """The best batch-8..128 images/s of each layout (instances), measured now (for the
    32x4 share)."""
    return {k: max(v["images_per_s"] for v in figures.values())
            for k, figures in ceiling_now(model, "8,32,64,128", smoke, 2).items()}


def loadgen(server: Server, api: str, batch: int, concurrency: int, args) -> dict:
    """One load run; adds the server's CPU time per image over the whole run."""
    cpu_before = server.cpu_seconds()
    result = run_loadgen(server.address, api, batch, concurrency, args)
    cpu = server.cpu_seconds() - cpu_before
    images = result["completed_all"] * batch
    result["server_cpu_us_per_image"] = round(cpu / images * 1e6, 1) if images else None
    return result


def run_loadgen(address: str, api: str, batch: int, concurrency: int, args) -> dict:
    """One bench.loadgen run against ``address`` (``--requests`` calls in a smoke run, else
    ``--duration`` seconds after ``--warmup``)."""
    cmd = ["-m", "bench.loadgen", "--address", address, "--api", api, "--batch", str(batch),
           "--concurrency", str(concurrency), "--processes", str(args.client_processes)]
    if args.smoke:
        cmd += ["--requests", str(max(concurrency, 8))]
    else:
        cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    return python_json(cmd, timeout=args.duration + args.warmup + 300)


def use_h2load(args) -> bool:
    """Part (e) runs: not turned off and h2load installed."""
    return not args.no_h2load and h2load.binary() is not None


def h2load_once(address: str, batch: int, concurrency: int, api: str, args,
                model_name: str = "") -> dict:
    """One h2load run (``--duration`` s after ``--warmup``; a few requests in a smoke run)."""
    return h2load.run(address, batch, concurrency, args.duration, args.warmup,
                      requests=max(concurrency, 8) if args.smoke else 0, api=api,
                      model_name=model_name)


def run_h2load(address: str, scenarios, args, model_name: str = "") -> dict[str, dict]:
    """(e): the scenarios with h2load over each API (ModelInfer naming ``model_name``),
    ``--repeats`` times, interleaved; medians, ``{api: {"BxC": figures}}``."""
    runs = {(api, s): [] for api in h2load.APIS for s in scenarios}
    for _ in range(args.repeats):
        for (api, (batch, concurrency)), figures in runs.items():
            figures.append(h2load_once(address, batch, concurrency, api, args, model_name))
    return {api: {f"{b}x{c}": summarize_runs(runs[(api, (b, c))]) for b, c in scenarios}
            for api in h2load.APIS}
