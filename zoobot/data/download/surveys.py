"""The registry of survey cutout services: address (overridable), native pixel scale, query per format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


class CutoutOptions(Protocol):
    """What a service's query reads of the download settings (a CutoutOptions)."""

    layer: str
    image_format: str
    bands: str


@dataclass(frozen=True)
class CutoutService:
    """A public cutout service: its address (overridable by `env_var`), native pixel scale, endpoints."""

    name: str
    base_url: str
    env_var: str
    pixscale: float  # arcsec/pixel used when the config leaves pixscale at 0
    endpoints: tuple[tuple[str, str], ...]  # (image format, path under base_url)
    query: Callable[[str, str, int, float, CutoutOptions], dict]

    def endpoint(self, image_format: str) -> str:
        paths = dict(self.endpoints)
        if image_format not in paths:
            raise ValueError(f"The {self.name} cutout service serves {sorted(paths)}, not '{image_format}'. "
                             f"Use --image-format {sorted(paths)[0]}"
                             + (" or --survey legacy for FITS." if image_format == "fits" else "."))
        return paths[image_format]


def _legacy_query(ra: str, dec: str, size: int, pixscale: float, config: CutoutOptions) -> dict:
    query = {"ra": ra, "dec": dec, "layer": config.layer, "pixscale": pixscale, "size": size}
    if config.image_format == "fits":
        query["bands"] = config.bands
    return query


def _sdss_query(ra: str, dec: str, size: int, pixscale: float, config: CutoutOptions) -> dict:
    return {"ra": ra, "dec": dec, "scale": pixscale, "width": size, "height": size}


CUTOUT_SERVICES: dict[str, CutoutService] = {s.name: s for s in (
    # DESI Legacy Imaging Surveys viewer: JPEG as on the Galaxy Zoo DECaLS site, FITS with raw fluxes.
    CutoutService("legacy", "https://www.legacysurvey.org/viewer", "ZOOBOT_LEGACY_SURVEY_URL", 0.262,
                  (("jpeg", "jpeg-cutout"), ("fits", "fits-cutout")), _legacy_query),
    # SDSS SkyServer DR17 image cutout: JPEG only; 0.396 arcsec/pixel is SDSS's native scale.
    CutoutService("sdss", "https://skyserver.sdss.org/dr17/SkyServerWS/ImgCutout", "ZOOBOT_SDSS_URL", 0.396,
                  (("jpeg", "getjpeg"),), _sdss_query),
)}
IMAGE_SUFFIX = {"jpeg": ".jpg", "fits": ".fits"}
MAX_WORKERS = 8  # cutout services are shared by everyone; more parallel requests than this is impolite
