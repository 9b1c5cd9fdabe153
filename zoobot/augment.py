"""Augmentation and channel matching in the tf.data pipeline (never inside the model, so a served
model sees galaxies exactly as given).

Galaxy images have no preferred orientation, so flips and any rotation are label-preserving; a mild
zoom mimics the spread of apparent sizes. Greyscale turns colour shards into the single channel a
greyscale model expects (the 2020 paper's models were greyscale).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def augmentation_layers(seed: int | None = None, zoom: float = 0.1) -> keras.Sequential:
    """Random flips, rotation by any angle, and zoom in/out by up to `zoom`, per image."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed),  # 0.5 * 2 pi: any angle
        keras.layers.RandomZoom((-zoom, zoom), fill_mode="reflect", seed=seed),
    ], name="augmentation")


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


def prepare(dataset: tf.data.Dataset, channels: int, augment: bool, seed: int | None = None) -> tf.data.Dataset:
    """Batches of {'image', ...} -> (float32 images in 0..255, with the model's channels) and the rest."""
    layers = augmentation_layers(seed) if augment else None

    def transform(batch):
        images = match_channels(tf.cast(batch["image"], tf.float32), channels)
        if layers is not None:
            images = layers(images, training=True)
        return {**batch, "image": images}

    return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
