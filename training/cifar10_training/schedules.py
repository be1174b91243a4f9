"""airbench94's learning-rate schedule, saved with every checkpoint like Keras' own schedules."""

from __future__ import annotations

import keras
from keras import ops

WARMUP_START = 0.2  # of the peak, at step 0
FINAL = 0.07  # of the peak, at the last step


@keras.saving.register_keras_serializable(package="cifar10_training")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from 0.2 x ``peak`` at step 0 up to ``peak`` at ``warmup_steps``, then linear down
    to 0.07 x ``peak`` at ``total_steps`` (and there after)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.minimum(ops.cast(step, "float32"), float(self.total_steps))
        up = WARMUP_START + (1.0 - WARMUP_START) * step / max(self.warmup_steps, 1)
        down_steps = max(self.total_steps - self.warmup_steps, 1)
        down = 1.0 + (FINAL - 1.0) * (step - self.warmup_steps) / down_steps
        return self.peak * ops.where(step < self.warmup_steps, up, down)

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}
