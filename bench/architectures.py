"""What each bundled network costs to serve (issue 30): the seed CNN and airbench94, FP32 and
INT8, measured side by side in one run.

    python -m bench.architectures [--repository models] [--rounds 3] [--seconds 2]
                                  [--duration 8] [--warmup 2] [--out FILE] [--smoke]

* ``raw``: onnxruntime in this process through the server's model runner (``bench.ceiling``:
  the server's session options, all the CPUs), images/s at batch 1 and 32;
* ``server``: one ``cifar10-serve`` process serving the repository (every model at once, its
  own HTTP door off), ``bench.loadgen`` 32-image Open Inference Protocol calls at concurrency
  4 to one model at a time.

The models take turns within each of ``--rounds`` rounds (the order rotated each round, so a
drift of the host does not favour one); medians reported, and each model's figures over the
first one's (``ratios``, same run). Prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import ceiling
from bench.model_repository import load, result, summary
from bench.paths import ROOT
from bench.server_process import Server
from bench.stats import median

MODELS = ("cifar10-cnn", "cifar10-cnn-int8", "cifar10-airbench94", "cifar10-airbench94-int8")
RAW_BATCHES = (1, 32)
SERVER_CONCURRENCY = 4  # 32-image calls (bench.model_repository's)


def newest_files(repository: Path, names: list[str]) -> dict[str, Path]:
    """Each model's newest version file, as the server's own scan of the repository lists
    them (newest first)."""
    from cifar10_serving.dataplane.repository import Repository

    newest: dict[str, Path] = {}
    for slot in Repository(repository).scan().slots:
        newest.setdefault(slot.name, Path(slot.path))
    return {name: newest[name] for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--models", default=",".join(MODELS), help="names in the repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="raw: per batch size")
    parser.add_argument("--duration", type=float, default=8.0, help="server: measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="server: unmeasured seconds")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="a few runs and calls (a test)")
    args = parser.parse_args(argv)
    names = args.models.split(",")
    files = newest_files(args.repository, names)

    raw: dict[str, list[dict]] = {name: [] for name in names}
    served: dict[str, list[dict]] = {name: [] for name in names}
    server = Server(str(args.repository), {"CIFAR10_HTTP_PORT": "-1"})
    try:
        server.first_answer(180)
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                raw[name].append(ceiling.measure(str(files[name]), RAW_BATCHES, args.seconds, 0,
                                                 runs=3 if args.smoke else 0)["batches"])
                served[name].append(summary(result(load(server.address, name, SERVER_CONCURRENCY, args))))
    finally:
        server.stop()

    figures: dict = {"host_cpus": os.cpu_count(), "rounds": args.rounds, "models": {}}
    for name in names:
        figures["models"][name] = {
            "file": str(files[name].relative_to(ROOT) if files[name].is_relative_to(ROOT) else files[name]),
            "raw_images_per_s": {str(b): median([r[str(b)]["images_per_s"] for r in raw[name]])
                                 for b in RAW_BATCHES},
            "server_images_per_s": median([r["images_per_s"] for r in served[name]]),
            "server_p50_ms": median([r["p50_ms"] for r in served[name]]),
            "server_errors": sum(sum((r["errors"] or {}).values()) for r in served[name]),
            "runs": {"raw": raw[name], "server": served[name]},
        }
    first = figures["models"][names[0]]
    figures["ratios"] = {name: {
        **{f"raw b{b}": round(m["raw_images_per_s"][str(b)] / first["raw_images_per_s"][str(b)], 3)
           for b in RAW_BATCHES},
        "server": round(m["server_images_per_s"] / first["server_images_per_s"], 3),
    } for name, m in figures["models"].items()}
    text = json.dumps(figures, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
