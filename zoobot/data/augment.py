"""Augmentation and channel matching in the tf.data pipeline (never inside the model, so a served
model sees galaxies exactly as given).

Galaxy images have no preferred orientation, so flips and any rotation are label-preserving; a mild
zoom mimics the spread of apparent sizes. Greyscale turns colour shards into the single channel a
greyscale model expects (the 2020 paper's models were greyscale).

The random draws are stateless: each batch's flips, angles and zooms are a function of (seed, batch
index) only. The same seed gives the same augmented epoch in any process, with any tf.data
parallelism, which is what lets a killed training resume into exactly the run it would have been.
"""

from __future__ import annotations

import math

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import tensorflow as tf

ZOOM = 0.1  # zoom in or out by up to 10%


def match_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """Colour -> grey when the model is greyscale; grey -> three equal channels when it is colour."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(images)
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(images)
    raise ValueError(f"Cannot turn {have}-channel images into the {channels} channels the model expects.")


def random_view(images: tf.Tensor, seed: tf.Tensor, zoom: float = ZOOM) -> tf.Tensor:
    """Per image: flips, a rotation by any angle and a zoom in/out by up to `zoom`, with reflected
    edges. images (B, H, W, C) float32; seed: two int32/int64 values."""
    seed = tf.cast(seed, tf.int64)
    batch = tf.shape(images)[0]
    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    images = tf.image.stateless_random_flip_left_right(images, seed=seed)
    images = tf.image.stateless_random_flip_up_down(images, seed=seed + [0, 1])
    angle = tf.random.stateless_uniform([batch], seed=seed + [0, 2], minval=0.0, maxval=2 * math.pi)
    scale = tf.random.stateless_uniform([batch], seed=seed + [0, 3], minval=1.0 - zoom, maxval=1.0 + zoom)
    # Output pixel (x, y) samples input pixel centre + scale * R(angle) (x - centre, y - centre).
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a0, a1 = scale * tf.cos(angle), -scale * tf.sin(angle)
    b0, b1 = scale * tf.sin(angle), scale * tf.cos(angle)
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([a0, a1, cx - a0 * cx - a1 * cy, b0, b1, cy - b0 * cx - b1 * cy, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def prepare(dataset: tf.data.Dataset, channels: int, augment: bool, seed: int | tf.Variable | None = None
            ) -> tf.data.Dataset:
    """Batches of {'image', ...} -> (float32 images in 0..255, with the model's channels) and the rest.

    With `augment`, batch i gets the random view drawn from (seed, i). `seed` may be an int64
    tf.Variable, read each time the dataset is iterated: one pipeline then serves every epoch.
    """
    if not augment:
        def transform(batch):
            return {**batch, "image": match_channels(tf.cast(batch["image"], tf.float32), channels)}

        return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)

    base = seed if isinstance(seed, tf.Variable) else tf.constant(0 if seed is None else int(seed), tf.int64)

    def transform_seeded(index, batch):
        images = match_channels(tf.cast(batch["image"], tf.float32), channels)
        return {**batch, "image": random_view(images, tf.stack([tf.convert_to_tensor(base), index]))}

    return dataset.enumerate().map(transform_seeded, num_parallel_calls=tf.data.AUTOTUNE)
