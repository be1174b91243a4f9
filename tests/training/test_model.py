"""The seed CNN layer for layer, and the augmentation's geometry."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.training

# The lab's model.summary(): (layer type, output shape, parameters).
LAB_TABLE = [
    ("Conv2D", (32, 32, 32), 896),
    ("Conv2D", (30, 30, 32), 9248),
    ("MaxPooling2D", (15, 15, 32), 0),
    ("Dropout", (15, 15, 32), 0),
    ("Conv2D", (15, 15, 64), 18496),
    ("Conv2D", (13, 13, 64), 36928),
    ("MaxPooling2D", (6, 6, 64), 0),
    ("Dropout", (6, 6, 64), 0),
    ("Conv2D", (6, 6, 64), 36928),
    ("Conv2D", (4, 4, 64), 36928),
    ("MaxPooling2D", (2, 2, 64), 0),
    ("Dropout", (2, 2, 64), 0),
    ("Flatten", (256,), 0),
    ("Dense", (512,), 131584),
    ("Dropout", (512,), 0),
    ("Dense", (10,), 5130),
]


def test_seed_cnn_matches_the_lab_table():
    from cifar10_training.model import SEED_CNN_PARAMETERS, build_seed_cnn

    model = build_seed_cnn()
    got = [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params()) for layer in model.layers]
    assert got == LAB_TABLE
    assert model.count_params() == SEED_CNN_PARAMETERS == 276_138
    paddings = [layer.padding for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert paddings == ["same", "valid"] * 3
    assert model.layers[-1].activation.__name__ == "softmax"


def _ramp() -> np.ndarray:
    """A 1x32x32x3 image whose value is its column index."""
    return np.tile(np.arange(32, dtype=np.float32)[None, None, :, None], (1, 32, 1, 3))


def test_augmentation_switched_off_is_the_identity():
    from cifar10_training.augment import augment_batch
    from cifar10_training.config import TrainConfig

    off = TrainConfig(rotation_degrees=0, width_shift=0, height_shift=0, zoom=0, horizontal_flip=False)
    np.testing.assert_allclose(augment_batch(_ramp(), off).numpy(), _ramp(), atol=1e-4)


def test_flip_mirrors_and_shift_stays_within_range():
    import tensorflow as tf

    from cifar10_training.augment import augment_batch
    from cifar10_training.config import TrainConfig

    tf.random.set_seed(0)
    batch = np.repeat(_ramp(), 64, axis=0)
    flip_only = TrainConfig(rotation_degrees=0, width_shift=0, height_shift=0, zoom=0, horizontal_flip=True)
    out = augment_batch(batch, flip_only).numpy()
    mirrored = np.all(np.isclose(out, batch[:, :, ::-1]), axis=(1, 2, 3))
    same = np.all(np.isclose(out, batch), axis=(1, 2, 3))
    assert np.all(mirrored | same) and 10 < mirrored.sum() < 54

    shift_only = TrainConfig(rotation_degrees=0, width_shift=0.1, height_shift=0, zoom=0, horizontal_flip=False)
    out = augment_batch(batch, shift_only).numpy()
    offsets = out[:, 16, 16, 0] - 16  # the ramp shows where each pixel came from
    assert np.all(np.abs(offsets) <= 0.1 * 32 + 1e-3) and offsets.std() > 0.5


def test_full_lab_augmentation_keeps_shape_range_and_varies():
    from cifar10_training.augment import augment_batch
    from cifar10_training.config import TrainConfig

    images = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    out = augment_batch(images, TrainConfig()).numpy()
    assert out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)


def test_pad_and_crop_shifts_by_whole_pixels_and_keeps_shape_and_dtype():
    import tensorflow as tf

    from cifar10_training.augment import augment_batch
    from cifar10_training.config import for_recipe

    tf.random.set_seed(1)
    crop_only = for_recipe("improved", horizontal_flip=False, fill_mode="constant")
    batch = np.repeat(_ramp(), 256, axis=0)
    out = augment_batch(batch, crop_only).numpy()
    assert out.shape == batch.shape and out.dtype == np.float32
    offsets = out[:, 16, 16, 0] - 16  # the ramp shows where each pixel came from
    np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-4)  # exact, no blur
    assert set(np.round(offsets).astype(int)) == set(range(-4, 5))  # every shift in [-4, 4]
    # Whole columns moved in from outside are the padding (zeros with fill 'constant').
    shifted = np.round(offsets).astype(int)
    k = int(np.argmax(shifted == 4))
    np.testing.assert_array_equal(out[k, :, -4:], 0.0)
    np.testing.assert_allclose(out[k, 4:-4, :-4, 0], batch[k, 4:-4, 4:, 0], atol=1e-4)  # rows: a vertical shift


def test_improved_recipe_augmentation_varies_and_stays_in_range():
    from cifar10_training.augment import augment_batch
    from cifar10_training.config import for_recipe

    images = np.random.default_rng(0).random((16, 32, 32, 3)).astype(np.float32)
    out = augment_batch(images, for_recipe("improved")).numpy()
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, images)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from cifar10_training.config import for_recipe
    from cifar10_training.train import learning_rate

    config = for_recipe("improved", epochs=10, learning_rate=0.002, warmup_fraction=0.1)
    schedule = learning_rate(config, steps_per_epoch=100)  # 1,000 steps, 100 of warm-up
    rate = {step: float(schedule(step)) for step in (0, 50, 100, 550, 1000, 1200)}
    assert rate[0] == 0.0
    assert rate[50] == pytest.approx(0.001)  # linear warm-up
    assert rate[100] == pytest.approx(0.002)  # the peak
    assert rate[550] == pytest.approx(0.001, rel=1e-4)  # half-way through the cosine
    assert rate[1000] == pytest.approx(0.0, abs=1e-9) and rate[1200] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(for_recipe("lab"), steps_per_epoch=100) == 0.001  # constant


def test_compiled_recipes_have_their_optimizer_and_loss():
    from cifar10_training.config import for_recipe
    from cifar10_training.model import build_seed_cnn
    from cifar10_training.train import compile_model, current_learning_rate

    for recipe, optimizer, smoothing in (("lab", "RMSprop", 0.0), ("improved", "AdamW", 0.1)):
        config = for_recipe(recipe)
        model = build_seed_cnn(config.conv_dropout, config.dense_dropout)
        compile_model(model, config, steps_per_epoch=352)
        assert type(model.optimizer).__name__ == optimizer
        assert model.loss.get_config()["label_smoothing"] == smoothing
        assert model.count_params() == 276_138  # the recipe changes the training only
    assert model.optimizer.weight_decay == pytest.approx(0.05)
    assert current_learning_rate(model.optimizer) == 0.0  # the warm-up starts at 0
    assert [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"] == [0.05] * 3 + [0.25]
