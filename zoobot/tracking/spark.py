"""Scoring a pool too large for one machine: the registered model as a Spark UDF.

The logged model (zoobot.tracking.registry.log_model) has one named tensor input, `images` (-1, H, W, C)
float32 with values 0..255, and returns MC-dropout samples (-1, n_outputs, n_samples). MLflow's
`spark_udf` feeds a tensor input from an array column: each row holds one image flattened in C
order (H * W * C numbers), and MLflow reshapes a batch of rows into (B, H, W, C) before the
model sees it. So the model needs no Spark-specific input path; what Spark needs told is the
result type, because MLflow only infers 1-D and 2-D outputs:

    samples: array<array<float>>, per galaxy n_outputs arrays of n_samples MC-dropout samples

which is one row of what `zoobot predict` writes, MC-sample axis last. Every call draws new
dropout masks, as `predict` does.

Spark runs the model in its Python workers: they must run an interpreter that has zoobot's
dependencies (set PYSPARK_PYTHON before the session starts). pyspark is the optional extra
`zoobot[spark]` and is imported only inside these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoobot.core.model_meta import ModelMeta
from zoobot.core.predictions import Predictions

SAMPLES_TYPE = "array<array<float>>"  # per galaxy: n_outputs arrays of n_samples
IMAGE_TYPE = "array<float>"  # per galaxy: H * W * C pixel values 0..255, C order


def images_frame(spark, id_str: Sequence[str], images: np.ndarray, id_col: str = "id_str",
                 image_col: str = "image"):
    """A Spark DataFrame (id_col string, image_col array<float>) from images (N, H, W, C) in memory.

    For pools that do not fit on the driver, write the same two columns to Parquet instead and
    read them with `spark.read.parquet`.
    """
    from pyspark.sql import types as T

    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(id_str):
        raise ValueError(f"images must have shape (n_galaxies={len(id_str)}, height, width, channels); "
                         f"got {images.shape}.")
    flat = images.reshape(len(images), -1).astype(np.float32)
    schema = T.StructType([T.StructField(id_col, T.StringType(), False),
                           T.StructField(image_col, T.ArrayType(T.FloatType(), False), False)])
    return spark.createDataFrame([(str(i), row.tolist()) for i, row in zip(id_str, flat)], schema)


def score_with_spark(spark, model_uri: str, images_df, n_samples: int, *, id_col: str = "id_str",
                     image_col: str = "image"):
    """A Spark DataFrame (id_col, samples) of MC-dropout samples for every row of `images_df`.

    `images_df[image_col]` holds flattened images (array of H * W * C numbers, any numeric type);
    `samples` is array<array<float>>: n_outputs arrays of `n_samples` samples each. The model
    is loaded once per Python worker task from `model_uri` (e.g. "models:/NAME@champion"), in
    this environment (env_manager="local"). Rows reach the model in Arrow batches of
    `spark.sql.execution.arrow.maxRecordsPerBatch` rows (10,000 by default; lower it for large
    images).
    """
    import mlflow
    from pyspark.sql import functions as F

    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1 (MC-dropout samples per galaxy); found {n_samples!r}.")
    missing = [c for c in (id_col, image_col) if c not in images_df.columns]
    if missing:
        raise ValueError(f"images_df is missing columns {missing}; it has {images_df.columns}. Pass id_col= and "
                         "image_col= to name the id column and the column of flattened images.")
    udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=SAMPLES_TYPE, env_manager="local",
                                  params={"n_samples": int(n_samples)})
    # The model's only input is named "images"; a column passed positionally is fed to it whatever its name.
    return images_df.select(F.col(id_col), udf(F.col(image_col).cast(IMAGE_TYPE)).alias("samples"))


def samples_array(rows: Sequence) -> np.ndarray:
    """Per-galaxy UDF results (each n_outputs lists of n_samples) as one array (galaxies, outputs, samples)."""
    if len(rows) == 0:
        raise ValueError("No rows to stack: the scored DataFrame was empty.")
    try:
        samples = np.asarray([np.asarray(row, dtype=np.float32) for row in rows])
    except ValueError as error:  # ragged rows
        raise ValueError(f"Scored rows differ in shape; every galaxy should have n_outputs x n_samples values "
                         f"({error}).") from None
    if samples.ndim != 3:
        raise ValueError(f"Expected per galaxy an (n_outputs, n_samples) array of samples; the stacked rows have "
                         f"shape {samples.shape}.")
    return samples


def collect_predictions(scored_df, model_uri: str, id_col: str = "id_str") -> Predictions:
    """The scored rows on the driver as Predictions (for results that fit in memory); the model's
    logged metadata says what the outputs mean."""
    import mlflow

    rows = scored_df.select(id_col, "samples").collect()
    metadata = mlflow.models.get_model_info(model_uri).metadata or {}
    if "schema" not in metadata or "output" not in metadata:
        raise ValueError(f"Model '{model_uri}' has no zoobot metadata (schema, output); log it with "
                         "zoobot.tracking.registry.log_model.")
    meta = ModelMeta.from_dict(metadata)
    return meta.predictions(np.array([row[id_col] for row in rows]), samples_array([row["samples"] for row in rows]))
