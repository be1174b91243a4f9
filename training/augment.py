"""Training-time augmentation equivalent to the lab's ImageDataGenerator, as Keras
preprocessing layers applied in ``tf.data`` (never inside the exported model).

ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
zoom_range=0.2, horizontal_flip=True, fill_mode="nearest") maps to RandomRotation(10/360),
RandomTranslation(0.1, 0.1), RandomZoom(+-0.2) and RandomFlip("horizontal"), each with
nearest fill.
"""

from __future__ import annotations

import keras
from keras import layers

from training.config import TrainConfig


def build_augmenter(config: TrainConfig) -> keras.Sequential:
    steps: list[layers.Layer] = []
    seed = config.seed
    if config.rotation_degrees:
        steps.append(layers.RandomRotation(config.rotation_degrees / 360.0, fill_mode=config.fill_mode, seed=seed))
    if config.width_shift or config.height_shift:
        steps.append(
            layers.RandomTranslation(
                config.height_shift, config.width_shift, fill_mode=config.fill_mode, seed=seed + 1
            )
        )
    if config.zoom:
        steps.append(layers.RandomZoom((-config.zoom, config.zoom), fill_mode=config.fill_mode, seed=seed + 2))
    if config.horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 3))
    return keras.Sequential(steps, name="augment")
