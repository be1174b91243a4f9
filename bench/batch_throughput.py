"""Batch-inference throughput: ``cifar10-batch`` against a local server, compared with the
server's best measured images/s under the same conditions.

    python -m bench.batch_throughput [--model PATH] [--images 10000] [--rounds 2]
        --data CLASS_FOLDERS [--json docs/bench-results/batch-throughput.json]

1. Starts ``python -m cifar10_serving`` (its default settings, metrics off) on a free port
   in a subprocess (bench.server_process), with the bundled model
   (models/cifar10-cnn.onnx) or, while that is missing, the seed-CNN stand-in of
   ``bench.standin_model`` (same architecture and speed, random weights).
2. Takes ``--images`` JPEGs from the CIFAR-10 folder (the same number from each class) and
   the same pictures decoded into a .npy array.
3. Server ceiling, per input kind (raw 32x32 pixels / JPEG files decoded by the server): a
   lean closed-loop driver in its own process (requests serialized once up front, sent as
   bytes on a generic grpc.aio channel, answers not decoded) tries several batch sizes
   and concurrencies; the best images/s is the ceiling.
4. Runs ``cifar10-batch`` (subprocess, default settings: --batch-size 64 --concurrency 4)
   on the .npy and on a list of the JPEG paths, writing JSONL, and reads the images/s it
   reports (classification time, start-up excluded).
After one sweep finds the server's best configuration, ``--rounds`` pairs (ceiling at that
configuration, then a batch run) are measured back to back, so that background load on a
shared machine hits both sides of a pair alike; the report gives every pair, the median
ceiling, the median batch images/s and the median of the per-pair ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.paths import REAL_MODEL, ROOT
from bench.proctree import cpu_seconds
from bench.server_process import Server

CLASSIFY = "/cifar10.v2.Classifier/Classify"
CEILING_CONFIGS = ((32, 4), (64, 2), (64, 4), (64, 8), (128, 4))


# -- the lean driver (runs in a child process) ------------------------------------------
def _requests(kind: str, source: str, batch: int, variants: int = 16) -> list[bytes]:
    import numpy as np

    from cifar10_protos.cifar10.v2 import classifier_pb2 as pb

    out = []
    if kind == "raw":
        array = np.load(source, mmap_mode="r")
        for v in range(variants):
            idx = [(v * batch + i) % len(array) for i in range(batch)]
            images = [pb.Image(raw=pb.RawImage(data=array[i].tobytes(), height=32, width=32, channels=3))
                      for i in idx]
            out.append(pb.ClassifyRequest(images=images).SerializeToString())
    else:
        paths = Path(source).read_text().split()
        for v in range(variants):
            idx = [(v * batch + i) % len(paths) for i in range(batch)]
            images = [pb.Image(encoded=Path(paths[i]).read_bytes()) for i in idx]
            out.append(pb.ClassifyRequest(images=images).SerializeToString())
    return out


async def _drive(address: str, requests: list[bytes], batch: int, concurrency: int, duration: float) -> dict:
    import grpc

    identity = lambda b: b  # noqa: E731
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)]) as channel:
        call = channel.unary_unary(CLASSIFY, request_serializer=identity, response_deserializer=identity)
        await call(requests[0], timeout=30)  # warm
        done = [0]
        stop_at = time.perf_counter() + duration

        async def caller(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                await call(requests[i % len(requests)], timeout=60)
                done[0] += 1
                i += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(c) for c in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    images = done[0] * batch
    return {"batch": batch, "concurrency": concurrency, "images_per_s": images / elapsed,
            "driver_cpu_us_per_image": cpu / images * 1e6}


def drive_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("kind", choices=("raw", "jpeg"))
    parser.add_argument("source")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args(argv)
    requests = _requests(args.kind, args.source, args.batch)
    print(json.dumps(asyncio.run(_drive(args.address, requests, args.batch, args.concurrency, args.duration))))


# -- orchestration ----------------------------------------------------------------------
def _model(path: str | None) -> Path:
    if path:
        return Path(path)
    if REAL_MODEL.exists():
        return REAL_MODEL
    from bench.standin_model import DEFAULT_PATH, build

    standin = ROOT / DEFAULT_PATH
    return standin if standin.exists() else build(standin)


def _prepare(data: Path, count: int, workdir: Path) -> tuple[Path, Path]:
    import numpy as np

    from cifar10_core import images

    classes = sorted(p for p in data.iterdir() if p.is_dir())
    per_class = max(1, count // len(classes))
    paths = [p for c in classes for p in sorted(c.iterdir())[:per_class]]
    listing = workdir / "jpegs.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    npy = workdir / "images.npy"
    np.save(npy, np.stack([images.decode(p.read_bytes()) for p in paths]))
    return listing, npy


def _ceiling(address: str, kind: str, source: Path, duration: float, configs, server_pid: int) -> dict:
    runs = []
    for batch, concurrency in configs:
        cpu = cpu_seconds(server_pid)
        out = subprocess.run(
            [sys.executable, "-m", "bench.batch_throughput", "--drive", address, kind, str(source),
             "--batch", str(batch), "--concurrency", str(concurrency), "--duration", str(duration)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )
        result = json.loads(out.stdout)
        # The driver's warm-up call is negligible next to a few seconds of load.
        result["server_cpu_us_per_image"] = (cpu_seconds(server_pid) - cpu) / (
            result["images_per_s"] * duration) * 1e6
        runs.append(result)
    return max(runs, key=lambda r: r["images_per_s"]) | {"tried": runs}


def _batch_run(address: str, source: Path, workdir: Path, extra: list[str], server_pid: int) -> dict:
    output = workdir / f"out-{time.monotonic_ns()}.jsonl"
    cpu = cpu_seconds(server_pid)
    command = [sys.executable, "-m", "cifar10_client.batch", str(source), "-o", str(output),
               "--address", address, "--no-progress", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    server_cpu = cpu_seconds(server_pid) - cpu
    match = re.search(r"classified (\d+) items \((\d+) failed\) in ([\d.]+) s: (\d+) images/s", done.stderr)
    client = re.search(r"client CPU (\d+) us per image", done.stderr)
    if done.returncode != 0 or not match or not client:
        raise RuntimeError(f"cifar10-batch failed ({done.returncode}): {done.stderr[-2000:]}")
    items = int(match.group(1))
    output.unlink()
    return {"command": "cifar10-batch " + " ".join(command[3:]), "items": items,
            "images_per_s": int(match.group(4)), "wall_s_with_startup": round(wall, 2),
            "client_cpu_us_per_image": int(client.group(1)),
            "server_cpu_us_per_image": server_cpu / items * 1e6}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--drive":
        drive_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per ceiling config")
    parser.add_argument("--data", required=True,
                        help="an image folder with one sub-folder per class (the CIFAR-10 "
                             "JPEG folder, for example)")
    parser.add_argument("--kinds", default="raw,jpeg")
    parser.add_argument("--batch-args", default="", help="extra cifar10-batch flags")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    model = _model(args.model)
    server = Server(str(model), {"CIFAR10_METRICS_PORT": "-1", "CIFAR10_LOG_LEVEL": "WARNING",
                                 "CIFAR10_RELOAD_INTERVAL_S": "0"})
    address = server.address
    report: dict = {"model": str(model), "host": platform.node(), "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg(), "results": {}}
    try:
        server.first_answer()
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            listing, npy = _prepare(Path(args.data), args.images, workdir)
            sources = {"raw": npy, "jpeg": listing}
            for kind in args.kinds.split(","):
                # Find the server's best configuration once, then measure in pairs (ceiling
                # at that configuration, then cifar10-batch), so that the background load
                # of a shared machine hits both sides of each pair alike.
                sweep = _ceiling(address, kind, sources[kind], args.duration, CEILING_CONFIGS, server.process.pid)
                best = (sweep["batch"], sweep["concurrency"])
                pairs = []
                for _ in range(args.rounds):
                    ceiling = _ceiling(address, kind, sources[kind], args.duration, (best,), server.process.pid)
                    run = _batch_run(address, sources[kind], workdir, args.batch_args.split(), server.process.pid)
                    # CPU per image on both paths: on a shared machine the steadier figure.
                    # With the CPUs to themselves, both paths are CPU-bound, so the ratio of
                    # their throughputs is the inverse ratio of their total CPU per image.
                    ceiling_cpu = ceiling["server_cpu_us_per_image"] + ceiling["driver_cpu_us_per_image"]
                    batch_cpu = run["server_cpu_us_per_image"] + run["client_cpu_us_per_image"]
                    pairs.append({"ceiling_images_per_s": round(ceiling["images_per_s"]),
                                  "batch_images_per_s": run["images_per_s"],
                                  "ratio": round(run["images_per_s"] / ceiling["images_per_s"], 3),
                                  "ceiling_cpu_us_per_image": round(ceiling_cpu),
                                  "batch_cpu_us_per_image": round(batch_cpu),
                                  "batch_client_cpu_us_per_image": run["client_cpu_us_per_image"],
                                  "cpu_ratio": round(ceiling_cpu / batch_cpu, 3)})
                    print(f"{kind}: ceiling {ceiling['images_per_s']:.0f} images/s (batch {best[0]}, "
                          f"concurrency {best[1]}); cifar10-batch {run['images_per_s']} images/s; "
                          f"CPU us/image {ceiling_cpu:.0f} vs {batch_cpu:.0f}", file=sys.stderr)
                report["results"][kind] = {
                    "server_ceiling_images_per_s": round(statistics.median(p["ceiling_images_per_s"] for p in pairs)),
                    "batch_images_per_s": round(statistics.median(p["batch_images_per_s"] for p in pairs)),
                    "ratio": statistics.median(p["ratio"] for p in pairs),
                    "cpu_ratio": statistics.median(p["cpu_ratio"] for p in pairs),
                    "best_server_config": {"batch": best[0], "concurrency": best[1]},
                    "sweep": sweep["tried"], "pairs": pairs, "batch_command": run["command"],
                }
    finally:
        server.stop()
    report["load_average_at_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(json.dumps({k: {x: v[x] for x in ("server_ceiling_images_per_s", "batch_images_per_s", "ratio", "cpu_ratio")}
                      for k, v in report["results"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
