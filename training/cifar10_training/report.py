"""Figures and the model card of a run (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from cifar10_core import contract
from cifar10_training.config import AIRBENCH94, NESTEROV, SEED_CNN
from cifar10_training.train import best_row

JPEG_CAVEAT = (
    "The images are CIFAR-10's training images re-encoded as JPEG (quality 75) by a public "
    "copy of the data set, so pixels differ slightly from the original arrays: figures here "
    "are not directly comparable with published CIFAR-10 results. The official test split "
    "was not used; every figure is on a fixed, seeded, stratified split of the training "
    "images (the test part, where there is one, is held out from training and from every choice)."
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: dict[str, list[dict]], output: Path, title: str) -> None:
    """Loss and accuracy, train (dashed) vs validation (solid), one colour per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for (name, history), colour in zip(runs.items(), ["tab:blue", "tab:orange", "tab:green", "tab:red"]):
        epochs = [row["epoch"] for row in history]
        for ax, metric in zip(axes, ["loss", "accuracy"]):
            ax.plot(epochs, [row[metric] for row in history], "--", color=colour, label=f"{name} train")
            ax.plot(epochs, [row[f"val_{metric}"] for row in history], "-", color=colour, label=f"{name} validation")
    for ax, metric in zip(axes, ["loss", "accuracy"]):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], output: Path, title: str) -> None:
    plt = _pyplot()
    matrix = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(contract.NUM_CLASSES), contract.CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(contract.NUM_CLASSES), contract.CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def model_version(config: dict, epochs: int, tta: str = "none") -> str:
    """The exported model's version: the run's version, the epoch its weights come from and
    its test-time augmentation (the same weights answer differently with it)."""
    return f"{config['model_version']}-e{epochs:03d}" + ("" if tta == "none" else f"-{tta}")


def best_and_final(history: list[dict]) -> dict:
    best = best_row(history)
    final = history[-1]
    return {
        "epochs": final["epoch"],
        "final_val_accuracy": final["val_accuracy"],
        "final_val_loss": final["val_loss"],
        "final_train_accuracy": final["accuracy"],
        "best_val_accuracy": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "min_val_loss": min(row["val_loss"] for row in history),
        "train_seconds": round(sum(row["seconds"] for row in history), 1),
        "median_epoch_seconds": round(statistics.median(row["seconds"] for row in history), 1),
    }


def _training_time(history: list[dict], split: dict, hosts: list[dict]) -> str:
    """Wall time, per-epoch speed and the hosts' CPUs of a run."""
    summary = best_and_final(history)
    median = summary["median_epoch_seconds"]
    cpus = sorted({f"{h['cpu']}, {h['cores']} cores" + _flags_text(h) for h in hosts}) or ["not recorded"]
    text = (
        f"Training time: {summary['train_seconds'] / 60:.0f} minutes, the epochs' wall times summed "
        f"(median epoch {median:.0f} s = {median / 60:.1f} minutes, "
        f"{split['train_size'] / median:.0f} training images/s; epochs far above it ran on a busy "
        f"machine or while the job was paused). Host CPU: {'; '.join(cpus)}."
    )
    if len(history) > EPOCH_TABLE_MAX:
        return text + " Every epoch's time: the run's history.csv."
    rows = "\n".join(f"| {row['epoch']} | {row['seconds']:.0f} | {split['train_size'] / row['seconds']:.0f} | "
                     f"{row['val_accuracy']:.2%} |" for row in history)
    return (text + "\n\n| epoch | seconds | training images/s | validation accuracy |\n"
            "| ---: | ---: | ---: | ---: |\n" + rows)


EPOCH_TABLE_MAX = 30
"""Runs of at most this many epochs list every epoch's time in their card."""


def _flags_text(host: dict) -> str:
    # hosts.json of runs before the flags were recorded has none
    if "cpu_flags" not in host:
        return ""
    return f", vector flags {' '.join(host['cpu_flags'])}" if host["cpu_flags"] else ", no AVX2"


def model_card(config: dict, history: list[dict], figures: dict, parity: dict, split: dict, model_file: str,
               hosts: list[dict]) -> str:
    """The model card (markdown) of an exported model.

    ``figures``: the exported ``epoch`` and ``checkpoint`` (best or last) and the onnxruntime
    evaluations of its ``validation`` part and, where the split has one, its ``test`` part.
    """
    summary = best_and_final(history)
    epoch, val, test = figures["epoch"], figures["validation"], figures.get("test")
    tta = figures.get("tta", "none")
    reported, label = (test, "test") if test else (val, "validation")
    parts = [("validation", val)] + ([("test", test)] if test else [])
    header = " | ".join(name for name, _ in parts)
    per_class = "\n".join(
        f"| {name} | " + " | ".join(f"{part['per_class_accuracy'][name]:.1%}" for _, part in parts) + " |"
        for name in contract.CLASS_NAMES
    )
    augment = (
        f"rotation {config['rotation_degrees']} deg, width/height shift {config['width_shift']}/"
        f"{config['height_shift']}, zoom {config['zoom']}, pad-and-crop {config.get('crop_padding', 0)} px, "
        f"horizontal flip {config['horizontal_flip']}, fill {config['fill_mode']}"
        if config["augment"] else "none"
    )
    interim = (
        f"\n**Interim export:** epoch {summary['epochs']} of a run planned for {config['epochs']} epochs.\n"
        if summary["epochs"] < config["epochs"] else ""
    )
    test_size = split.get("test_size", 0)
    parts_text = (
        f"{split['train_size']} training images, a validation part of {split['val_size']} images (every "
        f"choice: epochs, checkpoint, recipe) and a test part of {test_size} images (these figures only)"
        if test_size else f"{split['train_size']} training images and a validation split of {split['val_size']} images"
    )
    return f"""# Model card: {config['model_name']} {model_version(config, epoch, tta)}
{interim}
File: `{model_file}` (ONNX, opset 17). Input `images`: uint8 [N, 32, 32, 3], RGB, NHWC, scaled to
[0, 1] inside the graph. Output `probabilities`: float32 [N, 10] in label order
{', '.join(contract.CLASS_NAMES)}. Test-time augmentation inside the graph: {TTA_TEXT[tta]}.

**{reported['accuracy']:.2%} {label} accuracy** ({reported['images']} images, onnxruntime).

## How it was trained
{_network_text(config)}, trained by
`cifar10-train train` (recipe `{config.get('recipe', 'lab')}`) for {summary['epochs']} epochs:
{_optimizer_text(config)}, batch {config['batch_size']}, categorical cross-entropy
(label smoothing {config.get('label_smoothing', 0.0)}), seed {config['seed']}.
Augmentation (training batches only): {augment}.
These weights are epoch {epoch} ({figures['checkpoint']} checkpoint; best validation accuracy
{summary['best_val_accuracy']:.2%} at epoch {summary['best_epoch']}).
{_training_time(history, split, hosts)}

## Data
{split['dataset']}, fingerprint `{split['dataset_fingerprint'][:16]}...`:
{parts_text}, stratified by class, seed {split['split_seed']}.

{JPEG_CAVEAT}

## Figures
Measured through onnxruntime (the serving path):

| metric | {header} |
| --- | {' | '.join('---' for _ in parts)} |
| images | {' | '.join(str(part['images']) for _, part in parts)} |
| accuracy | {' | '.join(f"{part['accuracy']:.2%}" for _, part in parts)} |
| loss (cross-entropy) | {' | '.join(f"{part['loss']:.4f}" for _, part in parts)} |

Final training accuracy (augmented batches, dropout on): {summary['final_train_accuracy']:.2%}.

| class | {header} |
| --- | {' | '.join('---' for _ in parts)} |
{per_class}

Confusion matrix ({label} part; rows: true class, columns: predicted, in label order):

{confusion_table(reported['confusion_matrix'])}

Export parity (Keras vs onnxruntime on {parity['images']} validation images): max |delta p| =
{parity['max_abs_delta']:.1e}, {parity['argmax_mismatches']} argmax mismatches.

## Training config
```json
{json.dumps(config, indent=2, sort_keys=True)}
```

## Limits
32x32 pictures of ten classes only: anything else is forced into one of them. Larger images
are resized to 32x32 (core/cifar10_core/images.py), which loses most detail.
"""


TTA_TEXT = {
    "none": "none",
    "flip": "the image and its mirror, logits averaged",
    "flip-translate": "the image and its mirror, also shifted one pixel up-left and down-right "
                      "(reflect padding), logits averaged (six views)",
}


def _network_text(config: dict) -> str:
    if config.get("arch", SEED_CNN) == AIRBENCH94:
        return ("airbench94's network (Keller Jordan, arXiv 2404.00498): a frozen 2x2 patch-whitening "
                "convolution of 24 filters set from the training images, three blocks of widths 64, "
                "256, 256 (3x3 conv, 2x2 max-pool, BatchNorm, GELU, 3x3 conv, BatchNorm, GELU), "
                "global max-pool and a linear head scaled by 1/9")
    return (f"The seed CNN of the course lab (six 3x3 convolutions 32-32-64-64-64-64, 'same' then 'valid' "
            f"in each pair, 2x2 max-pool and dropout {config['conv_dropout']} after each pair, Dense 512 relu, "
            f"dropout {config['dense_dropout']}, Dense 10 softmax; 276,138 parameters)")


def _optimizer_text(config: dict) -> str:
    schedule = config.get("lr_schedule", "constant")
    warmup = f"{config.get('warmup_fraction', 0.0):.0%} of the steps"
    shape = {
        "cosine": f"cosine to 0 after a linear warm-up over {warmup}, peak",
        "linear": f"linear from 0.2 x the peak up over {warmup}, then down to 0.07 x the peak, peak",
    }.get(schedule, "constant")
    if config["optimizer"] == NESTEROV:
        return (f"SGD with Nesterov momentum {config['momentum']} (airbench94's parametrisation: learning rate "
                f"{shape} {config['learning_rate']} and L2 weight decay {config['weight_decay']} per 1,024 "
                f"images; BatchNorm offsets' rate x {config['bias_lr_scale']}; lookahead "
                f"{'on' if config['lookahead'] else 'off'})")
    return (f"{config['optimizer']} (learning rate {shape} {config['learning_rate']}; weight decay "
            f"{config.get('weight_decay', 0.0)})")


def confusion_table(confusion: list[list[int]]) -> str:
    """A confusion matrix as a markdown table."""
    short = [name[:5] for name in contract.CLASS_NAMES]
    rows = [f"| true \\ predicted | {' | '.join(short)} |", "| --- |" + " ---: |" * len(short)]
    rows += [f"| {name} | {' | '.join(map(str, row))} |" for name, row in zip(contract.CLASS_NAMES, confusion)]
    return "\n".join(rows)
