"""The registry of published vote catalogs: where each lives, what it should be, which schema reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


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
