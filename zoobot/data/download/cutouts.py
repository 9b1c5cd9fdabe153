"""A survey cutout of every catalog galaxy with a sky position, and a catalog that `zoobot convert` reads.

Cutouts come from a service of `CUTOUT_SERVICES` into `<output_dir>/images/`; the new catalog is the
input's rows that have an image, plus the image-path column. Rows without a usable id or position
are set aside with their reason before anything is fetched, and listed with the failed downloads.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from zoobot.core.votes import shown
from zoobot.data.catalog import file_sha256, read_table
from zoobot.data.download.cutout_jobs import CutoutJob, Outcome, run_jobs
from zoobot.data.download.images_config import (
    ID_CANDIDATES,
    OUTPUT_CATALOG,
    DownloadImagesConfig,
)
from zoobot.data.download.surveys import CUTOUT_SERVICES, IMAGE_SUFFIX

FAILURES_FILE = "download_failures.csv"
FAILURE_COLUMNS = ["row", "id", "url", "reason"]


@dataclass(frozen=True)
class ImagesDownload:
    catalog_path: Path  # the input
    catalog_sha256: str
    output_catalog: Path  # the input's rows with an image, plus the image-path column
    failures_path: Path
    images_dir: Path
    survey: str
    image_format: str
    pixscale: float
    url_template: str
    id_column: str
    image_column: str
    n_rows: int  # rows of the input catalog
    n_selected: int  # galaxies whose cutout was wanted (all with a position, or the --limit sample)
    n_downloaded: int
    n_present: int  # already there from an earlier run
    failures: pd.DataFrame  # row, id, url, reason: failed downloads and rows set aside before
    galaxies: pd.DataFrame  # id, ra, dec, image path of the input's rows that have an image now
    seconds: float

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def n_written(self) -> int:
        return len(self.galaxies)


@dataclass(frozen=True)
class _Columns:
    id: str
    ra: str
    dec: str


@dataclass(frozen=True)
class _CutoutAddress:
    """The address of one galaxy's cutout on the chosen service."""

    survey: str
    base: str
    pixscale: float
    config: DownloadImagesConfig

    def __call__(self, ra: str, dec: str) -> str:
        service = CUTOUT_SERVICES[self.survey]
        query = service.query(ra, dec, self.config.size, self.pixscale, self.config)
        return f"{self.base}/{service.endpoint(self.config.image_format)}?{urlencode(query, safe='{}')}"

    @classmethod
    def choose(cls, config: DownloadImagesConfig, id_column: str) -> _CutoutAddress:
        survey = config.survey or ("sdss" if id_column == "dr7objid" else "legacy")
        service = CUTOUT_SERVICES[survey]
        service.endpoint(config.image_format)  # a clear error for sdss + fits chosen by default
        base = (config.base_url or os.environ.get(service.env_var) or service.base_url).rstrip("/")
        return cls(survey, base, config.pixscale or service.pixscale, config)


def download_images(config: DownloadImagesConfig, progress: bool = False) -> ImagesDownload:
    """Cutouts of the catalog's galaxies and a catalog of those that have one; see the module docstring."""
    started = time.monotonic()
    catalog_path = Path(config.catalog)
    output_dir = Path(config.output_dir) if config.output_dir else catalog_path.parent
    output_catalog = output_dir / OUTPUT_CATALOG
    if output_catalog.resolve() == catalog_path.resolve():
        raise ValueError(f"Writing {output_catalog} would overwrite the input catalog; choose another output_dir.")
    frame = read_table(catalog_path, text_columns=(config.id_column,) if config.id_column else ID_CANDIDATES)
    columns = _Columns(_id_column(frame, config.id_column, catalog_path), *_position_columns(frame, catalog_path))
    address = _CutoutAddress.choose(config, columns.id)

    jobs, set_aside = _plan(frame, columns, config, output_dir, address)
    outcomes = run_jobs(jobs, config, progress)
    written, failures = _write_outputs(frame, jobs, outcomes, set_aside, config.image_column, output_dir)

    return ImagesDownload(
        catalog_path=catalog_path.resolve(), catalog_sha256=file_sha256(catalog_path),
        output_catalog=output_catalog.resolve(), failures_path=(output_dir / FAILURES_FILE).resolve(),
        images_dir=(output_dir / "images").resolve(), survey=address.survey, image_format=config.image_format,
        pixscale=address.pixscale, url_template=address("{ra}", "{dec}"), id_column=columns.id,
        image_column=config.image_column, n_rows=len(frame), n_selected=len(jobs),
        n_downloaded=sum(status == "downloaded" for status, _ in outcomes),
        n_present=sum(status == "present" for status, _ in outcomes), failures=failures,
        galaxies=pd.DataFrame({"id": written[columns.id].astype(str), "ra": written[columns.ra],
                               "dec": written[columns.dec], "image_path": written[config.image_column]}
                              ).reset_index(drop=True),
        seconds=time.monotonic() - started)


def _id_column(frame: pd.DataFrame, named: str, path: Path) -> str:
    if named:
        if named not in frame.columns:
            raise ValueError(f"Catalog '{path}' has no id column '{named}'; it has {list(frame.columns)[:40]}.")
        return named
    for candidate in ID_CANDIDATES:
        if candidate in frame.columns:
            return candidate
    raise ValueError(f"Catalog '{path}' has none of the id columns {list(ID_CANDIDATES)}; name yours with "
                     f"--id-column. It has {list(frame.columns)[:40]}.")


def _position_columns(frame: pd.DataFrame, path: Path) -> tuple[str, str]:
    lower = {str(c).lower(): c for c in frame.columns}
    if "ra" in lower and "dec" in lower:
        return lower["ra"], lower["dec"]
    raise ValueError(
        f"Catalog '{path}' has no 'ra' and 'dec' columns (sky position in degrees, any letter case), which "
        f"cutouts are fetched by; it has {list(frame.columns)[:40]}. Add them (e.g. by matching your ids to a "
        "survey catalog) or rename the position columns to ra and dec.")


def _plan(frame: pd.DataFrame, columns: _Columns, config: DownloadImagesConfig, output_dir: Path,
          url_of: Callable[[str, str], str]) -> tuple[list[CutoutJob], list[tuple]]:
    """A job per galaxy to fetch, and (row, id, url, reason) for each row set aside first."""
    ids = frame[columns.id].astype("string").str.strip()
    ra = pd.to_numeric(frame[columns.ra], errors="coerce")
    dec = pd.to_numeric(frame[columns.dec], errors="coerce")
    set_aside, candidates, first_row = [], [], {}
    for i in range(len(frame)):
        row, name = i + 1, ids.iloc[i]
        if pd.isna(name) or not name:
            set_aside.append((row, "", "", f"missing id in column '{columns.id}'"))
        elif name in first_row:
            set_aside.append((row, name, "", f"duplicate id (first at row {first_row[name]})"))
        elif not (np.isfinite(ra.iloc[i]) and np.isfinite(dec.iloc[i])):
            set_aside.append((row, name, "", f"no sky position: {columns.ra}={shown(frame[columns.ra].iloc[i])}, "
                                             f"{columns.dec}={shown(frame[columns.dec].iloc[i])}"))
        elif not (0 <= ra.iloc[i] < 360 and -90 <= dec.iloc[i] <= 90):
            set_aside.append((row, name, "", f"sky position out of range: ra={ra.iloc[i]:g}, dec={dec.iloc[i]:g} "
                                             "(expected degrees, 0 <= ra < 360, -90 <= dec <= 90)"))
        else:
            candidates.append(i)
        if not pd.isna(name) and name:
            first_row.setdefault(name, row)
    if config.limit and config.limit < len(candidates):
        chosen = np.random.default_rng(config.seed).choice(len(candidates), size=config.limit, replace=False)
        candidates = [candidates[k] for k in sorted(chosen)]
    suffix = IMAGE_SUFFIX[config.image_format]
    jobs = [CutoutJob(i + 1, ids.iloc[i], url_of(f"{ra.iloc[i]:.6f}", f"{dec.iloc[i]:.6f}"),
                      output_dir / "images" / _image_name(ids.iloc[i], suffix)) for i in candidates]
    return jobs, set_aside


def _image_name(galaxy_id: str, suffix: str) -> str:
    """images/<folder>/<id><suffix>. IAU names (J...) share folders by RA as in the GZ DECaLS image release;
    numeric ids (SDSS objids share their first digits) by their last three digits."""
    safe = re.sub(r"[^A-Za-z0-9+.\-_]", "_", galaxy_id)
    folder = safe[:4] if safe[:1].isalpha() else safe[-3:]
    return f"{folder}/{safe}{suffix}"


def _write_outputs(frame: pd.DataFrame, jobs: list[CutoutJob], outcomes: list[Outcome], set_aside: list[tuple],
                   image_column: str, output_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The input's rows that have an image now, with its path, and every failure by row; both written."""
    failures = pd.DataFrame(set_aside + [(j.row, j.id, j.url, reason) for j, (status, reason) in zip(jobs, outcomes)
                                         if status == "failed"], columns=FAILURE_COLUMNS)
    failures = failures.sort_values("row", kind="stable").reset_index(drop=True)
    done = {j.row - 1: j.path for j, (status, _) in zip(jobs, outcomes) if status != "failed"}
    written = frame.iloc[sorted(done)].copy()
    written[image_column] = [done[i].relative_to(output_dir).as_posix() for i in sorted(done)]
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(written, output_dir / OUTPUT_CATALOG)
    _write_csv(failures, output_dir / FAILURES_FILE)
    return written, failures


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def image_examples(result: ImagesDownload, n: int = 8) -> list[Path]:
    """A few downloaded images, for a figure."""
    root = result.output_catalog.parent
    return [root / p for p in result.galaxies["image_path"].head(n)]
