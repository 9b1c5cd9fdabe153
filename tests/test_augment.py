"""Augmentation: label-preserving random views, drawn statelessly from (seed, batch index)."""

import numpy as np
import tensorflow as tf

from zoobot.data import augment


def blob(size=32, sigma=4.0, offset=(0, 0)):
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    return 255 * np.exp(-((x - offset[0]) ** 2 + (y - offset[1]) ** 2) / (2 * sigma**2))


def views(images, seed, batch=4):
    data = tf.data.Dataset.from_tensor_slices({"image": images}).batch(batch)
    return np.concatenate([b["image"] for b in augment.prepare(data, images.shape[-1], True, seed).as_numpy_iterator()])


def test_views_are_a_function_of_the_seed_and_batch_only():
    images = np.random.default_rng(0).uniform(0, 255, (12, 16, 16, 3)).astype(np.float32)
    a, b, c = views(images, 5), views(images, 5), views(images, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # same seed, same batch index -> same view, whatever the parallelism or process
    assert not np.allclose(a[:4], images[:4])


def test_a_centred_galaxy_keeps_its_light_and_shape():
    """Rotation and flips leave a round, centred galaxy as it was; zoom changes its size by <= 10%."""
    images = np.repeat(blob()[None, :, :, None], 16, axis=0).astype(np.float32)
    out = views(images, 3, batch=8)
    flux_ratio = out.sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
    assert np.all((flux_ratio > 0.8**2) & (flux_ratio < 1.2**2))  # area scales with zoom squared at most
    centre = out[:, 16, 16, 0] if out.shape[1] % 2 else out[:, 15:17, 15:17, 0].mean(axis=(1, 2))
    assert np.all(centre > 0.9 * images[:, 15:17, 15:17, 0].mean())


def test_an_off_centre_source_moves_on_a_circle():
    """A source off the centre lands at (about) the same radius at a random angle: any rotation."""
    images = np.repeat(blob(sigma=1.5, offset=(8, 0))[None, :, :, None], 32, axis=0).astype(np.float32)
    out = views(images, 11, batch=32)[..., 0]
    peaks = np.array([np.unravel_index(np.argmax(o), o.shape) for o in out]) - 15.5
    radius = np.hypot(*peaks.T)
    angle = np.arctan2(*peaks.T)
    assert np.all(np.abs(radius - 8) < 8 * 0.1 + 1.0)
    assert np.ptp(angle) > 4  # spread round the circle, not just the four flips


def test_greyscale_and_colour_matching():
    colour = tf.zeros((2, 8, 8, 3))
    assert augment.match_channels(colour, 1).shape[-1] == 1
    assert augment.match_channels(tf.zeros((2, 8, 8, 1)), 3).shape[-1] == 3
