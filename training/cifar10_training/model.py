"""The seed CNN of the course lab, layer for layer (276,138 parameters).

Input: float32 images in [0, 1], shape (32, 32, 3). The exported ONNX graph adds the
uint8 -> [0, 1] scaling in front (``cifar10_training.export``), so clients send raw pixels.
"""

from __future__ import annotations

import keras
from keras import layers

from cifar10_core.contract import INPUT_SHAPE, NUM_CLASSES

SEED_CNN_PARAMETERS = 276_138


def build_seed_cnn(conv_dropout: float = 0.25, dense_dropout: float = 0.5) -> keras.Model:
    """Three blocks of two 3x3 convs ('same' then 'valid'), 2x2 max-pool and dropout; then
    Flatten, Dense 512 relu, dropout, Dense 10 softmax."""
    model = keras.Sequential(name="seed_cnn")
    model.add(keras.Input(shape=INPUT_SHAPE, name="image"))
    for filters in (32, 64, 64):
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.Conv2D(filters, 3, padding="valid", activation="relu"))
        model.add(layers.MaxPooling2D(2))
        model.add(layers.Dropout(conv_dropout))
    model.add(layers.Flatten())
    model.add(layers.Dense(512, activation="relu"))
    model.add(layers.Dropout(dense_dropout))
    model.add(layers.Dense(NUM_CLASSES, activation="softmax"))
    return model
