"""The one training config: every hyperparameter of a run, with the lab's recipe as defaults,
and the named recipes (``RECIPES``) that set groups of them.

A run saves it as ``config.json`` next to its checkpoints and the exported model embeds it
in its metadata, so a model always says how it was made. Every field can be set from the
command line (``cifar10-train train --help``); ``--recipe`` picks the defaults the flags
override (``for_recipe``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


FILL_MODES = ("nearest", "constant", "reflect", "wrap")
LR_SCHEDULES = ("constant", "cosine", "linear")
SEED_CNN = "seed-cnn"
AIRBENCH94 = "airbench94"
ARCHS = (SEED_CNN, AIRBENCH94)
NESTEROV = "sgd-nesterov"
"""The optimizer of airbench94's recipe (cifar10_training.lookahead_sgd): its learning rate and
weight decay are per 1,024 images, independent of the batch size and the momentum."""


# The named recipes: what each changes from the dataclass defaults (the lab's recipe).
# ``improved`` changes the training only (same network, same 276,138 parameters), after the
# checked trials in docs/training.md: AdamW with a warm-up and cosine decay to 0 instead of a
# constant rmsprop rate (whose validation accuracy swings 2-3 points per epoch), pad-and-crop
# plus flip instead of rotation and zoom, label smoothing, lighter dropout, batch 128.
RECIPES: dict[str, dict[str, Any]] = {
    "lab": {},
    "improved": {
        "epochs": 90,                  # no more wall time than the lab's 100 (docs/training.md)
        "batch_size": 128,
        "optimizer": "adamw",
        "learning_rate": 2e-3,         # the peak, reached after the warm-up
        "lr_schedule": "cosine",
        "warmup_fraction": 0.1,
        "weight_decay": 0.05,
        "label_smoothing": 0.1,
        "conv_dropout": 0.05,
        "dense_dropout": 0.25,
        "rotation_degrees": 0.0,       # pad-4 crop and flip only
        "width_shift": 0.0,
        "height_shift": 0.0,
        "zoom": 0.0,
        "crop_padding": 4,
        "fill_mode": "reflect",
    },
    # airbench94 (Keller Jordan, arXiv 2404.00498, github KellerJordan/cifar10-airbench): its
    # network and its hyperparameters (docs/training.md says where this differs).
    AIRBENCH94: {
        "arch": AIRBENCH94,
        "model_name": "cifar10-airbench94",
        "epochs": 10,                  # airbench94 trains 9.9 epochs of 50,000 images
        "batch_size": 512,             # airbench94: 1,024; 512 is faster per image on a CPU
        "optimizer": NESTEROV,
        "learning_rate": 11.5,         # per 1,024 images
        "momentum": 0.85,
        "weight_decay": 0.0153,        # per 1,024 images
        "bias_lr_scale": 64.0,
        "lr_schedule": "linear",
        "warmup_fraction": 0.23,
        "label_smoothing": 0.2,
        "lookahead": True,
        "conv_dropout": 0.0,
        "dense_dropout": 0.0,
        "rotation_degrees": 0.0,       # flip and a 2-pixel translation only
        "width_shift": 0.0,
        "height_shift": 0.0,
        "zoom": 0.0,
        "crop_padding": 2,
        "fill_mode": "reflect",
    },
}
RECIPE_NAMES = tuple(RECIPES)
DEFAULT_RECIPE = "improved"
"""What ``cifar10-train train`` uses unless told: the better model in no more wall time."""
ARCH_RECIPES = {SEED_CNN: DEFAULT_RECIPE, AIRBENCH94: AIRBENCH94}
"""The recipe ``cifar10-train train --arch NAME`` uses unless ``--recipe`` is given."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Every hyperparameter of a run; each field's ``help`` is its command-line help."""

    # --- data ---------------------------------------------------------------------------
    data: str = field(default="fetch", metadata=_help(
        "data source: 'fetch' ($CIFAR10_DATA when set, else the official archive "
        "cifar-10-python.tar.gz in $CIFAR10_DATA_CACHE, default data/, downloaded there once "
        "with its MD5 checked), an image folder (one sub-folder per class), the official "
        "archive cifar-10-python.tar.gz or its extracted cifar-10-batches-py/ folder, or "
        "'keras' (keras.datasets.cifar10, which downloads)"))
    # The held-out images are the lab's 5,000-image validation split (seed 1234), cut in two
    # by class: 2,500 for validation (every choice) and 2,500 for the test part (the final
    # figures only). Training keeps the lab's 45,000 images (see data.three_way_split).
    val_size: int = field(default=2500, metadata=_help(
        "images held out, stratified by class, for validation: every choice (epochs, "
        "checkpoint, recipe) is made on them"))
    test_size: int = field(default=2500, metadata=_help(
        "images held out, stratified by class, for the test part: the final figures only; "
        "0 for the old two-way split"))
    split_seed: int = field(default=1234, metadata=_help(
        "seed of the split: the same split on every run with the same data"))

    # --- model and optimisation (the lab's recipe) ---------------------------------------
    arch: str = field(default=SEED_CNN, metadata=_help(
        "the network: seed-cnn (the lab's CNN) or airbench94 (patch-whitened CNN, docs/training.md)"))
    recipe: str = field(default="lab", metadata=_help(
        "named set of defaults the other flags override: " + ", ".join(RECIPE_NAMES)))
    epochs: int = field(default=100, metadata=_help("epochs to train (a resumed run continues to this)"))
    batch_size: int = field(default=256, metadata=_help("images per training step"))
    optimizer: str = field(default="rmsprop", metadata=_help(
        f"any Keras optimizer name (the lab used rmsprop with Keras' defaults), or {NESTEROV}: "
        "airbench94's SGD with Nesterov momentum, BatchNorm offsets' rate scaled, optional lookahead"))
    learning_rate: float = field(default=0.001, metadata=_help(
        "the optimizer's learning rate (rmsprop's Keras default); the peak with a schedule; "
        f"per 1,024 images with {NESTEROV}"))
    lr_schedule: str = field(default="constant", metadata=_help(
        "learning rate per step: constant; cosine (linear warm-up from 0, then cosine to 0 "
        "at the last step); linear (airbench94's: warm-up from 0.2 x the peak, then down to "
        "0.07 x the peak at the last step)"))
    warmup_fraction: float = field(default=0.0, metadata=_help(
        "share of all steps spent warming up (cosine and linear schedules)"))
    weight_decay: float = field(default=0.0, metadata=_help(
        f"decoupled weight decay (adamw; 0: none for other optimizers); with {NESTEROV}: "
        "L2 decay per 1,024 images, as airbench94 counts it"))
    momentum: float = field(default=0.0, metadata=_help(f"Nesterov momentum ({NESTEROV} only)"))
    bias_lr_scale: float = field(default=1.0, metadata=_help(
        f"learning rate of the BatchNorm offsets over the others' ({NESTEROV} only)"))
    lookahead: bool = field(default=False, metadata=_help(
        f"lookahead: every 5 steps the weights move to a moving average of themselves "
        f"({NESTEROV} only; airbench94's schedule)"))
    label_smoothing: float = field(default=0.0, metadata=_help("label smoothing of the cross-entropy"))
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
    crop_padding: int = field(default=0, metadata=_help(
        "pad-and-crop: shift each image by up to this many whole pixels each way (a random "
        "32x32 crop of the image padded by this much, padding per --fill-mode); 0: off"))
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
        for name in ("test_size", "crop_padding"):
            if getattr(self, name) < 0:
                out.append(f"{name} must not be negative, got {getattr(self, name)}")
        if self.arch not in ARCHS:
            out.append(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        elif self.arch == AIRBENCH94 and (self.conv_dropout or self.dense_dropout):
            out.append("airbench94 has no dropout: conv_dropout and dense_dropout must be 0")
        if self.recipe not in RECIPES:
            out.append(f"recipe must be one of {', '.join(RECIPE_NAMES)}, got {self.recipe!r}")
        elif self.arch in ARCHS and self.arch != RECIPES[self.recipe].get("arch", SEED_CNN):
            out.append(f"recipe {self.recipe} is for arch {RECIPES[self.recipe].get('arch', SEED_CNN)}, "
                       f"not {self.arch}")
        if not 0 <= self.momentum < 1:
            out.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.bias_lr_scale <= 0:
            out.append(f"bias_lr_scale must be positive, got {self.bias_lr_scale}")
        if self.optimizer != NESTEROV:
            unused = [name for name, off in (("momentum", 0.0), ("bias_lr_scale", 1.0), ("lookahead", False))
                      if getattr(self, name) != off]
            if unused:
                out.append(f"{', '.join(unused)}: for optimizer {NESTEROV} only")
        if self.lr_schedule not in LR_SCHEDULES:
            out.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.learning_rate <= 0:
            out.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.weight_decay < 0:
            out.append(f"weight_decay must not be negative, got {self.weight_decay}")
        for name in ("conv_dropout", "dense_dropout", "zoom", "warmup_fraction", "label_smoothing"):
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
        return cls.from_dict(json.loads(path.read_text()))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A saved config; one saved before a field existed gets what it meant then (the
        two-way split, the lab's recipe), not today's default."""
        return cls(**{**SAVED_BEFORE_FIELD, **values})

    def differences(self, other: "TrainConfig", ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
        """Fields whose values differ, as {name: (self, other)}."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}


# Configs saved before these fields existed: a two-way split of val_size (5,000) images.
SAVED_BEFORE_FIELD: dict[str, Any] = {"test_size": 0, "recipe": "lab"}


def for_recipe(recipe: str, **overrides: Any) -> TrainConfig:
    """The config of ``recipe`` with ``overrides`` (explicit flags) on top; ValueError for an
    unknown recipe or unusable values."""
    if recipe not in RECIPES:
        raise ValueError(f"invalid training config: recipe must be one of {', '.join(RECIPE_NAMES)}, got {recipe!r}")
    return TrainConfig(**{**RECIPES[recipe], **overrides, "recipe": recipe})


def default_recipe(arch: str | None) -> str:
    """The recipe ``train`` uses for ``arch`` when no ``--recipe`` is given."""
    return ARCH_RECIPES.get(arch or SEED_CNN, DEFAULT_RECIPE)


def fields() -> list[dataclasses.Field]:
    """The config's fields in declaration order (for building command-line flags)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
