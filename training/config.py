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


FILL_MODES = ("nearest", "constant", "reflect", "wrap")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Every hyperparameter of a run; each field's ``help`` is its command-line help."""

    # --- data ---------------------------------------------------------------------------
    data: str = field(default="../shared/data/cifar10-jpeg/train", metadata=_help(
        "data source: an image folder (one sub-folder per class), the official archive "
        "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/ folder, or 'keras' "
        "(keras.datasets.cifar10, which downloads)"))
    val_size: int = field(default=5000, metadata=_help(
        "images held out, stratified by class, for the validation figures"))
    split_seed: int = field(default=1234, metadata=_help(
        "seed of the validation split: the same split on every run with the same data"))

    # --- model and optimisation (the lab's recipe) ---------------------------------------
    epochs: int = field(default=100, metadata=_help("epochs to train (a resumed run continues to this)"))
    batch_size: int = field(default=256, metadata=_help("images per training step"))
    optimizer: str = field(default="rmsprop", metadata=_help(
        "any Keras optimizer name; the lab used rmsprop with Keras' defaults"))
    learning_rate: float = field(default=0.001, metadata=_help("the optimizer's learning rate (rmsprop's Keras default)"))
    conv_dropout: float = field(default=0.25, metadata=_help("dropout after each convolution block"))
    dense_dropout: float = field(default=0.5, metadata=_help("dropout before the output layer"))
    seed: int = field(default=42, metadata=_help("seeds weights, shuffling and augmentation"))

    # --- augmentation (the lab's ImageDataGenerator settings) ---------------------------
    augment: bool = field(default=True, metadata=_help("augment the training images"))
    rotation_degrees: float = field(default=10.0, metadata=_help("random rotation up to this many degrees"))
    width_shift: float = field(default=0.1, metadata=_help("random horizontal shift up to this fraction of the width"))
    height_shift: float = field(default=0.1, metadata=_help("random vertical shift up to this fraction of the height"))
    zoom: float = field(default=0.2, metadata=_help(
        "zoom in or out by up to this fraction (ImageDataGenerator's zoom_range=0.2)"))
    horizontal_flip: bool = field(default=True, metadata=_help("mirror half the images left to right"))
    fill_mode: str = field(default="nearest", metadata=_help(
        "how pixels moved in from outside the image are filled: " + ", ".join(FILL_MODES)))

    # --- the exported model -------------------------------------------------------------
    model_name: str = field(default="cifar10-cnn", metadata=_help("name in the exported model's metadata"))
    model_version: str = field(default="", metadata=_help(
        "version in the exported model's metadata; empty: the run's UTC start time, e.g. 2026.11.28-0412"))

    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept with the run (e.g. which arm of a comparison it is)."""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the values (empty when all are usable)."""
        out = []
        for name in ("val_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            out.append(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("conv_dropout", "dense_dropout", "zoom"):
            if not 0 <= getattr(self, name) < 1:
                out.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("width_shift", "height_shift"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.rotation_degrees < 0:
            out.append(f"rotation_degrees must not be negative, got {self.rotation_degrees}")
        if self.fill_mode not in FILL_MODES:
            out.append(f"fill_mode must be one of {', '.join(FILL_MODES)}, got {self.fill_mode!r}")
        return out

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
