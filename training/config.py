"""The one training config: every hyperparameter of a run, with the lab's recipe as defaults.

A run saves it as ``config.json`` next to its checkpoints and the exported model embeds it
in its metadata, so a model always says how it was made. Every field can be set from the
command line (``cifar10-train train --help``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    # --- data ---------------------------------------------------------------------------
    data: str = "../shared/data/cifar10-jpeg/train"
    """Data source: an image folder (one sub-folder per class), the official archive
    cifar-10-python.tar.gz or its extracted cifar-10-batches-py/ folder, or "keras"
    (keras.datasets.cifar10, which downloads)."""
    val_size: int = 5000
    """Images held out, stratified by class, for the validation figures."""
    split_seed: int = 1234
    """Seed of the validation split: the same split on every run with the same data."""

    # --- model and optimisation (the lab's recipe) ---------------------------------------
    epochs: int = 100
    batch_size: int = 256
    optimizer: str = "rmsprop"
    """Any Keras optimizer name; the lab used rmsprop with Keras' defaults."""
    learning_rate: float = 0.001
    """rmsprop's Keras default."""
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5
    seed: int = 42
    """Seeds weights, shuffling and augmentation."""

    # --- augmentation (the lab's ImageDataGenerator settings) ---------------------------
    augment: bool = True
    rotation_degrees: float = 10.0
    width_shift: float = 0.1
    height_shift: float = 0.1
    zoom: float = 0.2
    """Zoom in or out by up to this fraction (ImageDataGenerator's zoom_range=0.2)."""
    horizontal_flip: bool = True
    fill_mode: str = "nearest"

    # --- the exported model -------------------------------------------------------------
    model_name: str = "cifar10-cnn"
    model_version: str = ""
    """Empty: the run's UTC start time, e.g. 2026.11.28-0412."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept with the run (e.g. which arm of a comparison it is)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls(**json.loads(path.read_text()))

    def differences(self, other: "TrainConfig", ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
        """Fields whose values differ, as {name: (self, other)}."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}


def fields() -> list[dataclasses.Field]:
    """The config's fields in declaration order (for building command-line flags)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
