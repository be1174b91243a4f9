"""Recipe selection: the lab's defaults exactly, the improved and airbench94 recipes' values,
explicit flags over any of them, and configs saved before the recipes, the test part and the
architectures existed. No TensorFlow."""

from __future__ import annotations

import json

import pytest

from cifar10_training import config as config_module
from cifar10_training.cli import build_parser, config_from_args
from cifar10_training.config import TrainConfig

# The lab's recipe as the reproduction (docs/reproduction.md) ran it.
LAB = {
    "epochs": 100, "batch_size": 256, "optimizer": "rmsprop", "learning_rate": 0.001,
    "lr_schedule": "constant", "warmup_fraction": 0.0, "weight_decay": 0.0, "label_smoothing": 0.0,
    "conv_dropout": 0.25, "dense_dropout": 0.5, "seed": 42, "augment": True,
    "rotation_degrees": 10.0, "width_shift": 0.1, "height_shift": 0.1, "zoom": 0.2,
    "crop_padding": 0, "horizontal_flip": True, "fill_mode": "nearest",
}
IMPROVED = {
    "batch_size": 128, "optimizer": "adamw", "learning_rate": 2e-3, "lr_schedule": "cosine",
    "warmup_fraction": 0.1, "weight_decay": 0.05, "label_smoothing": 0.1, "conv_dropout": 0.05,
    "dense_dropout": 0.25, "rotation_degrees": 0.0, "width_shift": 0.0, "height_shift": 0.0,
    "zoom": 0.0, "crop_padding": 4, "horizontal_flip": True, "fill_mode": "reflect",
}
SPLIT = {"val_size": 2500, "test_size": 2500, "split_seed": 1234}


def _config(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def _subset(config: TrainConfig, keys) -> dict:
    return {k: config.to_dict()[k] for k in keys}


def test_lab_recipe_is_exactly_the_labs_and_the_dataclass_defaults():
    lab = _config("train", "--run-dir", "r", "--recipe", "lab")
    assert _subset(lab, LAB) == LAB and _subset(lab, SPLIT) == SPLIT
    assert lab == TrainConfig() and lab.recipe == "lab"


def test_train_defaults_to_the_improved_recipe_and_compare_to_the_labs():
    improved = _config("train", "--run-dir", "r")
    assert config_module.DEFAULT_RECIPE == "improved" == improved.recipe
    assert _subset(improved, IMPROVED) == IMPROVED and _subset(improved, SPLIT) == SPLIT
    assert improved.epochs == config_module.RECIPES["improved"]["epochs"]
    assert _config("compare", "--out", "o").recipe == "lab"
    assert _subset(_config("compare", "--out", "o"), LAB) == LAB


def test_explicit_flags_override_the_recipe():
    config = _config("train", "--run-dir", "r", "--recipe", "improved", "--epochs", "7", "--batch-size", "64",
                     "--no-horizontal-flip", "--crop-padding", "2", "--test-size", "0")
    assert (config.epochs, config.batch_size, config.horizontal_flip, config.crop_padding, config.test_size) == (
        7, 64, False, 2, 0)
    assert config.optimizer == "adamw" and config.recipe == "improved"
    lab = _config("train", "--run-dir", "r", "--recipe", "lab", "--optimizer", "adamw")
    assert lab.optimizer == "adamw" and lab.batch_size == 256


def test_unknown_recipe_or_schedule_is_refused():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--run-dir", "r", "--recipe", "fast"])
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        _config("train", "--run-dir", "r", "--lr-schedule", "step")
    with pytest.raises(ValueError, match="recipe must be one of lab, improved"):
        config_module.for_recipe("fast")


def test_a_config_saved_before_recipes_means_the_two_way_split_and_the_lab(tmp_path):
    saved = {k: v for k, v in TrainConfig(val_size=5000).to_dict().items()
             if k not in ("test_size", "recipe", "lr_schedule", "warmup_fraction", "weight_decay",
                          "label_smoothing", "crop_padding")}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = TrainConfig.load(tmp_path / "config.json")
    assert (loaded.val_size, loaded.test_size, loaded.recipe) == (5000, 0, "lab")
    assert _subset(loaded, LAB) == LAB


AIRBENCH94 = {
    "arch": "airbench94", "epochs": 10, "batch_size": 512, "optimizer": "sgd-nesterov", "learning_rate": 11.5,
    "momentum": 0.85, "weight_decay": 0.0153, "bias_lr_scale": 64.0, "lr_schedule": "linear",
    "warmup_fraction": 0.23, "label_smoothing": 0.2, "lookahead": True, "conv_dropout": 0.0, "dense_dropout": 0.0,
    "rotation_degrees": 0.0, "width_shift": 0.0, "height_shift": 0.0, "zoom": 0.0, "crop_padding": 2,
    "horizontal_flip": True, "fill_mode": "reflect", "model_name": "cifar10-airbench94",
}


def test_arch_airbench94_brings_its_own_recipe_and_the_same_split():
    config = _config("train", "--run-dir", "r", "--arch", "airbench94")
    assert config.recipe == "airbench94" and _subset(config, AIRBENCH94) == AIRBENCH94
    assert _subset(config, SPLIT) == SPLIT
    assert _config("train", "--run-dir", "r", "--recipe", "airbench94") == config
    assert _config("train", "--run-dir", "r", "--arch", "airbench94", "--epochs", "15").epochs == 15
    assert _config("train", "--run-dir", "r").arch == "seed-cnn" == TrainConfig().arch


@pytest.mark.parametrize("argv, message", [
    (["--arch", "airbench94", "--recipe", "improved"], "recipe improved is for arch seed-cnn, not airbench94"),
    (["--recipe", "airbench94", "--arch", "seed-cnn"], "recipe airbench94 is for arch airbench94, not seed-cnn"),
    (["--arch", "airbench94", "--conv-dropout", "0.1"], "airbench94 has no dropout"),
    (["--lookahead"], "lookahead: for optimizer sgd-nesterov only"),
    (["--arch", "airbench94", "--momentum", "1.0"], r"momentum must be in \[0, 1\), got 1.0"),
])
def test_inconsistent_architecture_settings_are_refused(argv, message):
    with pytest.raises(ValueError, match=message):
        _config("train", "--run-dir", "r", *argv)


def test_a_config_saved_before_architectures_is_the_seed_cnn(tmp_path):
    saved = {k: v for k, v in config_module.for_recipe("improved").to_dict().items()
             if k not in ("arch", "momentum", "bias_lr_scale", "lookahead")}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = TrainConfig.load(tmp_path / "config.json")
    assert (loaded.arch, loaded.recipe, loaded.momentum, loaded.lookahead) == ("seed-cnn", "improved", 0.0, False)
