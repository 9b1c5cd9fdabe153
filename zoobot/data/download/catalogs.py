"""A published vote catalog from the `SOURCES` registry, fetched and checked before it takes its name.

The file is checked against its published size and checksum where there is one, and against the
columns its schema needs; a cut-off transfer resumes where it stopped when the command is run again.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from zoobot.core.schema import load_schema
from zoobot.data.catalog import file_sha256
from zoobot.data.download.http import (
    ChecksumError,
    DownloadError,
    Permanent,
    backoff_field,
    check_network,
    fetch,
    new_session,
    retries_field,
    short,
    timeout_field,
    with_retries,
)
from zoobot.data.download.progress import Progress
from zoobot.data.download.sources import (
    CATALOG_MIRROR_ENV,
    SOURCES,
    CatalogSource,
    find_source,
    source_url,
)


@dataclass(frozen=True)
class DownloadCatalogConfig:
    source: str = field(default="", metadata={
        "help": f"Catalog to fetch: one of {sorted(SOURCES)} (zoobot.data.download.SOURCES); may also be given as "
                "the first argument."})
    output_dir: str = field(default="", metadata={"help": "Folder for the catalog file (default: data/<source>)."})
    mirror: str = field(default="", metadata={
        "help": "Fetch the published path from this host instead (scheme://host[:port][/prefix]); default: "
                f"${CATALOG_MIRROR_ENV}, else the published address."})
    retries: int = retries_field()
    backoff: float = backoff_field()
    timeout: float = timeout_field()

    def __post_init__(self):
        problems: list[str] = []
        if not self.source:
            problems.append(f"name the catalog to fetch, one of {sorted(SOURCES)} (e.g. `zoobot download catalog "
                            "gz2`)")
        elif self.source not in SOURCES:
            problems.append(f"unknown catalog source '{self.source}'; known sources are {sorted(SOURCES)}")
        check_network(problems, self.retries, self.backoff, self.timeout)
        if problems:
            raise ValueError("Invalid download settings: " + "; ".join(problems) + ".")


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


def download_catalog(config: DownloadCatalogConfig, progress: bool = False) -> CatalogDownload:
    """The source's file in `<output_dir>/<filename>`, verified; an existing verified file is kept."""
    started = time.monotonic()
    source = find_source(config.source)
    url = source_url(source, config.mirror or os.environ.get(CATALOG_MIRROR_ENV, ""))
    target = Path(config.output_dir or Path("data") / source.name) / source.filename
    downloaded = False
    if not (target.is_file() and _published_mismatch(target, source) is None):
        table = _fetch_verified(source, url, target, config, progress)
        downloaded = True
    else:
        table = _catalog_table(target, source, str(target))
    return CatalogDownload(
        source=source, url=url, path=target.resolve(), sha256=file_sha256(target), size=target.stat().st_size,
        downloaded=downloaded, verified=_what_is_verified(source), n_rows=len(table), table=table,
        seconds=time.monotonic() - started)


def _fetch_verified(source: CatalogSource, url: str, target: Path, config: DownloadCatalogConfig,
                    progress: bool) -> pd.DataFrame:
    """`url` -> `target` through `target.part` (kept on a failed transfer, to resume), checked against
    the source; the table zoobot reads from it."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    received = [0, None]  # bytes so far, bytes expected
    bar = Progress(source.filename, lambda: _megabytes(*received), enabled=progress)

    def on_bytes(position: int, expected: int | None) -> None:
        received[:] = position, expected
        bar.move_to(position, expected)

    session = new_session()
    try:
        with_retries(lambda: fetch(session, url, part, config.timeout, resume=True, on_bytes=on_bytes),
                     config.retries, config.backoff)
    except Permanent as e:
        kept = f" The partial file {part} is kept: run the same command again to resume." if part.exists() else ""
        raise DownloadError(f"Could not download catalog '{source.name}' from {url}: {e}.{kept}") from None
    finally:
        session.close()
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
    return table


def _megabytes(received: int, expected: int | None) -> str:
    total = f" of {expected / 1e6:.1f}" if expected else ""
    return f"{received / 1e6:.1f}{total} MB"


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
        raise DownloadError(f"What {origin} sent is not a readable table ({short(e)}); it starts with {start!r}. "
                            "Check the address (an error page is not a catalog).") from None
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DownloadError(
            f"The table from {origin} lacks columns {missing[:8]}{' ...' if len(missing) > 8 else ''} that schema "
            f"'{schema.name}' needs for source '{source.name}'. The release may have changed: check "
            f"{source.reference or source.url} and update zoobot.data.download.SOURCES.")
    return frame[wanted]
