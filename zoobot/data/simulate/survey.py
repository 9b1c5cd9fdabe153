"""A simulated survey end to end: the config, sky positions and file names, the worker processes
that simulate each galaxy's image and catalog row, and the catalog, all written into a staged
output folder.

Each galaxy draws from its own random streams, derived from (seed, galaxy index), so the output
does not depend on the number of worker processes.

`sim_artifact` codes: 0 none, 1 bright star, 2 satellite trail. `sim_merger_state` codes:
0 none, 1 minor companion, 2 major interaction (companion and one tidal tail), 3 merger
(overlapping nuclei and two tails).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import click
import numpy as np
import pandas as pd

from zoobot.core import staging
from zoobot.core.machine import usable_cores
from zoobot.core.schema import Schema, load_schema
from zoobot.data.simulate.morphology import Galaxy, sample_galaxy
from zoobot.data.simulate.render import render_galaxy, write_image
from zoobot.data.simulate.volunteers import draw_votes, true_probabilities

CATALOG = "catalog.csv"
RECORD = "simulation.json"  # written last: lists every file of the survey
SCHEMAS = ("decals", "gz2")
IMAGE_FORMATS = ("png", "fits")

# Streams of each galaxy's SeedSequence(seed, spawn_key=(index, stream)).
_POSITION, _MORPHOLOGY, _VOTES, _NOISE = 0, 1, 2, 3


@dataclass(frozen=True)
class SimulateConfig:
    output_dir: str = field(
        default="data/simulated", metadata={"help": "Folder for catalog.csv and images/."}
    )
    n_galaxies: int = field(default=200, metadata={"help": "Number of galaxies to simulate."})
    image_size: int = field(default=64, metadata={"help": "Image width and height in pixels (16-1024)."})
    seed: int = field(default=1, metadata={"help": "Random seed; the same seed gives the same survey."})
    schema: str = field(default="decals", metadata={"help": "Decision tree of the votes: 'decals' or 'gz2'."})
    image_format: str = field(
        default="png",
        metadata={"help": "'png' (asinh-stretched RGB, like volunteer images) or 'fits' (g,r,z cube)."},
    )
    mean_volunteers: float = field(
        default=40.0, metadata={"help": "Mean number of volunteers answering the first question."}
    )
    workers: int = field(
        default=0, metadata={"help": "Processes rendering images; 0 = all cores, 1 = no pool."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a catalog already in output_dir."})

    def __post_init__(self):
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir).strip():
            raise ValueError(f"output_dir must be a non-empty path; found {self.output_dir!r}.")
        _check_int("n_galaxies", self.n_galaxies, minimum=1, hint="Ask for at least one galaxy.")
        _check_int("image_size", self.image_size, minimum=16, maximum=1024,
                   hint="Galaxies need at least 16 pixels to show any structure.")
        _check_int("seed", self.seed, minimum=0, hint="numpy seeds must be non-negative integers.")
        _check_int("workers", self.workers, minimum=0, hint="Use 0 for all cores or 1 to run in-process.")
        if self.schema not in SCHEMAS:
            raise ValueError(
                f"schema must be one of {list(SCHEMAS)} (the trees this simulator knows how to answer); "
                f"found {self.schema!r}."
            )
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"image_format must be one of {list(IMAGE_FORMATS)}; found {self.image_format!r}."
            )
        if (
            isinstance(self.mean_volunteers, bool)
            or not isinstance(self.mean_volunteers, (int, float))
            or not math.isfinite(self.mean_volunteers)
            or self.mean_volunteers < 1
        ):
            raise ValueError(
                f"mean_volunteers must be a finite number >= 1 (Galaxy Zoo used about 40); "
                f"found {self.mean_volunteers!r}."
            )
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"overwrite must be True or False; found {self.overwrite!r}.")


def _check_int(name: str, value, minimum: int, hint: str, maximum: int | None = None) -> None:
    # bool is an int subclass; True galaxies is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; found {value!r} ({type(value).__name__}).")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}; found {value}. {hint}")


@dataclass(frozen=True)
class SimulationResult:
    catalog_path: Path
    catalog: pd.DataFrame


@dataclass(frozen=True)
class SkyPositions:
    """Where the survey's galaxies are: their catalog ids and (ra, dec) in degrees."""

    ids: list
    ra: np.ndarray
    dec: np.ndarray


# -- the survey -----------------------------------------------------------------------------------


def simulate_survey(config: SimulateConfig, progress: bool = False) -> SimulationResult:
    """Simulate a survey: images under OUTPUT_DIR/images/, then OUTPUT_DIR/catalog.csv and, last,
    OUTPUT_DIR/simulation.json, the record of what was written (`zoobot.core.staging`).

    Everything is written into a staging folder first, so an interrupted run never leaves a
    catalog naming images that do not exist, and `overwrite` replaces only an earlier simulation's
    files: a catalog that `simulate` did not write is never replaced.
    """
    if not isinstance(config, SimulateConfig):
        raise TypeError(f"simulate_survey expects a SimulateConfig; found {type(config).__name__}.")
    schema = load_schema(config.schema)
    output_dir = Path(config.output_dir).resolve()
    owned = staging.owned_files(output_dir, RECORD, lambda record: record["files"])
    staging.check_output_folder(output_dir, RECORD, owned, config.overwrite, "simulate")

    sky = _sky_positions(config)
    file_locs = _file_locations(sky.ids, config.image_format)
    with staging.staged_output(output_dir, RECORD, owned, config.overwrite, "simulate",
                               planned=[CATALOG, *file_locs]) as folder:
        for subfolder in sorted({str(PurePosixPath(f).parent) for f in file_locs}):
            (folder / subfolder).mkdir(parents=True, exist_ok=True)
        tasks = [(i, str(folder / f)) for i, f in enumerate(file_locs)]
        rows = _run_tasks(config, tasks, progress)
        catalog = _assemble_catalog(schema, config, sky, file_locs, rows)
        catalog.to_csv(folder / CATALOG, index=False)
        record = {"step": "simulate", "config": asdict(config), "files": [CATALOG, *file_locs]}
        (folder / RECORD).write_text(json.dumps(record, indent=1))
    return SimulationResult(catalog_path=output_dir / CATALOG, catalog=catalog)


def _sky_positions(config: SimulateConfig) -> SkyPositions:
    """Unique ids and (ra, dec) in degrees, inside a DECaLS- or SDSS-like declination band."""
    dec_range = (-20.0, 35.0) if config.schema == "decals" else (-10.0, 70.0)
    sin_lo, sin_hi = (math.sin(math.radians(d)) for d in dec_range)
    ids, ras, decs, seen = [], [], [], set()
    for index in range(config.n_galaxies):
        rng = _rng(config.seed, index, _POSITION)
        while True:  # IAU names are truncated coordinates; redraw the rare collision
            ra = float(rng.uniform(0, 360))
            dec = math.degrees(math.asin(rng.uniform(sin_lo, sin_hi)))
            if config.schema == "decals":
                name = iau_name(ra, dec)
            else:
                # dr7objid-like 18-digit integers, unique by construction.
                name = 587722981736000000 + index * 4096 + int(rng.integers(4096))
            if name not in seen:
                break
        seen.add(name)
        ids.append(name)
        ras.append(ra)
        decs.append(dec)
    return SkyPositions(ids=ids, ra=np.array(ras), dec=np.array(decs))


def iau_name(ra: float, dec: float) -> str:
    """IAU-style name JHHMMSS.ss+DDMMSS.s, truncated (not rounded) as the IAU convention asks."""
    centiseconds = int(ra / 15 * 3600 * 100)
    hours, rem = divmod(centiseconds, 3600 * 100)
    minutes, rem = divmod(rem, 60 * 100)
    deciarcsec = int(abs(dec) * 3600 * 10)
    degrees, drem = divmod(deciarcsec, 3600 * 10)
    arcmin, drem = divmod(drem, 60 * 10)
    sign = "-" if dec < 0 else "+"
    return (
        f"J{hours:02d}{minutes:02d}{rem // 100:02d}.{rem % 100:02d}"
        f"{sign}{degrees:02d}{arcmin:02d}{drem // 10:02d}.{drem % 10:d}"
    )


def _file_locations(ids: list, image_format: str) -> list[str]:
    # At most 1000 images per folder: file systems and file browsers slow down past that.
    width = max(3, len(str((len(ids) - 1) // 1000)))
    return [f"images/{i // 1000:0{width}d}/{galaxy_id}.{image_format}" for i, galaxy_id in enumerate(ids)]


def _assemble_catalog(
    schema: Schema, config: SimulateConfig, sky: SkyPositions, file_locs: list[str], rows: dict[int, dict],
) -> pd.DataFrame:
    table = pd.DataFrame([rows[i] for i in range(len(sky.ids))])
    counts = table[list(schema.label_cols)].to_numpy(dtype=np.int64)
    totals = schema.question_totals(counts).astype(np.int64)
    fractions = schema.vote_fractions(counts)
    id_values = pd.Series(sky.ids, dtype="int64" if config.schema == "gz2" else "str")
    columns: dict[str, object] = {schema.id_column: id_values, "ra": sky.ra, "dec": sky.dec, "file_loc": file_locs}
    columns.update({col: counts[:, i] for i, col in enumerate(schema.label_cols)})
    columns.update({f"{q.name}_total-votes": totals[:, i] for i, q in enumerate(schema.questions)})
    if config.schema == "gz2":
        # Hart et al. 2016 also give these: every classification, and every vote on every question.
        columns["total_classifications"] = totals[:, 0]
        columns["total_votes"] = totals.sum(axis=1)
    columns.update({f"{col}_fraction": fractions[:, i] for i, col in enumerate(schema.label_cols)})
    columns.update({f"true_{col}": table[f"true_{col}"].to_numpy() for col in schema.label_cols})
    columns.update({col: table[col].to_numpy() for col in table.columns if col.startswith("sim_")})
    return pd.DataFrame(columns)


# -- worker processes -----------------------------------------------------------------------------


def _run_tasks(config: SimulateConfig, tasks: list[tuple[int, str]], progress: bool) -> dict[int, dict]:
    workers = min(_n_workers(config.workers), len(tasks))
    # Chunks amortise the cost of sending work to a process; several per worker balance the load.
    chunk = max(1, min(100, math.ceil(len(tasks) / (workers * 4))))
    chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
    bar = (
        click.progressbar(length=len(tasks), label="Simulating galaxies", file=sys.stderr)
        if progress
        else contextlib.nullcontext()
    )
    rows: dict[int, dict] = {}
    with bar:
        if workers <= 1:
            for part in chunks:
                rows.update(_simulate_galaxies(config, part))
                if progress:
                    bar.update(len(part))
        else:
            # 'spawn', never fork: the parent may have TensorFlow loaded, which is not fork-safe.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [pool.submit(_simulate_galaxies, config, part) for part in chunks]
                try:
                    for future in as_completed(futures):
                        done = future.result()
                        rows.update(done)
                        if progress:
                            bar.update(len(done))
                except BaseException:
                    # Fail fast: do not render the rest of the survey after one chunk failed.
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return rows


def _n_workers(requested: int) -> int:
    return requested or usable_cores()


# -- one galaxy end to end ------------------------------------------------------------------------


def _simulate_galaxies(config: SimulateConfig, tasks: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    """Render, write and vote on a chunk of galaxies. Runs in a worker process."""
    schema = load_schema(config.schema)
    rows = []
    for index, image_path in tasks:
        galaxy = sample_galaxy(_rng(config.seed, index, _MORPHOLOGY))
        cube = render_galaxy(galaxy, config.image_size, _rng(config.seed, index, _NOISE))
        write_image(cube, Path(image_path), config.image_format)
        truth = true_probabilities(galaxy, schema)
        row: dict = dict(draw_votes(truth, schema, config.mean_volunteers, _rng(config.seed, index, _VOTES)))
        for question in schema.questions:
            row.update({f"true_{col}": float(p) for col, p in zip(question.columns, truth[question.name])})
        row.update(_latent_columns(galaxy))
        rows.append((index, row))
    return rows


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, stream)))


def _latent_columns(g: Galaxy) -> dict[str, float | int]:
    c = g.companion
    return {
        "sim_is_disc": int(g.is_disc),
        "sim_bulge_fraction": g.bulge_fraction,
        "sim_disc_strength": 1 - g.bulge_fraction if g.is_disc else 0.0,
        "sim_arm_strength": g.arm_strength,
        "sim_arm_count": g.arm_count,
        "sim_pitch_angle": g.pitch_angle_deg,
        "sim_bar_strength": g.bar_strength,
        "sim_inclination": g.inclination_deg,
        "sim_axis_ratio": g.axis_ratio,
        "sim_disc_axis_ratio": g.disc_axis_ratio,
        "sim_bulge_boxiness": g.bulge_boxiness,
        "sim_sersic_n": g.bulge_n,
        "sim_half_light_radius": g.half_light_radius,
        "sim_position_angle": math.degrees(g.position_angle),
        "sim_merger_state": g.merger_state,
        "sim_companion": int(c is not None),
        "sim_companion_flux_ratio": c.flux_ratio if c is not None else 0.0,
        "sim_artifact": g.artifact,
        "sim_mag_r": g.mag_r,
        "sim_snr": g.snr,
        "sim_visibility": g.visibility,
        "sim_psf_fwhm": g.psf_fwhm,
    }
