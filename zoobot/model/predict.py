"""MC-dropout predictions for every galaxy of a shard set or an image folder, streamed to disk.

Per batch: the deterministic convolutional trunk runs once, the stochastic head n_samples times
(zoobot.model.sampling.mc_predict), and the batch's samples are appended to the output files, so memory does
not grow with the number of galaxies.

Outputs in OUTPUT_DIR:
- samples.parquet (or samples.h5): id_str and samples (n_galaxies, n_outputs, n_samples), with the
  output kind, schema and question in the file's metadata (read back with `read_predictions`);
- summary.csv: per galaxy and answer, the posterior-mean vote fraction and a credible interval;
- predictions.json, written last: the record of the two files (`zoobot.core.staging`), so `overwrite`
  replaces only an earlier prediction's files, and other files in the folder are left alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from zoobot.core import staging
from zoobot.core.model_meta import ModelMeta
from zoobot.core.predictions import Predictions

FORMATS = ("parquet", "hdf5")
RECORD = "predictions.json"  # written last: what the prediction wrote (zoobot.core.staging)


@dataclass(frozen=True)
class GalaxySource:
    """A model and the galaxies to run it on: a shard set (or one split of it) or an image folder.
    The first settings of `predict` and `embed`."""
    model: str = field(metadata={
        "help": "The model: models:/NAME@ALIAS, a train run URI (runs:/<id>), or a local .keras file/folder."})
    shards: str = field(default="", metadata={
        "help": "Shards to run the model on (path or convert run URI); or give --images instead."})
    split: str = field(default="", metadata={"help": "Which split of the shards ('' = every split)."})
    images: str = field(default="", metadata={
        "help": "A folder of galaxy images (PNG/JPEG/FITS, searched recursively) to use instead of shards."})

    def source_problems(self) -> list[str]:
        return [] if bool(self.shards) != bool(self.images) else [
            "give exactly one of shards (a converted set) or images (a folder)"]


@dataclass(frozen=True)
class PredictConfig(GalaxySource):
    output_dir: str = field(default="data/predictions", metadata={"help": "Folder for samples and summary."})
    n_samples: int = field(default=30, metadata={"help": "MC-dropout samples per galaxy."})
    batch_size: int = field(default=256, metadata={"help": "Galaxies per batch (memory is bounded by this)."})
    format: str = field(default="parquet", metadata={"help": "Samples file format: parquet or hdf5."})
    interval: float = field(default=0.9, metadata={
        "help": "Credible-interval mass for the summary (0.9: 5th to 95th percentile of the samples)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace existing outputs in output_dir."})
    augment: bool = field(default=False, metadata={
        "help": "Test-time augmentation: each MC sample sees its own random flip, rotation and zoom of the galaxy "
                "(n_samples full passes instead of one trunk pass and n_samples head passes: slower)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the dropout masks (and views): the same seed gives the same samples."})

    def __post_init__(self):
        problems = self.source_problems()
        if self.n_samples < 1:
            problems.append(f"n_samples must be >= 1, got {self.n_samples}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.format not in FORMATS:
            problems.append(f"format must be one of {list(FORMATS)}, got {self.format!r}")
        if not 0 < self.interval < 1:
            problems.append(f"interval must be between 0 and 1, got {self.interval}")
        if problems:
            raise ValueError("Invalid predict settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class PredictResult:
    samples_path: Path
    summary_path: Path
    n_galaxies: int
    seconds: float


# -- where the images come from ----------------------------------------------------------------------


def shard_batches(manifest, splits: list[str], batch_size: int, channels: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, images in 0..255) batches from shards, with the model's channels.

    Images stay uint8 when the shards already have the model's channels: the model casts on its
    first layer, and a float32 copy made here would cost a third of the reading time.
    """
    from zoobot.data import augment
    from zoobot.data.shards import read_in_order

    dataset = read_in_order(manifest, splits, batch_size=batch_size)  # one pipeline, prefetching across splits
    if manifest.image_shape[-1] != channels:
        dataset = augment.prepare(dataset, channels, augment=False)
    # Stop at the manifest's count rather than asking the iterator for its end; the iterator is let
    # go when the caller closes this generator, after the writing is done.
    remaining = sum(manifest.split(split).count for split in splits)
    batches = dataset.as_numpy_iterator()
    while remaining > 0:
        batch = next(batches, None)
        if batch is None:
            raise ValueError(f"The shards of {splits} in {manifest.root} hold fewer galaxies than their manifest "
                             f"says ({remaining} missing); convert them again or check `zoobot verify`.")
        remaining -= len(batch["id_str"])
        yield np.array([v.decode("utf-8") for v in batch["id_str"]]), batch["image"]


def folder_batches(folder: Path, batch_size: int, image_shape,
                   workers: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, float32 images) from every readable image under `folder`; ids are relative paths.

    Images are decoded and resized by a pool of threads (Pillow releases the GIL while it does
    both), the next batch's while this one is predicted; at most two batches are held at once.
    Unreadable images are reported and skipped.
    """
    from zoobot.core.machine import usable_cores
    from zoobot.data.images import IMAGE_SUFFIXES, ImageReadError, ImageSpec, read_image

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and any(
        p.name.lower().endswith(s) for s in IMAGE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"No images ({sorted(IMAGE_SUFFIXES)}) found under '{folder}'.")
    spec = ImageSpec(size=image_shape[0], channels=image_shape[2])

    def read(path: Path):
        try:
            return read_image(path, spec), None
        except ImageReadError as e:
            return None, e

    with ThreadPoolExecutor(max_workers=workers or usable_cores(), thread_name_prefix="zoobot-predict-reader") as pool:
        def submit(start: int) -> list:
            return [(path, pool.submit(read, path)) for path in files[start:start + batch_size]]

        upcoming = submit(0)
        for start in range(0, len(files), batch_size):
            current, upcoming = upcoming, submit(start + batch_size)
            ids, images = [], []
            for path, future in current:
                image, error = future.result()
                if error is not None:
                    print(f"Skipping {path}: {error}")
                    continue
                ids.append(str(path.relative_to(folder)))
                images.append(image)
            if ids:
                yield np.array(ids), np.stack(images).astype(np.float32)


# -- writing -----------------------------------------------------------------------------------------


def summarise(predictions: Predictions, interval: float) -> dict[str, np.ndarray]:
    """Posterior-mean vote fraction and credible interval per answer: columns of one row per galaxy
    (pandas.DataFrame(summary) for a table)."""
    columns = {"id_str": predictions.id_str.astype(str)}
    low_q, high_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    for question in predictions.questions:
        fractions = predictions.sample_fractions(question)
        answers = predictions.answer_columns(question)
        if predictions.kind == "binomial":
            answers = answers[:1]  # the model speaks only about its first answer
        fractions = fractions[:, :len(answers), :]
        mean = fractions.mean(axis=2)
        low, high = sample_quantiles(fractions, (low_q, high_q))
        for i, answer in enumerate(answers):
            columns[f"{answer}_mean"], columns[f"{answer}_low"], columns[f"{answer}_high"] = mean[:, i], low[:, i], high[:, i]
    return columns


def sample_quantiles(samples: np.ndarray, quantiles) -> list[np.ndarray]:
    """np.quantile's default (linear) quantiles over the last axis, from one sort of the contiguous
    sample axis: 5x faster than np.quantile(axis=-1), which partitions along a strided axis."""
    ordered = np.sort(samples, axis=-1)
    last = ordered.shape[-1] - 1
    out = []
    for q in quantiles:
        low = min(int(np.floor(q * last)), last)
        high, weight = min(low + 1, last), q * last - low
        out.append(ordered[..., low] + (ordered[..., high] - ordered[..., low]) * weight)
    return out


class SamplesWriter:
    """Appends (ids, samples) batches to a Parquet or HDF5 file, with the metadata to read it back."""

    def __init__(self, path: Path, fmt: str, meta: ModelMeta, n_outputs: int, n_samples: int):
        self.path, self.fmt, self.meta = path, fmt, meta
        self.shape = (n_outputs, n_samples)
        self.count = 0
        self._writer = None

    def write(self, ids: np.ndarray, samples: np.ndarray) -> None:
        samples = samples.astype(np.float32)
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            flat = pa.FixedSizeListArray.from_arrays(pa.array(samples.reshape(-1)), int(np.prod(self.shape)))
            table = pa.table({"id_str": pa.array(ids.astype(str)), "samples": flat})
            if self._writer is None:
                schema = table.schema.with_metadata({"zoobot": json.dumps({**self.meta.to_dict(), "shape": self.shape})})
                # MC samples are noisy floats: they neither compress (snappy saved 0.4% and halved the speed) nor
                # suit a dictionary (trying one for every page made writing 7x slower)
                self._writer = pq.ParquetWriter(self.path, schema, compression={"id_str": "snappy", "samples": "none"},
                                                use_dictionary=["id_str"])
            self._writer.write_table(table.replace_schema_metadata(self._writer.schema.metadata))
        else:
            import h5py

            if self._writer is None:
                self._writer = h5py.File(self.path, "w")
                self._writer.attrs["zoobot"] = json.dumps(self.meta.to_dict())
                self._writer.create_dataset("id_str", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
                self._writer.create_dataset("samples", shape=(0, *self.shape), maxshape=(None, *self.shape),
                                            dtype="float32", chunks=(256, *self.shape))
            n = len(ids)
            for name, values in (("id_str", ids.astype(str)), ("samples", samples)):
                dataset = self._writer[name]
                dataset.resize(self.count + n, axis=0)
                dataset[self.count:self.count + n] = values
        self.count += len(ids)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def append_csv(path: Path, columns: dict[str, np.ndarray], header: bool) -> None:
    """Write `columns` (with a header: a new file) or append them to `path`. Arrow's CSV writer from
    the arrays, not pandas': 4x faster on a summary's 100 float columns, and it releases the GIL while
    it formats."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    with open(path, "wb" if header else "ab") as sink:
        pa_csv.write_csv(pa.table(columns), sink, pa_csv.WriteOptions(include_header=header))


def read_predictions(path: str | Path) -> Predictions:
    """Samples written by `predict` (Parquet or HDF5) as a Predictions value."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"zoobot"])
        samples = np.asarray(table.column("samples").combine_chunks().flatten()).reshape(-1, *meta["shape"])
        ids = np.asarray(table.column("id_str").to_pylist())
    else:
        import h5py

        with h5py.File(path, "r") as f:
            meta = json.loads(f.attrs["zoobot"])
            ids = np.asarray([v.decode() if isinstance(v, bytes) else v for v in f["id_str"][:]])
            samples = f["samples"][:]
    return ModelMeta.from_dict(meta).predictions(ids, samples)


# -- the step ----------------------------------------------------------------------------------------


def galaxy_batches(source: GalaxySource, manifest, image_shape, batch_size: int):
    """(ids, images) batches of the source's galaxies: its shards (`manifest`; one split or all) or
    its image folder."""
    if manifest is None:
        return folder_batches(Path(source.images), batch_size, image_shape)
    splits = [source.split] if source.split else list(manifest.splits)
    for split in splits:
        manifest.split(split)  # says which splits exist when this one does not
    return shard_batches(manifest, splits, batch_size, image_shape[-1])


def stream_batches(batches, compute, write, step: str) -> None:
    """out = compute(i, ids, images) for each batch, then write(i, ids, out) in a thread while batch
    i + 1 is computed (TensorFlow releases the GIL, so writing costs little wall time); one batch in
    flight at most, a writer's error raised here. The batches' reader is closed at the end, once
    nothing else runs."""
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"zoobot-{step}-writer") as pool:
            pending = None
            for index, (ids, images) in enumerate(batches):
                out = compute(index, ids, images)
                if pending is not None:
                    pending.result()
                pending = pool.submit(write, index, ids, out)
            if pending is not None:
                pending.result()
    finally:
        if hasattr(batches, "close"):
            batches.close()


def predict(config: PredictConfig, model, meta: ModelMeta, manifest=None, progress: bool = False) -> PredictResult:
    """Stream MC-dropout samples of `model` (a loaded Keras model with its bundle `meta`) to disk."""
    from zoobot.model.sampling import mc_predict, reseed, split_trunk_head

    output_dir = Path(config.output_dir).resolve()
    names = ("samples.parquet" if config.format == "parquet" else "samples.h5", "summary.csv")
    owned = staging.owned_files(output_dir, RECORD, lambda record: record["files"])
    staging.check_output_folder(output_dir, RECORD, owned, config.overwrite, "predict", beside_others=True)
    staging.refuse_unowned(output_dir, names, owned, "predict")
    batches = galaxy_batches(config, manifest, tuple(model.input_shape[1:]), config.batch_size)
    trunk_head = split_trunk_head(model)
    reseed(model, config.seed)
    n_outputs = model.output_shape[-1]
    start = time.perf_counter()
    with staging.staged_output(output_dir, RECORD, owned, config.overwrite, "predict", beside_others=True) as folder:
        writer = SamplesWriter(folder / names[0], config.format, meta, n_outputs, config.n_samples)

        def write(index: int, ids: np.ndarray, samples: np.ndarray) -> None:
            writer.write(ids, samples)
            summary = summarise(meta.predictions(ids, samples), config.interval)
            append_csv(folder / names[1], summary, header=index == 0)
            if progress:
                print(f"  predicted {writer.count} galaxies", flush=True)

        def sample(index: int, ids: np.ndarray, images: np.ndarray) -> np.ndarray:
            if config.augment:
                return augmented_samples(model, images, config.n_samples, seed=(config.seed, index))
            return mc_predict(model, images, config.n_samples, trunk_head=trunk_head, batch_size=config.batch_size)

        try:
            stream_batches(batches, sample, write, "predict")
        finally:
            writer.close()

        record = {"step": "predict", "files": list(names), "n_galaxies": writer.count, "config": asdict(config)}
        (folder / RECORD).write_text(json.dumps(record, indent=1))
    return PredictResult(output_dir / names[0], output_dir / names[1], writer.count, time.perf_counter() - start)


def augmented_samples(model, images: np.ndarray, n_samples: int, seed: tuple[int, int]) -> np.ndarray:
    """(B, n_outputs, n_samples): sample t is the whole stochastic model on view t of each galaxy
    (flips, rotation, zoom drawn from (seed, t)), so the spread holds the model's uncertainty about
    orientation and size as well as the dropout's."""
    import tensorflow as tf

    from zoobot.data.augment import random_view

    images = tf.convert_to_tensor(images, tf.float32)
    base = int(seed[0]) * 1_000_003 + int(seed[1])
    return np.stack([np.asarray(model.predict_on_batch(random_view(images, tf.constant([base, t], tf.int64))))
                     for t in range(n_samples)], axis=-1)


def predict_split(model, meta: ModelMeta, manifest, split: str, n_samples: int, batch_size: int = 256,
                  keep_images: int = 12) -> tuple[Predictions, Predictions, np.ndarray, np.ndarray]:
    """For one labelled split, in memory (for evaluation): MC-dropout predictions, the single
    deterministic pass (dropout off: the non-Bayesian baseline), vote counts, and the first
    `keep_images` images for figures. The trunk runs once for both."""
    from zoobot.data import augment
    from zoobot.data.manifest import FEATURE_LABELS
    from zoobot.data.shards import make_dataset
    from zoobot.model.sampling import deterministic_head_predict, head_samples, split_trunk_head

    channels = model.input_shape[-1]
    dataset = augment.prepare(make_dataset(manifest, split, batch_size=batch_size), channels, augment=False)
    trunk, head = split_trunk_head(model)
    ids, samples, single, counts, images = [], [], [], [], []
    for batch in dataset.as_numpy_iterator():
        ids.extend(v.decode("utf-8") for v in batch["id_str"])
        features = trunk.predict_on_batch(batch["image"])
        samples.append(head_samples(head, features, n_samples))
        single.append(deterministic_head_predict(head, features)[..., None])
        counts.append(batch[FEATURE_LABELS])
        if sum(len(i) for i in images) < keep_images:
            images.append(batch["image"][:keep_images].astype(np.uint8))
    ids = np.array(ids)
    return (meta.predictions(ids, np.concatenate(samples)), meta.predictions(ids, np.concatenate(single)),
            np.concatenate(counts), np.concatenate(images)[:keep_images])
