"""The `zoobot` command: one subcommand per step, each an MLflow run.

Options are generated from each step's config dataclass, the one home of their defaults and help;
MLproject declares the same parameters (a test checks they agree). Every option accepts both
`--image-size` and `--image_size`, and booleans take a value (`--overwrite true`) so that
`mlflow run -P overwrite=true` and the command line read alike.
"""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """Builds a subcommand only when it is asked for, so `zoobot --help` and the worker processes
    that re-import the main script (multiprocessing's spawn and forkserver do) never load
    TensorFlow just to list the commands."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, builder = COMMANDS[name]
        return getattr(importlib.import_module(f"zoobot.cli.{module}"), builder)()


@click.group(cls=LazyGroup, help=__doc__.split("\n\n")[0])
@click.version_option(package_name="zoobot")
def main():
    pass


# name -> (module under zoobot.cli, function building the click command); imported only when asked for
COMMANDS = {
    "download": ("download", "build"), "simulate": ("data", "simulate"), "convert": ("data", "convert"),
    "train": ("model", "train"), "finetune": ("model", "finetune"), "predict": ("model", "predict"), "evaluate": ("model", "evaluate"),
    "embed": ("model", "embed"),
    "al_iteration": ("active", "al_iteration"), "active_learning": ("active", "active_learning"),
    "report": ("report", "report"), "benchmark": ("benchmark", "build"),
}
