"""The benchmark's data, made fresh in its work folder: simulated surveys, their shards, the large
PNGs that figure 4 converts, and the same images as float32 arrays for the in-memory references."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoobot.bench.config import Sizes


def simulate(folder: Path, n_galaxies: int, image_size: int, seed: int):
    from zoobot.data.simulate import SimulateConfig, simulate_survey

    workers = 1 if n_galaxies <= 200 else 0  # a process pool costs more than it saves on a few galaxies
    return simulate_survey(SimulateConfig(output_dir=str(folder), n_galaxies=n_galaxies, image_size=image_size,
                                          seed=seed, workers=workers, overwrite=True))


def prepare_speed_data(root: Path, sizes: Sizes, seed: int) -> dict:
    """Shards of n_images simulated galaxies for figures 1-3, and a catalog of large PNGs for figure 4."""
    from PIL import Image

    from zoobot.data.convert import ConvertConfig, convert

    n = max(sizes.n_images, sizes.convert_galaxies)
    survey = simulate(root / "survey", n, sizes.image_size, seed)
    catalog = survey.catalog.iloc[:sizes.n_images]
    catalog.to_csv(root / "survey" / "speed_catalog.csv", index=False)
    shards = convert(ConvertConfig(catalog=str(root / "survey" / "speed_catalog.csv"), output_dir=str(root / "shards"),
                                   image_size=sizes.image_size, seed=seed, shard_size=256)).manifest.root

    # Figure 4 converts PNGs as large as the ones volunteers see, upsampled from the simulation.
    source = root / "convert_source"
    subset = survey.catalog.iloc[:sizes.convert_galaxies]
    for file_loc in subset["file_loc"]:
        target = source / file_loc
        target.parent.mkdir(parents=True, exist_ok=True)
        size = sizes.convert_source_size
        Image.open(root / "survey" / file_loc).resize((size, size), Image.Resampling.BICUBIC).save(target)
    subset.to_csv(source / "catalog.csv", index=False)
    return {"shards": Path(shards), "convert_catalog": source / "catalog.csv",
            "speed_catalog": root / "survey" / "speed_catalog.csv"}


def speed_model_config(sizes: Sizes):
    """The model of figures 1-3."""
    from zoobot.model.network import ModelConfig

    return ModelConfig(filters=sizes.filters, dense_units=sizes.dense_units)


def speed_model(manifest, sizes: Sizes, seed: int):
    import keras

    from zoobot.model.network import build_model

    keras.utils.set_random_seed(seed)
    return build_model(speed_model_config(sizes), manifest.schema_obj, manifest.image_shape)


def split_arrays(manifest, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A split's images and vote counts (None for an unlabelled split) as float32 arrays."""
    from zoobot.data.manifest import FEATURE_IMAGE, FEATURE_LABELS
    from zoobot.data.shards import read_split

    records = read_split(manifest, split)
    labels = records.get(FEATURE_LABELS)
    return records[FEATURE_IMAGE].astype(np.float32), None if labels is None else labels.astype(np.float32)
