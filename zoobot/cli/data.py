"""The `simulate` and `convert` commands: a survey, then its shards."""

from __future__ import annotations

import dataclasses

import click

from zoobot.cli.options import options_from, user_errors
from zoobot.core import tags as tag_names


def simulate() -> click.Command:
    from zoobot.data.simulate import SimulateConfig

    @click.command(name="simulate", help="Simulate a Galaxy Zoo survey: galaxy images and volunteer votes from known morphology.")
    @options_from(SimulateConfig)
    @user_errors
    def simulate(**options):
        from zoobot import tracking
        from zoobot.data.simulate import simulate_survey

        config = SimulateConfig(**options)
        with tracking.step_run("simulate", config, tags={tag_names.SCHEMA: config.schema}):
            result = simulate_survey(config, progress=True)
            tracking.log_simulation(result)
        click.echo(f"Wrote {len(result.catalog)} galaxies: {result.catalog_path}")

    return simulate


def convert() -> click.Command:
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
