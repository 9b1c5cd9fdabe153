import sys, time, statistics
from pathlib import Path
sys.path.insert(0, '/work/main')
import numpy as np
from zoobot.bench.config import PRESETS
from zoobot.bench.data import prepare_speed_data, speed_model, split_arrays
from zoobot.data.manifest import Manifest
from zoobot.core.model_meta import ModelMeta
from zoobot.model.predict import PredictConfig, predict, shard_batches, SamplesWriter, summarise, append_csv
from zoobot.model.sampling import mc_predict, split_trunk_head
from zoobot.core import acquisition
def main():
    root = Path('/work/prof13/data')
    sizes = PRESETS['full']
    if not (root / 'shards').exists():
        root.mkdir(parents=True, exist_ok=True)
        from dataclasses import replace
        prepare_speed_data(root, replace(sizes, convert_galaxies=10), 0)
    manifest = Manifest.read(root / 'shards')
    model = speed_model(manifest, sizes, 0)
    images = np.concatenate([split_arrays(manifest, s)[0] for s in manifest.splits])
    meta = ModelMeta(manifest.schema, 'dirichlet')
    th = split_trunk_head(model)
    cfg = PredictConfig(model='b', shards=str(manifest.root), output_dir='/work/prof13/pred', n_samples=30, batch_size=256, overwrite=True)
    def t(f):
        s = time.perf_counter(); r = f(); return time.perf_counter() - s, r
    def read_only():
        n = 0
        for ids, im in shard_batches(manifest, list(manifest.splits), 256, 3): n += len(ids)
    def one_pass():
        for s in range(0, len(images), 256): model.predict_on_batch(images[s:s+256])
    samples = mc_predict(model, images, 30, trunk_head=th, batch_size=256)
    ids = np.array([f'g{i}' for i in range(len(images))])
    def write_only():
        import tempfile
        d = Path(tempfile.mkdtemp())
        w = SamplesWriter(d / 's.parquet', 'parquet', meta, samples.shape[1], 30)
        for i, s in enumerate(range(0, len(images), 256)):
            w.write(ids[s:s+256], samples[s:s+256])
        w.close()
    def summary_only():
        import tempfile
        Path(tempfile.mkdtemp())
        for i, s in enumerate(range(0, len(images), 256)):
            summarise(meta.predictions(ids[s:s+256], samples[s:s+256]), 0.9)
    def csv_only():
        import tempfile
        d = Path(tempfile.mkdtemp())
        summ = [summarise(meta.predictions(ids[s:s+256], samples[s:s+256]), 0.9) for s in range(0, len(images), 256)]
        t0=time.perf_counter()
        for i, su in enumerate(summ): append_csv(d / 'x.csv', su, header=i == 0)
        return time.perf_counter()-t0
    variants = dict(read=read_only, single=one_pass, mc=lambda: mc_predict(model, images, 30, trunk_head=th, batch_size=256),
                    predict=lambda: predict(cfg, model, meta, manifest), write=write_only, summary=summary_only, csv=csv_only,
                    bald=lambda: acquisition.score('bald', meta.predictions(ids, samples)))
    for f in variants.values(): f()
    res = {k: [] for k in variants}
    for r in range(3):
        for k, f in variants.items():
            res[k].append(t(f)[0])
    for k, v in res.items(): print(f'{k:8s} {statistics.median(v)*1000:8.1f} ms')

if __name__ == '__main__':
    main()
