"""The `simulate` and `convert` commands: a survey, then its shards."""

from __future__ import annotations

import dataclasses

import click

from zoobot.cli.options import experiment_option, options_from, user_errors
from zoobot.core import tags as tag_names


def simulate() -> click.Command:
    from zoobot.data.simulate import SimulateConfig

    @click.command(name="simulate", help="Simulate a Galaxy Zoo survey: galaxy images and volunteer votes from known morphology.")
    @options_from(SimulateConfig)
    @experiment_option
    @user_errors
    def simulate(**options):
        from zoobot import tracking
        from zoobot.data.simulate import simulate_survey

        config = SimulateConfig(**options)
        with tracking.step_run("simulate", config, tags={tag_names.SCHEMA: config.schema}):
            result = simulate_survey(config, progress=True)
            tracking.log_simulation(result)
        click.echo(f"Wrote {len(result.catalog)} galaxies: {result.catalog_path}")
        click.echo(f"Next: zoobot convert --catalog {result.catalog_path} --schema {config.schema} "
                   f"--image-size {config.image_size} --output-dir SHARDS")

    return simulate


def convert() -> click.Command:
    from zoobot.data.convert import ConvertConfig

    @click.command(name="convert", help="Convert a catalog and its images into TFRecord shards with a manifest.json.")
    @options_from(ConvertConfig)
    @experiment_option
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
        click.echo(next_after_convert(result.manifest))

    return convert


def next_after_convert(manifest) -> str:
    """The command a user runs next on these shards: a campaign's first iteration, or training."""
    root = manifest.root
    if "pool" in manifest.counts:
        if manifest.oracle:  # labelled galaxies held back: a replayed campaign
            return f"Next: zoobot active_learning --shards {root} --work-dir CAMPAIGN_DIR --arms bald,random"
        return (f"Next (week 1 of a campaign with volunteers): zoobot al_iteration --state CAMPAIGN_DIR/state.db "
                f"--shards {root} --oracle zooniverse --n-acquire N")
    if not manifest.counts.get("train"):
        return f"Next: zoobot predict --model MODEL --shards {root} --output-dir PREDICTIONS"
    return f"Next: zoobot train --shards {root} --registered-model-name NAME"
