"""Setting a trained Dirichlet model's calibration scales from held-out galaxies (the maths is in
zoobot.core.calibration): MC samples of the model with its scales at 1, the per-question scales that
make the galaxies' votes most likely, written into the model's ConcentrationScale layer."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras

from zoobot.core.calibration import Calibration, fit_calibration
from zoobot.core.predictions import Predictions
from zoobot.core.schema import Schema
from zoobot.model.network import ConcentrationScale
from zoobot.model.sampling import head_samples, reseed, split_trunk_head

CALIBRATION_SAMPLES = 16  # MC samples per galaxy for the fit (the trunk runs once; only the head repeats)


def calibration_layer(model: keras.Model) -> ConcentrationScale | None:
    """The layer holding the scales: a Dirichlet model's output layer (None for a binomial model, or
    one saved before Zoobot calibrated)."""
    layer = model.layers[-1]
    return layer if isinstance(layer, ConcentrationScale) else None


def calibrate(model: keras.Model, batches: Iterable, schema: Schema, seed: int = 0,
              n_samples: int = CALIBRATION_SAMPLES) -> Calibration | None:
    """Fit and set the scales on `batches` of (images, vote counts) of held-out galaxies; returns what
    was fitted, or None when the model has no scales to set (binomial)."""
    layer = calibration_layer(model)
    if layer is None:
        return None
    layer.scale.assign(np.ones(layer.scale.shape, dtype=np.float32))  # fit from the raw concentrations
    trunk, head = split_trunk_head(model)
    reseed(model, seed)
    samples, counts = [], []
    for images, labels in batches:
        samples.append(head_samples(head, trunk.predict_on_batch(images), n_samples))
        counts.append(np.asarray(labels))
    if not samples:
        raise ValueError("No held-out galaxies to calibrate on: the calibration batches are empty.")
    samples = np.concatenate(samples)
    predictions = Predictions(np.arange(len(samples)).astype(str), samples, "dirichlet", schema)
    fitted = fit_calibration(predictions, np.concatenate(counts))
    layer.scale.assign(fitted.answer_scales(schema))
    return fitted
