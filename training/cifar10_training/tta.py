"""Test-time augmentation: a model's answer averaged over several views of each image, as
airbench94 evaluates. The exported ONNX graph does it inside (``export --tta``), so a
client sends one image and gets one row of probabilities.

Modes (airbench94's levels 0, 1, 2):

- ``none``: the image alone;
- ``flip``: the image and its mirror, logits averaged;
- ``flip-translate``: half ``flip`` of the image, half the mean of ``flip`` of the image
  shifted one pixel up-left and one pixel down-right (reflect padding): six views.

Logits, not probabilities, are averaged, then a softmax; so a network needs a layer named
``logits`` (airbench94 has one; the seed CNN's softmax sits inside its last Dense layer).
"""

from __future__ import annotations

import numpy as np

from cifar10_training.config import AIRBENCH94

MODES = ("none", "flip", "flip-translate")
LOGITS_LAYER = "logits"
PREDICT_BATCH = 250  # images per call: six views of each go through the network at once


class UnsupportedTTA(Exception):
    """Test-time augmentation asked of a model that cannot do it."""


def check_supported(arch: str, mode: str) -> None:
    """UnsupportedTTA unless ``mode`` works for networks of ``arch``."""
    if mode not in MODES:
        raise UnsupportedTTA(f"--tta must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "none" and arch != AIRBENCH94:
        raise UnsupportedTTA(f"--tta {mode} needs a network with a logits layer ({AIRBENCH94}); {arch} has none")


def _views(images, mode: str) -> tuple[list, list[float]]:
    """The views of a float NHWC batch (TensorFlow ops) and each view's weight."""
    import tensorflow as tf

    def mirrored(x):
        return [x, x[:, :, ::-1]]

    if mode == "none":
        return [images], [1.0]
    if mode == "flip":
        return mirrored(images), [0.5, 0.5]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    up_left = padded[:, :-2, :-2]
    down_right = padded[:, 2:, 2:]
    return mirrored(images) + mirrored(up_left) + mirrored(down_right), [0.25, 0.25] + [0.125] * 4


def probabilities(model, images, mode: str):
    """``model``'s probabilities for a float [0, 1] batch, averaged over the views of ``mode``
    (TensorFlow ops: traced into the exported graph, or run eagerly)."""
    import keras
    import tensorflow as tf

    if mode == "none":
        return model(images, training=False)
    logits_model = keras.Model(model.input, model.get_layer(LOGITS_LAYER).output)
    batch, weights = _views(images, mode)
    logits = logits_model(tf.concat(batch, axis=0), training=False)  # one call for every view
    views_logits = tf.split(logits, len(weights), axis=0)
    return tf.nn.softmax(tf.add_n([weight * view for weight, view in zip(weights, views_logits)]))


def predict(model, images: np.ndarray, mode: str) -> np.ndarray:
    """Probabilities [N, 10] for uint8 images [N, 32, 32, 3], in batches."""
    out = [np.asarray(probabilities(model, images[i:i + PREDICT_BATCH].astype(np.float32) / 255.0, mode))
           for i in range(0, len(images), PREDICT_BATCH)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)
