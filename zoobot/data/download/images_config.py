"""The settings of `zoobot download images`: which service, format, size and catalog columns."""

from __future__ import annotations

from dataclasses import dataclass, field

from zoobot.data.download.http import (
    backoff_field,
    check_network,
    retries_field,
    timeout_field,
)
from zoobot.data.download.surveys import CUTOUT_SERVICES, IMAGE_SUFFIX, MAX_WORKERS

# Catalog id columns tried in turn when none is named: GZ DECaLS, GZ2, zoobot's own.
ID_CANDIDATES = ("iauname", "dr7objid", "id_str", "objid")
OUTPUT_CATALOG = "catalog.csv"


@dataclass(frozen=True)
class DownloadImagesConfig:
    catalog: str = field(metadata={"help": "Catalog with an id and ra/dec (degrees) per galaxy: CSV, Parquet or FITS."})
    output_dir: str = field(default="", metadata={
        "help": f"Folder for images/ and the new {OUTPUT_CATALOG} (default: the catalog's folder)."})
    survey: str = field(default="", metadata={
        "help": "Cutout service: 'legacy' (DESI Legacy Surveys viewer) or 'sdss' (SkyServer DR17). Default: sdss "
                "for a GZ2 catalog (dr7objid ids, the images GZ2 volunteers saw), else legacy."})
    image_format: str = field(default="jpeg", metadata={
        "help": "'jpeg' (colour images as volunteers saw them) or 'fits' (raw fluxes; legacy only)."})
    size: int = field(default=256, metadata={"help": "Cutout width and height in pixels."})
    pixscale: float = field(default=0.0, metadata={
        "help": "Arcsec per pixel; 0 = the survey's native scale (legacy 0.262, sdss 0.396)."})
    layer: str = field(default="ls-dr10", metadata={"help": "Legacy Surveys viewer layer (data release)."})
    bands: str = field(default="grz", metadata={"help": "Bands of legacy FITS cutouts."})
    id_column: str = field(default="", metadata={
        "help": f"Id column, used to name the files (default: the first of {list(ID_CANDIDATES)} present)."})
    image_column: str = field(default="file_loc", metadata={
        "help": "Column of the new catalog holding each image's path, relative to the catalog's folder."})
    limit: int = field(default=0, metadata={
        "help": "Download at most this many galaxies, a seeded random sample of those with a position (0 = all)."})
    seed: int = field(default=42, metadata={"help": "Seed of the --limit sample."})
    workers: int = field(default=4, metadata={
        "help": f"Parallel downloads (1 to {MAX_WORKERS}; the services are shared, be polite)."})
    retries: int = retries_field()
    backoff: float = backoff_field()
    timeout: float = timeout_field()
    base_url: str = field(default="", metadata={
        "help": "Address of the cutout service (a mirror or a test server); default: $ZOOBOT_LEGACY_SURVEY_URL "
                "or $ZOOBOT_SDSS_URL, else the public service."})

    def __post_init__(self):
        problems: list[str] = []
        if self.survey and self.survey not in CUTOUT_SERVICES:
            problems.append(f"survey must be one of {sorted(CUTOUT_SERVICES)} (or empty to choose by catalog), "
                            f"got '{self.survey}'")
        if self.image_format not in IMAGE_SUFFIX:
            problems.append(f"image_format must be one of {sorted(IMAGE_SUFFIX)}, got '{self.image_format}'")
        elif self.survey in CUTOUT_SERVICES:
            try:
                CUTOUT_SERVICES[self.survey].endpoint(self.image_format)
            except ValueError as e:
                problems.append(str(e).rstrip("."))
        if not 8 <= self.size <= 3000:
            problems.append(f"size must be between 8 and 3000 pixels, got {self.size}")
        if self.pixscale < 0:
            problems.append(f"pixscale must be > 0 arcsec/pixel, or 0 for the survey's native scale, got {self.pixscale}")
        if self.limit < 0:
            problems.append(f"limit must be >= 0 (0 = all galaxies), got {self.limit}")
        if not 1 <= self.workers <= MAX_WORKERS:
            problems.append(f"workers must be between 1 and {MAX_WORKERS}, got {self.workers}")
        if not self.image_column:
            problems.append("image_column must name a column, e.g. file_loc")
        check_network(problems, self.retries, self.backoff, self.timeout)
        if problems:
            raise ValueError("Invalid download settings: " + "; ".join(problems) + ".")
