"""Representations: `embed` streams the trunk's features of every galaxy; similarity search and the
2-D map work on them."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, write_pngs
from zoobot.core.model_meta import ModelMeta
from zoobot.core.similarity import nearest_neighbours, pca_map
from zoobot.data.manifest import Manifest
from zoobot.data.shards import read_split
from zoobot.model.embed import EmbedConfig, embed, images_of, read_embedding, trunk_of
from zoobot.model.network import BUNDLE_KERAS, ModelConfig, build_model, load_bundle, save_bundle


@pytest.fixture(scope="module")
def bundle(tiny_shards, tmp_path_factory):
    import keras

    manifest = Manifest.read(tiny_shards)
    keras.utils.set_random_seed(3)
    model = build_model(ModelConfig(**TINY_MODEL), manifest.schema_obj, manifest.image_shape)
    return save_bundle(model, tmp_path_factory.mktemp("bundle"), ModelMeta(manifest.schema, "dirichlet")) / BUNDLE_KERAS


def test_embed_writes_the_trunk_features_of_every_galaxy_in_shard_order(bundle, tiny_shards, tmp_path):
    model, meta = load_bundle(bundle)
    manifest = Manifest.read(tiny_shards)
    result = embed(EmbedConfig(model=str(bundle), shards=str(tiny_shards), output_dir=str(tmp_path), batch_size=7),
                   model, meta, manifest)
    ids, features = read_embedding(result.features_path)
    expected_ids = np.concatenate([read_split(manifest, s)["id_str"] for s in manifest.splits])
    np.testing.assert_array_equal(ids, expected_ids)
    assert features.shape == (48, result.n_features) and features.dtype == np.float32
    # deterministic: the trunk before the MC dropout, the same features on every call
    images = np.concatenate([read_split(manifest, s)["image"] for s in manifest.splits]).astype(np.float32)
    np.testing.assert_allclose(features, np.asarray(trunk_of(model).predict(images, verbose=0)), rtol=1e-4, atol=1e-5)
    again = embed(EmbedConfig(model=str(bundle), shards=str(tiny_shards), output_dir=str(tmp_path), overwrite=True),
                  model, meta, manifest)
    np.testing.assert_array_equal(read_embedding(again.features_path)[1], features)
    with pytest.raises(FileExistsError, match="overwrite=true"):
        embed(EmbedConfig(model=str(bundle), shards=str(tiny_shards), output_dir=str(tmp_path)), model, meta, manifest)


def test_a_model_with_dropout_on_its_conv_output_embeds_the_flattened_feature_map(tiny_shards):
    manifest = Manifest.read(tiny_shards)
    model = build_model(ModelConfig(**TINY_MODEL, conv_dropout_rate=0.2), manifest.schema_obj, manifest.image_shape)
    trunk = trunk_of(model)
    assert len(trunk.output.shape) == 2 and trunk.output.shape[-1] > TINY_MODEL["dense_units"]


def test_nearest_neighbours_and_the_map_on_a_known_case():
    ids = np.array(["a", "b", "c", "d", "e"])
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.05]])
    found = nearest_neighbours(ids, features, "a", k=3, metric="cosine")
    assert list(found["id_str"]) == ["e", "b", "c"] and list(found["rank"]) == [1, 2, 3]
    assert found["distance"].is_monotonic_increasing and found["distance"].iloc[-1] == pytest.approx(1.0)
    assert list(nearest_neighbours(ids, features, "a", k=2, metric="euclidean")["id_str"]) == ["b", "e"]
    assert len(nearest_neighbours(ids, features, "a", k=50)) == 4  # at most every other galaxy
    with pytest.raises(ValueError, match="Galaxy 'zz' is not among the 5 embedded galaxies"):
        nearest_neighbours(ids, features, "zz")
    coordinates, variance = pca_map(features)
    assert coordinates.shape == (5, 2) and variance[0] >= variance[1] and variance.sum() == pytest.approx(1.0)


def test_embed_command_logs_features_neighbours_and_a_map_coloured_by_a_catalog_column(bundle, tiny_shards, tmp_path,
                                                                                        sqlite_tracking):
    from zoobot.cli import main

    manifest = Manifest.read(tiny_shards)
    query = str(read_split(manifest, "test")["id_str"][0])
    column = f"{manifest.label_cols[0]}_fraction"
    result = CliRunner().invoke(main, ["embed", "--model", str(bundle), "--shards", str(tiny_shards), "--output-dir",
                                       str(tmp_path / "emb"), "--neighbours-of", query, "--k", "4",
                                       "--color-by", column])
    assert result.exit_code == 0, result.output
    assert "Embedded 48 galaxies" in result.output and f"Nearest to {query}" in result.output
    run = mlflow.search_runs(filter_string="tags.step = 'embed'", output_format="list")[0]
    assert run.data.metrics["n_galaxies"] == 48
    artifacts = {a.path for a in MlflowClient(sqlite_tracking).list_artifacts(run.info.run_id)}
    assert {"embedding", "neighbours.csv", "neighbours.png", "embedding_map.png", "config.json"} <= artifacts
    bad = CliRunner().invoke(main, ["embed", "--model", str(bundle), "--shards", str(tiny_shards), "--output-dir",
                                    str(tmp_path / "emb2"), "--color-by", "no-such-column"])
    assert bad.exit_code != 0 and "has no column 'no-such-column'" in bad.output
    assert "embedded" not in bad.output  # checked before any galaxy went through the model


def test_embed_an_image_folder_and_find_an_images_neighbours(bundle, tmp_path):
    model, meta = load_bundle(bundle)
    write_pngs(tmp_path / "imgs", ["a", "b", "c", "d"], size=40)
    config = EmbedConfig(model=str(bundle), images=str(tmp_path / "imgs"), output_dir=str(tmp_path / "out"))
    ids, features = read_embedding(embed(config, model, meta).features_path)
    assert list(ids) == ["a.png", "b.png", "c.png", "d.png"] and len(features) == 4
    images = images_of(["c.png", "a.png"], folder=tmp_path / "imgs", image_shape=tuple(model.input_shape[1:]))
    assert images.shape == (2, *model.input_shape[1:]) and images.dtype == np.uint8
    with pytest.raises(ValueError, match="color_by reads the catalog"):
        EmbedConfig(model="m", images="x", color_by="col")
