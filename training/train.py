"""Fit the seed CNN on one data source, checkpointing every epoch so a killed run resumes.

Reads top to bottom: load data -> fixed validation split -> tf.data pipeline (augmentation
on training batches only) -> build or resume the model -> fit with per-epoch checkpoints,
history and progress. Everything that happens after fitting (export, evaluation, plots,
model card) lives in ``cifar10_training.run``.

Run folder::

    config.json            the TrainConfig of the run (also embedded in the ONNX model)
    split.json             seed, sizes and the validation indices of the split
    checkpoints/epoch-NNNN.keras   model + optimizer state after epoch NNNN (last two kept)
    history.csv            one row per finished epoch: loss, accuracy, val_*, seconds
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cifar10_training import data as data_module
from cifar10_training.config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"epoch-(\d{4})\.keras$")
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
KEEP_CHECKPOINTS = 2


class RunConfigMismatch(Exception):
    """The run folder holds a run made with a different config."""


@dataclass
class FitResult:
    model: object  # keras.Model
    history: list[dict]
    data: data_module.LabelledImages
    train_idx: np.ndarray
    val_idx: np.ndarray
    resumed_from: int


# --- run-folder state -------------------------------------------------------------------


def latest_checkpoint(run_dir: Path) -> tuple[int, Path | None]:
    """(epochs done, checkpoint path) of the newest complete checkpoint, or (0, None)."""
    found = [
        (int(m.group(1)), p)
        for p in (run_dir / "checkpoints").glob("epoch-*.keras")
        if (m := CHECKPOINT_RE.search(p.name))
    ]
    return max(found) if found else (0, None)


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_history(run_dir: Path, history: list[dict]) -> None:
    lines = [",".join(HISTORY_FIELDS)]
    lines += [",".join(str(row[k]) for k in HISTORY_FIELDS) for row in history]
    _write_atomically(run_dir / "history.csv", "\n".join(lines) + "\n")


def prepare_run_dir(config: TrainConfig, run_dir: Path) -> None:
    """Create the folder and save the config, or check that it matches a saved one.

    Only ``epochs`` may change between a run and its resumption (to extend a run).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path = run_dir / "config.json"
    if saved_path.exists():
        saved = TrainConfig.load(saved_path)
        diff = saved.differences(config, ignore=("epochs", "model_version"))
        if diff:
            listed = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in diff.items())
            raise RunConfigMismatch(
                f"{run_dir} holds a run with another config ({listed}); use a new --run-dir"
            )
        config.model_version = saved.model_version
    if not config.model_version:
        config.model_version = time.strftime("%Y.%m.%d-%H%M", time.gmtime())
    config.save(saved_path)


# --- the input pipeline -----------------------------------------------------------------


def make_datasets(x_train, y_train, x_val, y_val, config: TrainConfig, epoch_seed: int):
    """tf.data pipelines: shuffled, batched, scaled to [0, 1], augmented (training only)."""
    import tensorflow as tf

    from cifar10_training.augment import augment_batch

    autotune = tf.data.AUTOTUNE
    one_hot = lambda y: tf.one_hot(y, 10)  # noqa: E731
    scale = lambda x, y: (tf.cast(x, tf.float32) / 255.0, one_hot(y))  # noqa: E731

    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train = train.shuffle(len(x_train), seed=epoch_seed, reshuffle_each_iteration=True)
    train = train.batch(config.batch_size).map(scale, num_parallel_calls=autotune)
    if config.augment:
        train = train.map(lambda x, y: (augment_batch(x, config), y), num_parallel_calls=autotune)
    train = train.prefetch(autotune)

    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(1024).map(scale).prefetch(autotune)
    return train, val


# --- fitting ----------------------------------------------------------------------------


def _compile(model, config: TrainConfig) -> None:
    import keras

    optimizer = keras.optimizers.get({"class_name": config.optimizer, "config": {"learning_rate": config.learning_rate}})
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])


def _epoch_callback(run_dir: Path, history: list[dict], total_epochs: int):
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """Checkpoint, history and a progress line after every epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            done = epoch + 1
            # History first, checkpoint second: a kill between the two leaves a row without
            # its checkpoint, which resume drops (it keeps rows up to the newest checkpoint)
            # and redoes; the other order lost the row of a checkpointed epoch for good.
            history.append({"epoch": done, **{k: float(logs[k]) for k in HISTORY_FIELDS[1:5]}, "seconds": round(seconds, 2)})
            write_history(run_dir, history)
            ckpt_dir = run_dir / "checkpoints"
            ckpt_dir.mkdir(exist_ok=True)
            tmp = ckpt_dir / f"tmp-{done:04d}.keras"
            self.model.save(tmp)
            os.replace(tmp, ckpt_dir / f"epoch-{done:04d}.keras")
            for old in sorted(ckpt_dir.glob("epoch-*.keras"))[:-KEEP_CHECKPOINTS]:
                old.unlink()
            recent = [row["seconds"] for row in history[-5:]]
            eta = (total_epochs - done) * float(np.median(recent))
            log.info(
                "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  %.1fs  ETA %s",
                done, total_epochs, logs["loss"], logs["accuracy"], logs["val_loss"], logs["val_accuracy"],
                seconds, tqdm.format_interval(eta),  # H:MM:SS, hours unbounded (no wrap at a day)
            )

    return EpochEnd()


def fit(config: TrainConfig, run_dir: Path, progress: bool = True) -> FitResult:
    """Train (or resume) the run in ``run_dir``; return the fitted model and its history."""
    dataset = data_module.load(config.data, progress=progress)  # bad data: nothing written
    prepare_run_dir(config, run_dir)
    train_idx, val_idx = data_module.stratified_split(dataset.labels, config.val_size, config.split_seed)
    _write_atomically(
        run_dir / "split.json",
        json.dumps(
            {
                "split_seed": config.split_seed,
                "train_size": len(train_idx),
                "val_size": len(val_idx),
                "dataset": dataset.source,
                "dataset_fingerprint": dataset.fingerprint,
                "val_indices": val_idx.tolist(),
            }
        ) + "\n",
    )

    import keras

    from cifar10_training.model import build_seed_cnn

    done, checkpoint = latest_checkpoint(run_dir)
    history = [row for row in read_history(run_dir) if row["epoch"] <= done]
    keras.utils.set_random_seed(config.seed + done)
    if checkpoint is not None:
        log.info("resuming %s after epoch %d from %s", run_dir, done, checkpoint.name)
        model = keras.models.load_model(checkpoint)
    else:
        model = build_seed_cnn(config.conv_dropout, config.dense_dropout)
        _compile(model, config)

    if done < config.epochs:
        x, y = dataset.images, dataset.labels
        train_ds, val_ds = make_datasets(x[train_idx], y[train_idx], x[val_idx], y[val_idx], config, config.seed + done)
        log.info(
            "training %s: epochs %d..%d, %d train / %d validation images, augment=%s",
            run_dir, done + 1, config.epochs, len(train_idx), len(val_idx), config.augment,
        )
        verbose = 1 if (progress and sys.stdout.isatty()) else 0
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=done,
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=verbose,
            callbacks=[_epoch_callback(run_dir, history, config.epochs)],
        )
    else:
        log.info("%s already has %d epochs: nothing to train", run_dir, done)
    return FitResult(model, history, dataset, train_idx, val_idx, done)
