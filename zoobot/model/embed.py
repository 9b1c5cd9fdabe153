"""Representations: what a trained model's deterministic trunk makes of every galaxy, streamed to disk.

The trunk is the network up to its first MC-dropout layer (zoobot.model.sampling.split_trunk_head):
the features the stochastic head reads, the same on every pass. Similar galaxies lie close together
in this space, which is what similarity search and maps of a survey use (zoobot.core.similarity).

Outputs in OUTPUT_DIR:
- features.parquet: id_str and features (n_galaxies, n_features) float32, with the model's output
  kind and schema in the file's metadata (read back with `read_embedding`);
- embedding.json, written last: the record of what was written (zoobot.core.staging).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from zoobot.core import staging
from zoobot.model.predict import GalaxySource

RECORD = "embedding.json"
FEATURES = "features.parquet"
METRICS = ("cosine", "euclidean")


@dataclass(frozen=True)
class EmbedConfig(GalaxySource):
    output_dir: str = field(default="data/embedding", metadata={"help": "Folder for features.parquet."})
    batch_size: int = field(default=256, metadata={"help": "Galaxies per batch (memory is bounded by this)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an earlier embedding in output_dir."})
    neighbours_of: str = field(default="", metadata={
        "help": "A galaxy id (an image's path relative to --images): list and show its k nearest galaxies."})
    k: int = field(default=8, metadata={"help": "How many nearest galaxies to list for --neighbours-of."})
    metric: str = field(default="cosine", metadata={
        "help": "Distance between representations: 'cosine' (angle; insensitive to brightness scaling) or "
                "'euclidean'."})
    color_by: str = field(default="", metadata={
        "help": "A column of the catalog the shards came from to colour the 2-D PCA map by (e.g. "
                "smooth-or-featured_smooth_fraction); '' draws it in one colour."})

    def __post_init__(self):
        problems = self.source_problems()
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.k < 1:
            problems.append(f"k must be >= 1, got {self.k}")
        if self.metric not in METRICS:
            problems.append(f"metric must be one of {list(METRICS)}, got {self.metric!r}")
        if self.color_by and self.images:
            problems.append("color_by reads the catalog the shards were converted from; an image folder has none "
                            "(leave color_by empty, or embed the converted shards)")
        if problems:
            raise ValueError("Invalid embed settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class EmbedResult:
    features_path: Path
    n_galaxies: int
    n_features: int
    seconds: float


def trunk_of(model):
    """The deterministic part of a Zoobot model: images -> flattened features (B, n_features)."""
    import keras

    from zoobot.model.sampling import split_trunk_head

    trunk, _ = split_trunk_head(model)
    if len(trunk.output.shape) > 2:  # MC dropout on the conv output: the trunk ends at a feature map
        trunk = keras.Model(trunk.input, keras.layers.Flatten(name="embedding_flatten")(trunk.output),
                            name=f"{model.name}_embedding")
    return trunk


def embed(config: EmbedConfig, model, meta, manifest=None, progress: bool = False) -> EmbedResult:
    """Stream the trunk's features of every galaxy of the shards (or image folder) to features.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zoobot.model.predict import galaxy_batches, stream_batches

    output_dir = Path(config.output_dir).resolve()
    owned = staging.owned_files(output_dir, RECORD, lambda record: record["files"])
    staging.check_output_folder(output_dir, RECORD, owned, config.overwrite, "embed", beside_others=True)
    staging.refuse_unowned(output_dir, [FEATURES], owned, "embed")
    batches = galaxy_batches(config, manifest, tuple(model.input_shape[1:]), config.batch_size)
    trunk = trunk_of(model)
    n_features = int(trunk.output.shape[-1])
    schema = pa.schema([("id_str", pa.string()), ("features", pa.list_(pa.float32(), n_features))],
                       metadata={"zoobot": json.dumps({**meta.to_dict(), "n_features": n_features})})
    start, counted = time.perf_counter(), [0]
    with staging.staged_output(output_dir, RECORD, owned, config.overwrite, "embed", beside_others=True) as folder:
        writer = pq.ParquetWriter(folder / FEATURES, schema, compression={"id_str": "snappy", "features": "none"},
                                  use_dictionary=["id_str"])

        def features_of(index: int, ids: np.ndarray, images: np.ndarray) -> np.ndarray:
            return np.asarray(trunk.predict_on_batch(images), dtype=np.float32)

        def write(index: int, ids: np.ndarray, features: np.ndarray) -> None:
            flat = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), n_features)
            writer.write_table(pa.table({"id_str": pa.array(ids.astype(str)), "features": flat}, schema=schema))
            counted[0] += len(ids)
            if progress:
                print(f"  embedded {counted[0]} galaxies", flush=True)

        try:
            stream_batches(batches, features_of, write, "embed")
        finally:
            writer.close()
        count = counted[0]
        record = {"step": "embed", "files": [FEATURES], "n_galaxies": count, "n_features": n_features,
                  "config": asdict(config)}
        (folder / RECORD).write_text(json.dumps(record, indent=1))
    return EmbedResult(output_dir / FEATURES, count, n_features, time.perf_counter() - start)


def read_embedding(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, features float32 (n, n_features)) from a features.parquet written by `embed`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    n_features = json.loads(table.schema.metadata[b"zoobot"])["n_features"]
    features = np.asarray(table.column("features").combine_chunks().flatten(), dtype=np.float32)
    return np.asarray(table.column("id_str").to_pylist()), features.reshape(-1, n_features)


def images_of(ids, manifest=None, folder: str | Path | None = None, image_shape=None) -> np.ndarray:
    """uint8 images of `ids` in that order, from the shards (one pass over their files) or from an
    image folder (ids are paths relative to it)."""
    from zoobot.data.manifest import FEATURE_ID, FEATURE_IMAGE

    ids = [str(i) for i in ids]
    if manifest is None:
        from zoobot.data.images import ImageSpec, read_image

        spec = ImageSpec(size=image_shape[0], channels=image_shape[2])
        return np.stack([read_image(Path(folder) / i, spec) for i in ids])
    from zoobot.data.shards import read_in_order

    wanted, found = set(ids), {}
    for batch in read_in_order(manifest, list(manifest.splits)).as_numpy_iterator():
        for id_bytes, image in zip(batch[FEATURE_ID], batch[FEATURE_IMAGE]):
            key = id_bytes.decode("utf-8")
            if key in wanted:
                found[key] = image
        if len(found) == len(wanted):
            break
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"Galaxies {missing[:5]} are not in the shards at {manifest.root}.")
    return np.stack([found[i] for i in ids])


def catalog_values(manifest, ids, column: str) -> np.ndarray:
    """Values of `column` of the catalog the shards were converted from, for `ids` (NaN where a galaxy
    is missing), as floats; a column of labels becomes category codes."""
    import pandas as pd

    from zoobot.data.catalog import read_table

    path = Path(manifest.catalog.get("path", ""))
    if not path.is_file():
        raise ValueError(f"The catalog the shards were converted from, '{path}', is not on this disk; color_by "
                         "reads its columns. Leave color_by empty, or convert again from here.")
    id_column = manifest.config.get("id_column") or manifest.schema_obj.id_column
    table = read_table(path, text_columns=(id_column,))
    if column not in table.columns:
        raise ValueError(f"color_by: the catalog '{path}' has no column '{column}'; its columns include "
                         f"{list(table.columns)[:20]}.")
    table = table.drop_duplicates(id_column).set_index(table[id_column].astype(str).str.strip())
    values = table.reindex([str(i) for i in ids])[column]
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float)
    codes = values.astype("category").cat.codes.to_numpy().astype(float)
    return np.where(codes < 0, np.nan, codes)

