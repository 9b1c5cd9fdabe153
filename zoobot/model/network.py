"""Bayesian CNNs: a conv trunk, then a dense head with MC dropout.

    images (B, H, W, C), pixel values 0..255
      -> trunk: rescale, conv blocks [conv, (batch norm), relu] x 2, max-pool, (MC dropout)
                -> flatten or global average pooling, (MC dropout) -> Dense(dense_units) named "features"
      -> head:  MCDropout -> Dense(n_outputs, sigmoid) -> Rescaling to the output's range
                (Dirichlet: -> ConcentrationScale, each question's calibration, fitted after training)

By default every stochastic layer sits in the head, so MC sampling runs the trunk once and only the
head n_samples times (`zoobot.model.sampling`). `conv_dropout_rate` > 0 adds MC dropout on the conv
output before the features layer (samples rerun one dense layer more), `trunk_dropout_rate` > 0 after
every conv block too (a richer posterior, whose samples rerun the network from the first block).

MCDropout drops on every call path, including `model.predict`, `model(x, training=False)` and
after save/load: the Bayesian predictions (and BALD, and coverage) depend on it. A stock
`Dropout(...)(x, training=True)` is silently switched off by Keras 3 under predict.

Precision: with `precision="bfloat16"` the trunk computes in bfloat16 (weights stay float32,
Keras' "mixed_bfloat16" policy) while the head -- MC dropout, the output layer and the
concentrations or p -- stays float32, so the loss and the Dirichlet/binomial maths never see
bfloat16. Each layer carries its own policy (saved with the model), so building one never changes
Keras' global policy for the rest of the process (`zoobot.model.precision` decides which).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras
import numpy as np

from zoobot.core.model_meta import ModelMeta
from zoobot.core.schema import Schema
from zoobot.model import precision as dtypes
from zoobot.model.losses import OUTPUTS, resolve_question

ARCHITECTURES = ("vgg", "efficientnetb0")
POOLINGS = ("flatten", "avg")
FEATURES_LAYER = "features"
CALIBRATION_LAYER = "calibration"
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
    dense_units: int = field(default=512, metadata={
        "help": "Units of the dense 'features' layer before the MC dropout."})
    dropout_rate: float = field(default=0.25, metadata={
        "help": "MC dropout rate on the dense head, in [0, 1); dropout stays on at prediction time."})
    trunk_dropout_rate: float = field(default=0.0, metadata={
        "help": "vgg only: MC dropout rate after every conv block as well (0 = head only). A richer posterior; "
                "MC samples then rerun the conv blocks instead of the head alone."})
    conv_dropout_rate: float = field(default=0.0, metadata={
        "help": "vgg only: MC dropout rate on the conv trunk's output, before the dense 'features' layer (0 = none). "
                "Samples rerun only that dense layer and the head: nearly as cheap as head-only dropout."})
    batch_norm: bool = field(default=False, metadata={
        "help": "vgg only: batch normalisation after every convolution (before its relu)."})
    pooling: str = field(default="flatten", metadata={
        "help": "vgg only: how the last conv block becomes a vector: 'flatten' or 'avg' (global average pooling)."})
    weights_path: str = field(default="", metadata={
        "help": "efficientnetb0 only: a local weights file for the backbone (.h5 as keras.applications "
                "downloads it, or .weights.h5); empty = train from scratch."})
    precision: str = field(default="auto", metadata={
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
        for name in ("trunk_dropout_rate", "conv_dropout_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise ValueError(f"{name} must be a number in [0, 1) (0 = none); found {rate!r}.")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}; found {self.pooling!r}.")
        shaped = self.trunk_dropout_rate or self.conv_dropout_rate or self.batch_norm or self.pooling != "flatten"
        if self.architecture != "vgg" and shaped:
            raise ValueError(
                f"trunk_dropout_rate, conv_dropout_rate, batch_norm and pooling shape the vgg trunk; "
                f"architecture={self.architecture!r} brings its own (leave them at 0, 0, false and 'flatten').")
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


@keras.saving.register_keras_serializable(package="zoobot")
class ConcentrationScale(keras.layers.Layer):
    """The last layer of a Dirichlet head: each answer's concentrations times its question's calibration
    scale, a non-trainable weight saved with the model. 1 while training; set after training from the
    validation split (zoobot.model.calibrate), so every user of the model -- predict, evaluate, BALD, the
    served pyfunc -- gets calibrated posteriors with the same mean fractions."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),), initializer="ones",
                                     trainable=False, dtype="float32")

    def call(self, inputs):
        return inputs * self.scale


def custom_objects() -> dict:
    """What keras.models.load_model needs to rebuild a zoobot model in a process that has not
    imported zoobot (the registry only knows classes that were imported)."""
    from zoobot.model.losses import QuestionNLL, VoteFractionRMSE, VoteLoss

    return {cls.__name__: cls for cls in (MCDropout, ConcentrationScale, VoteLoss, QuestionNLL, VoteFractionRMSE)}


# -- building -------------------------------------------------------------------------------------


def build_model(config: ModelConfig, schema: Schema, image_shape: tuple[int, int, int]) -> keras.Model:
    """An uncompiled model from images (B, H, W, C) with values 0..255 to the output of `config`.

    "dirichlet": (B, n_answers) concentrations in [1, 100] times the calibration scales (1 until
    calibrated); "binomial": (B, 1) p in (0, 1).
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
        convolved = _vgg_trunk(images, config, trunk_policy)
    else:
        with dtypes.global_policy(trunk_policy):
            backbone = _efficientnet_backbone(image_shape, config.weights_path)
        convolved = backbone(images)
    if config.conv_dropout_rate:
        convolved = MCDropout(config.conv_dropout_rate, name="conv_mc_dropout", dtype=trunk_policy)(convolved)
    features = keras.layers.Dense(config.dense_units, activation="relu", name=FEATURES_LAYER,
                                  dtype=trunk_policy)(convolved)

    outputs = add_head(features, config.output, n_outputs, config.dropout_rate)
    name = f"zoobot_{config.architecture}_{config.output}" + (f"_{question}" if question else "")
    return keras.Model(images, outputs, name=safe_name(name))


def add_head(features, output: str, n_outputs: int, dropout_rate: float):
    """The stochastic head on a features tensor: MCDropout -> Dense(sigmoid) -> the output's range
    (-> the calibration scales, for a Dirichlet head).

    In float32 whatever the trunk's precision: the dropout rate and its 1/(1 - rate) scaling are
    exact, and the concentrations / p reach the loss's lgamma and log terms with float32's 24-bit
    mantissa. Also the new head of a finetuned model (zoobot.model.finetune).
    """
    x = MCDropout(dropout_rate, name="mc_dropout", dtype="float32")(features)
    x = keras.layers.Dense(n_outputs, activation="sigmoid", name="output_sigmoid", dtype="float32")(x)
    if output == "dirichlet":
        span = CONCENTRATION_MAX - CONCENTRATION_MIN
        x = keras.layers.Rescaling(span, offset=CONCENTRATION_MIN, name="concentrations", dtype="float32")(x)
        return ConcentrationScale(name=CALIBRATION_LAYER, dtype="float32")(x)
    return keras.layers.Rescaling(1 - 2 * PROBABILITY_MARGIN, offset=PROBABILITY_MARGIN, name="probability",
                                  dtype="float32")(x)


def _vgg_trunk(images, config: ModelConfig, policy: str):
    # 0..255 integers are exact in bfloat16 (8-bit mantissa), so casting the images loses nothing.
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale", dtype=policy)(images)
    for block, n in enumerate(config.filter_list, start=1):
        for conv in (1, 2):
            name = f"block{block}_conv{conv}"
            if config.batch_norm:  # the norm's shift replaces the conv's bias
                x = keras.layers.Conv2D(n, 3, padding="same", use_bias=False, name=name, dtype=policy)(x)
                x = keras.layers.BatchNormalization(name=f"{name}_bn", dtype=policy)(x)
                x = keras.layers.Activation("relu", name=f"{name}_relu", dtype=policy)(x)
            else:
                x = keras.layers.Conv2D(n, 3, padding="same", activation="relu", name=name, dtype=policy)(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool", dtype=policy)(x)
        if config.trunk_dropout_rate:
            x = MCDropout(config.trunk_dropout_rate, name=f"block{block}_mc_dropout", dtype=policy)(x)
    if config.pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype=policy)(x)
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


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


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
