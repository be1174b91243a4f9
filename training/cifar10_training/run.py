"""A whole run, top to bottom: fit, then the artifacts a user trusts.

After fitting: curves (PNG); the checkpoint to export (the best by validation accuracy,
unless told ``last``); the ONNX export with its parity check on every validation image;
its figures through onnxruntime on the validation part (what choices were made on) and
on the test part (touched by nothing else: the figures the card reports), per-class
accuracy and the confusion matrix; and the model card. ``compare`` runs both arms of the
lab's experiment and overlays them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from cifar10_core import contract
from cifar10_training import data as data_module
from cifar10_training import architectures, distributed, evaluate, export, report
from cifar10_training import tta as tta_module
from cifar10_training.config import TrainConfig
from cifar10_training.train import FitResult, best_checkpoint, fit, latest_checkpoint, read_history

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CARD_FILE = "MODEL_CARD.md"
CHECKPOINTS = ("best", "last")


def chosen_checkpoint(run_dir: Path, which: str) -> tuple[int, Path]:
    """(epoch, path) of the run's best checkpoint, or of its last; the last when a run from
    before best checkpoints were kept has none."""
    if which == "best":
        epoch, path = best_checkpoint(run_dir)
        if path is not None:
            return epoch, path
        log.warning("%s keeps no best checkpoint (made before they were kept): exporting the last", run_dir)
    epoch, path = latest_checkpoint(run_dir)
    if path is None:
        raise data_module.DataError(f"{run_dir} has no checkpoint yet")
    return epoch, path


def finish(run_dir: Path, result: FitResult, output: Path | None = None, checkpoint: str = "best",
           tta: str = "none") -> dict:
    """Export the chosen checkpoint of a fitted run (with test-time augmentation ``tta`` in the
    graph); write its curves, figures and card."""
    config = TrainConfig.load(run_dir / "config.json").to_dict()
    tta_module.check_supported(config["arch"], tta)
    split = json.loads((run_dir / "split.json").read_text())
    # The model and its card name the data portably (its name, size and fingerprint), never
    # by this machine's path: config["data"] and split["dataset"] may be local paths.
    config["data"] = split["dataset"] = portable_data(config["data"], result.data)
    history = result.history
    arm = "with augmentation" if config["augment"] else "without augmentation"
    report.plot_curves({arm: history}, run_dir / "curves.png", f"{config['model_name']} {arm}")

    epoch, path = chosen_checkpoint(run_dir, checkpoint)
    model = result.model if result.model is not None and epoch == result.epoch else architectures.load_checkpoint(path)
    log.info("exporting epoch %d of %d (%s checkpoint, validation accuracy %.2f%%)", epoch, len(history),
             checkpoint, 100 * next(r["val_accuracy"] for r in history if r["epoch"] == epoch))

    parts = {"validation": result.split.val, "test": result.split.test}
    images = {name: result.data.images[idx] for name, idx in parts.items()}
    labels = {name: result.data.labels[idx] for name, idx in parts.items()}
    summary = report.best_and_final(history)
    output = output or run_dir / MODEL_FILE
    version = report.model_version(config, epoch, tta)
    # Keras' figures on the validation part go into the metadata; the same figures through
    # onnxruntime (the written file) into evaluation.json and the card, and must agree.
    keras_p = tta_module.predict(model, images["validation"], tta)
    val = evaluate.score(keras_p, labels["validation"])
    metrics = {
        "val_accuracy": val.accuracy,
        "val_loss": val.loss,
        "val_images": val.images,
        "per_class_accuracy": val.per_class_accuracy,
        "epochs": epoch,  # of the exported weights
        "checkpoint": checkpoint,
        "epochs_trained": summary["epochs"],
        "best_val_accuracy": summary["best_val_accuracy"],
        "best_epoch": summary["best_epoch"],
        "split_seed": split["split_seed"],
    }
    sizes = {"split_seed": split["split_seed"], "train_size": split["train_size"], "val_size": split["val_size"],
             "test_size": split.get("test_size", 0)}
    extra = {contract.META_SPLIT: json.dumps(sizes, sort_keys=True), export.META_ARCHITECTURE: config["arch"],
             export.META_RECIPE: config["recipe"], export.META_TTA: tta}
    served = {}
    if len(labels["test"]):
        keras_test = tta_module.predict(model, images["test"], tta)
        test = evaluate.score(keras_test, labels["test"])
        extra[contract.META_TEST_METRICS] = json.dumps(test.metrics("test"), sort_keys=True)
    metadata = export.build_metadata(config, version, config["data"], result.data.fingerprint, metrics, extra)
    parity = export.export(model, output, metadata, images["validation"], tta)

    # The serving path: the written file through onnxruntime.
    for name in parts:
        if len(labels[name]):
            served[name] = evaluate.evaluate_onnx(output, images[name], labels[name]).to_dict()
    reported = "test" if "test" in served else "validation"
    figures = {"epoch": epoch, "checkpoint": checkpoint, "tta": tta, **served}
    (run_dir / "evaluation.json").write_text(
        json.dumps({**figures, "parity": parity, "summary": summary}, indent=2) + "\n"
    )
    report.plot_confusion(served[reported]["confusion_matrix"], run_dir / "confusion_matrix.png",
                          f"{reported} confusion matrix ({served[reported]['accuracy']:.1%})")
    hosts = json.loads((run_dir / "hosts.json").read_text()) if (run_dir / "hosts.json").exists() else []
    card = report.model_card(config, history, figures, parity, split, output.name, hosts)
    (run_dir / CARD_FILE).write_text(card)
    if output.parent.resolve() != run_dir.resolve():
        output.with_suffix(".md").write_text(card)  # the card travels with the model file
    for name, figure in served.items():
        log.info("%s accuracy %.2f%% (onnxruntime, %d images)", name, 100 * figure["accuracy"], figure["images"])
    return {"model": str(output), "epoch": epoch, "val_accuracy": served["validation"]["accuracy"],
            "test_accuracy": served["test"]["accuracy"] if "test" in served else None,
            "epochs": summary["epochs"]}


def portable_data(configured: str, dataset: data_module.LabelledImages) -> str:
    """What an exported model says about its data: the loaded set's description (name and
    size, no path), after the source named in the config when that is a name (fetch, keras)."""
    description = dataset.description or "CIFAR-10 data"
    if configured in (data_module.FETCH, "keras") and not description.startswith(configured):
        return f"{configured}: {description}"
    return description


def train_run(config: TrainConfig, run_dir: Path, export: bool = True, tta: str = "none") -> dict:
    """Fit, then export (on a multi-worker cluster: the chief alone exports)."""
    tta_module.check_supported(config.arch, tta)  # before hours of training, not after
    result = fit(config, run_dir)
    cluster = distributed.cluster_from_env()
    if not export or (cluster is not None and not cluster.is_chief):
        return {"epochs": len(result.history), "run_dir": str(run_dir)}
    return finish(run_dir, result, tta=tta)


def recorded_split(record: dict, dataset: data_module.LabelledImages) -> data_module.Split:
    """The split a run folder's split.json records (checked against the data's fingerprint)."""
    if record["dataset_fingerprint"] != dataset.fingerprint:
        raise data_module.DataError(f"{dataset.source} is not the data this run was split from (fingerprint differs)")
    val = np.asarray(record["val_indices"], dtype=np.int64)
    test = np.asarray(record.get("test_indices", []), dtype=np.int64)
    return data_module.Split(np.setdiff1d(np.arange(len(dataset)), np.concatenate([val, test])), val, test)


def _reload(run_dir: Path) -> FitResult:
    """A finished (or interrupted) run's data, split and history, without training."""
    if not (run_dir / "config.json").exists():
        raise data_module.DataError(f"{run_dir} is not a run folder (no config.json)")
    config = TrainConfig.load(run_dir / "config.json")
    done, checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise data_module.DataError(f"{run_dir} has no checkpoint yet")
    dataset = data_module.load(config.data)
    split = recorded_split(json.loads((run_dir / "split.json").read_text()), dataset)
    history = [row for row in read_history(run_dir) if row["epoch"] <= done]
    return FitResult(None, history, dataset, split, done, done)


def export_run(run_dir: Path, output: Path | None = None, checkpoint: str = "best", tta: str = "none") -> str:
    """Export a run's best (or last) checkpoint, with curves, figures and card."""
    if (run_dir / "config.json").exists():  # refused before the data loads (else _reload says why)
        tta_module.check_supported(TrainConfig.load(run_dir / "config.json").arch, tta)
    return finish(run_dir, _reload(run_dir), output, checkpoint, tta)["model"]


def split_of(model: Path, dataset: data_module.LabelledImages) -> data_module.Split:
    """The split a model was trained with, recomputed from its own metadata (a model from
    before the three-way split has no test part)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    if contract.META_TRAINING_CONFIG not in meta:
        raise data_module.DataError(f"{model} carries no training config to find its split")
    if meta.get(contract.META_DATASET_FINGERPRINT) != dataset.fingerprint:
        raise data_module.DataError(f"{dataset.source} is not the data {model.name} was trained on (fingerprint differs)")
    config = json.loads(meta[contract.META_TRAINING_CONFIG])
    return data_module.three_way_split(dataset.labels, config["val_size"], config.get("test_size", 0),
                                       config["split_seed"])


def evaluate_command(model: Path, source: str, split: str, val_of: Path | None, out: Path | None,
                     validation: bool = False, test: bool = False) -> dict:
    """``cifar10-train evaluate``: print and optionally save an ONNX model's figures.

    ``val_of`` (a run folder) or ``validation`` (the model's own metadata) restricts the
    evaluation to the validation images the model was trained without; ``test`` to its
    test part.
    """
    dataset = data_module.load(source, split=split)
    images, labels = dataset.images, dataset.labels
    idx = None
    if val_of is not None:
        idx = recorded_split(json.loads((val_of / "split.json").read_text()), dataset).val
    elif validation or test:
        parts = split_of(model, dataset)
        idx = parts.test if test else parts.val
        if not len(idx):
            raise data_module.DataError(f"{model} was trained before the three-way split: it has no test part")
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
