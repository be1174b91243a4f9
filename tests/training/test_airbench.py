"""airbench94 (``--arch airbench94``): the network layer for layer, its patch whitening, its
optimizer against a reference of airbench's update, its schedule, and a few training steps.
Tiny synthetic data, real Keras."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.training

# (layer name, output shape, parameters) of the layers that have weights, in order.
AIRBENCH94_TABLE = [
    ("whitening", (31, 31, 24), 2 * 2 * 3 * 24 + 24),
    ("block1_conv1", (31, 31, 64), 3 * 3 * 24 * 64),
    ("block1_norm1", (15, 15, 64), 3 * 64),
    ("block1_conv2", (15, 15, 64), 3 * 3 * 64 * 64),
    ("block1_norm2", (15, 15, 64), 3 * 64),
    ("block2_conv1", (15, 15, 256), 3 * 3 * 64 * 256),
    ("block2_norm1", (7, 7, 256), 3 * 256),
    ("block2_conv2", (7, 7, 256), 3 * 3 * 256 * 256),
    ("block2_norm2", (7, 7, 256), 3 * 256),
    ("block3_conv1", (7, 7, 256), 3 * 3 * 256 * 256),
    ("block3_norm1", (3, 3, 256), 3 * 256),
    ("block3_conv2", (3, 3, 256), 3 * 3 * 256 * 256),
    ("block3_norm2", (3, 3, 256), 3 * 256),
    ("head", (10,), 256 * 10),
]


def _images(count: int, seed: int = 0) -> np.ndarray:
    """uint8 images with correlated channels and neighbouring pixels, like photographs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (count, 16, 16, 1)).repeat(2, axis=1).repeat(2, axis=2)
    return np.clip(base + rng.integers(-20, 21, (count, 32, 32, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    from cifar10_training.airbench import build_airbench94

    return build_airbench94(_images(32))


def test_airbench94_has_its_layers_and_widths(model):
    got = [(layer.name, tuple(layer.output.shape[1:]), layer.count_params())
           for layer in model.layers if layer.weights]
    assert got == AIRBENCH94_TABLE
    assert model.count_params() == sum(row[2] for row in AIRBENCH94_TABLE) == 1_973_944
    assert [w.name for w in model.get_layer("whitening").trainable_weights] == ["bias"]  # the kernel is frozen
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            assert (layer.momentum, layer.epsilon, layer.scale, layer.center) == (0.6, 1e-12, False, True)
        if type(layer).__name__ == "Conv2D":
            assert layer.kernel_size == (3, 3) and layer.padding == "same" and not layer.use_bias
    assert not model.get_layer("head").use_bias
    assert model.get_layer("logits").scale == pytest.approx(1 / 9)
    assert type(model.get_layer("pool")).__name__ == "GlobalMaxPooling2D"
    # The first 64 filters of block2_conv1 start as the identity on their 64 input channels.
    kernel = model.get_layer("block2_conv1").kernel.numpy()
    np.testing.assert_array_equal(kernel[1, 1, :, :64], np.eye(64))
    assert kernel[:, :, :, :64].sum() == 64 and kernel[:, :, :, 64:].std() > 0


def test_whitening_sample_draws_from_every_class_of_a_folder_loaded_class_by_class():
    from cifar10_training.airbench import WHITENING_IMAGES, whitening_sample

    labels = np.repeat(np.arange(10), 4500)  # an image folder's order: class by class
    picked = whitening_sample(len(labels), seed=42)
    assert len(picked) == len(np.unique(picked)) == WHITENING_IMAGES
    assert np.bincount(labels[picked], minlength=10).min() > 400  # about 500 of each class
    np.testing.assert_array_equal(picked, whitening_sample(len(labels), seed=42))  # seeded
    assert not np.array_equal(picked, whitening_sample(len(labels), seed=43))
    np.testing.assert_array_equal(whitening_sample(32, seed=42), np.arange(32))  # fewer: all of them


def test_whitening_filters_decorrelate_the_patches():
    from cifar10_training.whitening import EPS, whitening_kernel

    images = _images(40).astype(np.float64) / 255.0
    kernel = whitening_kernel(images)
    assert kernel.shape == (2, 2, 3, 24)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])  # both signs
    patches = np.concatenate([images[:, dy:31 + dy, dx:31 + dx] for dy in (0, 1) for dx in (0, 1)], axis=-1)
    patches = patches.reshape(-1, 12)
    outputs = patches @ kernel[..., :12].reshape(12, 12)
    covariance = outputs.T @ outputs / len(outputs)
    eigenvalues = np.sort(np.linalg.eigvalsh(patches.T @ patches / len(patches)))[::-1]
    # Decorrelated, each output's variance lambda / (lambda + eps): 1 but for the faintest.
    np.testing.assert_allclose(covariance, np.diag(eigenvalues / (eigenvalues + EPS)), atol=1e-4)


def _reference_airbench_steps(start: dict, grads: list[dict], lr: float, momentum: float, l2: float,
                              scales: dict, total: int) -> dict:
    """airbench94's update as its PyTorch code does it: SGD, Nesterov momentum, weight decay
    l2/scale in the gradient, learning rate x scale; lookahead every 5 steps."""
    weights = {k: v.copy() for k, v in start.items()}
    average = {k: v.copy() for k, v in start.items()}
    buffers = {k: np.zeros_like(v) for k, v in start.items()}
    for step, grad in enumerate(grads, start=1):
        for k in weights:
            g = grad[k] + (l2 / scales[k]) * weights[k]
            buffers[k] = momentum * buffers[k] + g
            weights[k] = weights[k] - lr * scales[k] * (g + momentum * buffers[k])
        if step % 5 == 0:
            decay = 0.95 ** 5 * (step / total) ** 3
            for k in weights:
                average[k] += (1 - decay) * (weights[k] - average[k])
                weights[k] = average[k].copy()
        elif step == total:
            weights = {k: average[k].copy() for k in weights}
    return weights


def test_the_optimizer_steps_as_airbench94_does():
    import keras

    from cifar10_training.lookahead_sgd import LookaheadSGD

    rng = np.random.default_rng(3)
    start = {"kernel": rng.normal(size=(3, 4)).astype(np.float32), "beta": rng.normal(size=4).astype(np.float32)}
    variables = {k: keras.Variable(v, name=k) for k, v in start.items()}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()} for _ in range(12)]
    optimizer = LookaheadSGD(0.05, momentum=0.85, l2=0.02, bias_lr_scale=4.0, lookahead_steps=12)
    for grad in grads:
        optimizer.apply([grad[k] for k in variables], list(variables.values()))
    expected = _reference_airbench_steps(start, grads, 0.05, 0.85, 0.02, {"kernel": 1.0, "beta": 4.0}, total=12)
    for k, variable in variables.items():
        np.testing.assert_allclose(variable.numpy(), expected[k], rtol=1e-5, atol=1e-6)


def test_airbench_learning_rate_and_weight_decay_scaling_and_schedule():
    from cifar10_training.config import for_recipe
    from cifar10_training.lookahead_sgd import l2_coefficient, step_size
    from cifar10_training.train import learning_rate

    assert step_size(11.5, 0.85, 1024) == pytest.approx(1.5)  # 11.5 / (1 + 1/0.15)
    assert step_size(11.5, 0.85, 512) == pytest.approx(0.75)
    assert l2_coefficient(11.5, 0.0153) == pytest.approx(0.0153 / 11.5)
    # the recipe's batch of 512: a peak step size of 0.75; 100 steps, 23 of warm-up
    schedule = learning_rate(for_recipe("airbench94", epochs=10), steps_per_epoch=10)
    rate = {step: float(schedule(step)) for step in (0, 23, 100, 150)}
    assert rate[0] == pytest.approx(0.2 * 0.75) and rate[23] == pytest.approx(0.75)
    assert rate[100] == pytest.approx(0.07 * 0.75) and rate[150] == pytest.approx(0.07 * 0.75)
    at_1024 = learning_rate(for_recipe("airbench94", epochs=10, batch_size=1024), steps_per_epoch=10)
    assert float(at_1024(23)) == pytest.approx(1.5)  # airbench94's own batch and step size


def test_a_few_steps_train_everything_but_the_whitening_kernel():
    import keras

    from cifar10_training import architectures
    from cifar10_training.config import for_recipe
    from cifar10_training.train import compile_model

    config = for_recipe("airbench94", epochs=2, batch_size=8)
    images, labels = _images(24, seed=5), np.arange(24) % 10
    model = architectures.build(config, images)
    before = {w.path: w.numpy().copy() for w in model.weights}
    compile_model(model, config, steps_per_epoch=3)
    history = model.fit(images.astype(np.float32) / 255.0, keras.utils.to_categorical(labels, 10), batch_size=8,
                        epochs=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all() and int(model.optimizer.iterations.numpy()) == 6
    after = {w.path: w.numpy() for w in model.weights}
    assert np.array_equal(before["whitening/kernel"], after["whitening/kernel"])
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert {"whitening/bias", "block1_conv1/kernel", "block3_norm2/beta", "head/kernel"} <= changed
    # The last step ends on the lookahead average.
    for variable, average in zip(model.trainable_variables, model.optimizer._averages):
        np.testing.assert_array_equal(variable.numpy(), average.numpy())
