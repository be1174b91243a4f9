"""A whole run, top to bottom: fit, then the artifacts a user trusts.

After fitting: curves (PNG), validation evaluation (JSON, per-class accuracy, confusion
matrix PNG), the ONNX export with its parity check on every validation image, and the
model card. ``compare`` runs both arms of the lab's experiment and overlays them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from cifar10_training import data as data_module
from cifar10_training import evaluate, export, report
from cifar10_training.config import TrainConfig
from cifar10_training.train import FitResult, fit, latest_checkpoint, read_history

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"


def finish(run_dir: Path, result: FitResult, output: Path | None = None) -> dict:
    """Write curves, evaluation, ONNX export and model card of a fitted run."""
    config = TrainConfig.load(run_dir / "config.json").to_dict()
    split = json.loads((run_dir / "split.json").read_text())
    history = result.history
    arm = "with augmentation" if config["augment"] else "without augmentation"
    report.plot_curves({arm: history}, run_dir / "curves.png", f"{config['model_name']} {arm}")

    x_val = result.data.images[result.val_idx]
    y_val = result.data.labels[result.val_idx]
    keras_p = np.asarray(result.model.predict(x_val.astype(np.float32) / 255.0, batch_size=1024, verbose=0))
    val = evaluate.score(keras_p, y_val)
    summary = report.best_and_final(history)
    metrics = {
        "val_accuracy": val.accuracy,
        "val_loss": val.loss,
        "val_images": val.images,
        "per_class_accuracy": val.per_class_accuracy,
        "epochs": summary["epochs"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "best_epoch": summary["best_epoch"],
        "split_seed": split["split_seed"],
    }
    output = output or run_dir / MODEL_FILE
    version = report.model_version(config, summary["epochs"])
    metadata = export.build_metadata(config, version, result.data.source, result.data.fingerprint, metrics)
    parity = export.export(result.model, output, metadata, x_val)

    # The serving path: the written file through onnxruntime.
    served = evaluate.evaluate_onnx(output, x_val, y_val)
    (run_dir / "evaluation.json").write_text(
        json.dumps({"validation": served.to_dict(), "parity": parity, "summary": summary}, indent=2) + "\n"
    )
    report.plot_confusion(served.confusion_matrix, run_dir / "confusion_matrix.png",
                          f"validation confusion matrix ({served.accuracy:.1%})")
    card = report.model_card(config, history, served.to_dict(), parity, split, output.name)
    (run_dir / CARD_FILE).write_text(card)
    if output.parent.resolve() != run_dir.resolve():
        output.with_suffix(".md").write_text(card)  # the card travels with the model file
    log.info("validation accuracy %.2f%% (onnxruntime, %d images)", 100 * served.accuracy, served.images)
    return {"model": str(output), "val_accuracy": served.accuracy, "epochs": summary["epochs"]}


def train_run(config: TrainConfig, run_dir: Path, export: bool = True) -> dict:
    result = fit(config, run_dir)
    if not export:
        return {"epochs": len(result.history), "run_dir": str(run_dir)}
    return finish(run_dir, result)


def _reload(run_dir: Path) -> FitResult:
    """A finished (or interrupted) run's last checkpoint, data and split, without training."""
    import keras

    if not (run_dir / "config.json").exists():
        raise data_module.DataError(f"{run_dir} is not a run folder (no config.json)")
    config = TrainConfig.load(run_dir / "config.json")
    done, checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise data_module.DataError(f"{run_dir} has no checkpoint yet")
    dataset = data_module.load(config.data)
    split = json.loads((run_dir / "split.json").read_text())
    if dataset.fingerprint != split["dataset_fingerprint"]:
        raise data_module.DataError(f"the data at {config.data} changed since {run_dir} was trained")
    val_idx = np.asarray(split["val_indices"], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(dataset)), val_idx)
    history = [row for row in read_history(run_dir) if row["epoch"] <= done]
    return FitResult(keras.models.load_model(checkpoint), history, dataset, train_idx, val_idx, done)


def export_run(run_dir: Path, output: Path | None = None) -> str:
    """Export a run's last checkpoint (curves, evaluation and card included)."""
    return finish(run_dir, _reload(run_dir), output)["model"]


def validation_indices_of(model: Path, dataset: data_module.LabelledImages) -> np.ndarray:
    """The validation split a model was trained with, recomputed from its own metadata."""
    import onnx

    from cifar10_core import contract

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    if contract.META_TRAINING_CONFIG not in meta:
        raise data_module.DataError(f"{model} carries no training config to find its validation split")
    if meta.get(contract.META_DATASET_FINGERPRINT) != dataset.fingerprint:
        raise data_module.DataError(f"{dataset.source} is not the data {model.name} was trained on (fingerprint differs)")
    config = json.loads(meta[contract.META_TRAINING_CONFIG])
    return data_module.stratified_split(dataset.labels, config["val_size"], config["split_seed"])[1]


def evaluate_command(model: Path, source: str, split: str, val_of: Path | None, out: Path | None,
                     validation: bool = False) -> dict:
    """``cifar10-train evaluate``: print and optionally save an ONNX model's figures.

    ``val_of`` (a run folder) or ``validation`` (the model's own metadata) restricts the
    evaluation to the validation images the model was trained without.
    """
    dataset = data_module.load(source, split=split)
    images, labels = dataset.images, dataset.labels
    idx = None
    if val_of is not None:
        recorded = json.loads((val_of / "split.json").read_text())
        if recorded["dataset_fingerprint"] != dataset.fingerprint:
            raise data_module.DataError(f"{source} is not the data {val_of} was split from")
        idx = np.asarray(recorded["val_indices"])
    elif validation:
        idx = validation_indices_of(model, dataset)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    result = evaluate.evaluate_onnx(model, images, labels)
    print(f"{model}: accuracy {result.accuracy:.2%} on {result.images} images, loss {result.loss:.4f}")
    for name, acc in result.per_class_accuracy.items():
        print(f"  {name:<10} {acc:.2%}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        report.plot_confusion(result.confusion_matrix, out / "confusion_matrix.png", f"{model.name}: {result.accuracy:.1%}")
    return result.to_dict()


ARMS = {"baseline": False, "augmented": True}


def compare(base: TrainConfig, out: Path, train: bool = True) -> dict:
    """The lab's experiment: both arms (resumable), curves overlaid, a table of figures.

    With ``train=False`` nothing is trained: the figure and table are drawn from the runs as
    they stand (an arm still training shows the epochs it has done), e.g. to watch a long run.
    """
    out.mkdir(parents=True, exist_ok=True)
    histories, rows = {}, []
    for arm, augment in ARMS.items():
        run_dir = out / arm
        config = dataclasses.replace(base, augment=augment)
        finished = (run_dir / MODEL_FILE).exists() and latest_checkpoint(run_dir)[0] >= config.epochs
        if not finished and train:
            train_run(config, run_dir)
        history = read_history(run_dir)
        if not history:
            raise data_module.DataError(f"{run_dir} has no finished epoch yet: nothing to compare")
        label = f"{arm} (augment={augment})"
        if history[-1]["epoch"] < config.epochs:
            label += f", epoch {history[-1]['epoch']}/{config.epochs}"
        histories[label] = history
        rows.append((arm, report.best_and_final(history)))
    report.plot_curves(histories, out / "comparison.png", "seed CNN: without vs with augmentation")
    table = ["| arm | epochs | final val acc | best val acc (epoch) | final val loss | min val loss | final train acc |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, s in rows:
        table.append(
            f"| {arm} | {s['epochs']} | {s['final_val_accuracy']:.2%} | {s['best_val_accuracy']:.2%} ({s['best_epoch']}) "
            f"| {s['final_val_loss']:.4f} | {s['min_val_loss']:.4f} | {s['final_train_accuracy']:.2%} |"
        )
    (out / "comparison.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return dict(rows)
