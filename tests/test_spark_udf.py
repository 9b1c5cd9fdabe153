"""Scale: the registered champion scored through `mlflow.pyfunc.spark_udf` on a local Spark session.

Every galaxy gets n_outputs x n_samples MC-dropout samples, new ones on every call, and their mean
agrees with zoobot's own `mc_predict` on the same images within MC noise.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_MODEL, VENV_BIN
from zoobot.data.manifest import Manifest
from zoobot.core.schema import GZ_DECALS
from zoobot.data.shards import read_split

pytestmark = [
    pytest.mark.slow,
    # pyspark 4.3 warns on every pandas UDF that pandas 3 is not fully supported; this test is what checks our path.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]
pytest.importorskip("pyspark", reason="pyspark is the optional extra zoobot[spark]: pip install -e '.[spark]'")

MODEL_NAME = "spark-galaxies"
MODEL_URI = f"models:/{MODEL_NAME}@champion"
N_GALAXIES = 6
N_SAMPLES = 30


def find_java_home() -> str | None:
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return os.environ.get("JAVA_HOME", "")
    for candidate in sorted(Path("/usr/lib/jvm").glob("java-*-openjdk*")):
        if (candidate / "bin" / "java").is_file():
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def registered_model(tiny_shards, tmp_path_factory):
    """A 1-epoch tiny model trained by `zoobot train`, logged and registered (champion) in a fresh
    SQLite tracking store that this module's process uses too."""
    root = tmp_path_factory.mktemp("spark_tracking")
    uri = f"sqlite:///{root}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="spark-udf")
    result = subprocess.run(
        [str(VENV_BIN / "zoobot"), "train", "--shards", str(tiny_shards), "--epochs", "1", "--batch_size", "8",
         "--checkpoint_dir", str(root / "ckpt"), "--registered_model_name", MODEL_NAME,
         "--filters", TINY_MODEL["filters"], "--dense_units", str(TINY_MODEL["dense_units"])],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)  # ./mlruns of the store resolve here
        yield uri


@pytest.fixture(scope="module")
def spark(registered_model):
    java_home = find_java_home()
    if java_home is None:
        pytest.skip("Spark needs Java 17+: no JAVA_HOME, no `java` on PATH, nothing in /usr/lib/jvm.")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as mp:
        if java_home:
            mp.setenv("JAVA_HOME", java_home)
        mp.setenv("PYSPARK_PYTHON", sys.executable)  # the workers run the model: they need this venv
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (SparkSession.builder.master("local[2]").appName("zoobot-spark-udf-test")
                   .config("spark.ui.enabled", "false")
                   .config("spark.sql.shuffle.partitions", "2")
                   .config("spark.sql.execution.arrow.maxRecordsPerBatch", "2")  # several batches per task
                   .getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def galaxies(tiny_shards):
    test = read_split(Manifest.read(tiny_shards), "test")
    return test["id_str"][:N_GALAXIES], test["image"][:N_GALAXIES]


def in_order(predictions, ids):
    """Samples rearranged to follow `ids` (Spark does not promise row order)."""
    where = {galaxy: i for i, galaxy in enumerate(predictions.id_str)}
    return predictions.samples[[where[galaxy] for galaxy in ids]]


def test_spark_udf_gives_mc_dropout_samples_like_mc_predict(spark, registered_model, galaxies, tmp_path):
    from zoobot import tracking
    from zoobot.model.network import load_bundle
    from zoobot.model.sampling import mc_predict
    from zoobot.tracking.spark import collect_predictions, images_frame, score_with_spark

    ids, images = galaxies
    frame = images_frame(spark, ids, images)
    scored = score_with_spark(spark, MODEL_URI, frame, n_samples=N_SAMPLES)
    assert scored.columns == ["id_str", "samples"]

    first = collect_predictions(scored, MODEL_URI)
    second = collect_predictions(scored, MODEL_URI)  # the UDF runs again: new dropout masks
    assert sorted(first.id_str) == sorted(ids) and first.kind == "dirichlet"
    a, b = in_order(first, ids), in_order(second, ids)
    assert a.shape == b.shape == (N_GALAXIES, GZ_DECALS.n_answers, N_SAMPLES)
    assert np.all(np.isfinite(a)) and np.all(a > 0)  # Dirichlet concentrations
    assert a.std(axis=-1).mean() > 0  # the samples of one galaxy differ: dropout is on
    assert not np.allclose(a, b)  # and each call draws anew

    # the same images through zoobot's own MC dropout: the means agree within MC noise
    model, meta = load_bundle(tracking.local_model_path(MODEL_URI))
    assert meta.image_shape == images.shape[1:]
    local = mc_predict(model, images.astype(np.float32), N_SAMPLES)
    noise = np.sqrt((a.var(axis=-1) + local.var(axis=-1)) / N_SAMPLES)
    gap = np.abs(a.mean(axis=-1) - local.mean(axis=-1))
    assert np.all(gap <= 5 * noise + 1e-4 * np.abs(local.mean(axis=-1))), float((gap / (noise + 1e-12)).max())

    # the scored pool written out as a Spark user would keep it
    scored.write.parquet(str(tmp_path / "pool_samples"))
    back = spark.read.parquet(str(tmp_path / "pool_samples"))
    assert back.count() == N_GALAXIES
    assert back.schema["samples"].dataType.simpleString() == "array<array<float>>"


def test_score_with_spark_says_what_is_wrong(spark, galaxies):
    from zoobot.tracking.spark import images_frame, samples_array, score_with_spark

    ids, images = galaxies
    frame = images_frame(spark, ids, images).withColumnRenamed("image", "pixels")
    with pytest.raises(ValueError, match=r"missing columns \['image'\].*image_col="):
        score_with_spark(spark, MODEL_URI, frame, n_samples=3)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        score_with_spark(spark, MODEL_URI, frame, n_samples=0, image_col="pixels")
    with pytest.raises(ValueError, match="differ in shape"):
        samples_array([[[1.0, 2.0]], [[1.0, 2.0, 3.0]]])
