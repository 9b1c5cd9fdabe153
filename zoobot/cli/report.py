"""The `report` command: a Markdown status report of an experiment."""

from __future__ import annotations

import os
from pathlib import Path

import click

from zoobot.cli.options import options_from, split_options, user_errors
from zoobot.core import tags as tag_names


def report() -> click.Command:
    from zoobot.tracking.report import ReportConfig

    @click.command(name="report", help="A Markdown status report of an experiment from the tracking server: "
                                       "the replacement for a hand-written status.md.")
    @options_from(ReportConfig)
    @user_errors
    def report(**options):
        from zoobot import tracking
        from zoobot.tracking.report import build_report

        (config,) = split_options(options, ReportConfig)
        data = tracking.report_data(config.experiment)
        runs = data["runs"]
        if len(runs):  # not the report runs themselves (nor this one, under `mlflow run -e report`)
            column = f"tags.{tag_names.STEP}"
            step = runs[column] if column in runs else ""
            data["runs"] = runs[(step != "report") & (runs["run_id"] != os.environ.get("MLFLOW_RUN_ID", ""))]
        text = build_report(data["runs"], data["experiment"], data["experiment_id"], data["tracking_uri"],
                            data["champions"], config.sort_by, config.descending)
        path = Path(config.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if os.environ.get("MLFLOW_RUN_ID"):  # under `mlflow run . -e report`: the report is that run's artifact
            with tracking.step_run("report", config):
                tracking.log_report(path, len(data["runs"]))
        click.echo(text)
        click.echo(f"Wrote {path}")

    return report
