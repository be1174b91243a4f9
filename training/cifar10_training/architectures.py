"""The networks ``cifar10-train train --arch`` builds, and checkpoints of any of them loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifar10_training.config import AIRBENCH94, TrainConfig


def build(config: TrainConfig, train_images: np.ndarray):
    """The untrained network of ``config.arch`` (a keras.Model); airbench94's whitening layer
    is set from ``train_images`` (the training part of the split, uint8)."""
    if config.arch == AIRBENCH94:
        from cifar10_training.airbench import build_airbench94

        return build_airbench94(train_images, seed=config.seed)
    from cifar10_training.model import build_seed_cnn

    return build_seed_cnn(config.conv_dropout, config.dense_dropout)


def load_checkpoint(path: Path):
    """A run's checkpoint (model, optimizer state and schedule), whichever network it holds."""
    import keras

    # Imported for their registration: airbench94's activation and layer, optimizer, schedule.
    from cifar10_training import airbench, lookahead_sgd, schedules  # noqa: F401

    return keras.models.load_model(path)
