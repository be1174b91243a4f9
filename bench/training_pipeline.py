"""Training throughput: our tf.data pipeline against the lab's ImageDataGenerator approach.

Same seed CNN, same images, same machine, same process, alternating rounds; images/s of
``model.fit`` over a fixed number of steps, the median of several rounds, and the ratio.

Arms:
- ``tf.data + fused augmentation`` (cifar10_training.train.make_datasets, what cifar10-train uses);
- ``ImageDataGenerator.flow`` (keras-preprocessing 1.1.2, the lab's class, scipy affine
  transforms per image in a Python generator feeding ``fit``), the lab's own approach;
- ``tf.data, no augmentation``: the model's own ceiling on these cores.

    python -m bench.training_pipeline --data DATA \
        --images 10240 --steps 20 --rounds 3 --out docs/bench-results/training-pipeline.json

Needs the train extra plus keras-preprocessing and scipy (dev extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cifar10_training import tensorflow_env

log = logging.getLogger("bench.training_pipeline")


def _lab_generator(x, y_onehot, config, batch_size: int, seed: int):
    try:
        from keras_preprocessing.image import ImageDataGenerator
    except ImportError:  # pragma: no cover - a clear message instead of a traceback
        sys.exit("this benchmark needs keras-preprocessing and scipy: pip install -e '.[dev]'")
    generator = ImageDataGenerator(
        rotation_range=config.rotation_degrees,
        width_shift_range=config.width_shift,
        height_shift_range=config.height_shift,
        zoom_range=config.zoom,
        horizontal_flip=config.horizontal_flip,
        fill_mode=config.fill_mode,
    )
    iterator = generator.flow(x.astype(np.float32) / 255.0, y_onehot, batch_size=batch_size, seed=seed)

    def forever():
        while True:
            yield next(iterator)

    return forever()


def _time_fit(model, data, steps: int) -> float:
    """Images/s of fit over ``steps`` steps (after the caller's warm-up)."""
    started = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * BATCH / (time.perf_counter() - started)


BATCH = 256


def run(images: np.ndarray, labels: np.ndarray, steps: int, rounds: int) -> dict:
    import keras

    from cifar10_training.config import TrainConfig
    from cifar10_training.model import build_seed_cnn
    from cifar10_training.train import compile_model, make_datasets

    keras.utils.set_random_seed(0)
    config = TrainConfig(batch_size=BATCH)
    onehot = np.eye(10, dtype=np.float32)[labels]
    arms = {
        "tf.data + fused augmentation (cifar10-train)": make_datasets(images, labels, images[:10], labels[:10], config, 0)[0].repeat(),
        "ImageDataGenerator.flow (the lab)": _lab_generator(images, onehot, config, BATCH, 0),
        "tf.data, no augmentation (ceiling)": make_datasets(
            images, labels, images[:10], labels[:10], TrainConfig(batch_size=BATCH, augment=False), 0
        )[0].repeat(),
    }
    models = {}
    for name, data in arms.items():
        model = build_seed_cnn()
        compile_model(model, config, steps_per_epoch=steps)
        model.fit(data, epochs=1, steps_per_epoch=3, verbose=0)  # trace and warm up
        models[name] = model
    results: dict[str, list[float]] = {name: [] for name in arms}
    for round_ in range(rounds):
        for name, data in arms.items():
            rate = _time_fit(models[name], data, steps)
            results[name].append(rate)
            log.info("round %d  %-45s %7.0f images/s", round_ + 1, name, rate)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    ours, lab = list(medians.values())[:2]
    return {"images_per_second": results, "median": medians, "ratio_ours_over_lab": ours / lab}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fetch",
                        help="image folder or archive; 'fetch' (the default): the official "
                             "archive, downloaded once (cifar10_training.fetch); 'synthetic' "
                             "for random images")
    parser.add_argument("--images", type=int, default=10240)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(message)s")
    tensorflow_env.apply_defaults()  # as cifar10-train runs

    if args.data == "synthetic":
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, (args.images, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, args.images)
    else:
        from cifar10_training import data

        loaded = data.load(args.data, progress=False)
        pick = np.random.default_rng(0).permutation(len(loaded))[: args.images]
        images, labels = loaded.images[pick], loaded.labels[pick]
    result = run(images, labels, args.steps, args.rounds)
    result.update(
        command=" ".join(["python -m bench.training_pipeline", *(argv if argv is not None else sys.argv[1:])]),
        images=len(images), steps=args.steps, rounds=args.rounds, batch_size=BATCH,
        cpus=os.cpu_count(), machine=platform.machine(), load_average=os.getloadavg(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    for name, rate in result["median"].items():
        print(f"{name:<48} {rate:8.0f} images/s (median of {args.rounds})")
    print(f"ratio ours / lab: {result['ratio_ours_over_lab']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
