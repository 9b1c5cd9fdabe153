"""What a model's outputs mean: the one description every saved, logged or served model carries.

A Zoobot model maps images (values 0..255) to either Dirichlet concentrations over every answer of
a decision tree or the probability of one question's first answer. Nothing in the Keras file says
which, nor which tree: `ModelMeta` does. It is written beside the weights (`zoobot.json` of a
bundle), into the MLflow model's metadata, and into prediction files, and read back by everything
that interprets outputs (predict, evaluate, the campaign, the served pyfunc).

No TensorFlow or MLflow here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from zoobot.core.predictions import KINDS as OUTPUTS
from zoobot.core.predictions import Predictions
from zoobot.core.schema import Schema


@dataclass(frozen=True)
class ModelMeta:
    schema: dict  # Schema.to_dict(): the decision tree travels with the model
    output: str  # "dirichlet" (concentrations per answer) or "binomial" (p of one question's first answer)
    question: str | None = None  # binomial: the question modelled
    image_shape: tuple[int, int, int] | None = None  # height, width, channels the model takes
    val_loss: float | None = None  # best validation loss of the training that made it
    extra: dict = field(default_factory=dict, compare=False)  # keys a newer Zoobot wrote: kept, not read

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise ValueError(f"Model output must be one of {list(OUTPUTS)}; found {self.output!r}.")
        if self.output == "binomial" and not self.question:
            # "no question" means the schema's first, as when the model was trained (models saved
            # before this was resolved at saving carry None)
            object.__setattr__(self, "question", self.schema_obj.question_names[0])

    @classmethod
    def from_dict(cls, data: dict) -> ModelMeta:
        """From a bundle's zoobot.json or a logged model's metadata (older ones lack the later keys)."""
        known = {"schema", "output", "question", "image_shape", "val_loss"}
        shape = data.get("image_shape")
        return cls(schema=data["schema"], output=data["output"], question=data.get("question") or None,
                   image_shape=tuple(shape) if shape else None, val_loss=data.get("val_loss"),
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        shape = list(self.image_shape) if self.image_shape else None
        return {**self.extra, "schema": self.schema, "output": self.output, "question": self.question,
                "image_shape": shape, "val_loss": self.val_loss}

    @functools.cached_property
    def schema_obj(self) -> Schema:
        return Schema.from_dict(self.schema)

    def predictions(self, ids, samples: np.ndarray, features: np.ndarray | None = None) -> Predictions:
        """Samples (galaxies, outputs, T) of this model as a Predictions value (with each galaxy's
        embedding, `features`, when given)."""
        return Predictions(np.asarray(ids), samples, self.output, self.schema_obj, self.question, features)
