"""The airbench94 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv 2404.00498; github KellerJordan/cifar10-airbench), in Keras.

Input: float32 images in [0, 1], shape (32, 32, 3), as the seed CNN's; the exported graph
adds the uint8 -> [0, 1] scaling in front (``cifar10_training.export``). Then:

    normalise by CIFAR-10's channel means and deviations
    patch whitening: 2x2 conv, 24 filters, no padding, frozen (``whitening``), GELU  -> 31x31
    three blocks of widths 64, 256, 256, each
        conv 3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU
                                                              -> 15x15, 7x7, 3x3
    global max-pool, linear 256 -> 10 without bias, times 1/9 (layer ``logits``), softmax

The 3x3 convolutions have no bias; their first ``in`` filters start as the identity
(airbench's partial Dirac initialisation), the rest as PyTorch's default. BatchNorm has no
scale, momentum 0.6 and epsilon 1e-12, as airbench94's.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from cifar10_core.contract import INPUT_SHAPE, NUM_CLASSES
from cifar10_training.tta import LOGITS_LAYER
from cifar10_training.whitening import PatchWhitening, whitening_kernel

WIDTHS = (64, 256, 256)
WHITENING_FILTERS = 24
WHITENING_IMAGES = 5000  # airbench94 whitens on 5,000 training images
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
BATCHNORM_MOMENTUM = 0.6
BATCHNORM_EPSILON = 1e-12
LOGIT_SCALE = 1 / 9


@keras.saving.register_keras_serializable(package="cifar10_training")
def gelu(x):
    """GELU (exact), written with erf: TensorFlow's own uses erfc, which ONNX has no op for."""
    return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def _torch_default_init(seed: int) -> keras.initializers.Initializer:
    # PyTorch's default for conv and linear layers: uniform in +-1/sqrt(fan_in).
    return keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform", seed=seed)


def _conv(filters: int, name: str, seed: int) -> layers.Conv2D:
    return layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=_torch_default_init(seed),
                         name=name)


def _batchnorm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=BATCHNORM_MOMENTUM, epsilon=BATCHNORM_EPSILON, scale=False, name=name)


def _identity_start(conv: layers.Conv2D) -> None:
    """Make the first ``in`` filters of a 3x3 conv pass their input channel through."""
    kernel = np.array(conv.kernel.numpy())
    channels = kernel.shape[2]
    kernel[:, :, :, :channels] = 0.0
    kernel[1, 1, np.arange(channels), np.arange(channels)] = 1.0
    conv.kernel.assign(kernel)


def whitening_sample(count: int, seed: int) -> np.ndarray:
    """Sorted indices of ``WHITENING_IMAGES`` of ``count`` training images (all when fewer),
    drawn at random: airbench94 takes the first 5,000 of CIFAR-10's shuffled training set,
    while an image folder loads class by class, so its first 5,000 would be mostly airplanes."""
    if count <= WHITENING_IMAGES:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, WHITENING_IMAGES, replace=False))


def build_airbench94(train_images: np.ndarray, seed: int = 0) -> keras.Model:
    """The network, its whitening layer set from a seeded sample (``whitening_sample``) of
    ``train_images`` (uint8 or [0, 1] float NHWC)."""
    images = np.asarray(train_images[whitening_sample(len(train_images), seed)], dtype=np.float32)
    if train_images.dtype == np.uint8:
        images /= 255.0
    normalised = (images - np.asarray(CIFAR_MEAN, np.float32)) / np.asarray(CIFAR_STD, np.float32)

    inputs = keras.Input(shape=INPUT_SHAPE, name="image")
    # (x - mean) / std per channel, as a Rescaling: its constants export into the ONNX graph
    # (Normalization's would become extra graph inputs).
    x = layers.Rescaling([1 / s for s in CIFAR_STD], [-m / s for m, s in zip(CIFAR_MEAN, CIFAR_STD)],
                         name="normalise")(inputs)
    whitening = PatchWhitening(WHITENING_FILTERS, name="whitening")
    x = layers.Activation(gelu, name="whitening_gelu")(whitening(x))
    convs = []
    for block, width in enumerate(WIDTHS, start=1):
        first = _conv(width, f"block{block}_conv1", seed + 2 * block)
        second = _conv(width, f"block{block}_conv2", seed + 2 * block + 1)
        convs += [first, second]
        x = first(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Activation(gelu, name=f"block{block}_gelu1")(_batchnorm(f"block{block}_norm1")(x))
        x = second(x)
        x = layers.Activation(gelu, name=f"block{block}_gelu2")(_batchnorm(f"block{block}_norm2")(x))
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(NUM_CLASSES, use_bias=False, kernel_initializer=_torch_default_init(seed + 99), name="head")(x)
    x = layers.Rescaling(LOGIT_SCALE, name=LOGITS_LAYER)(x)
    outputs = layers.Softmax(name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="airbench94")

    whitening.set_kernel(whitening_kernel(normalised))
    for conv in convs:
        _identity_start(conv)
    return model
