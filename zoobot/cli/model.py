"""The `train`, `finetune`, `predict`, `evaluate` and `embed` commands."""

from __future__ import annotations

import click

from zoobot.cli.options import experiment_option, options_from, split_options, user_errors


def train() -> click.Command:
    from zoobot.model.network import ModelConfig
    from zoobot.model.train import TrainConfig

    @click.command(name="train", help="Train a Bayesian CNN on shards; resumable, logged, and registered in the MLflow registry.")
    @options_from(TrainConfig, ModelConfig)
    @experiment_option
    @user_errors
    def train(**options):
        from zoobot.workflows.training import run_training

        config, model_config = split_options(options, TrainConfig, ModelConfig)
        outcome = run_training(config, model_config, say=click.echo)
        if outcome.result is None:
            click.echo(f"Worker finished its share of the training (chief writes {outcome.checkpoint}).")
            return
        result, logged = outcome.result, outcome.logged
        click.echo(f"Best validation loss {result.best_val_loss:.4f} at epoch {result.best_epoch}; model "
                   f"{logged['model_uri']}" + (f", registered as {config.registered_model_name} v"
                                               f"{logged['registered_version']}" if logged["registered_version"] else "")
                   + (" (champion)" if logged["champion"] else ""))
        if result.calibration_note:
            click.echo(result.calibration_note)
        model = (f"models:/{config.registered_model_name}/{logged['registered_version']}"
                 if logged["registered_version"] else logged["model_uri"])
        click.echo(f"Next: zoobot evaluate --model {model} --shards {config.shards}")

    return train


def finetune() -> click.Command:
    from zoobot.model.finetune import FinetuneConfig

    @click.command(name="finetune", help="Finetune a trained model on shards of any schema (e.g. your own 0/1 question): "
                                         "a new head, the trunk frozen, then its top blocks unfrozen; resumable, "
                                         "logged and registered like train.")
    @options_from(FinetuneConfig)
    @experiment_option
    @user_errors
    def finetune(**options):
        from zoobot.workflows.finetuning import run_finetune

        (config,) = split_options(options, FinetuneConfig)
        outcome = run_finetune(config, say=click.echo)
        if outcome.result is None:
            click.echo(f"Worker finished its share of the finetuning (chief writes {outcome.checkpoint}).")
            return
        result, logged = outcome.result, outcome.logged
        registered = (f", registered as {config.registered_model_name} v{logged['registered_version']}"
                      if logged["registered_version"] else "")
        click.echo(f"Best validation loss {result.best_val_loss:.4f} at epoch {result.best_epoch}; model "
                   f"{logged['model_uri']}{registered}" + (" (champion)" if logged["champion"] else ""))
        if result.calibration_note:
            click.echo(result.calibration_note)
        model = (f"models:/{config.registered_model_name}/{logged['registered_version']}"
                 if logged["registered_version"] else logged["model_uri"])
        click.echo(f"Next: zoobot evaluate --model {model} --shards {config.shards}")

    return finetune


def predict() -> click.Command:
    from zoobot.model.predict import PredictConfig

    @click.command(name="predict", help="MC-dropout predictions for every galaxy of a shard set or an image folder.")
    @options_from(PredictConfig)
    @experiment_option
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


def evaluate() -> click.Command:
    from zoobot.model.evaluate import EvaluateConfig

    @click.command(name="evaluate", help="Evaluate a model on a labelled split: errors, coverage, calibration, Bayesian gain.")
    @options_from(EvaluateConfig)
    @experiment_option
    @user_errors
    def evaluate(**options):
        from zoobot.tracking.references import resolve_model

        (config,) = split_options(options, EvaluateConfig)
        model_path = resolve_model(config.model)  # before TensorFlow loads and a run opens: a bad one fails fast

        from zoobot import tracking
        from zoobot.data.manifest import Manifest
        from zoobot.model.evaluate import evaluate as run_evaluate
        from zoobot.model.evaluate import known_truth
        from zoobot.model.network import load_bundle
        from zoobot.model.predict import predict_split

        with tracking.step_run("evaluate", config) as run:
            model, meta = load_bundle(model_path)
            manifest = Manifest.read(tracking.resolve_local(config.shards, "shards"))
            mc, single, counts, images = predict_split(model, meta, manifest, config.split, config.n_samples,
                                                       config.batch_size)
            result = run_evaluate(mc, single, counts, images, truth=known_truth(manifest, mc.id_str))
            tracking.log_splits(manifest, {config.split: "evaluation"})
            tracking.log_evaluation(result, config.split)
            location = tracking.run_artifacts_location()
            cards = tracking.add_evaluation(config.model, result.metrics, config.split, len(mc.id_str))
        click.echo(f"Evaluated {config.model} on {len(mc.id_str)} '{config.split}' galaxies (run {run.info.run_id}):")
        for line in result.verdicts:
            click.echo(f"  {line}")
        for note in result.notes:
            click.echo(f"Note: {note}")
        plots = [name for name in ("coverage_votes.png", "coverage_fraction.png", "calibration.png",
                                   "confusion_matrices.png", "roc_curves.png", "posterior_examples.png")
                 if name != "roc_curves.png" or result.roc]
        if result.coverage.empty:
            plots = [p for p in plots if not p.startswith("coverage_")]
        click.echo(f"Plots ({location}): {', '.join(plots)}; every metric in the run's 'Metrics' tab, the "
                   "verdict in verdict.md. How to read the coverage and calibration plots: docs/calibration.md.")
        if cards:
            click.echo(f"Model card updated: {', '.join(cards)} (its page in the registry).")
        click.echo(f"Next: zoobot predict --model {config.model} --images GALAXY_FOLDER --output-dir PREDICTIONS "
                   "(vote fractions and credible intervals for new galaxies), or zoobot report --experiment "
                   f"{tracking.experiment_name(run.info.run_id)} to compare this run with the others.")

    return evaluate


def embed() -> click.Command:
    from zoobot.model.embed import EmbedConfig

    @click.command(name="embed", help="The model's representation of every galaxy (its trunk's features), with a "
                                      "similarity search and a 2-D map.")
    @options_from(EmbedConfig)
    @experiment_option
    @user_errors
    def embed(**options):
        from zoobot.tracking.references import resolve_model

        (config,) = split_options(options, EmbedConfig)
        model_path = resolve_model(config.model)  # before TensorFlow loads and a run opens: a bad one fails fast

        from zoobot.workflows.embedding import run_embedding

        outcome = run_embedding(config, model_path, say=click.echo)
        result = outcome.result
        click.echo(f"Embedded {result.n_galaxies} galaxies as {result.n_features} features "
                   f"({result.n_galaxies / max(result.seconds, 1e-9):.0f}/s): {result.features_path}")
        if outcome.neighbours is not None:
            click.echo(f"Nearest to {config.neighbours_of} ({config.metric}):\n"
                       + outcome.neighbours.to_string(index=False))

    return embed

