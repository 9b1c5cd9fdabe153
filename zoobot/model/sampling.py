"""MC-dropout sampling: the deterministic trunk once, the stochastic head n_samples times.

A Zoobot model is a chain: everything before its first MCDropout layer is deterministic (the
trunk), everything from it on is stochastic (the head). `split_trunk_head` cuts the model there, so
sampling runs the trunk once per galaxy and only the head n_samples times; FACTS.md measured 20x-37x
over n_samples full passes on CPU for a head-only model. With MC dropout in the trunk as well
(`ModelConfig.trunk_dropout_rate`), the cut moves up to the first conv block's dropout and the head
holds most of the network: correct, and correspondingly slower.
"""

from __future__ import annotations

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras
import numpy as np

from zoobot.model.network import MCDropout


def split_trunk_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(trunk: images -> the input of the first MCDropout, head: that -> outputs), sharing the
    model's weights.

    The model's top-level layers are in the order Keras runs them, so the first MCDropout among
    them is where sampling must start. A dropout nested inside a sub-model (a backbone) cannot be
    cut at, and running it once would freeze one mask into every sample: that is refused.
    """
    stochastic = [layer for layer in model.layers if isinstance(layer, MCDropout)]
    if not stochastic:
        raise ValueError(
            f"Model '{model.name}' has no MCDropout layer, so its MC samples would all be equal; build it with "
            "zoobot.model.network.build_model (dropout_rate > 0), or use mc_predict_naive.")
    cut = stochastic[0].input
    trunk = keras.Model(model.input, cut, name=f"{model.name}_trunk")
    nested = [layer.name for layer in all_layers(trunk)
              if isinstance(layer, MCDropout) and layer not in model.layers]
    if nested:
        raise ValueError(
            f"Model '{model.name}' has stochastic layers {nested} inside a sub-model before its first top-level "
            "MCDropout; trunk-once sampling would freeze their masks. Use mc_predict_naive for this model.")
    head = keras.Model(cut, model.output, name=f"{model.name}_head")
    return trunk, head


def all_layers(model: keras.Model):
    """Every layer of the model, nested models too (each before its own layers), depth first."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def reseed(model: keras.Model, seed: int) -> None:
    """Put every random layer's generator (the dropout masks) in a state drawn from `seed`.

    Training reseeds at the start of each epoch and prediction before each pass, so an epoch or a
    prediction is a function of (weights, data, seed) alone: repeating it after a crash gives the
    same numbers the uninterrupted run got.
    """
    for index, layer in enumerate(all_layers(model)):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(np.array([seed, index], dtype=generator.state.dtype))


def mc_predict(model: keras.Model, images, n_samples: int, trunk_head=None, *,
               batch_size: int = 128, with_features: bool = False):
    """MC-dropout samples of the outputs, float32 (B, n_outputs, n_samples): the trunk once, the head
    n_samples times.

    `images`: an array or tensor (B, H, W, C), or a tf.data.Dataset of image batches or of
    (images, labels) batches. Pass `trunk_head=split_trunk_head(model)` when calling repeatedly,
    to reuse the compiled functions. `with_features=True` returns (samples, features) with the
    deterministic trunk's output per galaxy as well (`embedding`), at no extra cost.
    """
    _check_n_samples(n_samples)
    trunk, head = trunk_head if trunk_head is not None else split_trunk_head(model)
    features = np.concatenate([trunk.predict_on_batch(batch) for batch in _batches(images, batch_size)])
    samples = head_samples(head, features, n_samples)
    return (samples, embedding(features)) if with_features else samples


def embedding(features) -> np.ndarray:
    """The trunk's output as one float32 vector per galaxy: as it is when the trunk ends in a dense
    layer (the default, where the head's dropout starts), averaged over the image axes when the
    cut is earlier (dropout in the trunk) and the output is still a feature map."""
    features = np.asarray(features, dtype=np.float32)
    return features.mean(axis=tuple(range(1, features.ndim - 1))) if features.ndim > 2 else features


HEAD_ELEMENTS = 2 ** 24  # head inputs per call (64 MB of float32): bounds memory for a trunk-dropout head


def head_samples(head: keras.Model, features, n_samples: int) -> np.ndarray:
    """n_samples passes of the stochastic head over each galaxy's features, float32
    (B, n_outputs, n_samples).

    Each galaxy's features are repeated n_samples times and the head runs once over the tiled rows
    (every row draws its own dropout mask), in as few calls as HEAD_ELEMENTS allows: for a dense
    head that is one call instead of n_samples, which removes n_samples - 1 Keras dispatches per
    batch (7x faster on 256 galaxies at T=30, 2 CPU cores).
    """
    _check_n_samples(n_samples)
    features = np.asarray(features)
    per_galaxy = max(1, int(np.prod(features.shape[1:])))
    galaxies_per_call = max(1, HEAD_ELEMENTS // (per_galaxy * n_samples))
    chunks = []
    for start in range(0, len(features), galaxies_per_call):
        tiled = np.repeat(features[start:start + galaxies_per_call], n_samples, axis=0)
        out = np.asarray(head.predict_on_batch(tiled), dtype=np.float32)
        chunks.append(out.reshape(-1, n_samples, out.shape[-1]).transpose(0, 2, 1))
    if not chunks:
        return np.zeros((0, head.output_shape[-1], n_samples), np.float32)
    return np.ascontiguousarray(np.concatenate(chunks))


def mc_predict_naive(model: keras.Model, images, n_samples: int, *, batch_size: int = 128) -> np.ndarray:
    """The same samples from n_samples full passes of the model (reference for tests and benchmarks)."""
    _check_n_samples(n_samples)
    per_batch = [np.stack([model.predict_on_batch(batch) for _ in range(n_samples)], axis=-1)
                 for batch in _batches(images, batch_size)]
    return np.concatenate(per_batch)


def _batches(images, batch_size: int):
    """Image batches from an array/tensor or a tf.data.Dataset.

    predict_on_batch rather than predict: predict() sets up a data pipeline on every call (~80 ms
    on 2 CPU cores), which would dominate n_samples calls on a small batch.
    """
    import tensorflow as tf

    if isinstance(images, tf.data.Dataset):
        for element in images:
            yield element[0] if isinstance(element, tuple) else element
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; found {batch_size!r}.")
    if len(images.shape) != 4:
        raise ValueError(f"images must have shape (B, height, width, channels); found {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("images is empty; expected at least one image to predict.")
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size]


def _check_n_samples(n_samples) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(
            f"n_samples must be an integer >= 1 (number of MC-dropout samples); found {n_samples!r}.")




def deterministic_head_predict(head: keras.Model, features) -> np.ndarray:
    """The head with its dropout switched off: the single non-Bayesian pass MC dropout is compared with.

    Keras dropout scales kept units by 1/(1 - rate) while training, so the identity is the
    deterministic network whose average the MC samples estimate. Returns float32, also for the
    bfloat16 features of a bfloat16 trunk.
    """
    x = np.asarray(features, dtype=np.float32)
    for layer in head.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = x if isinstance(layer, MCDropout) else layer(x)
    return np.asarray(x, dtype=np.float32)
