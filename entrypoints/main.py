"""MLflow entry point `main`: the whole pipeline, each step a child run of this one.

Each step is `mlflow.run` of this project's own entry point, nested under this run, and gets the
previous step's output by artifact URI (runs:/<id>/...), as in MLflow's multistep example. A step
that already finished with the same parameters, inputs and code version is reused, not run again.
Which steps run and what each is fed is `zoobot.workflows.pipeline.run_pipeline`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402
import mlflow  # noqa: E402

from zoobot import tracking  # noqa: E402
from zoobot.cli.options import experiment_option, options_from, user_errors  # noqa: E402
from zoobot.workflows import pipeline  # noqa: E402

PROJECT = str(Path(__file__).resolve().parents[1])


def step_runner(chosen: list[str]):
    def run_step(step: pipeline.Step) -> mlflow.entities.Run:
        earlier = tracking.find_finished_run(step)
        if earlier is not None:
            click.echo(f"--- {step.entry_point}: reusing run {earlier.info.run_id} (same parameters, inputs and code)")
            tracking.record_reuse(step.entry_point, earlier)
            return earlier
        if step.step_name not in chosen:
            raise click.ClickException(
                f"Step '{step.step_name}' is not in steps={','.join(chosen)} and no finished run of it with these "
                f"parameters was found to reuse ({step.identity}). Add '{step.step_name}' to steps.")
        click.echo(f"--- {step.entry_point} {step.parameters}")
        submitted = mlflow.run(PROJECT, step.entry_point, parameters=step.parameters,
                               env_manager="local", synchronous=True)  # nested runs do not inherit the CLI's choice
        return mlflow.tracking.MlflowClient().get_run(submitted.run_id)

    return run_step


@click.command()
@options_from(pipeline.PipelineConfig)
@experiment_option
@user_errors
def main(**options):
    config = pipeline.PipelineConfig(**options)
    with tracking.step_run("main", config) as parent:
        runs = pipeline.run_pipeline(config, step_runner(config.step_list))
        tracking.log_pipeline_summary(runs)
    click.echo(f"Pipeline run {parent.info.run_id}: " + ", ".join(f"{k} {r.info.run_id}" for k, r in runs.items()))


if __name__ == "__main__":
    main()
