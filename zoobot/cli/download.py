"""`zoobot download catalog|images`: published vote catalogs and survey cutouts, each an MLflow run.

Options come from the config dataclasses in zoobot.data.download, as for every other step.
"""

from __future__ import annotations

import functools

import click

from zoobot.cli.options import experiment_option, options_from, user_errors
from zoobot.core import tags as tag_names

FAILURES_SHOWN = 10


def _download_errors(function):
    """A download that could not finish is the user's to retry or fix: a message, not a traceback."""
    from zoobot.data.download import DownloadError

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DownloadError as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def build() -> click.Command:
    from zoobot.data.download import (
        SOURCES,
        DownloadCatalogConfig,
        DownloadImagesConfig,
    )

    @click.group(name="download", help="Fetch published Galaxy Zoo vote catalogs and survey cutouts of their "
                                       "galaxies, ready for `zoobot convert`.")
    def download():
        pass

    @download.command(name="catalog", help=f"Fetch a published vote catalog ({', '.join(sorted(SOURCES))}) and "
                                           "check it against its published size/checksum and schema.")
    @click.argument("name", required=False, metavar="[SOURCE]")
    @options_from(DownloadCatalogConfig)
    @experiment_option
    @user_errors
    @_download_errors
    def catalog(name, **options):
        from zoobot import tracking
        from zoobot.data.download import download_catalog

        if name and options["source"] and name != options["source"]:
            raise click.UsageError(f"The source is given twice, as '{name}' and --source '{options['source']}'; "
                                   "give it once.")
        config = DownloadCatalogConfig(**(options | {"source": name or options["source"]}))
        with tracking.step_run("download", config, tags={tag_names.DOWNLOAD: "catalog"}):
            result = download_catalog(config, progress=True)
            tracking.log_download(result)
        what = "Downloaded" if result.downloaded else "Already there, verified"
        click.echo(f"{what}: {result.path} ({result.n_rows} galaxies, {result.size / 1e6:.1f} MB, checked: "
                   f"{result.verified}). Schema: {result.source.schema}.")

    @download.command(name="images", help="Fetch a cutout of every catalog galaxy with ra/dec from a survey's "
                                          "cutout service and write a catalog with their paths. Resumable.")
    @options_from(DownloadImagesConfig)
    @experiment_option
    @user_errors
    @_download_errors
    def images(**options):
        from zoobot import tracking
        from zoobot.data.download import download_images

        config = DownloadImagesConfig(**options)
        with tracking.step_run("download", config, tags={tag_names.DOWNLOAD: "images"}):
            result = download_images(config, progress=True)
            tracking.log_download(result)
            if result.n_selected and not result.n_written:
                raise click.ClickException(
                    f"No cutout could be downloaded ({result.n_failed} failures, listed in {result.failures_path}); "
                    f"first reasons: {result.failures['reason'].head(3).tolist()}. Check the address "
                    f"({result.url_template}) and your connection.")
        click.echo(f"{result.n_downloaded} cutouts downloaded, {result.n_present} already there, "
                   f"{result.n_failed} failed or set aside. Catalog of {result.n_written} galaxies with images: "
                   f"{result.output_catalog}")
        if result.n_failed:
            for row in result.failures.head(FAILURES_SHOWN).itertuples():
                click.echo(f"  row {row.row} {row.id}: {row.reason}")
            more = f" (and {result.n_failed - FAILURES_SHOWN} more)" if result.n_failed > FAILURES_SHOWN else ""
            click.echo(f"All failures{more}: {result.failures_path}. Run the same command again to retry them.")

    return download
