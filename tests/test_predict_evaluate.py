"""predict (streamed MC samples to Parquet/HDF5 + summary) and evaluate (metrics, coverage, figures)."""

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_MODEL, write_pngs
from zoobot import tracking
from zoobot.core.model_meta import ModelMeta
from zoobot.data.manifest import Manifest
from zoobot.data.shards import read_split
from zoobot.model.evaluate import EvaluateConfig, evaluate, known_truth
from zoobot.model.network import BUNDLE_KERAS, ModelConfig, load_bundle, save_bundle
from zoobot.model.predict import PredictConfig, predict, predict_split, read_predictions
from zoobot.model.train import Checkpoint, TrainConfig, train


@pytest.fixture(scope="module")
def bundle(tiny_shards, tmp_path_factory):
    manifest = Manifest.read(tiny_shards)
    result = train(TrainConfig(shards=str(tiny_shards), epochs=2, batch_size=8), ModelConfig(**TINY_MODEL),
                   manifest, Checkpoint(tmp_path_factory.mktemp("ckpt")))
    meta = ModelMeta(manifest.schema, "dirichlet")
    return save_bundle(result.model, tmp_path_factory.mktemp("bundle"), meta) / BUNDLE_KERAS


@pytest.mark.parametrize("fmt", ["parquet", "hdf5"])
def test_predict_streams_samples_and_a_summary_for_every_galaxy(bundle, tiny_shards, tmp_path, fmt):
    model, meta = load_bundle(bundle)
    manifest = Manifest.read(tiny_shards)
    config = PredictConfig(model=str(bundle), shards=str(tiny_shards), output_dir=str(tmp_path), n_samples=7,
                           batch_size=5, format=fmt)
    result = predict(config, model, meta, manifest)
    assert result.n_galaxies == 48
    predictions = read_predictions(result.samples_path)
    assert predictions.samples.shape == (48, 34, 7)
    assert predictions.kind == "dirichlet" and predictions.schema.name == "decals"
    # concentrations in [1, 100] times each question's calibration scale, fitted when training ended
    from zoobot.model.calibrate import calibration_layer

    scales = calibration_layer(model).scale.numpy()[None, :, None]
    assert (predictions.samples >= scales * (1 - 1e-5)).all() and (predictions.samples <= 100 * scales * (1 + 1e-5)).all()
    # samples differ between MC draws, ids are those of the shards in order
    assert np.std(predictions.samples, axis=2).mean() > 0
    expected_ids = np.concatenate([read_split(manifest, s)["id_str"] for s in manifest.splits])
    np.testing.assert_array_equal(predictions.id_str, expected_ids)
    summary = pd.read_csv(result.summary_path)
    assert len(summary) == 48
    mean, low, high = (summary[f"smooth-or-featured_smooth_{k}"] for k in ("mean", "low", "high"))
    assert ((low <= mean) & (mean <= high)).all() and (high > low).any()
    np.testing.assert_allclose(mean, predictions.mean_fractions("smooth-or-featured")[:, 0], rtol=1e-5)
    with pytest.raises(FileExistsError, match="overwrite=true"):
        predict(config, model, meta, manifest)


def test_predict_reads_labelled_splits_and_an_unlabelled_pool_in_one_pass(bundle, tiny_shards, tmp_path):
    from zoobot.data.convert import ConvertConfig, convert

    survey = tiny_shards.parent / "survey"
    shards = convert(ConvertConfig(catalog=str(survey / "catalog.csv"), output_dir=str(tmp_path / "al_shards"),
                                   image_size=32, shard_size=16, workers=1, labelled_size=20)).manifest.root
    manifest = Manifest.read(shards)
    assert "pool" in manifest.splits
    model, meta = load_bundle(bundle)
    result = predict(PredictConfig(model=str(bundle), shards=str(shards), output_dir=str(tmp_path / "out"),
                                   n_samples=3, batch_size=7), model, meta, manifest)
    expected_ids = np.concatenate([read_split(manifest, s)["id_str"] for s in manifest.splits])
    np.testing.assert_array_equal(read_predictions(result.samples_path).id_str, expected_ids)
    assert len(pd.read_csv(result.summary_path)) == len(expected_ids) == 48


def test_predict_says_when_the_shards_hold_fewer_galaxies_than_their_manifest(bundle, tiny_shards, tmp_path):
    import json
    import shutil

    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    record = json.loads((shards / "manifest.json").read_text())
    record["splits"]["test"]["count"] += 2
    record["splits"]["test"]["files"][-1]["count"] += 2
    (shards / "manifest.json").write_text(json.dumps(record))
    model, meta = load_bundle(bundle)
    config = PredictConfig(model=str(bundle), shards=str(shards), split="test", output_dir=str(tmp_path / "out"),
                           n_samples=2)
    with pytest.raises(ValueError, match=r"hold fewer galaxies than their manifest says \(2 missing\)"):
        predict(config, model, meta, Manifest.read(shards))
    assert not (tmp_path / "out" / "predictions.json").exists()  # nothing half-written is left as a prediction


def test_predict_overwrite_replaces_only_its_own_files(bundle, tiny_shards, tmp_path):
    model, meta = load_bundle(bundle)
    manifest = Manifest.read(tiny_shards)
    (tmp_path / "notes.txt").write_text("mine")
    config = PredictConfig(model=str(bundle), shards=str(tiny_shards), split="test", output_dir=str(tmp_path),
                           n_samples=2, format="hdf5")
    predict(config, model, meta, manifest)  # beside a user's file: fine
    again = dataclasses.replace(config, format="parquet", overwrite=True)
    predict(again, model, meta, manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "predictions.json", "samples.parquet",
                                                          "summary.csv"]  # the earlier samples.h5 went with it
    (tmp_path / "predictions.json").unlink()  # summary.csv is no longer known to be a prediction's
    with pytest.raises(ValueError, match=r"would replace 2 files .* did not write: \['samples.parquet', 'summary.csv'\]"):
        predict(again, model, meta, manifest)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_predictions_are_a_function_of_the_seed_and_test_time_augmentation_adds_views(bundle, tiny_shards, tmp_path):
    model, meta = load_bundle(bundle)
    manifest = Manifest.read(tiny_shards)

    def samples(name, **kw):
        config = PredictConfig(model=str(bundle), shards=str(tiny_shards), split="test", output_dir=str(tmp_path / name),
                               n_samples=6, batch_size=8, **kw)
        return read_predictions(predict(config, model, meta, manifest).samples_path).samples

    np.testing.assert_array_equal(samples("a", seed=3), samples("b", seed=3))
    assert not np.allclose(samples("a2", seed=3), samples("c", seed=4))
    plain, augmented = samples("plain", seed=3), samples("tta", seed=3, augment=True)
    assert augmented.shape == plain.shape and not np.allclose(augmented, plain)
    np.testing.assert_array_equal(augmented, samples("tta2", seed=3, augment=True))
    # different views of the same galaxy: the spread between samples is at least the dropout's
    assert augmented.std(axis=-1).mean() > 0.5 * plain.std(axis=-1).mean()


@pytest.mark.parametrize("batch_size", [256, 2])  # one batch; batches decoded ahead by the reader threads
def test_predict_on_a_folder_of_images(bundle, tmp_path, batch_size):
    model, meta = load_bundle(bundle)
    write_pngs(tmp_path / "imgs" / "sub", ["a", "b", "c"], size=48)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"nope")
    config = PredictConfig(model=str(bundle), images=str(tmp_path / "imgs"), output_dir=str(tmp_path / "out"),
                           n_samples=3, batch_size=batch_size)
    result = predict(config, model, meta)
    predictions = read_predictions(result.samples_path)
    assert list(predictions.id_str) == ["sub/a.png", "sub/b.png", "sub/c.png"]  # the broken file is skipped


def test_predict_settings_are_checked():
    with pytest.raises(ValueError, match="exactly one of shards"):
        PredictConfig(model="m")
    with pytest.raises(ValueError, match="format must be one of"):
        PredictConfig(model="m", shards="s", format="csv")
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        EvaluateConfig(model="m", shards="s", n_samples=1)


def test_evaluate_logs_metrics_coverage_and_figures(bundle, tiny_shards, sqlite_tracking):
    model, meta = load_bundle(bundle)
    manifest = Manifest.read(tiny_shards)
    mc, single, counts, images = predict_split(model, meta, manifest, "test", n_samples=10, batch_size=4)
    assert mc.samples.shape[2] == 10 and single.samples.shape[2] == 1
    assert len(images) == len(mc.id_str) == counts.shape[0] == manifest.counts["test"]
    # the deterministic pass is the dropout-free network: the MC mean scatters around it
    assert not np.allclose(mc.samples[..., 0], single.samples[..., 0])

    truth = known_truth(manifest, mc.id_str)  # tiny_shards come from a simulated survey
    assert truth.shape == (len(mc.id_str), len(manifest.label_cols)) and np.isfinite(truth).all()
    result = evaluate(mc, single, counts, images, truth=truth)
    for key in ("rmse", "mae", "smooth-or-featured_rmse", "smooth-or-featured_accuracy", "coverage_error_w5",
                "coverage_error_w10", "mc_loglik", "deterministic_loglik", "loglik_gain", "truth_rmse",
                "smooth-or-featured_truth_rmse", "spread_error_spearman"):
        assert key in result.metrics, key
    assert set(result.coverage["width"]) >= set(range(16))

    with mlflow.start_run() as run:
        tracking.log_evaluation(result, "test")
    client = MlflowClient(sqlite_tracking)
    logged = client.get_run(run.info.run_id).data.metrics
    assert "test_rmse" in logged and "test_smooth-or-featured_rmse" in logged and "test_coverage_error_w5" in logged
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"coverage.json", "coverage.csv", "coverage_votes.png", "coverage_fraction.png", "calibration.png",
            "posterior_examples.png", "confusion_matrices.png", "confusion"} <= artifacts


def test_evaluating_single_labels_logs_the_roc_curve_and_says_why_coverage_is_missing(sqlite_tracking):
    from tests.test_metrics import LENS, lens_case
    from zoobot.core.predictions import Predictions

    _, _, predictions, counts = lens_case()
    deterministic = Predictions(predictions.id_str, predictions.samples[..., 1:2], "binomial", LENS, "lens")
    result = evaluate(predictions, deterministic, counts, np.zeros((0, 8, 8, 3), np.uint8))
    with mlflow.start_run() as run:
        tracking.log_evaluation(result, "test")
    client = MlflowClient(sqlite_tracking)
    logged = client.get_run(run.info.run_id)
    assert {"test_lens_accuracy", "test_lens_roc_auc", "test_lens_precision", "test_lens_recall",
            "test_lens_f1"} <= set(logged.data.metrics)
    assert not any("coverage_error" in key and "mc_" not in key for key in logged.data.metrics)
    assert "Coverage is not reported for 'lens'" in logged.data.tags["zoobot.evaluation_notes"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"roc_curves.png", "evaluation_notes.txt", "confusion_matrices.png"} <= artifacts
    assert not {"coverage.json", "coverage_votes.png"} & artifacts



def test_zoobot_evaluate_prints_a_verdict_per_question_and_where_the_plots_are(bundle, tiny_shards, sqlite_tracking):
    from click.testing import CliRunner

    from zoobot.cli import main

    result = CliRunner().invoke(main, ["evaluate", "--model", str(bundle), "--shards", str(tiny_shards),
                                       "--n-samples", "5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("Evaluated ")):]  # after MLflow's log
    assert lines[0].startswith(f"Evaluated {bundle} on ") and "'test' galaxies (run " in lines[0]
    verdict = next(line for line in lines if line.startswith("  smooth-or-featured"))
    assert "mean error" in verdict and "in vote fraction" in verdict and "at +-5 votes" in verdict
    assert any(word in verdict for word in ("over-confident", "under-confident", "well calibrated"))
    assert any(line.startswith("  Overall: coverage error") and "10.6%" in line for line in lines)
    plots = next(line for line in lines if line.startswith("Plots ("))
    folder = plots[len("Plots ("):plots.index("):")]
    assert (Path(folder) / "coverage_votes.png").is_file() and (Path(folder) / "verdict.md").is_file()
    (run,) = MlflowClient(sqlite_tracking).search_runs(["0"], "tags.step = 'evaluate'")
    assert "test_coverage_signed_error_w5" in run.data.metrics
    assert run.data.tags["mlflow.note.content"].startswith("**Evaluation on 'test'**")
