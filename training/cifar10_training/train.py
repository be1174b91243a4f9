"""Fit a network (``--arch``) on one data source, checkpointing every epoch so a killed run resumes.

Reads top to bottom: load data -> fixed three-way split (training, validation, test) ->
tf.data pipeline (augmentation on training batches only) -> build or resume the model
(optimizer, learning-rate schedule and loss per the recipe) -> fit with per-epoch
checkpoints, the best checkpoint by validation accuracy, history and progress. The test
part is never touched here. Everything after fitting (export, evaluation, plots, model
card) lives in ``cifar10_training.run``.

Run folder::

    config.json            the TrainConfig of the run (also embedded in the ONNX model)
    split.json             seed, sizes and the validation and test indices of the split
    hosts.json             CPU, cores and TensorFlow of every sitting of the run
    checkpoints/epoch-NNNN.keras   model + optimizer state after epoch NNNN (last two kept;
                                   resume starts from the newest)
    checkpoints/best-NNNN.keras    the epoch with the best validation accuracy so far (the
                                   earliest of equals); what ``export`` exports by default
    history.csv            one row per finished epoch: loss, accuracy, val_*, seconds, lr

With ``TF_CONFIG`` naming several workers (``cifar10_training.distributed``), only the
chief writes this folder; every worker resumes from its newest checkpoint (a shared volume).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cifar10_core import cpus
from cifar10_training import data as data_module
from cifar10_training import distributed
from cifar10_training.config import NESTEROV, TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^epoch-(\d{4})\.keras$")
BEST_RE = re.compile(r"^best-(\d{4})\.keras$")
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "learning_rate"]
KEEP_CHECKPOINTS = 2


class RunConfigMismatch(Exception):
    """The run folder holds a run made with a different config."""


@dataclass
class FitResult:
    model: object  # keras.Model
    history: list[dict]
    data: data_module.LabelledImages
    split: data_module.Split
    resumed_from: int
    epoch: int  # the epoch whose weights ``model`` holds


# --- run-folder state -------------------------------------------------------------------


def _checkpoints(run_dir: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """(epoch, path) of the complete checkpoints whose names match ``pattern``, oldest first."""
    return sorted(
        (int(m.group(1)), p) for p in (run_dir / "checkpoints").glob("*.keras") if (m := pattern.search(p.name))
    )


def latest_checkpoint(run_dir: Path) -> tuple[int, Path | None]:
    """(epochs done, checkpoint path) of the newest complete checkpoint, or (0, None)."""
    found = _checkpoints(run_dir, CHECKPOINT_RE)
    return found[-1] if found else (0, None)


def best_checkpoint(run_dir: Path) -> tuple[int, Path | None]:
    """(epoch, path) of the checkpoint kept as the best by validation accuracy, or (0, None)."""
    found = _checkpoints(run_dir, BEST_RE)
    return found[-1] if found else (0, None)


def best_row(history: list[dict]) -> dict:
    """The epoch with the highest validation accuracy (the earliest of equals)."""
    return max(history, key=lambda row: row["val_accuracy"])


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in (None, "")}
                for row in csv.DictReader(f)]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_history(run_dir: Path, history: list[dict]) -> None:
    lines = [",".join(HISTORY_FIELDS)]
    lines += [",".join(str(row.get(k, "")) for k in HISTORY_FIELDS) for row in history]
    _write_atomically(run_dir / "history.csv", "\n".join(lines) + "\n")


def prepare_run_dir(config: TrainConfig, run_dir: Path) -> None:
    """Create the folder and save the config, or check that it matches a saved one.

    Only ``epochs`` may change between a run and its resumption (to extend a run), and only
    with a constant learning rate: a schedule's length is fixed in its checkpoints.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path = run_dir / "config.json"
    if saved_path.exists():
        saved = TrainConfig.load(saved_path)
        may_change = ("epochs", "model_version") if saved.lr_schedule == "constant" else ("model_version",)
        diff = saved.differences(config, ignore=may_change)
        if diff:
            listed = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in diff.items())
            raise RunConfigMismatch(
                f"{run_dir} holds a run with another config ({listed}); use a new --run-dir"
            )
        config.model_version = saved.model_version
    if not config.model_version:
        config.model_version = time.strftime("%Y.%m.%d-%H%M", time.gmtime())
    config.save(saved_path)


def write_split(run_dir: Path, config: TrainConfig, dataset: data_module.LabelledImages,
                split: data_module.Split) -> None:
    """split.json: seed, sizes, the data's fingerprint and the held-out indices."""
    record = {
        "split_seed": config.split_seed,
        **split.sizes(),
        "dataset": dataset.source,
        "dataset_fingerprint": dataset.fingerprint,
        "val_indices": split.val.tolist(),
        "test_indices": split.test.tolist(),
    }
    _write_atomically(run_dir / "split.json", json.dumps(record) + "\n")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else platform), e.g. 'AMD EPYC'."""
    return cpus.cpu()["model"] or platform.processor() or platform.machine()


def record_host(run_dir: Path, first_epoch: int) -> None:
    """Append this sitting's host (CPU, its vector flags, cores, TensorFlow) to hosts.json."""
    import tensorflow as tf

    path = run_dir / "hosts.json"
    hosts = json.loads(path.read_text()) if path.exists() else []
    hosts.append({"from_epoch": first_epoch, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "cpu": cpu_model(), "cpu_flags": cpus.cpu()["vector_flags"], "cores": os.cpu_count(),
                  "tensorflow": tf.__version__})
    _write_atomically(path, json.dumps(hosts, indent=1) + "\n")


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


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The learning rate: a float, or a per-step schedule (saved in every checkpoint)."""
    import keras

    peak = config.learning_rate
    if config.optimizer == NESTEROV:
        from cifar10_training.lookahead_sgd import step_size

        peak = step_size(config.learning_rate, config.momentum, config.batch_size)
    if config.lr_schedule == "constant":
        return peak
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_fraction * total))
    if config.lr_schedule == "linear":
        from cifar10_training.schedules import WarmupLinearDecay

        return WarmupLinearDecay(peak, total, warmup)
    # From 0 up to the peak in ``warmup`` steps, then cosine from the peak to 0 at ``total``.
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total - warmup, alpha=0.0, warmup_target=peak, warmup_steps=warmup
    )


def _optimizer(config: TrainConfig, steps_per_epoch: int):
    import keras

    rate = learning_rate(config, steps_per_epoch)
    if config.optimizer == NESTEROV:
        from cifar10_training import lookahead_sgd

        return lookahead_sgd.LookaheadSGD(
            rate, momentum=config.momentum, l2=lookahead_sgd.l2_coefficient(config.learning_rate, config.weight_decay),
            bias_lr_scale=config.bias_lr_scale, lookahead_steps=config.epochs * steps_per_epoch if config.lookahead else 0,
        )
    options = {"learning_rate": rate}
    if config.weight_decay or config.optimizer == "adamw":
        options["weight_decay"] = config.weight_decay
    return keras.optimizers.get({"class_name": config.optimizer, "config": options})


def compile_model(model, config: TrainConfig, steps_per_epoch: int) -> None:
    """Optimizer, schedule and loss of the recipe (the lab's: rmsprop at Keras' defaults)."""
    import keras

    optimizer = _optimizer(config, steps_per_epoch)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer's next step uses."""
    rate = optimizer.learning_rate
    return float(np.asarray(rate(optimizer.iterations) if callable(rate) else rate))


def save_best(run_dir: Path, epoch: int, checkpoint: Path) -> None:
    """Keep ``checkpoint`` (of ``epoch``) as the best, then drop the older best."""
    tmp = checkpoint.with_name(f"tmp-best-{epoch:04d}.keras")
    shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, checkpoint.with_name(f"best-{epoch:04d}.keras"))
    for old_epoch, old in _checkpoints(run_dir, BEST_RE):
        if old_epoch != epoch:
            old.unlink()


def _epoch_callback(run_dir: Path, history: list[dict], total_epochs: int, train_images: int, digest: bool):
    import keras

    class EpochEnd(keras.callbacks.Callback):
        """Checkpoint, history and a progress line after every epoch (and, across workers,
        a digest of the weights, to check that they agree)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            done = epoch + 1
            # History first, checkpoint second: a kill between the two leaves a row without
            # its checkpoint, which resume drops (it keeps rows up to the newest checkpoint)
            # and redoes; the other order lost the row of a checkpointed epoch for good.
            history.append({"epoch": done, **{k: float(logs[k]) for k in HISTORY_FIELDS[1:5]},
                            "seconds": round(seconds, 2), "learning_rate": current_learning_rate(self.model.optimizer)})
            write_history(run_dir, history)
            ckpt_dir = run_dir / "checkpoints"
            ckpt_dir.mkdir(exist_ok=True)
            tmp = ckpt_dir / f"tmp-{done:04d}.keras"
            self.model.save(tmp)
            checkpoint = ckpt_dir / f"epoch-{done:04d}.keras"
            os.replace(tmp, checkpoint)
            # After the rolling checkpoint: a kill before this line is repaired on resume.
            if best_row(history)["epoch"] == done:
                save_best(run_dir, done, checkpoint)
            for _, old in _checkpoints(run_dir, CHECKPOINT_RE)[:-KEEP_CHECKPOINTS]:
                old.unlink()
            recent = [row["seconds"] for row in history[-5:]]
            eta = (total_epochs - done) * float(np.median(recent))
            log.info(
                "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  %.1fs (%.0f img/s)  ETA %s",
                done, total_epochs, logs["loss"], logs["accuracy"], logs["val_loss"], logs["val_accuracy"],
                seconds, train_images / seconds, tqdm.format_interval(eta),  # H:MM:SS, hours unbounded
            )
            if digest:
                log.info("epoch %d weights digest %s", done, distributed.weights_digest(self.model))

    return EpochEnd()


def fit(config: TrainConfig, run_dir: Path, progress: bool = True) -> FitResult:
    """Train (or resume) the run in ``run_dir``; return the fitted model and its history.

    Under a multi-worker ``TF_CONFIG`` every worker trains in step; ``config.batch_size`` is
    the global batch (split across the workers); only the chief writes ``run_dir``, the others
    write to a temporary folder deleted on return, and the returned ``model`` is None (load
    the chief's checkpoint to use the weights outside the strategy).
    """
    cluster = distributed.cluster_from_env()
    if cluster is None:
        return _fit(config, run_dir, run_dir, None, progress)
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TensorFlow op
    if cluster.is_chief:
        log.info("worker %s:%d of %d (chief): writes %s", cluster.task_type, cluster.task_index, cluster.workers,
                 run_dir)
        result = _fit(config, run_dir, run_dir, strategy, progress)
    else:
        out_dir = Path(tempfile.mkdtemp(prefix=f"cifar10-worker-{cluster.task_index}-"))
        log.info("worker %s:%d of %d: saves to the temporary %s", cluster.task_type, cluster.task_index,
                 cluster.workers, out_dir)
        try:
            result = _fit(config, run_dir, out_dir, strategy, progress)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    result.model = None  # distributed variables: not for single-process use
    return result


def _fit(config: TrainConfig, run_dir: Path, out_dir: Path, strategy, progress: bool) -> FitResult:
    """Fit resuming from ``run_dir``'s checkpoints and writing to ``out_dir`` (the same folder
    except on a non-chief worker), in ``strategy``'s scope when one is given."""
    dataset = data_module.load(config.data, progress=progress)  # bad data: nothing written
    split = data_module.three_way_split(dataset.labels, config.val_size, config.test_size, config.split_seed)
    prepare_run_dir(config, out_dir)
    write_split(out_dir, config, dataset, split)

    import keras

    from cifar10_training import architectures

    done, checkpoint = latest_checkpoint(run_dir)
    history = [row for row in read_history(run_dir) if row["epoch"] <= done]
    if history and best_row(history)["epoch"] == done and best_checkpoint(run_dir)[0] != done and out_dir == run_dir:
        save_best(run_dir, done, checkpoint)  # killed between the two saves of epoch ``done``
    keras.utils.set_random_seed(config.seed + done)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if checkpoint is not None:
            log.info("resuming %s after epoch %d from %s", run_dir, done, checkpoint.name)
            model = architectures.load_checkpoint(checkpoint)
        else:
            model = architectures.build(config, dataset.images[split.train])
            compile_model(model, config, steps_per_epoch=-(-len(split.train) // config.batch_size))
        if strategy is not None:
            distributed.build_from_local_batch(model, strategy)
            distributed.mean_scalars_across_workers()

    if done < config.epochs:
        record_host(out_dir, done + 1)
        x, y = dataset.images, dataset.labels
        train_ds, val_ds = make_datasets(x[split.train], y[split.train], x[split.val], y[split.val],
                                         config, config.seed + done)
        log.info(
            "training %s (%s, recipe %s): epochs %d..%d, %d train / %d validation images (%d test images "
            "untouched), augment=%s",
            run_dir, config.arch, config.recipe, done + 1, config.epochs, len(split.train), len(split.val), len(split.test),
            config.augment,
        )
        verbose = 1 if (progress and sys.stdout.isatty()) else 0
        callback = _epoch_callback(out_dir, history, config.epochs, len(split.train), digest=strategy is not None)
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            initial_epoch=done,
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=verbose,
            callbacks=[callback],
        )
    else:
        log.info("%s already has %d epochs: nothing to train", run_dir, done)
    return FitResult(model, history, dataset, split, done, history[-1]["epoch"] if history else done)
