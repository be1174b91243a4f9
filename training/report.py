"""Figures and the model card of a run (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from cifar10_core import contract

JPEG_CAVEAT = (
    "The images are CIFAR-10's training images re-encoded as JPEG (quality 75) by a public "
    "copy of the data set, so pixels differ slightly from the original arrays: figures here "
    "are not directly comparable with published CIFAR-10 results. The official test split "
    "was not used; every figure is a validation figure on a fixed, seeded, stratified split "
    "of the training images."
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


def model_version(config: dict, epochs: int) -> str:
    """The exported weights' version: the run's version and the epoch they come from."""
    return f"{config['model_version']}-e{epochs:03d}"


def best_and_final(history: list[dict]) -> dict:
    best = max(history, key=lambda row: row["val_accuracy"])
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


def model_card(config: dict, history: list[dict], evaluation: dict, parity: dict, split: dict, model_file: str) -> str:
    """The model card (markdown) of an exported model."""
    summary = best_and_final(history)
    per_class = "\n".join(
        f"| {name} | {acc:.1%} |" for name, acc in evaluation["per_class_accuracy"].items()
    )
    augment = (
        f"rotation {config['rotation_degrees']} deg, width/height shift {config['width_shift']}/"
        f"{config['height_shift']}, zoom {config['zoom']}, horizontal flip {config['horizontal_flip']}, "
        f"fill {config['fill_mode']}"
        if config["augment"] else "none"
    )
    interim = (
        f"\n**Interim export:** epoch {summary['epochs']} of a run planned for {config['epochs']} epochs.\n"
        if summary["epochs"] < config["epochs"] else ""
    )
    return f"""# Model card: {config['model_name']} {model_version(config, summary['epochs'])}
{interim}
File: `{model_file}` (ONNX, opset 17). Input `images`: uint8 [N, 32, 32, 3], RGB, NHWC, scaled to
[0, 1] inside the graph. Output `probabilities`: float32 [N, 10] in label order
{', '.join(contract.CLASS_NAMES)}.

## How it was trained
The seed CNN of the course lab (six 3x3 convolutions 32-32-64-64-64-64, 'same' then 'valid'
in each pair, 2x2 max-pool and dropout {config['conv_dropout']} after each pair, Dense 512 relu,
dropout {config['dense_dropout']}, Dense 10 softmax; 276,138 parameters), trained by
`cifar10-train train` for {summary['epochs']} epochs: {config['optimizer']} (learning rate
{config['learning_rate']}), batch {config['batch_size']}, categorical cross-entropy, seed {config['seed']}.
Augmentation (training batches only): {augment}.
Training time: {summary['train_seconds'] / 60:.0f} minutes, the epochs' wall times summed (median epoch
{summary['median_epoch_seconds']:.0f} s; epochs far above it ran on a busy machine or while the job was paused).

## Data
{split['dataset']}, fingerprint `{split['dataset_fingerprint'][:16]}...`:
{split['train_size']} training images and a validation split of {split['val_size']} images
(stratified by class, seed {split['split_seed']}).

{JPEG_CAVEAT}

## Validation figures
Measured on the {evaluation['images']} validation images through onnxruntime (the serving path):

| metric | value |
| --- | --- |
| accuracy | {evaluation['accuracy']:.2%} |
| loss (cross-entropy) | {evaluation['loss']:.4f} |
| best validation accuracy during training | {summary['best_val_accuracy']:.2%} (epoch {summary['best_epoch']}) |
| final training accuracy (augmented batches, dropout on) | {summary['final_train_accuracy']:.2%} |

| class | validation accuracy |
| --- | --- |
{per_class}

Export parity (Keras vs onnxruntime on {parity['images']} validation images): max |delta p| =
{parity['max_abs_delta']:.1e}, {parity['argmax_mismatches']} argmax mismatches.

## Training config
```json
{json.dumps(config, indent=2, sort_keys=True)}
```

## Limits
32x32 pictures of ten classes only: anything else is forced into one of them. Larger images
are resized to 32x32 (core/images.py), which loses most detail.
"""
