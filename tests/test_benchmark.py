"""The benchmark harness runs end to end at its tiniest sizes and reports every figure, and the
workflows it measures are the real ones, their MLflow runs kept out of the user's store.

The values at these sizes mean nothing (a few dozen 16x16 galaxies); what is checked is that the
table, the JSON report and the MLflow run all hold every figure, so the harness cannot rot.
"""

import json
import os

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from zoobot.bench.benchmark import SCIENCE_KEYS, SPECS, BenchmarkConfig, Measurement, format_table, resolve_sizes

REPORT_FIELDS = {"key", "title", "value", "target", "comparison", "unit", "spread", "repeats", "values", "passed",
                 "notes", "details"}
MAX_MODULE_LINES = 400


@pytest.fixture
def users_store(tmp_path, monkeypatch):
    """The user's store as a plain folder: a new SQLite store spends ~8 s on its schema migrations,
    and the benchmark already makes one (its throwaway store)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


def test_quick_mode_at_tiny_sizes_reports_every_figure(tmp_path, monkeypatch, users_store):
    from zoobot.cli.benchmark import build

    monkeypatch.chdir(tmp_path)
    output = tmp_path / "report" / "benchmark.json"
    result = CliRunner().invoke(build(), ["--quick", "true", "--tiny", "true", "--output", str(output)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output

    report = json.loads(output.read_text())
    assert list(report["figures"]) == list(SPECS)
    for key, figure in report["figures"].items():
        assert set(figure) == REPORT_FIELDS, key
        assert figure["target"] == SPECS[key][2]
        if key in SCIENCE_KEYS:
            assert figure["value"] is None and "science figure: full or science mode" in figure["notes"]
        else:
            assert isinstance(figure["value"], float) and figure["repeats"] >= 1, key
            assert figure["spread"][0] <= figure["value"] <= figure["spread"][1], key
    assert "run_training" in report["figures"]["tracking_overhead"]["notes"]
    assert report["mode"] == "tiny" and report["machine"]["cores"] >= 1 and "mlflow" in report["versions"]
    for key in SPECS:
        assert SPECS[key][0] in result.output  # the printed table has a row per figure

    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.step = 'benchmark'",
                                output_format="list")
    assert set(SPECS) - set(SCIENCE_KEYS) <= set(run.data.metrics)
    assert run.data.params["size.n_images"] == "64" and "version.tensorflow-cpu" in run.data.params
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/benchmark.json")
    assert logged["figures"].keys() == report["figures"].keys()
    # the runs of the real training job went to a throwaway store, not the user's
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1


def test_a_workflows_run_goes_to_the_scratch_store_and_not_under_the_callers_run(tmp_path, users_store):
    from zoobot.bench.scratch import in_own_thread, scratch_experiment

    def workflow():  # opens its run as run_training and run_campaign do: default experiment, no parent given
        with mlflow.start_run() as run:
            mlflow.log_param("inside", "yes")
            return run.info.run_id, run.info.experiment_id

    with mlflow.start_run() as callers:
        with scratch_experiment(tmp_path / "scratch") as experiment_id:
            run_id, run_experiment = in_own_thread(workflow)
            scratch_run = mlflow.get_run(run_id)
            with pytest.raises(ZeroDivisionError):
                in_own_thread(lambda: 1 / 0)  # raised in the caller's thread
        assert mlflow.active_run().info.run_id == callers.info.run_id
    assert run_experiment == experiment_id and scratch_run.data.params == {"inside": "yes"}
    assert "mlflow.parentRunId" not in scratch_run.data.tags
    users_runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.run_id for r in users_runs] == [callers.info.run_id] and users_runs[0].data.params == {}
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ


def test_label_efficiency_is_the_real_campaigns_label_saving(tmp_path, monkeypatch, users_store):
    from zoobot.bench import science
    from zoobot.bench.config import PRESETS
    from zoobot.workflows import campaign

    curves = {"bald": pd.DataFrame({"n_labelled": [24, 32, 40], "test_loss": [3.0, 2.5, 2.0]}),
              "random": pd.DataFrame({"n_labelled": [24, 32, 40], "test_loss": [3.0, 2.8, 2.6]})}
    seen = {}

    def fake_run_campaign(config, model_config, say=print):
        seen.update(config=config, active=mlflow.active_run(), uri=mlflow.get_tracking_uri(),
                    experiment=os.environ.get("MLFLOW_EXPERIMENT_ID"))
        return campaign.CampaignOutcome(curves, 0.4, "", "a-run-id")

    monkeypatch.setattr(campaign, "run_campaign", fake_run_campaign)
    sizes = PRESETS["tiny"]
    with mlflow.start_run():
        measurement = science.label_efficiency_figure(tmp_path, tmp_path / "al_shards", sizes, 3, "", say=print)
    config = seen["config"]
    assert (config.shards, config.work_dir, config.arm_list, config.seed) == (
        str(tmp_path / "al_shards"), str(tmp_path / "campaign"), ["bald", "random"], 3)
    assert (config.iterations, config.n_acquire, config.n_samples, config.epochs) == (
        sizes.al_iterations, sizes.al_acquire, sizes.al_samples, sizes.al_epochs)
    assert seen["active"] is None and seen["experiment"] and str(tmp_path / "al_tracking") in seen["uri"]
    assert measurement.value == pytest.approx(0.6) and "bald: 24->3.000, 32->2.500" in measurement.notes
    assert measurement.details["random"]["test_loss"] == [3.0, 2.8, 2.6]

    not_reached = campaign.CampaignOutcome(curves, float("nan"), "random never got below", "a-run-id")
    unmeasured = science.label_efficiency(not_reached, sizes, "")
    assert unmeasured.value is None and "Not computed: random never got below" in unmeasured.notes


def test_a_measurement_passes_by_its_comparison():
    assert Measurement("mc_speedup", 20.0).passed is True
    assert Measurement("mc_speedup", 10.0).passed is False
    assert Measurement("bald_fraction", 0.05).passed is False  # strictly under 5%
    assert Measurement("tracking_overhead", 1.03).passed is True
    assert Measurement("label_efficiency", None).passed is None
    table = format_table([Measurement("mc_speedup", 20.0, (18.0, 22.0)), Measurement("label_efficiency", None)])
    assert "yes" in table and "n/a" in table


def test_sizes_follow_the_mode_and_the_overrides():
    assert resolve_sizes(BenchmarkConfig()).memory_pool == 10_000 and resolve_sizes(BenchmarkConfig()).science
    quick = resolve_sizes(BenchmarkConfig(quick=True, n_images=512))
    assert quick.n_images == 512 and not quick.science and quick.repeats == 3
    assert resolve_sizes(BenchmarkConfig(quick=True, with_science=True)).science
    science = resolve_sizes(BenchmarkConfig(science=True))
    assert science.mode == "science" and science.science and not science.speed and science.science_seeds == 3
    with pytest.raises(ValueError, match="choose one of quick, tiny and science"):
        BenchmarkConfig(quick=True, science=True)
    with pytest.raises(ValueError, match="repeats"):
        BenchmarkConfig(repeats=-1)
    assert science.science_groups == ("label_efficiency", "calibration", "transfer")
    assert resolve_sizes(BenchmarkConfig(science=True, figures="calibration, transfer")).science_groups == \
        ("calibration", "transfer")
    with pytest.raises(ValueError, match=r"figures must be a comma-separated choice of .*got \['coverage'\]"):
        BenchmarkConfig(science=True, figures="calibration,coverage")


def test_every_bench_module_is_under_400_lines():
    lengths = {path.name: len(path.read_text().splitlines()) for path in (ROOT / "zoobot" / "bench").glob("*.py")}
    assert {name: n for name, n in lengths.items() if n >= MAX_MODULE_LINES} == {}
    assert {"benchmark.py", "config.py", "measurement.py", "speed.py", "memory.py", "science.py", "report.py"} \
        <= set(lengths)


def test_a_science_figure_over_seeds_is_their_mean_and_is_unmeasured_if_one_seed_is():
    from zoobot.bench.measurement import over_seeds

    seeds = [Measurement("coverage_error_w5", v, notes="n") for v in (0.03, 0.05, 0.04)]
    combined = over_seeds("coverage_error_w5", seeds, [0, 1, 2])
    assert combined.value == pytest.approx(0.04) and combined.spread == (0.03, 0.05) and combined.passed is True
    assert "Mean over seeds [0, 1, 2] (0.03, 0.05, 0.04)" in combined.notes and set(combined.details) == {
        "seed_0", "seed_1", "seed_2"}
    one_missing = over_seeds("label_efficiency", [Measurement("label_efficiency", 0.5),
                                                  Measurement("label_efficiency", None)], [0, 1])
    assert one_missing.value is None and one_missing.passed is None and "(0.5, -)" in one_missing.notes
    assert Measurement("spread_error_spearman", 0.0).passed is False  # strictly above 0



@pytest.fixture(scope="module")
def transfer_base(tmp_path_factory):
    """A tiny tree model saved as the science figures save theirs, and another tiny survey."""
    from tests.conftest import TINY_MODEL
    from zoobot.bench.data import simulate
    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.convert import ConvertConfig, convert
    from zoobot.data.manifest import Manifest
    from zoobot.model.checkpoint import Checkpoint
    from zoobot.model.network import ModelConfig, save_bundle
    from zoobot.model.train import TrainConfig, train

    root = tmp_path_factory.mktemp("transfer")
    base_survey = simulate(root / "base_survey", 40, 32, 1)
    manifest = Manifest.read(convert(ConvertConfig(catalog=str(base_survey.catalog_path), output_dir=str(root / "s"),
                                                   image_size=32, workers=1)).manifest.root)
    base = train(TrainConfig(shards=str(manifest.root), epochs=1, batch_size=8), ModelConfig(**TINY_MODEL), manifest,
                 Checkpoint(root / "ckpt")).model
    bundle = save_bundle(base, root / "base", ModelMeta(manifest.schema, "dirichlet", image_shape=(32, 32, 3)))
    return bundle / "model.keras", simulate(root / "other_survey", 120, 32, 2)


def test_the_transfer_figure_finetunes_the_tree_model_and_trains_from_scratch_for_its_cpu_time(
        transfer_base, tmp_path):
    """Figure 10 at tiny sizes: a 0/1 'has a bar' question on another survey, the finetuned model and the
    from-scratch one both scored by test ROC AUC; the values mean nothing here, the harness is what runs."""
    from dataclasses import replace

    from zoobot.bench.config import PRESETS
    from zoobot.bench.transfer import transfer_figure

    base_path, other = transfer_base
    sizes = replace(PRESETS["tiny"], transfer_labels=24, n_samples=4)
    finetuned, gain = transfer_figure(tmp_path / "transfer", base_path, other, sizes, 0, "")
    assert finetuned.key == "transfer_auc_finetuned" and gain.key == "transfer_auc_gain"
    details = finetuned.details
    assert details["n_train"] == 24 and details["n_test"] > 0 and 0 <= finetuned.value <= 1
    assert gain.value == pytest.approx(details["finetuned_auc"] - details["scratch_auc"])
    assert details["scratch_epochs"] >= 1 and details["finetune_cpu_s"] > 0
    assert "has a bar" in finetuned.notes.lower()


def test_the_transfer_base_is_the_default_tree_model_trained_on_its_own_survey(tmp_path):
    from dataclasses import replace

    from zoobot.bench.config import PRESETS
    from zoobot.bench.transfer import transfer_base
    from zoobot.model.network import load_bundle

    sizes = replace(PRESETS["tiny"], transfer_base_galaxies=40, science_epochs=1)
    model, meta = load_bundle(transfer_base(tmp_path, sizes, 0))
    assert meta.output == "dirichlet" and meta.image_shape == (sizes.science_image_size,) * 2 + (3,)
    assert model.output_shape[-1] == meta.schema_obj.n_answers and model.get_layer("features") is not None


@pytest.mark.slow
def test_the_transfer_campaign_figure_runs_a_campaign_from_the_base_and_one_from_scratch(
        transfer_base, tmp_path, users_store):
    from zoobot.bench.config import PRESETS
    from zoobot.bench.transfer import transfer_campaign_figure

    base_path, other = transfer_base
    measurement = transfer_campaign_figure(tmp_path / "campaigns", base_path, other, PRESETS["tiny"], 0, "")
    assert measurement.key == "transfer_label_ratio"
    assert set(measurement.details) == {"from_base", "scratch"}
    sizes = PRESETS["tiny"]
    for curve in measurement.details.values():
        assert curve["n_labelled"] == [sizes.al_initial + i * sizes.al_acquire for i in range(sizes.al_iterations)]
    assert measurement.value is None or measurement.value > 0
    assert "from_base: " in measurement.notes
    # the real workflows' runs went to the figure's throwaway store
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 0
