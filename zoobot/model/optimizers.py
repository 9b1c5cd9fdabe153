"""Adam with a learning rate per layer: the top of a finetuned trunk learns slower than its new head,
and each block further down slower again (zoobot.model.finetune).

Adam is invariant to the scale of the gradient, so scaling gradients would change nothing; the
multiplier scales the step itself, inside Adam's update of each variable.
"""

from __future__ import annotations

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras


@keras.saving.register_keras_serializable(package="zoobot")
class LayerwiseAdam(keras.optimizers.Adam):
    """Adam (with decoupled weight decay when `weight_decay` is set) whose step for a variable is
    the learning rate times its layer's multiplier; layers not named in `multipliers` take 1."""

    def __init__(self, multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.multipliers = {str(k): float(v) for k, v in (multipliers or {}).items()}

    def build(self, variables):
        super().build(variables)
        # one multiplier per variable, in the order the base class indexes them
        self._scales = [self.multiplier_of(v) for v in variables]

    def multiplier_of(self, variable) -> float:
        """The multiplier of the innermost layer named in a variable's path (layer/.../weight)."""
        for part in reversed(str(variable.path).split("/")[:-1]):
            if part in self.multipliers:
                return self.multipliers[part]
        return 1.0

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate if scale == 1.0 else learning_rate * scale)

    def get_config(self) -> dict:
        return {**super().get_config(), "multipliers": self.multipliers}
