"""Published Galaxy Zoo vote catalogs and survey cutouts, fetched from their public addresses.

Two steps, each a plain function that returns what it did:

- `download_catalog` (catalogs.py): one file of the `SOURCES` registry (sources.py: the GZ2 Hart et
  al. 2016 table, the GZ DECaLS DR5 volunteer votes), checked against its published size and
  checksum where there is one, and against the columns its schema needs.
- `download_images` (cutouts.py): a cutout of every galaxy with a sky position, from a survey's
  cutout service (`CUTOUT_SERVICES`, surveys.py), into `<output_dir>/images/`, and a copy of the
  catalog with the image-path column that `zoobot convert` reads. cutout_jobs.py runs the fetches
  concurrently and checks each image.

Every file is written to `NAME.part`, verified, and only then renamed to `NAME`: a killed or failed
download never leaves a truncated file under its final name, and a rerun skips what is there.
Connection errors, timeouts, 5xx/429 answers and cut-off bodies are retried with exponential
back-off; 4xx answers and bodies that are not the expected kind of file are not, because asking
again would get the same answer (http.py). One galaxy's failure is recorded with its reason and
never stops the others. Both steps show their progress on stderr with one helper (progress.py).

Base addresses default to the real services; config fields or environment variables point them
at a mirror or a test server. No MLflow here: `zoobot.tracking.mlflow_io.log_download` records a run.
"""

from zoobot.data.download.catalogs import (
    CatalogDownload,
    DownloadCatalogConfig,
    download_catalog,
)
from zoobot.data.download.cutouts import (
    FAILURE_COLUMNS,
    FAILURES_FILE,
    ImagesDownload,
    download_images,
    image_examples,
)
from zoobot.data.download.http import ChecksumError, DownloadError
from zoobot.data.download.images_config import (
    ID_CANDIDATES,
    OUTPUT_CATALOG,
    DownloadImagesConfig,
)
from zoobot.data.download.sources import (
    CATALOG_MIRROR_ENV,
    SOURCES,
    CatalogSource,
    find_source,
    source_url,
)
from zoobot.data.download.surveys import (
    CUTOUT_SERVICES,
    IMAGE_SUFFIX,
    MAX_WORKERS,
    CutoutService,
)

__all__ = [
    "CATALOG_MIRROR_ENV", "CUTOUT_SERVICES", "FAILURES_FILE", "FAILURE_COLUMNS", "ID_CANDIDATES", "IMAGE_SUFFIX",
    "MAX_WORKERS", "OUTPUT_CATALOG", "SOURCES", "CatalogDownload", "CatalogSource", "ChecksumError", "CutoutService",
    "DownloadCatalogConfig", "DownloadError", "DownloadImagesConfig", "ImagesDownload", "download_catalog",
    "download_images", "find_source", "image_examples", "source_url",
]
