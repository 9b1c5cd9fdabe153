"""Finetuning: a trained Zoobot model's trunk under a new head for a new question, in two phases.

    base model:  images -> trunk (conv blocks ... -> "features") -> old head
    finetuned:   images -> the same trunk                         -> new head (MC dropout, any schema)

Phase 1 (the first `frozen_epochs`): the trunk is frozen and only the new head learns, at
`learning_rate`, so its random start cannot wreck features learned on a large survey. Phase 2: the
top `unfreeze_blocks` blocks of the trunk learn as well, block k from the top at learning_rate *
block_lr_decay**k (the head still at learning_rate), under the schedule of `train`. Batch
normalisation stays frozen throughout: its statistics are the base survey's, and a few hundred
galaxies would only add noise to them.

Everything `train` does carries over, because this is `train`'s loop: one epoch at a time from the
checkpoint, seeded from (seed, epoch), early stopping (never in phase 1), and a resume after a kill
that continues in the phase it stopped in, with that phase's optimizer state.

No MLflow here (zoobot.workflows.finetuning logs it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras
import tensorflow as tf

from zoobot.core.schema import Schema
from zoobot.data.manifest import Manifest
from zoobot.model.checkpoint import Checkpoint, CheckpointCallback
from zoobot.model.losses import OUTPUTS, resolve_question
from zoobot.model.network import FEATURES_LAYER, ModelConfig, add_head, safe_name
from zoobot.model.sampling import all_layers
from zoobot.model.precision import model_precision
from zoobot.model.inputs import DataForEpoch, shard_data, steps_per_epoch, validation_batches
from zoobot.model.train import (TrainConfig, TrainResult, compile_model, finish, fit_epochs, is_chief,
                                model_image_shape)


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    base_model: str = field(kw_only=True, metadata={
        "help": "The model to start from: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/<id>, or a .keras file "
                "or folder saved by `zoobot train`."})
    output: str = field(default="binomial", kw_only=True, metadata={
        "help": "The new head: 'binomial' (probability of one question's first answer, e.g. a 0/1 label) or "
                "'dirichlet' (concentrations for every answer of the shards' schema)."})
    question: str = field(default="", kw_only=True, metadata={
        "help": "binomial only: the question of the shards' schema to model; empty = its first question."})
    dropout_rate: float = field(default=0.5, kw_only=True, metadata={
        "help": "MC dropout rate of the new head, in [0, 1); dropout stays on at prediction time."})
    frozen_epochs: int = field(default=5, kw_only=True, metadata={
        "help": "Phase 1: epochs in which only the new head learns (the trunk frozen)."})
    unfreeze_blocks: int = field(default=2, kw_only=True, metadata={
        "help": "Phase 2: how many blocks of the trunk learn too, from the top (the 'features' layer is the "
                "first block, then the conv blocks downwards); 0 = the head only throughout, -1 = every block."})
    block_lr_decay: float = field(default=0.5, kw_only=True, metadata={
        "help": "Phase 2: block k from the top learns at learning_rate * block_lr_decay**k."})

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if not str(self.base_model).strip():
            problems.append("base_model is required: models:/NAME@ALIAS, runs:/<id> or a path to a .keras file")
        if self.output not in OUTPUTS:
            problems.append(f"output must be one of {list(OUTPUTS)}, got {self.output!r}")
        if self.output == "dirichlet" and self.question:
            problems.append(f"question={self.question!r} is only used with output='binomial'")
        if not 0 <= self.dropout_rate < 1:
            problems.append(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.frozen_epochs < 0:
            problems.append(f"frozen_epochs must be >= 0, got {self.frozen_epochs}")
        if self.unfreeze_blocks < -1:
            problems.append(f"unfreeze_blocks must be >= 0, or -1 for every block; got {self.unfreeze_blocks}")
        if not 0 < self.block_lr_decay <= 1:
            problems.append(f"block_lr_decay must be in (0, 1], got {self.block_lr_decay}")
        if problems:
            raise ValueError("Invalid finetune settings: " + "; ".join(problems) + ".")

    def head_config(self, architecture: str, precision: str) -> ModelConfig:
        """The ModelConfig that describes the finetuned model (its head, and the base's trunk kind)."""
        return ModelConfig(architecture=architecture, output=self.output, question=self.question,
                           dropout_rate=self.dropout_rate, precision=precision)

    def plan(self) -> str:
        """The two phases in words, for the registered version's description."""
        if self.unfreeze_blocks == 0:
            return f"the head alone trained for {self.epochs} epochs on the frozen trunk"
        blocks = "every block" if self.unfreeze_blocks < 0 else f"the top {self.unfreeze_blocks} block(s)"
        return (f"{self.frozen_epochs} epoch(s) with the trunk frozen, then {blocks} of the trunk unfrozen, block k "
                f"from the top at learning rate x{self.block_lr_decay}^k, up to epoch {self.epochs}")

    def phases(self) -> list[tuple[int, int, int]]:
        """(first epoch, end epoch, blocks unfrozen) of each phase with epochs in it, 0-based epochs."""
        frozen = min(self.frozen_epochs, self.epochs)
        phases = [(0, frozen, 0), (frozen, self.epochs, self.unfreeze_blocks)]
        return [p for p in phases if p[1] > p[0]]


# -- the model ----------------------------------------------------------------------------------------


def architecture_of(model: keras.Model) -> str:
    return "efficientnetb0" if any(layer.name.startswith("efficientnet") for layer in all_layers(model)) else "vgg"


def finetune_model(base: keras.Model, schema: Schema, config: FinetuneConfig) -> keras.Model:
    """The base model's trunk (its layers, its weights: shared, not copied) under a new head for `schema`."""
    try:
        features = base.get_layer(FEATURES_LAYER).output
    except ValueError:
        raise ValueError(
            f"The base model '{base.name}' has no '{FEATURES_LAYER}' layer, so there is no trunk to put a new head "
            "on. Give a model trained by `zoobot train` (or finetuned by `zoobot finetune`).") from None
    question = resolve_question(config.output, schema, config.question)
    n_outputs = schema.n_answers if config.output == "dirichlet" else 1
    outputs = add_head(features, config.output, n_outputs, config.dropout_rate)
    name = f"zoobot_{architecture_of(base)}_{config.output}" + (f"_{question}" if question else "") + "_finetuned"
    return keras.Model(base.input, outputs, name=safe_name(name))


def check_base_fits(base: keras.Model, manifest: Manifest, config: TrainConfig) -> None:
    """The base model takes the shards' images as they are (same size and channels), or says how to make it."""
    wanted = tuple(int(s) for s in base.input_shape[1:])
    given = model_image_shape(manifest, config)
    if wanted == given:
        return
    fix = []
    if wanted[:2] != given[:2]:
        fix.append(f"convert the catalog again with --image-size {wanted[0]}")
    if wanted[2] != given[2]:
        fix.append("add --greyscale true" if wanted[2] == 1 else "convert colour images (--channels 3) and leave "
                                                                    "greyscale false")
    raise ValueError(
        f"The base model takes images of {wanted[0]}x{wanted[1]}x{wanted[2]} (height, width, channels); the shards "
        f"give {given[0]}x{given[1]}x{given[2]}. To finetune on these galaxies, " + " and ".join(fix) + ".")


def trunk_blocks(model: keras.Model) -> list[list[keras.layers.Layer]]:
    """The trunk's layers that hold weights, grouped into blocks from the top down: 'features' first,
    then the conv blocks (vgg: block4, block3, ...; EfficientNet: top, block7, ..., block1), the stem last.
    Layers of no block (the input's rescaling) are in none and never learn."""
    trunk = keras.Model(model.input, model.get_layer(FEATURES_LAYER).output)
    groups: dict[tuple, list] = {}
    for layer in _leaves(trunk):
        if layer.weights:
            rank = _block_rank(layer.name)
            if rank is not None:
                groups.setdefault(rank, []).append(layer)
    return [groups[rank] for rank in sorted(groups, reverse=True)]


def _block_rank(name: str) -> int | None:
    if name == FEATURES_LAYER:
        return 10_000
    if name.startswith("top_"):
        return 1_000
    match = re.match(r"block(\d+)", name)
    if match:
        return int(match.group(1))
    if name.startswith("stem_"):
        return 0
    return None


def set_phase(model: keras.Model, blocks_unfrozen: int, decay: float) -> dict[str, float]:
    """Freeze the trunk but its top `blocks_unfrozen` blocks (-1: all), batch norms always frozen;
    the head learns. Returns the learning-rate multiplier of each unfrozen trunk layer."""
    blocks = trunk_blocks(model)
    trunk_layers = {id(layer) for block in blocks for layer in block}
    n = len(blocks) if blocks_unfrozen < 0 else min(blocks_unfrozen, len(blocks))
    multipliers = {}
    for layer in _leaves(model):
        if id(layer) not in trunk_layers:
            layer.trainable = True  # the head (and weightless layers)
    for k, block in enumerate(blocks, start=1):
        for layer in block:
            learns = k <= n and not isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = learns
            if learns:
                multipliers[layer.name] = decay ** k
    return multipliers


def _leaves(model: keras.Model):
    return (layer for layer in all_layers(model) if not isinstance(layer, keras.Model))


# -- training ----------------------------------------------------------------------------------------


def finetune(config: FinetuneConfig, base: Path | keras.Model, manifest: Manifest, checkpoint: Checkpoint,
             strategy: tf.distribute.Strategy | None = None,
             callbacks: list[keras.callbacks.Callback] = (), data: DataForEpoch | None = None,
             initial_weights: Path | None = None, calibration_data: tf.data.Dataset | None = None) -> TrainResult:
    """Phase 1 then phase 2 on the shards' 'train' split, validating on 'validation' (or on
    `data(epoch)`, as `train`); from the checkpoint's epoch, in the phase that epoch belongs to.
    `initial_weights` (of an earlier finetune of the same base and head: an active-learning
    campaign's previous iteration) replace the base's trunk and the new head's random start.
    `base`: the base model's file, or the model itself loaded under `strategy.scope()`. A Dirichlet head
    is calibrated afterwards as `train` does it."""
    from zoobot.model.network import load_keras_model

    strategy = strategy or tf.distribute.get_strategy()
    schema = manifest.schema_obj
    shape = model_image_shape(manifest, config)
    held_out = calibration_data if data is not None else validation_batches(manifest, config, shape[-1])
    data = data or shard_data(config, manifest, strategy, shape[-1])
    keras.utils.set_random_seed(config.seed)
    steps = steps_per_epoch(data(0)[0], manifest, config)
    phases = config.phases()
    resumed_from = checkpoint.epoch
    # the phase of the last finished epoch: its optimizer state is what the checkpoint holds
    current = next((i for i, (start, end, _) in enumerate(phases) if start < resumed_from <= end), 0)
    no_stop_before = max(config.min_epochs, phases[0][1] + 1 if len(phases) > 1 else 0)

    with strategy.scope():
        if not isinstance(base, keras.Model):
            base = load_keras_model(base)
        check_base_fits(base, manifest, config)
        model = finetune_model(base, schema, config)
        head = config.head_config(architecture_of(base), model_precision(base))
        _compile_phase(model, config, head, schema, steps, phases[current])
        if resumed_from:
            checkpoint.restore(model)
        elif initial_weights is not None:
            model.load_weights(initial_weights)

    chief = is_chief(strategy)
    saver = CheckpointCallback(checkpoint, config.patience, write=chief, min_epochs=no_stop_before)
    phase_config = dataclasses.replace(config, min_epochs=no_stop_before)
    for index in range(current, len(phases)):
        start, end, _ = phases[index]
        if index != current:  # a new phase: new trainable layers, a fresh optimizer, patience afresh
            with strategy.scope():
                _compile_phase(model, config, head, schema, steps, phases[index])
            checkpoint.state["wait"] = 0
        if checkpoint.epoch >= end:
            continue
        fit_epochs(model, strategy, data, dataclasses.replace(phase_config, epochs=end), checkpoint,
                   [saver, *callbacks])
        if model.stop_training:
            break
    return finish(model, checkpoint, config, chief, resumed_from, held_out, strategy, schema)


def _compile_phase(model: keras.Model, config: FinetuneConfig, head: ModelConfig, schema: Schema, steps: int,
                   phase: tuple[int, int, int]) -> None:
    """Set the phase's trainable layers and compile with its optimizer: the head alone at a constant
    learning rate, or layer-wise rates under `config.schedule` over the phase's epochs."""
    start, end, blocks = phase
    multipliers = set_phase(model, blocks, config.block_lr_decay)
    if blocks == 0:
        phase_config = dataclasses.replace(config, schedule="constant", epochs=end - start)
    else:
        phase_config = dataclasses.replace(config, epochs=end - start)
    compile_model(model, phase_config, head, schema, steps, multipliers=multipliers or None)
