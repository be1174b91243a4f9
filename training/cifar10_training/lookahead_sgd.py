"""airbench94's optimizer in Keras: SGD with Nesterov momentum, L2 weight decay through the
momentum, a larger learning rate for the BatchNorm offsets, and lookahead.

airbench94 states its learning rate and weight decay per 1,024 images, independent of the
batch size and the momentum (``step_size``, ``l2_coefficient``), on a loss summed over the
batch; Keras averages the loss, so the step size here is the batch size times larger.

Lookahead: every 5 steps the weights are pulled into a moving average of themselves and
set to it, with the average's decay rising as 0.95^5 (step / total)^3; at the last step the
weights become the average. airbench94 also averages the BatchNorm running statistics;
these are not the optimizer's to touch, so here they follow the weights as they are.
The averages are optimizer variables, so they are saved in every checkpoint.
"""

from __future__ import annotations

import keras
from keras import ops

LOOKAHEAD_EVERY = 5
LOOKAHEAD_DECAY = 0.95 ** 5  # the average's decay at the last step
OFFSET_NAME = "beta"  # BatchNormalization's offsets


def step_size(lr_per_1024: float, momentum: float, batch_size: int) -> float:
    """The step size on the batch's mean loss for airbench's learning rate per 1,024 images
    (airbench94 divides it by 1 + 1/(1 - momentum), the growth of a step under Nesterov
    momentum, so that changing the momentum leaves the step size alone)."""
    return lr_per_1024 * batch_size / (1024 * (1 + 1 / (1 - momentum)))


def l2_coefficient(lr_per_1024: float, wd_per_1024: float) -> float:
    """The L2 term added to the mean loss's gradient for airbench's weight decay per 1,024
    images: its decay per step then scales with the learning rate's schedule, as there."""
    return wd_per_1024 / lr_per_1024


@keras.saving.register_keras_serializable(package="cifar10_training")
class LookaheadSGD(keras.optimizers.SGD):
    """Nesterov SGD; ``l2`` is added to each gradient (times the variable), the BatchNorm
    offsets step ``bias_lr_scale`` times further with ``l2 / bias_lr_scale``, and with
    ``lookahead_steps`` (the run's total) lookahead as above."""

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, l2: float = 0.0, bias_lr_scale: float = 1.0,
                 lookahead_steps: int = 0, **kwargs):
        kwargs.pop("nesterov", None)  # always on; a saved config names it
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), nesterov=True, **kwargs)
        self.l2 = l2
        self.bias_lr_scale = bias_lr_scale
        self.lookahead_steps = lookahead_steps

    def build(self, variables) -> None:
        if self.built:
            return
        super().build(variables)
        self._scales = [self.bias_lr_scale if v.name == OFFSET_NAME else 1.0 for v in variables]
        self._averages = []
        if self.lookahead_steps:
            self._averages = self.add_optimizer_variables(variables, "lookahead")
            for average, variable in zip(self._averages, variables):
                average.assign(variable)  # the average starts at the initial weights

    def update_step(self, gradient, variable, learning_rate) -> None:
        index = self._get_variable_index(variable)
        scale = self._scales[index]
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            gradient = gradient + (self.l2 / scale) * variable
        super().update_step(gradient, variable, ops.cast(learning_rate, variable.dtype) * scale)
        if self.lookahead_steps:
            self._lookahead(variable, self._averages[index])

    def _lookahead(self, variable, average) -> None:
        step = self.iterations + 1  # the step just taken
        every = ops.equal(step % LOOKAHEAD_EVERY, 0)
        last = ops.greater_equal(step, self.lookahead_steps)
        fraction = ops.cast(step, variable.dtype) / self.lookahead_steps
        # At the last step between two lookahead steps: decay 1, the weights become the average.
        decay = ops.where(every, LOOKAHEAD_DECAY * fraction ** 3, 1.0)
        now = ops.logical_or(every, last)
        moved = average + ops.where(now, 1.0 - decay, 0.0) * (variable - average)
        self.assign(average, moved)
        self.assign(variable, ops.where(now, moved, variable))

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2, "bias_lr_scale": self.bias_lr_scale,
                "lookahead_steps": self.lookahead_steps}
