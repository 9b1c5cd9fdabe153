"""The `zoobot` command: one subcommand per step, each an MLflow run.

Options are generated from each step's config dataclass, the one home of their defaults and help;
MLproject declares the same parameters (a test checks they agree). Every option accepts both
`--image-size` and `--image_size`, and booleans take a value (`--overwrite true`) so that
`mlflow run -P overwrite=true` and the command line read alike.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import get_type_hints

import click

from zoobot.data.catalog import CatalogError
from zoobot.data.manifest import ManifestError
from zoobot.core.schema import SchemaError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the step's own output

# Errors whose message already tells the user what to fix: shown without a traceback.
USER_ERRORS = (CatalogError, SchemaError, ManifestError, FileExistsError, ValueError)


def options_from(*config_classes):
    """Click options for every field of the config dataclasses, with their defaults and help."""
    fields = [(f, get_type_hints(cls)[f.name]) for cls in config_classes for f in dataclasses.fields(cls) if f.init]

    def decorate(command):
        for f, kind in reversed(fields):
            click_type = {bool: click.BOOL, int: int, float: float}.get(kind, str)
            required = f.default is dataclasses.MISSING
            names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
            command = click.option(
                *names, f.name,
                type=click_type,
                required=required,
                default=None if required else f.default,
                show_default=not required,
                help=f.metadata.get("help", ""),
            )(command)
        return command

    return decorate


def split_options(options: dict, *config_classes):
    """One config per class from the command's options."""
    return tuple(cls(**{f.name: options[f.name] for f in dataclasses.fields(cls) if f.init})
                 for cls in config_classes)


def user_errors(function):
    """Turn a user's mistake into a one-paragraph error instead of a traceback, and a lost tracking
    server into a message that says the local work is safe and how to resume.

    Every command so wrapped logs to MLflow, so an http(s) tracking server is checked once before
    the work starts: one that was never there fails within seconds, and the "lost mid-run" message
    is kept for a server that really went away after that. (`--help` never gets here.)"""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            from zoobot.tracking.references import check_tracking_server

            check_tracking_server()
            return function(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from e
        except Exception as e:
            if not _lost_tracking_server(e):
                raise
            uri = os.environ.get("MLFLOW_TRACKING_URI", "the tracking server")
            raise click.ClickException(
                f"Lost the MLflow tracking server at {uri} mid-run ({_first_line(e)}). Nothing local was lost: "
                "checkpoints (data/checkpoints/ or --checkpoint-dir), shards, predictions and campaign state stay "
                "on disk. Start the server again and rerun the same command: it resumes into the same run from "
                "where it stopped.") from e

    return wrapper


def _lost_tracking_server(error: BaseException) -> bool:
    """An MLflow REST call that could not reach the server (after MLflow's own retries)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if "API request to" in text and any(s in text for s in (
                "Max retries exceeded", "Connection refused", "ConnectionError", "timeout", "RemoteDisconnected",
                "Connection aborted", "too many 5")):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."


class LazyGroup(click.Group):
    """Builds a subcommand only when it is asked for, so `zoobot --help` and the worker processes
    that re-import the main script (multiprocessing's spawn and forkserver do) never load
    TensorFlow just to list the commands."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        build = COMMANDS.get(name)
        return build() if build else None


@click.group(cls=LazyGroup, help=__doc__.split("\n\n")[0])
@click.version_option(package_name="zoobot")
def main():
    pass



def _simulate() -> click.Command:
    from zoobot.data.simulate import SimulateConfig

    @click.command(name="simulate", help="Simulate a Galaxy Zoo survey: galaxy images and volunteer votes from known morphology.")
    @options_from(SimulateConfig)
    @user_errors
    def simulate(**options):
        from zoobot import tracking
        from zoobot.data.simulate import simulate_survey

        config = SimulateConfig(**options)
        with tracking.step_run("simulate", config, tags={tracking.TAG_SCHEMA: config.schema}):
            result = simulate_survey(config, progress=True)
            tracking.log_simulation(result)
        click.echo(f"Wrote {len(result.catalog)} galaxies: {result.catalog_path}")

    return simulate


def _convert() -> click.Command:
    from zoobot.data.convert import ConvertConfig

    @click.command(name="convert", help="Convert a catalog and its images into TFRecord shards with a manifest.json.")
    @options_from(ConvertConfig)
    @user_errors
    def convert(**options):
        from zoobot import tracking
        from zoobot.data.convert import convert as run_convert

        config = ConvertConfig(**options)
        with tracking.step_run("convert", config):
            if tracking.is_uri(config.catalog):
                catalog = tracking.resolve_local_file(config.catalog)
                config = dataclasses.replace(config, catalog=str(catalog))
            result = run_convert(config, progress=True)
            tracking.log_conversion(result, config)
        counts = ", ".join(f"{k}={v}" for k, v in result.manifest.counts.items())
        click.echo(f"Wrote shards to {result.manifest.root} ({counts}); {len(result.rejected)} rows set aside"
                   + (f", listed in {result.manifest.root / 'rejected.csv'}" if len(result.rejected) else "") + ".")


    return convert


def _train() -> click.Command:
    from zoobot.model.train import TrainConfig
    from zoobot.model.network import ModelConfig

    @click.command(name="train", help="Train a Bayesian CNN on shards; resumable, logged, and registered in the MLflow registry.")
    @options_from(TrainConfig, ModelConfig)
    @user_errors
    def train(**options):
        from zoobot.model import train as training
        from zoobot import tracking
        from zoobot.data.manifest import Manifest

        config, model_config = split_options(options, TrainConfig, ModelConfig)
        strategy = training.make_strategy(config)  # first: logical CPUs must be set before TensorFlow starts
        shards = tracking.resolve_local(config.shards, "shards")
        manifest = Manifest.read(shards)
        key = training.checkpoint_key(tracking.file_digest(shards / "manifest.json"), config, model_config)
        checkpoint = training.Checkpoint(Path(config.checkpoint_dir) if config.checkpoint_dir
                                         else training.default_checkpoint_dir(key))
        chief = training.is_chief(strategy)
        if checkpoint.state["finished"]:
            # A finished job run again is a new training, not a resume; the chief clears the folder,
            # the other workers of a multi-worker job (sharing it) just start from epoch 0 as well.
            checkpoint.reset() if chief else checkpoint.forget()
        if not chief:
            # Other workers of a multi-worker job compute their share and leave the record to the chief.
            training.train(config, model_config, manifest, checkpoint, strategy)
            click.echo(f"Worker finished its share of the training (chief writes {checkpoint.folder}).")
            return
        resume = checkpoint.meta.get("run_id") if checkpoint.epoch else None
        tags = {"architecture": model_config.architecture, "output": model_config.output,
                tracking.TAG_SCHEMA: manifest.schema["name"]}
        with tracking.resume_or_start("train", dataclasses.asdict(config) | dataclasses.asdict(model_config),
                                      resume, tags) as run:
            checkpoint.meta["run_id"] = run.info.run_id
            if resume:
                click.echo(f"Resuming run {resume} from epoch {checkpoint.epoch} ({checkpoint.folder})")
                tracking.backfill_history(checkpoint.state["history"])
            result = training.train(config, model_config, manifest, checkpoint, strategy,
                                    callbacks=[tracking.metrics_logger()])
            logged = tracking.log_training(result, manifest, config, model_config, strategy.num_replicas_in_sync)
        click.echo(f"Best validation loss {result.best_val_loss:.4f} at epoch {result.best_epoch}; model "
                   f"{logged['model_uri']}" + (f", registered as {config.registered_model_name} v"
                                               f"{logged['registered_version']}" if logged["registered_version"] else "")
                   + (" (champion)" if logged["champion"] else ""))

    return train


def _predict() -> click.Command:
    from zoobot.model.predict import PredictConfig

    @click.command(name="predict", help="MC-dropout predictions for every galaxy of a shard set or an image folder.")
    @options_from(PredictConfig)
    @user_errors
    def predict(**options):
        from zoobot.tracking.references import resolve_model

        (config,) = split_options(options, PredictConfig)
        model_path = resolve_model(config.model)  # before TensorFlow loads and a run opens: a bad one fails fast

        from zoobot import tracking
        from zoobot.data.manifest import Manifest
        from zoobot.model.network import load_bundle
        from zoobot.model.predict import predict as run_predict

        with tracking.step_run("predict", config):
            model, meta = load_bundle(model_path)
            manifest = Manifest.read(tracking.resolve_local(config.shards, "shards")) if config.shards else None
            result = run_predict(config, model, meta, manifest, progress=True)
            tracking.log_prediction(result)
        click.echo(f"Predicted {result.n_galaxies} galaxies ({result.n_galaxies / result.seconds:.0f}/s): "
                   f"{result.samples_path}, {result.summary_path}")

    return predict


def _evaluate() -> click.Command:
    from zoobot.model.evaluate import EvaluateConfig

    @click.command(name="evaluate", help="Evaluate a model on a labelled split: errors, coverage, calibration, Bayesian gain.")
    @options_from(EvaluateConfig)
    @user_errors
    def evaluate(**options):
        from zoobot.tracking.references import resolve_model

        (config,) = split_options(options, EvaluateConfig)
        model_path = resolve_model(config.model)  # before TensorFlow loads and a run opens: a bad one fails fast

        from zoobot import tracking
        from zoobot.model.evaluate import evaluate as run_evaluate
        from zoobot.data.manifest import Manifest
        from zoobot.model.network import load_bundle
        from zoobot.model.predict import predict_split

        with tracking.step_run("evaluate", config):
            model, meta = load_bundle(model_path)
            manifest = Manifest.read(tracking.resolve_local(config.shards, "shards"))
            result = run_evaluate(*predict_split(model, meta, manifest, config.split, config.n_samples,
                                                 config.batch_size))
            tracking.log_evaluation(result, config.split)
        shown = {k: round(v, 4) for k, v in result.metrics.items() if "_" not in k or k.startswith("coverage_error")}
        click.echo(f"{config.split}: {shown}")

    return evaluate



def _al_iteration() -> click.Command:
    from zoobot.active.loop import ALConfig
    from zoobot.model.network import ModelConfig

    @click.command(name="al_iteration", help="One active-learning iteration: train, predict the pool, acquire, "
                                             "request labels, ingest them. Resumable at every stage.")
    @options_from(ALConfig, ModelConfig)
    @user_errors
    def al_iteration(**options):
        from zoobot.active.campaign import run_logged_iteration

        config, model_config = split_options(options, ALConfig, ModelConfig)
        outcome, state = run_logged_iteration(config, model_config, arm=config.acquisition)
        status = ("waiting for volunteers' labels: rerun with --labels-file" if outcome.waiting_for_labels
                  else f"{outcome.n_labelled} galaxies labelled")
        ingest = state.stage_info(outcome.iteration, "ingest") if "ingest" in outcome.stages_run else {}
        if ingest.get("n_rejected"):
            status += (f"; {ingest['n_rejected']} label rows were set aside, each with its reason in "
                       f"{ingest['rejected_file']} (send corrected rows with the next --labels-file)")
        click.echo(f"Iteration {outcome.iteration} ({', '.join(outcome.stages_run) or 'nothing left to do'}): "
                   f"acquired {len(outcome.acquired)}; {status}.")

    return al_iteration


def _active_learning() -> click.Command:
    from zoobot.active.loop import CampaignConfig
    from zoobot.model.network import ModelConfig

    @click.command(name="active_learning", help="A simulated campaign: several acquisition arms, each for N "
                                                "iterations, as nested runs; learning curves and label saving.")
    @options_from(CampaignConfig, ModelConfig)
    @user_errors
    def active_learning(**options):
        from zoobot import tracking
        from zoobot.active.loop import labels_needed
        from zoobot.active.campaign import learning_curve, run_logged_iteration
        from zoobot.active.pool import PoolState

        config, model_config = split_options(options, CampaignConfig, ModelConfig)
        parent_file = Path(config.work_dir) / "campaign_run.json"
        resume = json.loads(parent_file.read_text())["run_id"] if parent_file.is_file() else None
        with tracking.resume_or_start("active_learning", dataclasses.asdict(config) | dataclasses.asdict(model_config),
                                      resume) as parent:
            parent_file.parent.mkdir(parents=True, exist_ok=True)
            parent_file.write_text(json.dumps({"run_id": parent.info.run_id}))
            curves = {}
            for arm in config.arm_list:
                arm_config = config.arm_config(arm)
                while True:
                    state_path = Path(arm_config.state)
                    if state_path.exists():
                        with PoolState.open(state_path) as state:
                            if state.current_iteration() > config.iterations:
                                curves[arm] = learning_curve(state)
                                break
                    outcome, state = run_logged_iteration(arm_config, model_config, arm=arm, nested=True)
                    click.echo(f"{arm}: iteration {outcome.iteration} done, {outcome.n_labelled} labelled")
                    state.close()
            saving, reason = labels_needed(curves)
            tracking.log_learning_curves(curves, saving, reason)
        click.echo(f"Label saving of the best arm over random: {saving:.1%}" if saving == saving
                   else f"Label saving not computed: {reason}")

    return active_learning


def _report() -> click.Command:
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
            step = runs["tags.step"] if "tags.step" in runs else ""
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


def _benchmark() -> click.Command:
    from zoobot.cli.benchmark import build

    return build()


def _download() -> click.Command:
    from zoobot.cli.download import build

    return build()


COMMANDS = {"download": _download, "simulate": _simulate, "convert": _convert, "train": _train, "predict": _predict, "evaluate": _evaluate,
            "al_iteration": _al_iteration, "active_learning": _active_learning, "report": _report,
            "benchmark": _benchmark}


if __name__ == "__main__":
    main()
