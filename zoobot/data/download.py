"""Published Galaxy Zoo vote catalogs and survey cutouts, fetched from their public addresses.

Two steps, each a plain function that returns what it did:

- `download_catalog`: one file of the `SOURCES` registry (the GZ2 Hart et al. 2016 table, the GZ DECaLS
  DR5 volunteer votes), checked against its published size and checksum where there is one, and
  against the columns its schema needs.
- `download_images`: a cutout of every galaxy with a sky position, from a survey's cutout service
  (`CUTOUT_SERVICES`), into `<output_dir>/images/`, and a copy of the catalog with the image-path
  column that `zoobot convert` reads.

Every file is written to `NAME.part`, verified, and only then renamed to `NAME`: a killed or failed
download never leaves a truncated file under its final name, and a rerun skips what is there.
Connection errors, timeouts, 5xx/429 answers and cut-off bodies are retried with exponential
back-off; 4xx answers and bodies that are not the expected kind of file are not, because asking
again would get the same answer. One galaxy's failure is recorded with its reason and never
stops the others.

Base addresses default to the real services; config fields or environment variables point them
at a mirror or a test server. No MLflow here: `zoobot.tracking.mlflow_io.log_download` records a run.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

import zoobot
from zoobot.data.catalog import file_sha256, read_table
from zoobot.core.schema import load_schema

# -- the registry of published catalogs ------------------------------------------------------------


@dataclass(frozen=True)
class CatalogSource:
    """One published vote catalog: where it lives, what it should be, which schema reads it."""

    name: str  # what users type: `zoobot download catalog NAME`
    url: str
    filename: str  # saved as <output_dir>/<filename>, in the format it is published in
    schema: str  # zoobot schema its vote columns follow ('gz2', 'decals')
    size: int | None = None  # bytes, when the publisher states it
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>", when the publisher states it
    reference: str = ""

    def __post_init__(self):
        if not self.filename.endswith((".csv", ".csv.gz", ".parquet")):
            raise ValueError(f"Catalog source '{self.name}': filename must end in .csv, .csv.gz or .parquet, "
                             f"got '{self.filename}'.")
        if self.checksum is not None:
            algorithm, _, digest = self.checksum.partition(":")
            if algorithm not in ("sha256", "md5") or not re.fullmatch(r"[0-9a-f]+", digest or "-"):
                raise ValueError(f"Catalog source '{self.name}': checksum must look like 'sha256:<hex>' or "
                                 f"'md5:<hex>', got '{self.checksum}'.")


# A new release is one more line here. size and checksum are None where no value is published or the
# published one could not be confirmed when this was written: no size or checksum was found published
# for gz2_hart16.csv.gz (data.galaxyzoo.org links the S3 file bare); Zenodo shows an md5 per file on
# https://zenodo.org/records/4573248, not copied here because it could not be checked from the machine
# this was written on -- paste it as "md5:<hex>". Without a checksum a download is still checked for
# completeness (Content-Length) and for the columns its schema needs.
SOURCES: dict[str, CatalogSource] = {s.name: s for s in (
    CatalogSource("gz2", "https://gz2hart.s3.amazonaws.com/gz2_hart16.csv.gz", "gz2_hart16.csv.gz", "gz2",
                  reference="Hart et al. 2016, MNRAS 461, 3663 (Galaxy Zoo 2, SDSS DR7 images)"),
    CatalogSource("gz-decals", "https://zenodo.org/records/4573248/files/gz_decals_volunteers_5.csv?download=1",
                  "gz_decals_volunteers_5.csv", "decals",
                  reference="Walmsley et al. 2022, MNRAS 509, 3966 (GZ DECaLS DR5 volunteer votes)"),
)}
CATALOG_MIRROR_ENV = "ZOOBOT_CATALOG_MIRROR"


def find_source(name: str) -> CatalogSource:
    if name in SOURCES:
        return SOURCES[name]
    raise ValueError(f"Unknown catalog source '{name}'; known sources are {sorted(SOURCES)} "
                     "(zoobot.data.download.SOURCES). Give one of those, e.g. `zoobot download catalog gz2`.")


def source_url(source: CatalogSource, mirror: str = "") -> str:
    """The source's address, or the same path on `mirror` (scheme://host[:port][/prefix])."""
    if not mirror:
        return source.url
    base, original = urlsplit(mirror), urlsplit(source.url)
    if not base.scheme or not base.netloc:
        raise ValueError(f"Mirror '{mirror}' is not an address like http://host:port; give the scheme and host.")
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + original.path, original.query, ""))


# -- cutout services -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutoutService:
    """A public cutout service: its address (overridable by `env_var`), native pixel scale, endpoints."""

    name: str
    base_url: str
    env_var: str
    pixscale: float  # arcsec/pixel used when the config leaves pixscale at 0
    endpoints: tuple[tuple[str, str], ...]  # (image format, path under base_url)
    query: Callable[[str, str, int, float, "DownloadImagesConfig"], dict]

    def endpoint(self, image_format: str) -> str:
        paths = dict(self.endpoints)
        if image_format not in paths:
            raise ValueError(f"The {self.name} cutout service serves {sorted(paths)}, not '{image_format}'. "
                             f"Use --image-format {sorted(paths)[0]}"
                             + (" or --survey legacy for FITS." if image_format == "fits" else "."))
        return paths[image_format]


def _legacy_query(ra: str, dec: str, size: int, pixscale: float, config) -> dict:
    query = {"ra": ra, "dec": dec, "layer": config.layer, "pixscale": pixscale, "size": size}
    if config.image_format == "fits":
        query["bands"] = config.bands
    return query


def _sdss_query(ra: str, dec: str, size: int, pixscale: float, config) -> dict:
    return {"ra": ra, "dec": dec, "scale": pixscale, "width": size, "height": size}


CUTOUT_SERVICES: dict[str, CutoutService] = {s.name: s for s in (
    # DESI Legacy Imaging Surveys viewer: JPEG as on the Galaxy Zoo DECaLS site, FITS with raw fluxes.
    CutoutService("legacy", "https://www.legacysurvey.org/viewer", "ZOOBOT_LEGACY_SURVEY_URL", 0.262,
                  (("jpeg", "jpeg-cutout"), ("fits", "fits-cutout")), _legacy_query),
    # SDSS SkyServer DR17 image cutout: JPEG only; 0.396 arcsec/pixel is SDSS's native scale.
    CutoutService("sdss", "https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout", "ZOOBOT_SDSS_URL", 0.396,
                  (("jpeg", "getjpeg"),), _sdss_query),
)}
# Catalog id columns tried in turn when none is named: GZ DECaLS, GZ2, zoobot's own.
ID_CANDIDATES = ("iauname", "dr7objid", "id_str", "objid")
IMAGE_SUFFIX = {"jpeg": ".jpg", "fits": ".fits"}
OUTPUT_CATALOG = "catalog.csv"
FAILURES_FILE = "download_failures.csv"
FAILURE_COLUMNS = ["row", "id", "url", "reason"]
MAX_WORKERS = 8  # cutout services are shared by everyone; more parallel requests than this is impolite


# -- configs ---------------------------------------------------------------------------------------


def _retries_field():
    return field(default=3, metadata={
        "help": "Extra attempts after a connection error, timeout, 5xx/429 answer or cut-off body (not after 4xx)."})


def _backoff_field():
    return field(default=1.0, metadata={
        "help": "Seconds before the first retry; doubled for each further one (a server's Retry-After, up to "
                "60 s, wins when longer)."})


def _timeout_field():
    return field(default=60.0, metadata={"help": "Seconds to wait for the server to connect or send more data."})


def _check_network(problems: list[str], retries: int, backoff: float, timeout: float) -> None:
    if not 0 <= retries <= 10:
        problems.append(f"retries must be between 0 and 10, got {retries}")
    if backoff < 0:
        problems.append(f"backoff must be >= 0 seconds, got {backoff}")
    if not timeout > 0:
        problems.append(f"timeout must be > 0 seconds, got {timeout}")


@dataclass(frozen=True)
class DownloadCatalogConfig:
    source: str = field(default="", metadata={
        "help": f"Catalog to fetch: one of {sorted(SOURCES)} (zoobot.data.download.SOURCES); may also be given as "
                "the first argument."})
    output_dir: str = field(default="", metadata={"help": "Folder for the catalog file (default: data/<source>)."})
    mirror: str = field(default="", metadata={
        "help": "Fetch the published path from this host instead (scheme://host[:port][/prefix]); default: "
                f"${CATALOG_MIRROR_ENV}, else the published address."})
    retries: int = _retries_field()
    backoff: float = _backoff_field()
    timeout: float = _timeout_field()

    def __post_init__(self):
        problems: list[str] = []
        if not self.source:
            problems.append(f"name the catalog to fetch, one of {sorted(SOURCES)} (e.g. `zoobot download catalog "
                            "gz2`)")
        elif self.source not in SOURCES:
            problems.append(f"unknown catalog source '{self.source}'; known sources are {sorted(SOURCES)}")
        _check_network(problems, self.retries, self.backoff, self.timeout)
        if problems:
            raise ValueError("Invalid download settings: " + "; ".join(problems) + ".")


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
    retries: int = _retries_field()
    backoff: float = _backoff_field()
    timeout: float = _timeout_field()
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
        _check_network(problems, self.retries, self.backoff, self.timeout)
        if problems:
            raise ValueError("Invalid download settings: " + "; ".join(problems) + ".")


# -- results ---------------------------------------------------------------------------------------


class DownloadError(RuntimeError):
    """A download that could not be completed; the message says why and what to do."""


class ChecksumError(DownloadError):
    """A downloaded file differs from what its source publishes."""


@dataclass(frozen=True)
class CatalogDownload:
    source: CatalogSource
    url: str  # the address actually fetched (a mirror's, if one was used)
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False: a verified file was already there
    verified: str  # what was checked against the publisher: "sha256", "md5", "size" or "columns only"
    n_rows: int
    table: pd.DataFrame  # id, ra, dec and the schema's vote columns, for the run's dataset record
    seconds: float


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


# -- fetching one file -----------------------------------------------------------------------------


class _Transient(Exception):
    """Worth another attempt (network trouble, overloaded server)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _Permanent(Exception):
    """Asking again would get the same answer (4xx, wrong kind of file)."""


def _session():
    import requests

    session = requests.Session()
    # identity: sizes and checksums are of the bytes as published, not of a re-encoding.
    session.headers.update({"User-Agent": f"zoobot/{zoobot.__version__} (+{requests.utils.default_user_agent()})",
                            "Accept-Encoding": "identity"})
    return session


def _fetch(session, url: str, part: Path, timeout: float, resume: bool = False,
           on_bytes: Callable[[int, int | None], None] | None = None) -> None:
    """One attempt at `url` -> `part`. With `resume`, an existing `part` is continued with a Range request."""
    import requests
    import urllib3

    offset = part.stat().st_size if resume and part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, stream=True, timeout=timeout, headers=headers) as response:
            status = response.status_code
            if status == 416 and offset:  # the part is not a prefix of what is there now: start again
                part.unlink()
                raise _Transient("the partial download did not match the server's file; starting again",
                                 retry_after=0)
            if status >= 500 or status == 429:
                raise _Transient(f"HTTP {status} {response.reason}", _retry_after(response))
            if status >= 400:
                raise _Permanent(f"HTTP {status} {response.reason}")
            appending = status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
            start = offset if appending else 0
            length = response.headers.get("Content-Length")
            expected = start + int(length) if length and length.isdigit() else None
            received = start
            with open(part, "ab" if appending else "wb") as out:
                for chunk in response.raw.stream(1 << 16, decode_content=False):
                    out.write(chunk)
                    received += len(chunk)
                    if on_bytes:
                        on_bytes(received, expected)
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as e:
        raise _Transient(f"timed out (no data for {timeout:g} s)") from e
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead,
            requests.exceptions.ChunkedEncodingError) as e:
        raise _Transient(f"truncated: the connection closed early ({_short(e)})") from e
    except (requests.ConnectionError, urllib3.exceptions.HTTPError) as e:
        raise _Transient(f"connection failed ({_short(e)})") from e
    except requests.RequestException as e:
        raise _Permanent(f"request failed ({_short(e)})") from e
    if expected is not None and received != expected:
        raise _Transient(f"truncated: received {received} of {expected} bytes")


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


def _with_retries(attempt: Callable[[], None], retries: int, backoff: float) -> None:
    """Run `attempt` until it succeeds, a _Permanent error, or retries run out (then _Permanent)."""
    for n in range(retries + 1):
        try:
            return attempt()
        except _Transient as e:
            if n == retries:
                raise _Permanent(f"{e} (after {retries + 1} attempts)") from e
            delay = backoff * 2 ** n * random.uniform(0.9, 1.1)  # jitter: parallel workers do not retry in step
            if e.retry_after is not None:
                delay = max(delay, min(e.retry_after, 60.0))
            time.sleep(delay)


# -- catalogs --------------------------------------------------------------------------------------


def download_catalog(config: DownloadCatalogConfig, progress: bool = False) -> CatalogDownload:
    """The source's file in `<output_dir>/<filename>`, verified; an existing verified file is kept."""
    started = time.monotonic()
    source = find_source(config.source)
    url = source_url(source, config.mirror or os.environ.get(CATALOG_MIRROR_ENV, ""))
    target = Path(config.output_dir or Path("data") / source.name) / source.filename
    part = target.with_name(target.name + ".part")
    downloaded = False
    if not (target.is_file() and _published_mismatch(target, source) is None):
        target.parent.mkdir(parents=True, exist_ok=True)
        bar = _BytesProgress(source.filename) if progress else None
        session = _session()
        try:
            _with_retries(lambda: _fetch(session, url, part, config.timeout, resume=True,
                                         on_bytes=bar.update if bar else None),
                          config.retries, config.backoff)
        except _Permanent as e:
            kept = f" The partial file {part} is kept: run the same command again to resume." if part.exists() else ""
            raise DownloadError(f"Could not download catalog '{source.name}' from {url}: {e}.{kept}") from None
        finally:
            session.close()
            if bar:
                bar.close()
        mismatch = _published_mismatch(part, source)
        if mismatch:
            part.unlink()
            raise ChecksumError(
                f"Catalog '{source.name}' downloaded from {url} {mismatch}; it was not kept. Download again (the "
                "transfer may have been corrupted); if the publisher has released a new version, update its "
                "size/checksum in zoobot.data.download.SOURCES after checking it against the publisher's page.")
        try:
            table = _catalog_table(part, source, url)
        except DownloadError:
            part.unlink()
            raise
        os.replace(part, target)
        downloaded = True
    else:
        table = _catalog_table(target, source, str(target))
    return CatalogDownload(
        source=source, url=url, path=target.resolve(), sha256=file_sha256(target), size=target.stat().st_size,
        downloaded=downloaded, verified=_what_is_verified(source), n_rows=len(table), table=table,
        seconds=time.monotonic() - started)


def _what_is_verified(source: CatalogSource) -> str:
    if source.checksum:
        return source.checksum.partition(":")[0]
    return "size" if source.size is not None else "columns only"


def _published_mismatch(path: Path, source: CatalogSource) -> str | None:
    """How `path` differs from the published size/checksum, or None."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        return f"has {size} bytes, expected {source.size}"
    if source.checksum:
        algorithm, _, expected = source.checksum.partition(":")
        digest = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            return f"has {algorithm} {digest.hexdigest()}, expected {expected}"
    return None


def _catalog_table(path: Path, source: CatalogSource, origin: str) -> pd.DataFrame:
    """The columns zoobot needs from a downloaded catalog; DownloadError if it is not that table."""
    schema = load_schema(source.schema)
    wanted = [schema.id_column, "ra", "dec", *schema.label_cols]
    try:
        if source.filename.endswith(".parquet"):
            frame = pd.read_parquet(path)
            frame = frame[[c for c in wanted if c in frame.columns]]
        else:
            frame = pd.read_csv(path, usecols=lambda c: c in set(wanted), dtype={schema.id_column: str},
                                compression="gzip" if source.filename.endswith(".gz") else None)
    except (OSError, ValueError, EOFError, pd.errors.ParserError) as e:
        with open(path, "rb") as f:
            start = f.read(80)
        raise DownloadError(f"What {origin} sent is not a readable table ({_short(e)}); it starts with {start!r}. "
                            "Check the address (an error page is not a catalog).") from None
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DownloadError(
            f"The table from {origin} lacks columns {missing[:8]}{' ...' if len(missing) > 8 else ''} that schema "
            f"'{schema.name}' needs for source '{source.name}'. The release may have changed: check "
            f"{source.reference or source.url} and update zoobot.data.download.SOURCES.")
    return frame[wanted]


# -- images ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    row: int  # 1-based data row of the catalog
    id: str
    url: str
    path: Path


def download_images(config: DownloadImagesConfig, progress: bool = False) -> ImagesDownload:
    """Cutouts of the catalog's galaxies and a catalog of those that have one; see the module docstring."""
    started = time.monotonic()
    catalog_path = Path(config.catalog)
    output_dir = Path(config.output_dir) if config.output_dir else catalog_path.parent
    output_catalog = output_dir / OUTPUT_CATALOG
    if output_catalog.resolve() == catalog_path.resolve():
        raise ValueError(f"Writing {output_catalog} would overwrite the input catalog; choose another output_dir.")
    id_candidates = (config.id_column,) if config.id_column else ID_CANDIDATES
    frame = read_table(catalog_path, text_columns=id_candidates)
    id_column = _id_column(frame, config.id_column, catalog_path)
    ra_column, dec_column = _position_columns(frame, catalog_path)

    survey = config.survey or ("sdss" if id_column == "dr7objid" else "legacy")
    service = CUTOUT_SERVICES[survey]
    service.endpoint(config.image_format)  # a clear error for sdss + fits chosen by default
    base = (config.base_url or os.environ.get(service.env_var) or service.base_url).rstrip("/")
    pixscale = config.pixscale or service.pixscale

    def url_of(ra: str, dec: str) -> str:
        query = service.query(ra, dec, config.size, pixscale, config)
        return f"{base}/{service.endpoint(config.image_format)}?{urlencode(query, safe='{}')}"

    jobs, set_aside = _plan(frame, id_column, ra_column, dec_column, config, output_dir, url_of)
    outcomes = _run_jobs(jobs, config, progress)

    failures = pd.DataFrame(set_aside + [(j.row, j.id, j.url, reason) for j, (status, reason) in zip(jobs, outcomes)
                                         if status == "failed"], columns=FAILURE_COLUMNS)
    failures = failures.sort_values("row", kind="stable").reset_index(drop=True)
    done = {j.row - 1: j.path for j, (status, _) in zip(jobs, outcomes) if status != "failed"}
    written = frame.iloc[sorted(done)].copy()
    written[config.image_column] = [done[i].relative_to(output_dir).as_posix() for i in sorted(done)]
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(written, output_catalog)
    _write_csv(failures, output_dir / FAILURES_FILE)

    return ImagesDownload(
        catalog_path=catalog_path.resolve(), catalog_sha256=file_sha256(catalog_path),
        output_catalog=output_catalog.resolve(), failures_path=(output_dir / FAILURES_FILE).resolve(),
        images_dir=(output_dir / "images").resolve(), survey=survey, image_format=config.image_format,
        pixscale=pixscale, url_template=url_of("{ra}", "{dec}"), id_column=id_column,
        image_column=config.image_column, n_rows=len(frame), n_selected=len(jobs),
        n_downloaded=sum(status == "downloaded" for status, _ in outcomes),
        n_present=sum(status == "present" for status, _ in outcomes), failures=failures,
        galaxies=pd.DataFrame({"id": written[id_column].astype(str), "ra": written[ra_column],
                               "dec": written[dec_column], "image_path": written[config.image_column]}
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


def _plan(frame, id_column, ra_column, dec_column, config, output_dir, url_of):
    """A job per galaxy to fetch, and (row, id, url, reason) for each row set aside first."""
    ids = frame[id_column].astype("string").str.strip()
    ra = pd.to_numeric(frame[ra_column], errors="coerce")
    dec = pd.to_numeric(frame[dec_column], errors="coerce")
    set_aside, candidates, first_row = [], [], {}
    for i in range(len(frame)):
        row, name = i + 1, ids.iloc[i]
        if pd.isna(name) or not name:
            set_aside.append((row, "", "", f"missing id in column '{id_column}'"))
        elif name in first_row:
            set_aside.append((row, name, "", f"duplicate id (first at row {first_row[name]})"))
        elif not (np.isfinite(ra.iloc[i]) and np.isfinite(dec.iloc[i])):
            set_aside.append((row, name, "", f"no sky position: {ra_column}={_show(frame[ra_column].iloc[i])}, "
                                             f"{dec_column}={_show(frame[dec_column].iloc[i])}"))
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
    jobs = [_Job(i + 1, ids.iloc[i], url_of(f"{ra.iloc[i]:.6f}", f"{dec.iloc[i]:.6f}"),
                 output_dir / "images" / _image_name(ids.iloc[i], suffix)) for i in candidates]
    return jobs, set_aside


def _show(value) -> str:
    # numpy scalars repr as np.float64(nan); the catalog said nan.
    return repr(value.item() if isinstance(value, np.generic) else value)


def _image_name(galaxy_id: str, suffix: str) -> str:
    """images/<folder>/<id><suffix>. IAU names (J...) share folders by RA as in the GZ DECaLS image release;
    numeric ids (SDSS objids share their first digits) by their last three digits."""
    safe = re.sub(r"[^A-Za-z0-9+.\-_]", "_", galaxy_id)
    folder = safe[:4] if safe[:1].isalpha() else safe[-3:]
    return f"{folder}/{safe}{suffix}"


def _run_jobs(jobs: list[_Job], config: DownloadImagesConfig, progress: bool) -> list[tuple[str, str | None]]:
    """(status, reason) per job: 'downloaded', 'present' or 'failed'. A bounded number of jobs is in
    flight at a time, so a catalog of 300,000 galaxies does not become 300,000 pending futures."""
    local = threading.local()
    sessions = []
    lock = threading.Lock()

    def session():
        if not hasattr(local, "session"):
            local.session = _session()
            with lock:
                sessions.append(local.session)
        return local.session

    def one(job: _Job) -> tuple[str, str | None]:
        if job.path.is_file() and _already_there(job.path, config.image_format):
            return "present", None
        job.path.parent.mkdir(parents=True, exist_ok=True)
        part = job.path.with_name(job.path.name + ".part")

        def attempt():
            _fetch(session(), job.url, part, config.timeout)
            _verify_image(part, config.image_format)

        try:
            _with_retries(attempt, config.retries, config.backoff)
            os.replace(part, job.path)
            return "downloaded", None
        except _Permanent as e:
            return "failed", str(e)
        except OSError as e:  # a full disk, a read-only folder: this galaxy fails, the others go on
            return "failed", f"could not write {job.path}: {e}"
        finally:
            part.unlink(missing_ok=True)

    outcomes: list[tuple[str, str | None]] = [("failed", "not attempted")] * len(jobs)
    bar = _Progress(len(jobs), enabled=progress)
    pending = iter(range(len(jobs)))
    with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="zoobot-download") as pool:
        running = {}
        try:
            while True:
                for k in pending:
                    running[pool.submit(one, jobs[k])] = k
                    if len(running) >= config.workers * 4:
                        break
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcomes[running.pop(future)] = future.result()
                    bar.update(future.result()[0])
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            bar.close()
            for s in sessions:
                s.close()
    return outcomes


def _already_there(path: Path, image_format: str) -> bool:
    """An earlier run's file, complete. Files are only renamed into place after a full check, so the
    cheap look at the first and last bytes normally decides; anything unusual gets the full check."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(max(0, size - 2))
        tail = f.read(2)
    if image_format == "jpeg" and head[:2] == b"\xff\xd8" and tail == b"\xff\xd9":
        return True
    if image_format == "fits" and head == b"SIMPLE" and size % 2880 == 0:
        return True
    try:
        _verify_image(path, image_format)
    except _Permanent:
        return False
    return True


def _verify_image(path: Path, image_format: str) -> None:
    """_Permanent unless `path` is a whole, non-blank image of the format asked for."""
    with open(path, "rb") as f:
        head = f.read(64)
    if image_format == "jpeg":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                if image.format != "JPEG":
                    raise _Permanent(f"not a JPEG image but {image.format}")
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            if b"<html" in head.lower() or b"<!doctype" in head.lower():
                raise _Permanent(f"not an image: the server sent a web page ({head[:40]!r}...)") from e
            raise _Permanent(f"not a readable JPEG ({_short(e)})") from e
    else:
        from zoobot.data.images import ImageReadError, read_fits_array

        try:
            pixels, _ = read_fits_array(path)
        except ImageReadError as e:
            raise _Permanent(f"not a readable FITS image ({_short(e)})") from e
        pixels = np.nan_to_num(pixels)
    if pixels.size == 0 or pixels.min() == pixels.max():
        raise _Permanent("blank cutout (every pixel the same): the position is probably outside the survey")


# -- output ----------------------------------------------------------------------------------------


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


class _Progress:
    """One stderr line: galaxies done, failed and remaining, redrawn at most 5 times a second."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.done = self.failed = 0
        self.shown = 0.0
        self.started = time.monotonic()

    def update(self, status: str) -> None:
        if status == "failed":
            self.failed += 1
        else:
            self.done += 1
        if self.enabled and time.monotonic() - self.shown > 0.2:
            self._draw()

    def _draw(self) -> None:
        self.shown = time.monotonic()
        remaining = self.total - self.done - self.failed
        rate = (self.done + self.failed) / max(self.shown - self.started, 1e-9)
        sys.stderr.write(f"\rCutouts: {self.done} done, {self.failed} failed, {remaining} remaining "
                         f"({rate:.1f}/s)   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")


class _BytesProgress:
    def __init__(self, name: str):
        self.name, self.shown, self.drawn = name, 0.0, False

    def update(self, received: int, expected: int | None) -> None:
        if time.monotonic() - self.shown > 0.2:
            self.shown, self.drawn = time.monotonic(), True
            total = f" of {expected / 1e6:.1f}" if expected else ""
            sys.stderr.write(f"\r{self.name}: {received / 1e6:.1f}{total} MB   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")


def image_examples(result: ImagesDownload, n: int = 8) -> list[Path]:
    """A few downloaded images, for a figure."""
    root = result.output_catalog.parent
    return [root / p for p in result.galaxies["image_path"].head(n)]

