"""MLflow entry point `main`: the whole pipeline on the embedded default, as child runs.

Each step is `mlflow.run` of this project's own entry point, nested under this run, and gets the
previous step's output by artifact URI (runs:/<id>/...), as in MLflow's multistep example.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402
import mlflow  # noqa: E402

from zoobot import pipeline, tracking  # noqa: E402
from zoobot.cli import options_from, user_errors  # noqa: E402

PROJECT = str(Path(__file__).resolve().parents[1])


def run_step(step: pipeline.Step) -> mlflow.entities.Run:
    click.echo(f"--- {step.entry_point} {step.parameters}")
    submitted = mlflow.run(PROJECT, step.entry_point, parameters=step.parameters,
                           env_manager="local", synchronous=True)  # nested runs do not inherit the CLI's choice
    return mlflow.tracking.MlflowClient().get_run(submitted.run_id)


@click.command()
@options_from(pipeline.PipelineConfig)
@user_errors
def main(**options):
    config = pipeline.PipelineConfig(**options)
    with tracking.step_run("main", config) as parent:
        survey = run_step(pipeline.simulate_step(config))
        shards = run_step(pipeline.convert_step(config, f"runs:/{survey.info.run_id}/survey/catalog.csv"))
        mlflow.log_metrics({k: v for k, v in shards.data.metrics.items() if k.startswith("n_")})
    click.echo(f"Pipeline run {parent.info.run_id}: survey {survey.info.run_id}, shards {shards.info.run_id}")


if __name__ == "__main__":
    main()
