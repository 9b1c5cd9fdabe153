"""Conversion speed: images/s of `convert` with 1 and 2 workers against a bare decode+resize loop
over the same files in one process, measured side by side in one run (ratios, not absolute times,
are what carry over between runs on a shared machine).

    .venv/bin/python benchmarks/convert_speed.py --n-galaxies 3000 --repeats 3

The images converted are 424x424 PNGs, the size Galaxy Zoo volunteers see (simulated galaxies,
upsampled), converted to 64x64.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click
from PIL import Image

from zoobot.catalog import load_catalog
from zoobot.convert import ConvertConfig, convert
from zoobot.images import ImageSpec, read_image
from zoobot.simulate import SimulateConfig, simulate_survey


def bare_rate(paths: list[str], spec: ImageSpec) -> float:
    start = time.perf_counter()
    for path in paths:
        read_image(path, spec)
    return len(paths) / (time.perf_counter() - start)


def convert_rate(catalog: Path, out: Path, workers: int, image_size: int) -> float:
    start = time.perf_counter()
    result = convert(ConvertConfig(catalog=str(catalog), output_dir=str(out), image_size=image_size,
                                   workers=workers, overwrite=True))
    return sum(result.manifest.counts.values()) / (time.perf_counter() - start)


@click.command()
@click.option("--n-galaxies", default=2000, show_default=True)
@click.option("--source-size", default=424, show_default=True, help="Size of the PNGs being converted.")
@click.option("--image-size", default=64, show_default=True, help="Size they are converted to.")
@click.option("--repeats", default=3, show_default=True)
def main(n_galaxies, source_size, image_size, repeats):
    from zoobot import shards  # noqa: F401  (import TensorFlow before timing anything)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        click.echo(f"Simulating {n_galaxies} galaxies, upsampled to {source_size}px ...")
        survey = simulate_survey(SimulateConfig(output_dir=str(tmp / "survey"), n_galaxies=n_galaxies,
                                                image_size=128))
        paths = load_catalog(survey.catalog_path, "decals").galaxies["image_path"].tolist()
        for path in paths:
            Image.open(path).resize((source_size, source_size), Image.Resampling.BICUBIC).save(path)
        spec = ImageSpec(size=image_size, channels=3)
        rows = {"bare decode+resize (1 process)": [], "convert, 1 worker": [], "convert, 2 workers": []}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit every variant alike
            rows["bare decode+resize (1 process)"].append(bare_rate(paths, spec))
            rows["convert, 1 worker"].append(convert_rate(survey.catalog_path, tmp / "s1", 1, image_size))
            rows["convert, 2 workers"].append(convert_rate(survey.catalog_path, tmp / "s2", 2, image_size))
    reference = statistics.median(rows["bare decode+resize (1 process)"])
    click.echo(f"\n{'variant':34s} {'images/s (median)':>18s} {'spread':>14s} {'ratio to bare':>14s}")
    for name, rates in rows.items():
        median = statistics.median(rates)
        click.echo(f"{name:34s} {median:18.0f} {min(rates):6.0f}-{max(rates):<7.0f} {median / reference:14.2f}")
    click.echo("\nTargets (issue 6): 2 workers >= 1.6x bare; 1 worker >= 0.7x bare.")


if __name__ == "__main__":
    main()
