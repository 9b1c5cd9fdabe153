"""The benchmark harness runs end to end at its tiniest sizes and reports every figure.

The values at these sizes mean nothing (a few dozen 16x16 galaxies); what is checked is that the
table, the JSON report and the MLflow run all hold every figure, so the harness cannot rot.
"""

import json

import mlflow
import pytest
from click.testing import CliRunner

from zoobot.bench.benchmark import SCIENCE_KEYS, SPECS, BenchmarkConfig, Figure, format_table, resolve_sizes

REPORT_FIELDS = {"key", "title", "value", "target", "comparison", "unit", "spread", "repeats", "values", "passed",
                 "notes", "details"}


def test_quick_mode_at_tiny_sizes_reports_every_figure(tmp_path, monkeypatch):
    from zoobot.cli.benchmark import build

    # The user's store as a plain folder: a new SQLite store spends ~8 s on its schema migrations,
    # and the benchmark already makes one (its throwaway store for figure 3).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
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
            assert figure["value"] is None and "full mode only" in figure["notes"]
        else:
            assert isinstance(figure["value"], float) and figure["repeats"] >= 1, key
            assert figure["spread"][0] <= figure["value"] <= figure["spread"][1], key
    assert report["mode"] == "tiny" and report["machine"]["cores"] >= 1 and "mlflow" in report["versions"]
    for key in SPECS:
        assert SPECS[key][0] in result.output  # the printed table has a row per figure

    (run,) = mlflow.search_runs(search_all_experiments=True, filter_string="tags.step = 'benchmark'",
                                output_format="list")
    assert set(SPECS) - set(SCIENCE_KEYS) <= set(run.data.metrics)
    assert run.data.params["size.n_images"] == "64" and "version.tensorflow-cpu" in run.data.params
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/benchmark.json")
    assert logged["figures"].keys() == report["figures"].keys()
    # the figure-3 runs went to a throwaway store, not the user's
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1


def test_a_figure_passes_by_its_comparison():
    assert Figure("mc_speedup", 20.0).passed is True
    assert Figure("mc_speedup", 10.0).passed is False
    assert Figure("bald_fraction", 0.05).passed is False  # strictly under 5%
    assert Figure("tracking_overhead", 1.03).passed is True
    assert Figure("label_efficiency", None).passed is None
    table = format_table([Figure("mc_speedup", 20.0, (18.0, 22.0)), Figure("label_efficiency", None)])
    assert "yes" in table and "n/a" in table


def test_sizes_follow_the_mode_and_the_overrides():
    assert resolve_sizes(BenchmarkConfig()).memory_pool == 10_000 and resolve_sizes(BenchmarkConfig()).science
    quick = resolve_sizes(BenchmarkConfig(quick=True, n_images=512))
    assert quick.n_images == 512 and not quick.science and quick.repeats == 3
    assert resolve_sizes(BenchmarkConfig(quick=True, science=True)).science
    with pytest.raises(ValueError, match="repeats"):
        BenchmarkConfig(repeats=-1)
