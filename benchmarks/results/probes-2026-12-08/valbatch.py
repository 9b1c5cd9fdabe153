import sys, time, statistics
sys.path.insert(0, '/work/main')
import numpy as np, tensorflow as tf
from zoobot.model.network import ModelConfig, build_model
from zoobot.core.schema import GZ_DECALS
from zoobot.model.train import TrainConfig, compile_model
cfg = ModelConfig(filters="32,64,128,128", dense_units=128, dropout_rate=0.5, output="binomial", question="smooth-or-featured")
model = build_model(cfg, GZ_DECALS, (64, 64, 3))
compile_model(model, TrainConfig(shards="x", epochs=40, batch_size=32), cfg, GZ_DECALS)
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (300, 64, 64, 3)).astype(np.float32)
k = rng.integers(0, 40, (300, GZ_DECALS.n_answers)).astype(np.float32)
ds = {b: tf.data.Dataset.from_tensor_slices((x, k)).batch(b).cache() for b in (32, 128, 256, 300)}
for d in ds.values(): model.evaluate(d, verbose=0)
res = {b: [] for b in ds}
for r in range(5):
    for b, d in ds.items():
        t = time.perf_counter(); out = model.evaluate(d, verbose=0, return_dict=True); res[b].append(time.perf_counter() - t)
    if r == 0: print({b: model.evaluate(d, verbose=0) for b, d in ds.items()})
print({b: round(statistics.median(v) * 1000) for b, v in res.items()})
