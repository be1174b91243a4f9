"""Patch whitening: airbench94's first layer, a 2x2 convolution whose filters decorrelate the
2x2x3 pixel patches of the training images.

The filters are the eigenvectors of the patches' covariance, each scaled by
1 / sqrt(eigenvalue + eps), once with each sign (12 eigenvectors, 24 filters). They are set
from the data once, before training, and never trained; the layer's bias is trained.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

KERNEL_SIZE = 2
EPS = 5e-4  # airbench94's
PATCHES_CHUNK = 500  # images per step of the covariance sum: bounds its memory


def whitening_kernel(images: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Kernel [2, 2, C, 4C * 2] of the whitening filters for ``images`` (float, NHWC, already
    normalised as the network sees them). The covariance is uncentred, as airbench94's."""
    channels = images.shape[-1]
    size = KERNEL_SIZE * KERNEL_SIZE * channels
    covariance = np.zeros((size, size))
    patches_seen = 0
    for start in range(0, len(images), PATCHES_CHUNK):
        x = np.asarray(images[start:start + PATCHES_CHUNK], dtype=np.float64)
        # Every 2x2 patch, flattened in (row, column, channel) order: a Conv2D kernel's order.
        patches = np.concatenate([x[:, dy:x.shape[1] - 1 + dy, dx:x.shape[2] - 1 + dx]
                                  for dy in range(KERNEL_SIZE) for dx in range(KERNEL_SIZE)], axis=-1)
        patches = patches.reshape(-1, size)
        covariance += patches.T @ patches
        patches_seen += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / patches_seen)
    order = np.argsort(eigenvalues)[::-1]  # the strongest directions first
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    kernel = np.concatenate([filters, -filters], axis=1)
    return kernel.reshape(KERNEL_SIZE, KERNEL_SIZE, channels, 2 * size).astype(np.float32)


@keras.saving.register_keras_serializable(package="cifar10_training")
class PatchWhitening(keras.layers.Layer):
    """A 2x2 'valid' convolution with a frozen kernel (set by ``set_kernel``) and a trained bias."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape) -> None:
        shape = (KERNEL_SIZE, KERNEL_SIZE, input_shape[-1], self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="zeros", trainable=False)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, inputs):
        return ops.conv(inputs, self.kernel, strides=1, padding="valid") + self.bias

    def compute_output_shape(self, input_shape):
        rows, cols = (None if d is None else d - KERNEL_SIZE + 1 for d in input_shape[1:3])
        return (input_shape[0], rows, cols, self.filters)

    def set_kernel(self, kernel: np.ndarray) -> None:
        self.kernel.assign(kernel)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters}
