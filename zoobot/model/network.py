"""Bayesian CNNs: a deterministic conv trunk, then a dense head with MC dropout.

    images (B, H, W, C), pixel values 0..255
      -> trunk: rescale, convolutions, Dense(dense_units) named "features"
      -> head:  MCDropout -> Dense(n_outputs, sigmoid) -> Rescaling to the output's range

Every stochastic layer sits in the head, so MC sampling can run the trunk once and only the head
n_samples times (`mc_predict`); FACTS.md measured 20x-37x over n_samples full passes on CPU.

MCDropout drops on every call path, including `model.predict`, `model(x, training=False)` and
after save/load: the Bayesian predictions (and BALD, and coverage) depend on it. A stock
`Dropout(...)(x, training=True)` is silently switched off by Keras 3 under predict.

Precision: with `precision="bfloat16"` the trunk computes in bfloat16 (weights stay float32,
Keras' "mixed_bfloat16" policy) while the head -- MC dropout, the output layer and the
concentrations or p -- stays float32, so the loss and the Dirichlet/binomial maths never see
bfloat16. Each layer carries its own policy (saved with the model), so building one never changes
Keras' global policy for the rest of the process (`zoobot.model.precision` decides which).

(Slightly over the ~400-line guide: building the model, splitting it into trunk and head for MC
sampling, and saving it as a bundle all depend on the same layer layout, which is read best in one
place.)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from zoobot.core.model_meta import ModelMeta
from zoobot.core.schema import Schema
from zoobot.model import precision as dtypes
from zoobot.model.losses import OUTPUTS, resolve_question

ARCHITECTURES = ("vgg", "efficientnetb0")
FEATURES_LAYER = "features"
# Dirichlet concentrations lie in [1, 100] (as Zoobot's 1 + 99 * sigmoid): a bounded output keeps
# the lgamma terms of the loss and their gradients in a range where training stays stable.
CONCENTRATION_MIN, CONCENTRATION_MAX = 1.0, 100.0
# A binomial p lies in [1e-6, 1 - 1e-6], so log p and log(1 - p) stay finite in float32.
PROBABILITY_MARGIN = 1e-6
EFFICIENTNET_MIN_SIZE = 32  # keras.applications refuses smaller inputs



@dataclass(frozen=True)
class ModelConfig:
    architecture: str = field(default="vgg", metadata={
        "help": "'vgg' (small CNN as in Walmsley et al. 2020) or 'efficientnetb0' (keras.applications, from scratch unless weights_path)."})
    output: str = field(default="dirichlet", metadata={
        "help": "'dirichlet' (concentrations for every answer of the decision tree) or 'binomial' "
                "(probability of the first answer of one question)."})
    question: str = field(default="", metadata={
        "help": "binomial only: the question to model; empty = the schema's first question."})
    filters: str = field(default="32,64,128,128", metadata={
        "help": "vgg only: filters of each conv block, comma-separated; a block is two 3x3 convs and a "
                "2x2 max-pool."})
    dense_units: int = field(default=128, metadata={
        "help": "Units of the dense 'features' layer before the MC dropout."})
    dropout_rate: float = field(default=0.5, metadata={
        "help": "MC dropout rate on the dense head, in [0, 1); dropout stays on at prediction time."})
    weights_path: str = field(default="", metadata={
        "help": "efficientnetb0 only: a local weights file for the backbone (.h5 as keras.applications "
                "downloads it, or .weights.h5); empty = train from scratch."})
    precision: str = field(default="float32", metadata={
        "help": "'float32', 'bfloat16' (trunk computes in bfloat16 with float32 weights; the output, loss and "
                "metrics stay float32) or 'auto' (bfloat16 where the CPU has amx_bf16/avx512_bf16 or the GPU "
                "supports bf16 and the architecture is measured faster in it: vgg; float32 elsewhere)."})

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {list(ARCHITECTURES)}; found {self.architecture!r}.")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}; found {self.output!r}.")
        if not isinstance(self.question, str):
            raise ValueError(f"question must be a question name (a string); found {self.question!r}.")
        if self.output == "dirichlet" and self.question:
            raise ValueError(
                f"question={self.question!r} is only used with output='binomial'; a dirichlet model "
                "predicts every question. Leave question empty or set output='binomial'."
            )
        self.filter_list  # parses and validates
        if isinstance(self.dense_units, bool) or not isinstance(self.dense_units, (int, np.integer)) \
                or self.dense_units < 1:
            raise ValueError(f"dense_units must be an integer >= 1; found {self.dense_units!r}.")
        if isinstance(self.dropout_rate, bool) or not isinstance(self.dropout_rate, (int, float)) \
                or not 0 <= self.dropout_rate < 1:
            raise ValueError(
                f"dropout_rate must be a number in [0, 1) (0 = no MC dropout, 0.5 as in Walmsley et al. "
                f"2020); found {self.dropout_rate!r}."
            )
        if not isinstance(self.weights_path, str):
            raise ValueError(
                f"weights_path must be a path (a string, '' for none); found {self.weights_path!r}.")
        if self.weights_path and self.architecture != "efficientnetb0":
            raise ValueError(
                f"weights_path is only used with architecture='efficientnetb0' (a keras.applications "
                f"backbone); found architecture={self.architecture!r}. To continue training a saved model, "
                "load it with keras.models.load_model instead."
            )
        if self.precision not in dtypes.PRECISIONS:
            raise ValueError(f"precision must be one of {list(dtypes.PRECISIONS)}; found {self.precision!r}.")

    @property
    def filter_list(self) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in str(self.filters).split(","))
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            raise ValueError(
                f"filters must be positive integers separated by commas, one per conv block, e.g. "
                f"'32,64,128,128'; found {self.filters!r}."
            )
        return values


@keras.saving.register_keras_serializable(package="zoobot")
class MCDropout(keras.layers.Dropout):
    """Dropout that is on whatever the caller's training flag says: the MC sampling of the head."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


def custom_objects() -> dict:
    """What keras.models.load_model needs to rebuild a zoobot model in a process that has not
    imported zoobot (the registry only knows classes that were imported)."""
    from zoobot.model.losses import QuestionNLL, VoteFractionRMSE, VoteLoss

    return {cls.__name__: cls for cls in (MCDropout, VoteLoss, QuestionNLL, VoteFractionRMSE)}


# -- building -------------------------------------------------------------------------------------


def build_model(config: ModelConfig, schema: Schema, image_shape: tuple[int, int, int]) -> keras.Model:
    """An uncompiled model from images (B, H, W, C) with values 0..255 to the output of `config`.

    "dirichlet": (B, n_answers) concentrations in [1, 100]; "binomial": (B, 1) p in (0, 1).
    Outputs are float32 whatever `config.precision`: only the trunk (up to and including the
    "features" layer) computes in bfloat16.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig; found {type(config).__name__}.")
    question = resolve_question(config.output, schema, config.question)
    image_shape = _check_image_shape(image_shape, config)
    n_outputs = schema.n_answers if config.output == "dirichlet" else 1
    trunk_policy = dtypes.KERAS_POLICIES[dtypes.checked_precision(config)]

    images = keras.Input(shape=image_shape, name="images")  # float32: the signature callers see
    if config.architecture == "vgg":
        convolved = _vgg_trunk(images, config.filter_list, trunk_policy)
    else:
        with dtypes.global_policy(trunk_policy):
            backbone = _efficientnet_backbone(image_shape, config.weights_path)
        convolved = backbone(images)
    features = keras.layers.Dense(config.dense_units, activation="relu", name=FEATURES_LAYER,
                                  dtype=trunk_policy)(convolved)

    # The head in float32: the dropout rate and its 1/(1 - rate) scaling are exact, and the
    # concentrations / p reach the loss's lgamma and log terms with float32's 24-bit mantissa.
    x = MCDropout(config.dropout_rate, name="mc_dropout", dtype="float32")(features)
    x = keras.layers.Dense(n_outputs, activation="sigmoid", name="output_sigmoid", dtype="float32")(x)
    if config.output == "dirichlet":
        span = CONCENTRATION_MAX - CONCENTRATION_MIN
        outputs = keras.layers.Rescaling(span, offset=CONCENTRATION_MIN, name="concentrations",
                                         dtype="float32")(x)
    else:
        outputs = keras.layers.Rescaling(1 - 2 * PROBABILITY_MARGIN, offset=PROBABILITY_MARGIN,
                                         name="probability", dtype="float32")(x)
    name = f"zoobot_{config.architecture}_{config.output}" + (f"_{question}" if question else "")
    return keras.Model(images, outputs, name=_safe_name(name))


def _vgg_trunk(images, filters: tuple[int, ...], policy: str):
    # 0..255 integers are exact in bfloat16 (8-bit mantissa), so casting the images loses nothing.
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale", dtype=policy)(images)
    for block, n in enumerate(filters, start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(n, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}",
                                    dtype=policy)(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool", dtype=policy)(x)
    return keras.layers.Flatten(name="flatten", dtype=policy)(x)


def _efficientnet_backbone(image_shape, weights_path: str) -> keras.Model:
    # keras.applications' EfficientNet rescales 0..255 itself (its first layer), so it takes the raw
    # images like the vgg trunk does.
    backbone = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=tuple(image_shape), pooling="avg")
    if weights_path:
        _load_backbone_weights(backbone, weights_path)
    return backbone


def _load_backbone_weights(backbone: keras.Model, path: str) -> None:
    """Load what fits of a weights file into the backbone; say what did not.

    Layers whose shapes differ (e.g. the first convolution of 3-channel ImageNet weights in a
    1-channel model) are skipped with a warning; a file that fits nothing is an error.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights_path '{path}' does not exist. Give the path of a local weights file "
                                "(e.g. efficientnetb0_notop.h5 from keras.applications), or '' to train "
                                "from scratch.")
    if not path.endswith((".h5", ".hdf5")):
        raise ValueError(f"weights_path must be a .h5/.hdf5 or .weights.h5 file; found '{path}'.")
    before = backbone.get_weights()
    # Legacy .h5 files (what keras.applications downloads) are matched by layer name; Keras 3
    # .weights.h5 files by layer order.
    kwargs = {} if path.endswith(".weights.h5") else {"by_name": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            backbone.load_weights(path, skip_mismatch=True, **kwargs)
        except Exception as error:  # h5py/Keras errors about the file's layout, re-raised with the fix
            raise ValueError(
                f"Could not load weights_path '{path}' into EfficientNetB0 ({type(error).__name__}: {error}). "
                "Expected weights of keras.applications.EfficientNetB0(include_top=False)."
            ) from error
    after = backbone.get_weights()
    changed = sum(not np.array_equal(b, a) for b, a in zip(before, after))
    if changed == 0:
        raise ValueError(
            f"weights_path '{path}' fits none of EfficientNetB0's layers (no layer names or shapes match). "
            "Expected weights of keras.applications.EfficientNetB0(include_top=False); "
            "leave weights_path empty to train from scratch."
        )

    def is_mismatch(message) -> bool:  # Keras' wording for skip_mismatch, legacy and Keras 3 formats
        return any(phrase in str(message).lower() for phrase in ("skip", "could not be loaded"))

    skipped = [str(w.message) for w in caught if is_mismatch(w.message)]
    for w in caught:
        if not is_mismatch(w.message):
            warnings.warn(w.message, w.category, stacklevel=3)
    if skipped:
        warnings.warn(
            f"weights_path '{path}' does not fit every layer: {changed} of {len(after)} weight arrays changed "
            f"on loading; layers whose shapes differ were left at random initialisation "
            f"({len(skipped)} Keras messages, first: {skipped[0]}). "
            "Expected for the first convolution when the images have a different number of channels "
            "than the weights were trained on.",
            stacklevel=3,
        )


def _check_image_shape(image_shape, config: ModelConfig) -> tuple[int, int, int]:
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ValueError(
            f"image_shape must be (height, width, channels) of positive integers; found {image_shape!r}.")
    height, width, channels = (int(s) for s in shape)
    if channels not in (1, 3):
        raise ValueError(f"Images must have 1 (greyscale) or 3 (RGB) channels; found {channels} in {shape}.")
    if config.architecture == "vgg":
        smallest = 2 ** len(config.filter_list)
        if min(height, width) < smallest:
            raise ValueError(
                f"{len(config.filter_list)} vgg blocks halve the image {len(config.filter_list)} times, so "
                f"images need at least {smallest}x{smallest} pixels; found {height}x{width}. Use fewer "
                "filters or larger images."
            )
    elif min(height, width) < EFFICIENTNET_MIN_SIZE:
        size = EFFICIENTNET_MIN_SIZE
        raise ValueError(f"efficientnetb0 needs images of at least {size}x{size} pixels; found {height}x{width}.")
    return height, width, channels


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


# -- MC sampling ------------------------------------------------------------------------------------


def split_trunk_head(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(trunk: images -> features, head: features -> outputs), sharing the model's weights.

    Raises if the trunk holds an MCDropout: running it once would then freeze one dropout mask
    into every sample, and the samples would be too alike.
    """
    try:
        features = model.get_layer(FEATURES_LAYER).output
    except ValueError as error:
        raise ValueError(
            f"Model '{model.name}' has no layer named '{FEATURES_LAYER}' marking the end of its deterministic "
            "trunk; build it with zoobot.model.network.build_model, or use mc_predict_naive."
        ) from error
    trunk = keras.Model(model.input, features, name=f"{model.name}_trunk")
    head = keras.Model(features, model.output, name=f"{model.name}_head")
    in_trunk = [layer.name for layer in _all_layers(trunk) if isinstance(layer, MCDropout)]
    if in_trunk:
        raise ValueError(
            f"Model '{model.name}' has stochastic layers {in_trunk} before '{FEATURES_LAYER}'; every MCDropout "
            f"must come after it, or trunk-once sampling is wrong. Use mc_predict_naive for this model."
        )
    return trunk, head


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def reseed(model: keras.Model, seed: int) -> None:
    """Put every random layer's generator (the dropout masks) in a state drawn from `seed`.

    Training reseeds at the start of each epoch and prediction before each pass, so an epoch or a
    prediction is a function of (weights, data, seed) alone: repeating it after a crash gives the
    same numbers the uninterrupted run got.
    """
    for index, layer in enumerate(_all_layers(model)):
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            generator.state.assign(np.array([seed, index], dtype=generator.state.dtype))


def mc_predict(model: keras.Model, images, n_samples: int, trunk_head=None, *,
               batch_size: int = 128) -> np.ndarray:
    """MC-dropout samples of the outputs, float32 (B, n_outputs, n_samples): the trunk once, the head
    n_samples times.

    `images`: an array or tensor (B, H, W, C), or a tf.data.Dataset of image batches or of
    (images, labels) batches. Pass `trunk_head=split_trunk_head(model)` when calling repeatedly,
    to reuse the compiled functions.
    """
    _check_n_samples(n_samples)
    trunk, head = trunk_head if trunk_head is not None else split_trunk_head(model)
    features = np.concatenate([trunk.predict_on_batch(batch) for batch in _batches(images, batch_size)])
    # All galaxies in one call per sample: the head is a few dense layers on (B, dense_units).
    return np.stack([head.predict_on_batch(features) for _ in range(n_samples)], axis=-1).astype(
        np.float32, copy=False)


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


# -- saving and loading ----------------------------------------------------------------------------

BUNDLE_KERAS = "model.keras"
BUNDLE_META = "zoobot.json"  # what the outputs mean: schema, output kind, question, image shape


def save_bundle(model: keras.Model, folder, meta: ModelMeta):
    """A model folder: the Keras file and what its outputs mean (zoobot.json)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / BUNDLE_KERAS)
    (folder / BUNDLE_META).write_text(json.dumps(meta.to_dict(), indent=1))
    return folder


def load_keras_model(path) -> keras.Model:
    """Load without compiling: predictions need neither the loss nor the optimizer."""
    return keras.models.load_model(path, custom_objects=custom_objects(), compile=False)


def load_bundle(keras_path) -> tuple[keras.Model, ModelMeta]:
    """(model, meta) from a bundle's model.keras (its zoobot.json beside it)."""
    import json
    from pathlib import Path

    keras_path = Path(keras_path)
    meta_path = keras_path.parent / BUNDLE_META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"'{keras_path}' has no {BUNDLE_META} beside it saying what the outputs mean; load a model saved by "
            "`zoobot train` (zoobot.model.network.save_bundle).")
    return load_keras_model(keras_path), ModelMeta.from_dict(json.loads(meta_path.read_text()))


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
