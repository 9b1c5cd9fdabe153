"""What a training job reads each epoch: batches of (images, vote counts) for Keras, from the shards.

A small split is read once (`split_in_memory`) and shuffled in memory each epoch; a large one streams
from its shards; a multi-worker job reads every n-th galaxy on each worker. Every epoch's shuffle,
augmentation and dropout masks come from (seed, epoch) alone (`epoch_seed`), which is what lets a
killed job replay exactly the epochs it lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import tensorflow as tf

from zoobot.data import augment
from zoobot.data.manifest import FEATURE_IMAGE, FEATURE_LABELS, Manifest
from zoobot.data.shards import make_dataset, memory_batches, split_in_memory


class Batching(Protocol):
    """What the input functions read of a training job's settings (a TrainConfig has them all)."""
    batch_size: int
    seed: int
    augment: bool


DataForEpoch = Callable[[int], tuple[tf.data.Dataset, tf.data.Dataset]]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle, augmentation and dropout masks (epoch 0-based).

    Every epoch draws its randomness afresh from (seed, epoch), never from a generator carried over
    from the epoch before, so an epoch replayed after a crash is the epoch the uninterrupted run had.
    """
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 1) % (2**31 - 1)


def training_data(manifest: Manifest, split: str, config: Batching, channels: int, training: bool,
                  n_replicas: int = 1, epoch: int = 0, arrays: dict | None = None) -> tf.data.Dataset:
    """(images float32 0..255, vote counts float32) batches of one labelled split, for Keras;
    shuffled and augmented (when training) by the epoch's seed. From `arrays` (the split already in
    memory, `split_in_memory`) when given, else streamed from the shards.

    With several replicas every batch must split evenly between them, so the ragged last batch is
    dropped (at most batch_size - 1 galaxies an epoch, a different few each epoch when shuffled).
    """
    drop = n_replicas > 1
    seed = epoch_seed(config.seed, epoch)
    if arrays is not None:
        dataset = memory_batches(arrays, config.batch_size, shuffle=training, seed=seed, drop_remainder=drop)
    else:
        dataset = make_dataset(manifest, split, batch_size=config.batch_size, shuffle=training, seed=seed,
                               drop_remainder=drop)
    return keras_batches(dataset, manifest.split(split).count, config, channels, training, drop, seed=seed)


def keras_batches(dataset: tf.data.Dataset, count: int, config: Batching, channels: int, training: bool,
                  dropped_remainder: bool = False, seed: int | tf.Variable | None = None) -> tf.data.Dataset:
    """Batches of {'image', 'labels', ...} -> (augmented float32 images, float32 counts) of known length."""
    # TFRecords have no known length; telling tf.data spares Keras a guess (and a warning) each epoch.
    n_batches = count // config.batch_size if dropped_remainder else -(-count // config.batch_size)
    if n_batches == 0:
        raise ValueError(f"{count} galaxies are fewer than one batch of {config.batch_size} over the replicas; "
                         "use a smaller batch_size.")
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(n_batches))
    seed = config.seed if seed is None else seed
    dataset = augment.prepare(dataset, channels, augment=training and config.augment, seed=seed)
    return dataset.map(lambda b: (b[FEATURE_IMAGE], tf.cast(b[FEATURE_LABELS], tf.float32)),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class EpochsInMemory:
    """Every epoch's training batches of a split held in memory, from one tf.data pipeline.

    A new pipeline each epoch costs a trace of each of its functions (about 0.2 s an epoch on two
    cores, a fifth of an active-learning epoch on 150 galaxies). Here the pipeline is built once; an
    epoch sets its order (the same seeded permutation `memory_batches` draws) and its augmentation
    seed in two variables the pipeline reads, so each epoch is exactly the one a fresh pipeline would
    give. One device only: a mirrored strategy rewrites the pipeline per call, use `training_data`.
    """

    def __init__(self, arrays: dict, config: Batching, channels: int):
        n = len(arrays[FEATURE_IMAGE])
        self._order = tf.Variable(tf.range(n, dtype=tf.int64), trainable=False, name="epoch_order")
        self._seed = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_seed")
        images, labels = tf.constant(arrays[FEATURE_IMAGE]), tf.constant(arrays[FEATURE_LABELS])

        def gather(positions):
            rows = tf.gather(self._order, positions)
            return {FEATURE_IMAGE: tf.gather(images, rows), FEATURE_LABELS: tf.gather(labels, rows)}

        batches = tf.data.Dataset.range(n).batch(config.batch_size).map(gather)
        self.dataset = keras_batches(batches, n, config, channels, training=True, seed=self._seed)
        self.n = n

    def __call__(self, seed: int) -> tf.data.Dataset:
        """The epoch whose shuffle and augmentation come from `seed` (as `memory_batches` and
        `keras_batches` with that seed would give it)."""
        self._order.assign(np.random.default_rng(seed).permutation(self.n))
        self._seed.assign(seed)
        return self.dataset


def worker_data(strategy: tf.distribute.Strategy, manifest: Manifest, split: str, config: Batching,
                channels: int, training: bool, epoch: int):
    """One epoch of a split for a multi-worker job: each worker reads every n-th galaxy, and all
    take the same number of steps (collective all-reduce needs every worker at every step)."""
    count = manifest.split(split).count
    seed = epoch_seed(config.seed, epoch)

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(config.batch_size)
        steps = (count // context.num_input_pipelines) // batch
        if steps == 0:
            raise ValueError(f"The '{split}' split's {count} galaxies are fewer than one batch of {config.batch_size} "
                             f"over {context.num_input_pipelines} workers; use a smaller batch_size.")
        dataset = make_dataset(manifest, split, batch_size=batch, shuffle=training, seed=seed, drop_remainder=True,
                               shard=(context.num_input_pipelines, context.input_pipeline_id)).take(steps)
        dataset = augment.prepare(dataset, channels, augment=training and config.augment, seed=seed)
        return dataset.map(lambda b: (b[FEATURE_IMAGE], tf.cast(b[FEATURE_LABELS], tf.float32))).prefetch(2)

    return strategy.distribute_datasets_from_function(per_worker)


def steps_per_epoch(train_batches, manifest: Manifest, config: Batching) -> int:
    """Batches in one training epoch: the dataset's known length, else the train split's size."""
    n = int(train_batches.cardinality()) if isinstance(train_batches, tf.data.Dataset) else -1
    return n if n > 0 else max(1, -(-manifest.split("train").count // config.batch_size))


def validation_batches(manifest: Manifest, config: Batching, channels: int) -> tf.data.Dataset | None:
    """The shards' validation split as (images, counts) batches, in order and unaugmented; None without one."""
    if not manifest.counts.get("validation"):
        return None
    return training_data(manifest, "validation", config, channels, training=False)


def shard_data(config: Batching, manifest: Manifest, strategy: tf.distribute.Strategy, channels: int) -> DataForEpoch:
    """(train, validation) batches of an epoch from the shards: 'validation', or 'train' without one."""
    replicas = strategy.num_replicas_in_sync
    val_split = "validation" if manifest.counts.get("validation") else "train"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        def data(epoch):
            return (worker_data(strategy, manifest, "train", config, channels, True, epoch),
                    worker_data(strategy, manifest, val_split, config, channels, False, 0))
    else:
        # small splits are read once and kept in memory; the validation batches are the same every epoch
        train_arrays = split_in_memory(manifest, "train")
        val_arrays = train_arrays if val_split == "train" else split_in_memory(manifest, val_split)
        validation = training_data(manifest, val_split, config, channels, False, replicas, arrays=val_arrays)
        epochs = EpochsInMemory(train_arrays, config, channels) if train_arrays is not None and replicas == 1 else None

        def data(epoch):
            if epochs is not None:
                return epochs(epoch_seed(config.seed, epoch)), validation
            return (training_data(manifest, "train", config, channels, True, replicas, epoch, arrays=train_arrays),
                    validation)
    return data
