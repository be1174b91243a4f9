"""Several models in one server (issue 29's benchmark): what an extra model version costs,
whether an idle second model or traffic split over two slows the first, and a new version
loaded under load.

    python -m bench.model_repository [--duration 10] [--warmup 2] [--smoke]

Every server is ``cifar10-serve`` in its own process (``bench.server_process``) on a
temporary model repository of copies of the bundled FP32 model; load is ``bench.loadgen``
(closed loop, Open Inference Protocol ``ModelInfer``, 32 raw images a call) in processes of
its own. Prints one JSON object:

* ``rss``: the server's RSS with 1, 2 and 4 model versions loaded, and the MB per extra one;
* ``one_alone`` / ``second_idle``: images/s at concurrency 4 to one model, alone and with a
  second model loaded and idle (``idle_ratio``: the second over the first, goal >= 0.95);
* ``split``: two load processes at concurrency 2 each, one per model, together
  (``split_ratio``: their images/s over one model alone's, goal >= 0.9); the three cases
  alternate ``--repeats`` times on two servers up at once (the first two in ABBA order),
  medians reported;
* ``new_version``: under concurrency 4 to the model (no version: the newest), version 2's
  folder renamed into place (written beside it first); ``seconds_to_serve`` from the rename
  to the first answer of version 2's listing in ``ListModels``, and the calls that failed
  (goal 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.paths import REAL_MODEL, ROOT
from bench.server_process import Server
from bench.stats import median

BATCH = 32


def repository(root: Path, models: dict[str, list[int]]) -> Path:
    """``root/<name>/<version>/model.onnx``, each a copy of the bundled FP32 model."""
    for name, versions in models.items():
        for version in versions:
            folder = root / name / str(version)
            folder.mkdir(parents=True)
            shutil.copyfile(REAL_MODEL, folder / "model.onnx")
    return root


def start(root: Path, **env: str) -> Server:
    server = Server(str(root), {"CIFAR10_HTTP_PORT": "-1", **env})
    server.first_answer(120)
    return server


def load(address: str, model: str, concurrency: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.loadgen", "--address", address, "--api", "oip",
           "--model", model, "--batch", str(BATCH), "--concurrency", str(concurrency)]
    cmd += (["--requests", "16"] if args.smoke
            else ["--duration", str(args.duration), "--warmup", str(args.warmup)])
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"bench.loadgen failed ({process.returncode})")
    return json.loads(out)


def summary(run: dict) -> dict:
    return {key: run.get(key) for key in ("images_per_s", "p50_ms", "p99_ms", "errors")}


def measure_rss(tmp: Path) -> dict:
    rss = {}
    for count in (1, 2, 4):
        root = repository(tmp / f"rss-{count}", {f"m{i}": [1] for i in range(count)})
        server = start(root)
        try:
            time.sleep(1.0)  # past Pillow's import, a moment after the port opens
            rss[count] = server.memory_mb()["rss_mb"]
        finally:
            server.stop()
    return {"rss_mb": rss, "mb_per_extra_version": round((rss[4] - rss[1]) / 3, 1)}


def measure_throughput(tmp: Path, args) -> dict:
    """Both servers up at once (the idle one costs no CPU), their runs alternated
    ``--repeats`` times: a drift of the host moves both sides alike; medians reported."""
    alone_server = start(repository(tmp / "alone", {"a": [1]}))
    pair_server = start(repository(tmp / "pair", {"a": [1], "b": [1]}))
    runs: dict[str, list[dict]] = {"one_alone": [], "second_idle": [], "split": []}
    try:
        for round_ in range(args.repeats):
            cases = [("one_alone", alone_server), ("second_idle", pair_server)]
            for case, server in cases if round_ % 2 == 0 else cases[::-1]:  # ABBA: no order bias
                runs[case].append(summary(result(load(server.address, "a", 4, args))))
            both = [load(pair_server.address, name, 2, args) for name in ("a", "b")]
            parts = [summary(result(p)) for p in both]
            runs["split"].append({"images_per_s": round(sum(p["images_per_s"] for p in parts), 1),
                                  "per_model": parts})
    finally:
        alone_server.stop()
        pair_server.stop()
    out: dict = {case: {"images_per_s": median([r["images_per_s"] for r in case_runs]),
                        "runs": case_runs} for case, case_runs in runs.items()}
    alone = out["one_alone"]["images_per_s"]
    out["idle_ratio"] = round(out["second_idle"]["images_per_s"] / alone, 3)
    out["split_ratio"] = round(out["split"]["images_per_s"] / alone, 3)
    return out


def listed(address: str) -> set[tuple[str, str]]:
    import grpc

    from cifar10_protos.cifar10.v2 import classifier_pb2 as pb
    from cifar10_protos.cifar10.v2 import classifier_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        answer = pb_grpc.ClassifierStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
    return {(m.name, m.version) for m in answer.models}


def measure_new_version(tmp: Path, args) -> dict:
    root = repository(tmp / "swap", {"a": [1]})
    server = start(root, CIFAR10_RELOAD_INTERVAL_S="0.5")
    try:
        traffic = load(server.address, "a", 4, args)
        time.sleep(args.warmup + (0.5 if args.smoke else args.duration / 3))
        staged = root / "a" / ".2.staging"  # hidden: not a version until renamed
        staged.mkdir()
        shutil.copyfile(REAL_MODEL, staged / "model.onnx")
        appeared = time.perf_counter()
        os.rename(staged, root / "a" / "2")
        served = None
        while served is None and time.perf_counter() - appeared < 60:
            if ("a", "2") in listed(server.address):
                served = time.perf_counter() - appeared
            else:
                time.sleep(0.01)
        run = result(traffic)
        failed = sum(run.get("errors", {}).values())
        return {"seconds_to_serve": None if served is None else round(served, 3),
                "failed_calls": failed, "calls": run.get("completed_all"),
                "served_after": sorted(listed(server.address)), "load": summary(run)}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the throughput cases")
    parser.add_argument("--smoke", action="store_true", help="a few calls per run (a test)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-repository-") as tmp:
        figures = {"host_cpus": os.cpu_count(), "batch": BATCH, "duration_s": args.duration}
        figures["rss"] = measure_rss(Path(tmp))
        figures.update(measure_throughput(Path(tmp), args))
        figures["new_version"] = measure_new_version(Path(tmp), args)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
