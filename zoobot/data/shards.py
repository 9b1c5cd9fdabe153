"""TFRecord shards: writing records and reading them back as a tf.data pipeline.

Each record is a tf.train.Example with `id_str` (bytes), `image` (raw uint8 HWC bytes, or PNG) and,
for labelled splits only, `labels` (int64 vote counts in the schema's label-column order).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import tensorflow as tf

from zoobot.data.manifest import FEATURE_ID, FEATURE_IMAGE, FEATURE_LABELS, Manifest, ShardFile


def serialize_example(id_str: str, image_bytes: bytes, labels: np.ndarray | None) -> bytes:
    feature = {
        FEATURE_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[id_str.encode("utf-8")])),
        FEATURE_IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
    }
    if labels is not None:
        feature[FEATURE_LABELS] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in labels]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class ShardWriter:
    """Writes serialized records of one split into files of at most `shard_size` records."""

    def __init__(self, folder: Path, split: str, shard_size: int):
        self.folder, self.split, self.shard_size = Path(folder), split, shard_size
        self.files: list[ShardFile] = []
        self._writer: tf.io.TFRecordWriter | None = None
        self._path: Path | None = None
        self._count = 0

    def write(self, record: bytes) -> None:
        if self._writer is None:
            self._path = self.folder / f"{self.split}_{len(self.files):05d}.tfrecord"
            self._writer = tf.io.TFRecordWriter(str(self._path))
        self._writer.write(record)
        self._count += 1
        if self._count == self.shard_size:
            self._finish_shard()

    def close(self) -> list[ShardFile]:
        if self._writer is not None:
            self._finish_shard()
        return self.files

    def _finish_shard(self) -> None:
        self._writer.close()
        data = self._path.read_bytes()
        self.files.append(ShardFile(
            path=self._path.name,
            count=self._count,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
        ))
        self._writer, self._path, self._count = None, None, 0


def _feature_spec(manifest: Manifest, labelled: bool) -> dict:
    spec = {
        FEATURE_ID: tf.io.FixedLenFeature([], tf.string),
        FEATURE_IMAGE: tf.io.FixedLenFeature([], tf.string),
    }
    if labelled:
        spec[FEATURE_LABELS] = tf.io.FixedLenFeature([len(manifest.label_cols)], tf.int64)
    return spec


def make_dataset(
    manifest: Manifest,
    split: str,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    shuffle_buffer: int = 2048,
    drop_remainder: bool = False,
    shard: tuple[int, int] | None = None,
    labels: bool = True,
) -> tf.data.Dataset:
    """Batches of {'id_str': string, 'image': uint8 (B, H, W, C), ['labels': int64 (B, n_answers)]}.

    Files are read in parallel and parsed a batch at a time; raw images decode with one
    reshape per batch, which is several times faster than per-record PNG decoding. The order is a
    function of `seed` alone (parallel reads keep a deterministic order), so a seeded epoch is the
    same in every process. `shard=(n, i)` keeps every n-th galaxy from the i-th: one worker's share.
    `labels=False` leaves the vote counts unread. To stream a shard set once, in order: read_in_order.
    """
    info = manifest.split(split)
    files = [str(p) for p in manifest.files(split)]
    spec = _feature_spec(manifest, info.labelled and labels)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, max(1, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shard is not None:
        ds = ds.shard(*shard)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    return _batched(ds, manifest, spec, batch_size, drop_remainder).prefetch(tf.data.AUTOTUNE)


def read_in_order(manifest: Manifest, splits, batch_size: int = 256, labels: bool = False) -> tf.data.Dataset:
    """Batches of every galaxy of `splits` in the order of the splits and of their files (each read
    from start to end), with labels only if asked for and every split has them.

    For streaming a shard set once, as prediction does: one pipeline without make_dataset's parallel
    interleave, which is made for shuffled epochs and costs 2x the reading time per galaxy (3.5x for
    three splits read one after the other, each with its own pipeline).
    """
    splits = list(splits)
    files = [str(p) for split in splits for p in manifest.files(split)]
    labelled = labels and all(manifest.split(split).labelled for split in splits)
    spec = _feature_spec(manifest, labelled)
    ds = tf.data.TFRecordDataset(tf.constant(files, dtype=tf.string))
    ds = _batched(ds, manifest, spec, batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
    # Without tf.data's autotuner (AUTOTUNE then means one thread per core): torn down while the model
    # ran, a pipeline with it stalled for 0.5 s in 8 of 10 predict() calls over 2,048 galaxies.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _batched(ds: tf.data.Dataset, manifest: Manifest, spec: dict, batch_size: int,
             drop_remainder: bool) -> tf.data.Dataset:
    """Serialized records -> batches of parsed features, images uint8 (B, H, W, C)."""
    height, width, channels = manifest.image_shape
    if manifest.image_encoding == "png":
        def parse_one(record):
            parsed = tf.io.parse_single_example(record, spec)
            image = tf.io.decode_png(parsed[FEATURE_IMAGE], channels=channels)
            parsed[FEATURE_IMAGE] = tf.reshape(image, (height, width, channels))
            return parsed

        return ds.map(parse_one, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=drop_remainder)

    def parse_batch(records):
        parsed = tf.io.parse_example(records, spec)
        images = tf.io.decode_raw(parsed[FEATURE_IMAGE], tf.uint8)
        parsed[FEATURE_IMAGE] = tf.reshape(images, (-1, height, width, channels))
        return parsed

    return ds.batch(batch_size, drop_remainder=drop_remainder).map(parse_batch, num_parallel_calls=tf.data.AUTOTUNE)


# A split whose pixels take at most this many bytes is read from its shards once per training job and
# kept in memory; a larger one streams from the shards every epoch. Reading, parsing and shuffling a
# 2,100-galaxy split at 64 px took 0.5 s an epoch from the shards and 0.2 s from memory, in an epoch
# of a few seconds on two cores.
IN_MEMORY_BYTES = 512 * 2**20


def fits_in_memory(manifest: Manifest, count: int) -> bool:
    """Whether `count` galaxies of these shards stay under IN_MEMORY_BYTES of uint8 pixels."""
    return count * int(np.prod(manifest.image_shape)) <= IN_MEMORY_BYTES


def split_in_memory(manifest: Manifest, split: str) -> dict[str, np.ndarray] | None:
    """The whole split as read_split's arrays when it fits in memory (`fits_in_memory`), else None."""
    return read_split(manifest, split) if fits_in_memory(manifest, manifest.split(split).count) else None


def memory_batches(arrays: dict[str, np.ndarray], batch_size: int, shuffle: bool = False, seed: int | None = None,
                   drop_remainder: bool = False) -> tf.data.Dataset:
    """Batches like make_dataset's ({'id_str', 'image' uint8, ['labels']}) of galaxies held in memory
    (read_split's arrays); shuffled, when asked, in an order that is a function of `seed` alone."""
    n = len(arrays[FEATURE_IMAGE])
    if shuffle:
        order = np.random.default_rng(seed).permutation(n)
        arrays = {key: values[order] for key, values in arrays.items()}
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=drop_remainder)


def read_split(manifest: Manifest, split: str) -> dict[str, np.ndarray]:
    """A whole split in memory, in file order (for small splits, tests and figures)."""
    batches = list(read_in_order(manifest, [split], batch_size=256, labels=True).as_numpy_iterator())
    if not batches:
        height, width, channels = manifest.image_shape
        return {FEATURE_ID: np.array([], dtype=str), FEATURE_IMAGE: np.zeros((0, height, width, channels), np.uint8)}
    out = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    out[FEATURE_ID] = np.array([v.decode("utf-8") for v in out[FEATURE_ID]])
    return out

