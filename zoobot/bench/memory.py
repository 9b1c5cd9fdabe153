"""Figure 5: peak memory of `predict` over a pool MEMORY_SCALE times larger, each in a fresh process
(python -c "... from zoobot.bench.memory import memory_child ..."), since peak RSS is per process."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from zoobot.bench.config import MEMORY_SCALE, Sizes
from zoobot.bench.measurement import Measurement, measured

CHILD_CODE = "import sys; from zoobot.bench.memory import memory_child; memory_child(sys.argv[1])"


def memory_figure(root: Path, sizes: Sizes, seed: int) -> Measurement:
    from zoobot.core.model_meta import ModelMeta
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import ModelConfig, build_model, save_bundle

    small, large = sizes.memory_pool, sizes.memory_pool * MEMORY_SCALE
    folders = {n: write_pool_shards(root / f"pool_{n}", n, sizes.memory_image_size, seed) for n in (small, large)}
    manifest = Manifest.read(folders[small])
    model = build_model(ModelConfig(filters="8,16", dense_units=32), manifest.schema_obj, manifest.image_shape)
    bundle = save_bundle(model, root / "memory_model",
                         ModelMeta(manifest.schema, "dirichlet", image_shape=manifest.image_shape))
    ratios, peaks = [], {small: [], large: []}
    for _ in range(sizes.repeats):
        jobs = [{"model": str(bundle / "model.keras"), "shards": str(folders[n]), "n_samples": sizes.n_samples,
                 "output_dir": str(root / f"memory_predictions_{n}")} for n in (small, large)]
        small_result, large_result = _run_children(jobs)
        peaks[small].append(small_result["peak_mb"])
        peaks[large].append(large_result["peak_mb"])
        ratios.append(large_result["peak_mb"] / small_result["peak_mb"])
    samples_mb = (large - small) * manifest.schema_obj.n_answers * sizes.n_samples * 4 / 2**20
    return measured(
        "predict_memory_ratio", ratios,
        f"peak RSS (VmHWM) of a fresh process running predict() over {large} vs {small} galaxies "
        f"({sizes.memory_image_size}x{sizes.memory_image_size} random images, small model, T={sizes.n_samples}). "
        f"Holding all samples in memory would add ~{samples_mb:.0f} MB to the larger pool.",
        small_pool=small, large_pool=large, small_peak_mb=statistics.median(peaks[small]),
        large_peak_mb=statistics.median(peaks[large]))


def write_pool_shards(folder: Path, n: int, image_size: int, seed: int, shard_size: int = 2048) -> Path:
    """An unlabelled 'pool' split of n random images, written directly (no catalog, no image files)."""
    from zoobot.core.schema import load_schema
    from zoobot.data.manifest import Manifest, Split
    from zoobot.data.shards import ShardWriter, serialize_example

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = ShardWriter(folder, "pool", shard_size)
    shape = (image_size, image_size, 3)
    for i in range(n):
        writer.write(serialize_example(f"pool-{i:07d}", rng.integers(0, 256, shape, dtype=np.uint8).tobytes(), None))
    files = writer.close()
    Manifest(schema=load_schema("decals").to_dict(), image_shape=shape, image_encoding="raw",
             splits={"pool": Split.of_files("pool", False, files)},
             catalog={"path": "", "sha256": "", "rows": n, "rejected": 0}, config={"synthetic": True}).write(folder)
    return folder


def memory_child(arguments: str) -> None:
    """Runs in a fresh process: predict over a pool, then print the process's peak RSS as JSON."""
    from zoobot.data.manifest import Manifest
    from zoobot.model.network import load_bundle
    from zoobot.model.predict import PredictConfig, predict

    args = json.loads(arguments)
    model, meta = load_bundle(args["model"])
    manifest = Manifest.read(args["shards"])
    result = predict(PredictConfig(model=args["model"], shards=args["shards"], output_dir=args["output_dir"],
                                   n_samples=args["n_samples"], overwrite=True), model, meta, manifest)
    print(json.dumps({"peak_mb": _peak_rss_mb(), "n_galaxies": result.n_galaxies, "seconds": result.seconds}))


def _peak_rss_mb() -> float:
    """This process's peak resident memory.

    Linux's ru_maxrss survives exec: a child forked from a parent holding 1.5 GB reports 1.5 GB
    whatever it does itself. VmHWM belongs to the process image after exec, so it is read first.
    """
    import resource

    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


def _run_children(jobs: list[dict]) -> list[dict]:
    """The children run at the same time: peak memory is per process, whatever the CPU contention."""
    import zoobot

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(Path(zoobot.__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    processes = [subprocess.Popen([sys.executable, "-c", CHILD_CODE, json.dumps(job)], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for job in jobs]
    results = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"The memory benchmark's predict process failed ({process.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results
