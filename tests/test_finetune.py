"""Finetuning a trained model on a new question: the new head, the frozen-then-unfrozen phases, the
layer-wise learning rates, resumption (also across the phase boundary and after SIGKILL, into the same
run), and the record of the base model on the run and the registered version."""

import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, TINY_MODEL, kill_after_epoch
from zoobot.core.model_meta import ModelMeta
from zoobot.data.manifest import Manifest
from zoobot.model.checkpoint import Checkpoint
from zoobot.model.finetune import FinetuneConfig, finetune, finetune_model, set_phase, trunk_blocks
from zoobot.model.network import ModelConfig, load_keras_model, save_bundle
from zoobot.model.optimizers import LayerwiseAdam
from zoobot.model.train import TrainConfig, train

BAR_SCHEMA = """\
name: bars
id_column: iauname
questions:
  - name: barred
    binary_column: has_bar          # 0/1: counts has_bar_yes / has_bar_no are derived
"""


@pytest.fixture(scope="module")
def base_model(tiny_shards, tmp_path_factory):
    """A tiny decision-tree model trained for two epochs, saved as `zoobot train` saves it."""
    folder = tmp_path_factory.mktemp("base")
    manifest = Manifest.read(tiny_shards)
    config = TrainConfig(shards=str(tiny_shards), batch_size=8, epochs=2, schedule="constant", min_epochs=0)
    result = train(config, ModelConfig(**TINY_MODEL), manifest, Checkpoint(folder / "ckpt"))
    meta = ModelMeta(manifest.schema, "dirichlet", image_shape=(32, 32, 3), val_loss=result.best_val_loss)
    return save_bundle(result.model, folder / "bundle", meta) / "model.keras"


@pytest.fixture(scope="module")
def bar_shards(tiny_shards, tmp_path_factory):
    """The tiny survey's galaxies with a question the base never saw: a 0/1 'has a bar' label from the
    simulator's latent bar strength."""
    from zoobot.data.convert import ConvertConfig, convert

    folder = tmp_path_factory.mktemp("bars")
    survey = tiny_shards.parent / "survey"
    catalog = pd.read_csv(survey / "catalog.csv")[["iauname", "file_loc", "sim_bar_strength"]].copy()
    catalog["has_bar"] = (catalog["sim_bar_strength"] > catalog["sim_bar_strength"].median()).astype(int)
    catalog["file_loc"] = [str(survey / f) for f in catalog["file_loc"]]
    catalog.to_csv(folder / "bars.csv", index=False)
    (folder / "bars.yaml").write_text(BAR_SCHEMA)
    convert(ConvertConfig(catalog=str(folder / "bars.csv"), schema=str(folder / "bars.yaml"),
                          output_dir=str(folder / "shards"), image_size=32, shard_size=16, workers=1))
    return folder / "shards"


def config_for(shards, base, **kw) -> FinetuneConfig:
    settings = {"epochs": 3, "frozen_epochs": 2, "unfreeze_blocks": 1, "batch_size": 8, "min_epochs": 0,
                "schedule": "constant", **kw}
    return FinetuneConfig(shards=str(shards), base_model=str(base), **settings)


# -- the model and its phases ---------------------------------------------------------------------------


def test_the_new_head_sits_on_the_base_trunk_and_fits_the_new_schema(base_model, bar_shards):
    base = load_keras_model(base_model)
    schema = Manifest.read(bar_shards).schema_obj
    model = finetune_model(base, schema, config_for(bar_shards, base_model, output="dirichlet"))
    assert model.output_shape == (None, 2)  # has_bar_yes, has_bar_no
    np.testing.assert_array_equal(model.get_layer("features").get_weights()[0],
                                  base.get_layer("features").get_weights()[0])
    blocks = [[layer.name for layer in block] for block in trunk_blocks(model)]
    assert blocks == [["features"], ["block2_conv1", "block2_conv2"], ["block1_conv1", "block1_conv2"]]


def test_phases_freeze_the_trunk_then_unfreeze_its_top_blocks_at_decaying_rates(base_model, bar_shards):
    base = load_keras_model(base_model)
    model = finetune_model(base, Manifest.read(bar_shards).schema_obj, config_for(bar_shards, base_model))

    def learning():
        return {v.path.split("/")[0] for v in model.trainable_variables}

    assert set_phase(model, 0, 0.5) == {} and learning() == {"output_sigmoid"}
    assert set_phase(model, 2, 0.5) == {"features": 0.5, "block2_conv1": 0.25, "block2_conv2": 0.25}
    assert learning() == {"output_sigmoid", "features", "block2_conv1", "block2_conv2"}
    assert set(set_phase(model, -1, 0.5)) == {"features", "block2_conv1", "block2_conv2", "block1_conv1",
                                              "block1_conv2"}


def test_layerwise_adam_scales_each_layers_step():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="top")(keras.layers.Dense(4, name="low")(inputs)))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.compile(optimizer=LayerwiseAdam({"low": 0.5}, learning_rate=0.01), loss="mse")
    model.train_on_batch(np.ones((8, 3), "float32"), np.full((8, 1), 5.0, "float32"))
    steps = {v.path: np.abs(v.numpy() - before[v.path]) for v in model.trainable_variables}
    # Adam's first step is learning_rate * sign(gradient) (to 1e-3) for every weight with a gradient
    np.testing.assert_allclose(steps["top/kernel"][steps["top/kernel"] > 0], 0.01, rtol=1e-3)
    np.testing.assert_allclose(steps["low/kernel"][steps["low/kernel"] > 0], 0.005, rtol=1e-3)


def test_finetune_trains_the_head_then_the_top_block_and_resumes_across_the_phase_boundary(
        base_model, bar_shards, tmp_path):
    manifest = Manifest.read(bar_shards)
    base = load_keras_model(base_model)
    # phase 1 alone, as a job killed at the boundary leaves it: the trunk is the base's, untouched
    frozen = finetune(config_for(bar_shards, base_model, epochs=2), base_model, manifest, Checkpoint(tmp_path / "c"))
    for name in ("features", "block2_conv1", "block1_conv1"):
        for a, b in zip(frozen.model.get_layer(name).get_weights(), base.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    checkpoint = Checkpoint(tmp_path / "c")
    checkpoint.state["finished"] = False
    resumed = finetune(config_for(bar_shards, base_model), base_model, manifest, checkpoint)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 3
    # phase 2 unfroze 'features' only: it moved, the conv blocks did not
    assert not np.array_equal(resumed.model.get_layer("features").get_weights()[0],
                              base.get_layer("features").get_weights()[0])
    for name in ("block2_conv1", "block1_conv1"):
        np.testing.assert_array_equal(resumed.model.get_layer(name).get_weights()[0], base.get_layer(name).get_weights()[0])
    # and it is the job that never stopped
    whole = finetune(config_for(bar_shards, base_model), base_model, manifest, Checkpoint(tmp_path / "w"))
    assert resumed.history == whole.history
    for a, b in zip(resumed.model.get_weights(), whole.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_base_model_for_other_images_is_refused_with_the_fix(base_model, tiny_shards, tmp_path):
    from zoobot.data.convert import ConvertConfig, convert

    survey = tiny_shards.parent / "survey"
    convert(ConvertConfig(catalog=str(survey / "catalog.csv"), output_dir=str(tmp_path / "s16"), image_size=16,
                          shard_size=64, workers=1))
    with pytest.raises(ValueError, match=r"32x32x3.*16x16x3.*--image-size 32"):
        finetune(config_for(tmp_path / "s16", base_model), base_model, Manifest.read(tmp_path / "s16"),
                 Checkpoint(tmp_path / "c"))


@pytest.mark.parametrize("kw, message", [
    ({"base_model": " "}, "base_model is required"),
    ({"unfreeze_blocks": -2}, "unfreeze_blocks must be >= 0"),
    ({"block_lr_decay": 0}, "block_lr_decay must be in"),
    ({"output": "dirichlet", "question": "barred"}, "only used with output='binomial'"),
])
def test_bad_finetune_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        FinetuneConfig(shards="x", **{"base_model": "m.keras", **kw})


# -- through the command line, with MLflow ----------------------------------------------------------------


def zoobot(*args, uri, cwd):
    return [sys.executable, str(ROOT / "entrypoints" / "step.py"), *args], {**os.environ, "MLFLOW_TRACKING_URI": uri}


@pytest.mark.slow
def test_your_own_question_finetuned_from_a_registered_model_killed_resumed_and_evaluated(
        tiny_shards, bar_shards, tmp_path):
    """The README's "Your own question": a registered base model, `zoobot finetune` on a 0/1 question
    (killed mid-way and rerun: it resumes into the same run), then `zoobot evaluate` with ROC AUC."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command, env = zoobot("train", "--shards", str(tiny_shards), "--batch-size", "8", "--epochs", "2",
                          "--filters", TINY_MODEL["filters"], "--dense-units", str(TINY_MODEL["dense_units"]),
                          "--registered-model-name", "survey-base", uri=uri, cwd=tmp_path)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    command, env = zoobot("finetune", "--base-model", "models:/survey-base@champion", "--shards", str(bar_shards),
                          "--batch-size", "8", "--epochs", "8", "--frozen-epochs", "3", "--patience", "20",
                          "--checkpoint-dir", str(tmp_path / "ckpt"), "--registered-model-name", "bars",
                          uri=uri, cwd=tmp_path)
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    killed_at = kill_after_epoch(process, tmp_path / "ckpt" / "state.json", 2)
    assert 2 <= killed_at < 8

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs(["0"], "tags.step = 'finetune'")
    assert len(runs) == 1
    run = runs[0]
    assert f"Resuming run {run.info.run_id} from epoch {killed_at}" in rerun.stdout
    assert "Next: zoobot evaluate --model models:/bars/1" in rerun.stdout
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == list(range(1, 9))
    # the base model, as it was when used: on the run and on the registered version
    base = client.get_model_version_by_alias("survey-base", "champion")
    assert run.data.params["base_model"] == "models:/survey-base@champion"
    assert run.data.tags["base_model"] == f"models:/survey-base@champion = survey-base version 1 (run {base.run_id})"
    version = client.get_model_version("bars", "1")
    assert version.tags["base_model"] == run.data.tags["base_model"]
    assert "**Base model.** Finetuned from models:/survey-base@champion = survey-base version 1" in version.description
    assert version.description.startswith("**Model.** `vgg` CNN with MC dropout")  # the model card
    assert "'bars' schema" in version.description

    # the finetuned pyfunc still samples: MC dropout survived logging and reloading
    import mlflow.pyfunc

    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    mlflow.set_tracking_uri(uri)
    samples = mlflow.pyfunc.load_model("models:/bars/1").predict(images, params={"n_samples": 6})
    assert samples.shape == (4, 1, 6) and np.ptp(samples, axis=-1).max() > 0

    command, env = zoobot("evaluate", "--model", "models:/bars/1", "--shards", str(bar_shards), uri=uri, cwd=tmp_path)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    (evaluation,) = client.search_runs(["0"], "tags.step = 'evaluate'")
    assert {"test_barred_roc_auc", "test_barred_f1", "test_barred_recall"} <= set(evaluation.data.metrics), \
        sorted(evaluation.data.metrics)


def test_an_efficientnet_trunk_is_cut_into_its_own_blocks(bar_shards):
    """EfficientNetB0's blocks from the top: features, top conv, block7, ..., block1, the stem; its
    input normalisation belongs to no block and never learns; batch norms stay frozen."""
    from zoobot.core.schema import GZ_DECALS
    from zoobot.model.network import build_model

    base = build_model(ModelConfig(architecture="efficientnetb0", dense_units=8), GZ_DECALS, (32, 32, 3))
    model = finetune_model(base, Manifest.read(bar_shards).schema_obj, config_for(bar_shards, "b.keras"))
    blocks = trunk_blocks(model)
    tops = [sorted({layer.name.split("_")[0][:6] for layer in block}) for block in blocks]
    assert tops == [["featur"], ["top"], *[[f"block{k}"] for k in range(7, 0, -1)], ["stem"]]
    multipliers = set_phase(model, 2, 0.5)
    assert multipliers["features"] == 0.5 and multipliers["top_conv"] == 0.25 and "top_bn" not in multipliers
    learning = {v.path.split("/")[-2] for v in model.trainable_variables}
    assert learning == {"features", "top_conv", "output_sigmoid"}
