"""The `zoobot` command: one subcommand per step, each an MLflow run.

Options are generated from each step's config dataclass, the one home of their defaults and help;
MLproject declares the same parameters (a test checks they agree). Every option accepts both
`--image-size` and `--image_size`, and booleans take a value (`--overwrite true`) so that
`mlflow run -P overwrite=true` and the command line read alike.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import get_type_hints

import click

from zoobot.catalog import CatalogError
from zoobot.convert import ConvertConfig
from zoobot.manifest import ManifestError
from zoobot.schema import SchemaError
from zoobot.simulate import SimulateConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the step's own output

# Errors whose message already tells the user what to fix: shown without a traceback.
USER_ERRORS = (CatalogError, SchemaError, ManifestError, FileExistsError, ValueError)


def options_from(config_cls):
    """Click options for every field of a config dataclass, with its default and help."""
    hints = get_type_hints(config_cls)

    def decorate(command):
        for f in reversed(dataclasses.fields(config_cls)):
            if not f.init:
                continue
            kind = hints[f.name]
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


def user_errors(function):
    """Turn a user's mistake into a one-paragraph error instead of a traceback."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from e

    return wrapper


@click.group(help=__doc__.split("\n\n")[0])
@click.version_option(package_name="zoobot")
def main():
    pass


@main.command(help="Simulate a Galaxy Zoo survey: galaxy images and volunteer votes from known morphology.")
@options_from(SimulateConfig)
@user_errors
def simulate(**options):
    from zoobot import tracking
    from zoobot.simulate import simulate_survey

    config = SimulateConfig(**options)
    with tracking.step_run("simulate", config, tags={tracking.TAG_SCHEMA: config.schema}):
        result = simulate_survey(config, progress=True)
        tracking.log_simulation(result)
    click.echo(f"Wrote {len(result.catalog)} galaxies: {result.catalog_path}")


@main.command(help="Convert a catalog and its images into TFRecord shards with a manifest.json.")
@options_from(ConvertConfig)
@user_errors
def convert(**options):
    from zoobot import tracking
    from zoobot.convert import convert as run_convert

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


if __name__ == "__main__":
    main()
