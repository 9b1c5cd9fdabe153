"""Catalog + images -> sharded TFRecords with a manifest.

Steps, in the order they run: load and validate the catalog; assign seeded splits; decode images
in parallel; write each split's shards into a staging folder; write the pool's labels to the
oracle file, the rejected rows, the galaxy index and, last, the manifest; then move the files into
place, the manifest last (`zoobot.core.staging`). A killed conversion therefore leaves no folder that a
later step could mistake for a finished one, and `overwrite` replaces only the files an earlier
conversion's manifest lists: a catalog and images in the same folder are never touched.

TensorFlow is imported only when writing, so worker processes that decode images stay light.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import click
import numpy as np
import pandas as pd

from zoobot.core import staging
from zoobot.data.catalog import ID, IMAGE, ROW, Catalog, load_catalog
from zoobot.data.images import ImageReadError, ImageSpec, read_image
from zoobot.data.manifest import MANIFEST_NAME, Manifest, Split
from zoobot.core.votes import rejected_rows

SPLIT_ORDER = ("train", "validation", "test", "pool", "all")
EXAMPLES_PER_SPLIT = 8
FIXED_OUTPUTS = ("galaxies.csv", "rejected.csv", MANIFEST_NAME)  # besides the shards and the oracle


@dataclass(frozen=True)
class ConvertConfig:
    catalog: str = field(metadata={"help": "Catalog of galaxies: CSV, Parquet or FITS table."})
    output_dir: str = field(default="data/shards", metadata={
        "help": "Folder for the shards and manifest.json (created; must not hold a conversion unless --overwrite)."})
    schema: str = field(default="decals", metadata={
        "help": "Decision tree: 'decals', 'gz2', or a YAML/JSON file describing your own."})
    id_column: str = field(default="", metadata={
        "help": "Id column of the catalog (default: the schema's, e.g. iauname for decals, dr7objid for gz2)."})
    image_column: str = field(default="file_loc", metadata={"help": "Column with each galaxy's image path."})
    image_root: str = field(default="", metadata={
        "help": "Folder that relative image paths start from (default: the catalog's folder)."})
    image_size: int = field(default=64, metadata={"help": "Images are resized to SIZE x SIZE pixels."})
    channels: int = field(default=3, metadata={"help": "3 for colour, 1 for greyscale."})
    image_encoding: str = field(default="raw", metadata={
        "help": "How images are stored in the records: 'raw' (fast to read) or 'png' (smaller)."})
    shard_size: int = field(default=1024, metadata={"help": "Records per TFRecord file."})
    val_fraction: float = field(default=0.1, metadata={"help": "Fraction of galaxies in the validation split."})
    test_fraction: float = field(default=0.2, metadata={"help": "Fraction of galaxies in the test split."})
    labelled_size: int = field(default=0, metadata={
        "help": "For active learning: keep this many train galaxies labelled and put the rest in an unlabelled "
                "'pool' split, their labels in the oracle file. 0: every train galaxy is labelled."})
    pool_catalog: str = field(default="", metadata={
        "help": "For a campaign with real volunteers: a catalog of galaxies nobody has classified yet (an id and an "
                "image per row, vote columns absent or empty; same --id-column and --image-column, relative image "
                "paths from its own folder unless --image-root). They become the unlabelled 'pool' split, with no "
                "oracle file: their labels come only from volunteers (al_iteration --oracle zooniverse). Rows that "
                "have votes, or whose id is in --catalog, are set aside in rejected.csv."})
    labels: bool = field(default=True, metadata={
        "help": "false: the catalog has no votes (a set to predict on); writes one unlabelled split 'all'."})
    seed: int = field(default=42, metadata={"help": "Seed of the split assignment."})
    workers: int = field(default=0, metadata={"help": "Processes decoding images; 0 = one per core."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing conversion in output_dir."})
    log_shards: bool = field(default=True, metadata={
        "help": "Also copy the shards into the MLflow run's artifacts, so later steps on other machines can "
                "use them by run URI."})

    def __post_init__(self):
        problems = []
        if self.image_encoding not in {"raw", "png"}:
            problems.append(f"image_encoding must be 'raw' or 'png', got {self.image_encoding!r}")
        if self.shard_size < 1:
            problems.append(f"shard_size must be >= 1, got {self.shard_size}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            problems.append(
                f"val_fraction ({self.val_fraction}) and test_fraction ({self.test_fraction}) must each be in "
                "[0, 1) and leave some galaxies for training (sum < 1)")
        if self.labelled_size < 0:
            problems.append(f"labelled_size must be >= 0, got {self.labelled_size}")
        if self.pool_catalog and self.labelled_size:
            problems.append(
                f"pool_catalog and labelled_size={self.labelled_size} both make a pool: labelled_size holds labelled "
                "galaxies back for a simulated campaign, pool_catalog gives unclassified galaxies for a real one; "
                "use one (labelled_size=0 with pool_catalog)")
        if self.pool_catalog and not self.labels:
            problems.append("pool_catalog needs a labelled catalog (labels=true): the campaign starts from its labels")
        if self.workers < 0:
            problems.append(f"workers must be >= 0 (0 = one per core), got {self.workers}")
        if problems:
            raise ValueError("Invalid convert settings: " + "; ".join(problems) + ".")
        ImageSpec(size=self.image_size, channels=self.channels)  # validates size and channels

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec(size=self.image_size, channels=self.channels)


@dataclass(frozen=True)
class ConvertResult:
    manifest: Manifest
    catalog: Catalog
    rejected: pd.DataFrame  # catalog rejects and unreadable images: row, id_str, reason
    examples: dict[str, tuple[list[str], np.ndarray]]  # a few (ids, images) per split, for figures


def assign_splits(n: int, config: ConvertConfig) -> np.ndarray:
    """Split name per galaxy, from a seeded permutation (so reruns give the same splits)."""
    if not config.labels:
        return np.full(n, "all", dtype=object)
    order = np.random.default_rng(config.seed).permutation(n)
    n_test = int(round(config.test_fraction * n))
    n_val = int(round(config.val_fraction * n))
    names = np.empty(n, dtype=object)
    names[order[:n_test]] = "test"
    names[order[n_test:n_test + n_val]] = "validation"
    train = order[n_test + n_val:]
    names[train] = "train"
    if config.labelled_size:
        if config.labelled_size >= len(train):
            raise ValueError(
                f"labelled_size={config.labelled_size} leaves no galaxies for the pool: only {len(train)} are in "
                "the train split. Use a smaller labelled_size, or 0 to label every train galaxy.")
        names[train[config.labelled_size:]] = "pool"
    return names


def encode_galaxy(path: str, spec: ImageSpec, encoding: str) -> tuple[bytes | None, str | None]:
    """Runs in a worker: the record's image bytes, or why the image could not be used."""
    try:
        image = read_image(path, spec)
    except ImageReadError as e:
        return None, str(e)
    if encoding == "raw":
        return image.tobytes(), None
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue(), None


def _decoded(galaxies: pd.DataFrame, config: ConvertConfig, progress: bool):
    """(row position, (bytes or None, error or None)) for every galaxy, in order."""
    paths = galaxies[IMAGE].tolist()
    spec, encoding = config.image_spec, config.image_encoding
    workers = config.workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 32:
        results = (encode_galaxy(p, spec, encoding) for p in paths)
        executor = None
    else:
        # Not fork: the parent has TensorFlow loaded, which is not fork-safe. A forkserver imports
        # this module once and forks each worker from it, so workers start in milliseconds rather
        # than paying a fresh interpreter's imports each.
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        chunk = max(1, min(64, len(paths) // (workers * 8)))
        results = executor.map(encode_galaxy, paths, [spec] * len(paths), [encoding] * len(paths), chunksize=chunk)
    try:
        if progress:
            with click.progressbar(results, length=len(paths), label="Decoding images") as bar:
                yield from enumerate(bar)
        else:
            yield from enumerate(results)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


def convert(config: ConvertConfig, progress: bool = False) -> ConvertResult:
    output_dir = Path(config.output_dir).resolve()
    owned = staging.owned_files(output_dir, MANIFEST_NAME, _conversion_files)
    staging.check_output_folder(output_dir, MANIFEST_NAME, owned, config.overwrite, "convert")  # before the slow part
    catalog, galaxies = _load(config)
    pool = _load_pool(config, catalog) if config.pool_catalog else None
    if pool is not None:
        galaxies = pd.concat([galaxies, pool.galaxies], ignore_index=True)
    with staging.staged_output(output_dir, MANIFEST_NAME, owned, config.overwrite, "convert",
                               planned=_planned_files(galaxies, config)) as folder:
        written = _write_shards(folder, galaxies, catalog, config, progress)
        rejected, oracle = _write_tables(folder, galaxies, catalog, written.failed, config,
                                         pool.rejected if pool is not None else None)
        Manifest(
            schema=catalog.schema.to_dict(),
            image_shape=(config.image_size, config.image_size, config.channels),
            image_encoding=config.image_encoding,
            splits={s: Split.of_files(s, written.labelled[s], files) for s, files in written.files.items()},
            catalog={"path": str(catalog.path.resolve()), "sha256": catalog.sha256,
                     "rows": len(catalog.galaxies) + len(catalog.rejected), "rejected": len(rejected),
                     **({"pool": pool.summary} if pool is not None else {})},
            config=asdict(config),
            oracle=oracle,
        ).write(folder)
    examples = {s: (ids, np.stack(images)) for s, (ids, images) in written.examples.items() if ids}
    manifest = Manifest.read(output_dir, verify=False)
    manifest.verify(checksums=False)  # the checksums were computed from these very bytes while writing
    return ConvertResult(manifest, catalog, rejected, examples)


def _load(config: ConvertConfig) -> tuple[Catalog, pd.DataFrame]:
    """The validated catalog, and its good galaxies with their splits, split by split in catalog order
    (so that shards are reproducible)."""
    catalog = load_catalog(
        config.catalog, config.schema, id_column=config.id_column or None, image_column=config.image_column,
        image_root=config.image_root or None, require_labels=config.labels)
    if catalog.galaxies.empty:
        raise ValueError(
            f"No usable galaxies in '{config.catalog}': all {len(catalog.rejected)} rows were set aside. "
            f"First reasons: {catalog.rejected['reason'].head(5).tolist()}")
    galaxies = catalog.galaxies.copy()
    galaxies["split"] = assign_splits(len(galaxies), config)
    galaxies = galaxies.iloc[np.argsort([SPLIT_ORDER.index(s) for s in galaxies["split"]], kind="stable")]
    return catalog, galaxies.reset_index(drop=True)


@dataclass(frozen=True)
class _Pool:
    galaxies: pd.DataFrame  # good rows, split 'pool', label columns 0 (never written: the pool is unlabelled)
    rejected: pd.DataFrame  # row (of the pool catalog), id_str, reason (beginning "pool catalog")
    summary: dict  # path, sha256, rows, rejected: for the manifest


POOL_REASON = "pool catalog"  # how rejected.csv tells the pool catalog's rows from the labelled catalog's


def _load_pool(config: ConvertConfig, catalog: Catalog) -> _Pool:
    """The unclassified galaxies of `config.pool_catalog`, checked: a row with votes, or with an id the
    labelled catalog also has, is set aside (a pool galaxy gets labels only from volunteers)."""
    pool = load_catalog(
        config.pool_catalog, catalog.schema, id_column=config.id_column or None, image_column=config.image_column,
        image_root=config.image_root or None, require_labels=False)
    galaxies = pool.galaxies.copy()
    reasons = [[] for _ in range(len(galaxies))]
    binary = [q.binary_column for q in catalog.schema.questions if q.binary_column]
    counts = [c for q in catalog.schema.questions if not q.binary_column for c in q.columns]
    has_label = pd.DataFrame(  # a vote count other than 0, or any 0/1 answer
        {**{c: pd.to_numeric(galaxies[c], errors="coerce").fillna(0) != 0 for c in counts if c in galaxies.columns},
         **{c: galaxies[c].notna() & (galaxies[c].astype(str).str.strip() != "") for c in binary
            if c in galaxies.columns}}, index=galaxies.index)
    for i in np.flatnonzero(has_label.any(axis=1).to_numpy()) if len(has_label.columns) else []:
        given = [c for c in has_label.columns if has_label.iloc[i][c]]
        reasons[i].append(f"has votes ({', '.join(given[:3])}{' ...' if len(given) > 3 else ''}); a pool galaxy is "
                          "one nobody has classified: move classified galaxies to --catalog")
    labelled_rows = dict(zip(catalog.galaxies[ID], catalog.galaxies[ROW]))
    for i, galaxy_id in enumerate(galaxies[ID]):
        if galaxy_id in labelled_rows:
            reasons[i].append(f"id also in the labelled catalog (row {labelled_rows[galaxy_id]}); a galaxy is either "
                              "labelled or in the pool")
    bad = np.array([bool(r) for r in reasons], dtype=bool)
    set_aside = rejected_rows(galaxies.loc[bad, ROW].to_numpy(), galaxies.loc[bad, ID].to_numpy(),
                              ["; ".join(r) for r, b in zip(reasons, bad) if b])
    rejected = pd.concat([pool.rejected, set_aside], ignore_index=True).sort_values("row", kind="stable")
    rejected["reason"] = f"{POOL_REASON} '{pool.path.name}': " + rejected["reason"].astype(str)
    good = galaxies[~bad].drop(columns=[c for c in catalog.schema.label_cols if c in galaxies.columns])
    good = good.assign(split="pool", **{c: 0 for c in catalog.schema.label_cols})
    if good.empty:
        raise ValueError(
            f"No usable galaxies in the pool catalog '{config.pool_catalog}': all {len(rejected)} rows were set aside. "
            f"First reasons: {rejected['reason'].head(5).tolist()}")
    summary = {"path": str(pool.path.resolve()), "sha256": pool.sha256, "rows": len(pool.galaxies) + len(pool.rejected),
               "rejected": len(rejected)}
    return _Pool(good.reset_index(drop=True), rejected_rows(*(rejected[c] for c in ("row", "id_str", "reason"))),
                 summary)


@dataclass
class _Written:
    files: dict[str, list]  # split -> ShardFile of each shard written
    labelled: dict[str, bool]  # split -> whether its records carry labels
    failed: list[tuple[int, str]]  # (row position, why) of galaxies whose image could not be used
    examples: dict[str, tuple[list[str], list[np.ndarray]]]  # a few (ids, images) per split


def _write_shards(folder: Path, galaxies: pd.DataFrame, catalog: Catalog, config: ConvertConfig,
                  progress: bool) -> _Written:
    from zoobot.data import shards  # TensorFlow: only in the writing process

    writers = {s: shards.ShardWriter(folder, s, config.shard_size) for s in dict.fromkeys(galaxies["split"])}
    labelled = {s: config.labels and s != "pool" for s in writers}
    label_array = galaxies[list(catalog.schema.label_cols)].to_numpy(np.int64) if config.labels else None
    written = _Written({}, labelled, [], {s: ([], []) for s in writers})
    for i, (data, error) in _decoded(galaxies, config, progress):
        if data is None:
            written.failed.append((i, error))
            continue
        split = galaxies.at[i, "split"]
        writers[split].write(shards.serialize_example(
            galaxies.at[i, ID], data, label_array[i] if labelled[split] else None))
        ids, images = written.examples[split]
        if len(ids) < EXAMPLES_PER_SPLIT:
            ids.append(galaxies.at[i, ID])
            images.append(_image_from_bytes(data, config))
    written.files = {s: w.close() for s, w in writers.items()}
    return written


def _write_tables(folder: Path, galaxies: pd.DataFrame, catalog: Catalog, failed: list[tuple[int, str]],
                  config: ConvertConfig, pool_rejected: pd.DataFrame | None = None) -> tuple[pd.DataFrame, str | None]:
    """rejected.csv (catalog rows and unreadable images), galaxies.csv, and the pool's oracle.csv
    (a pool held back from the labelled catalog; a pool catalog's galaxies have no labels to hold)."""
    in_pool_catalog = [bool(config.pool_catalog) and galaxies.at[i, "split"] == "pool" for i, _ in failed]
    bad_images = rejected_rows([galaxies.at[i, ROW] for i, _ in failed], [galaxies.at[i, ID] for i, _ in failed],
                               [(f"{POOL_REASON} '{Path(config.pool_catalog).name}': " if pooled else "")
                                + f"unreadable image: {error}" for (_, error), pooled in zip(failed, in_pool_catalog)])
    tables = [catalog.rejected, bad_images] + ([pool_rejected] if pool_rejected is not None else [])
    rejected = rejected_rows(*(pd.concat(tables, ignore_index=True)[c] for c in ("row", "id_str", "reason")))
    rejected.to_csv(folder / "rejected.csv", index=False)
    written = galaxies.drop(index=[i for i, _ in failed])
    _write_index(written, folder / "galaxies.csv")
    if config.pool_catalog or not (config.labels and (written["split"] == "pool").any()):
        return rejected, None
    pool = written[written["split"] == "pool"]
    pool[[ID, *catalog.schema.label_cols]].to_csv(folder / "oracle.csv", index=False)
    return rejected, "oracle.csv"


def _image_from_bytes(data: bytes, config: ConvertConfig) -> np.ndarray:
    if config.image_encoding == "raw":
        return np.frombuffer(data, np.uint8).reshape(config.image_size, config.image_size, config.channels)
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(data)))
    return image.reshape(config.image_size, config.image_size, config.channels)


def _write_index(galaxies: pd.DataFrame, path: Path) -> None:
    """Where each galaxy went and where its image lives (no labels: the pool's stay in the oracle)."""
    columns = [ID, "split", IMAGE] + [c for c in ("ra", "dec") if c in galaxies.columns]
    galaxies[columns].to_csv(path, index=False)


def _planned_files(galaxies: pd.DataFrame, config: ConvertConfig) -> list[str]:
    counts = galaxies["split"].value_counts()
    shard_names = [f"{s}_{k:05d}.tfrecord" for s, n in counts.items() for k in range(-(-n // config.shard_size))]
    return [*shard_names, "oracle.csv", *FIXED_OUTPUTS]


def _conversion_files(manifest: dict) -> list[str]:
    """What a conversion wrote, from its manifest: shards, oracle and the fixed tables."""
    shards = [f["path"] for split in manifest["splits"].values() for f in split["files"]]
    return [*shards, *([manifest["oracle"]] if manifest.get("oracle") else []), *FIXED_OUTPUTS]
