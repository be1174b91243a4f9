"""Training speed with TensorFlow's oneDNN kernels on and off (``TF_ENABLE_ONEDNN_OPTS``).

images/s of a training step (``train_on_batch``, random images, after two warm-up steps) for
each network at its recipe's batch: the seed CNN (``improved``, 128) and airbench94 (512).
TensorFlow reads the variable once, when imported, so every arm runs in a fresh process;
rounds alternate the arms; the medians and the on/off ratio of each network are reported.

    python -m bench.training_step --rounds 3 --out docs/bench-results/training-step.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.stats import median

NETWORKS = {"seed-cnn": ("improved", 128, 20), "airbench94": ("airbench94", 512, 4)}  # recipe, batch, timed steps


def one_arm(arch: str, steps: int | None) -> dict:
    """Time ``arch``'s training step in this process (TensorFlow not yet imported)."""
    import numpy as np
    import tensorflow as tf

    from cifar10_training import architectures, train
    from cifar10_training.config import for_recipe

    recipe, batch, default_steps = NETWORKS[arch]
    steps = steps or default_steps
    config = for_recipe(recipe, arch=arch, data="unused")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    model = architectures.build(config, images)
    train.compile_model(model, config, steps_per_epoch=100)
    x = tf.constant(images.astype("float32") / 255.0)
    y = tf.one_hot(rng.integers(0, 10, batch), 10)
    for _ in range(2):
        model.train_on_batch(x, y)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        seconds.append(time.perf_counter() - start)
    return {"arch": arch, "batch": batch, "images_per_s": batch / median(seconds)}


def run(rounds: int, steps: int | None) -> dict:
    results: dict[str, dict[str, list[float]]] = {arch: {"off": [], "on": []} for arch in NETWORKS}
    for round_index in range(rounds):
        for onednn in ("off", "on"):
            for arch in NETWORKS:
                env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn == "on" else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
                command = [sys.executable, "-m", "bench.training_step", "--one", arch]
                command += ["--steps", str(steps)] if steps else []
                out = subprocess.run(command, env=env,
                                     capture_output=True, text=True, check=True).stdout
                rate = json.loads(out.splitlines()[-1])["images_per_s"]
                results[arch][onednn].append(rate)
                print(f"round {round_index + 1}: {arch:<10} oneDNN {onednn:<3} {rate:7.1f} images/s", flush=True)
    summary = {arch: {"median_off": median(arms["off"]), "median_on": median(arms["on"]),
                      "ratio_on_over_off": median(arms["on"]) / median(arms["off"]), "runs": arms}
               for arch, arms in results.items()}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per arm (default: 20 for the seed CNN, 4 for airbench94)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--one", choices=tuple(NETWORKS), help=argparse.SUPPRESS)  # a child process's arm
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_arm(args.one, args.steps)))
        return 0
    from cifar10_core import cpus

    result = {"networks": run(args.rounds, args.steps), "cpu": cpus.cpu(), "cores": os.cpu_count(),
              "command": " ".join(["python -m bench.training_step", *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for arch, row in result["networks"].items():
        print(f"{arch:<10} oneDNN off {row['median_off']:7.1f}, on {row['median_on']:7.1f} images/s "
              f"(medians of {args.rounds}): {row['ratio_on_over_off']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
