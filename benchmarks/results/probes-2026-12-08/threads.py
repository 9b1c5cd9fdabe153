import sys, time, os
threads = int(sys.argv[1])
sys.path.insert(0, '/work/main')
import tensorflow as tf
if threads:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
import numpy as np
from zoobot.model.network import ModelConfig, build_model
from zoobot.core.schema import GZ_DECALS
from zoobot.model.train import TrainConfig, compile_model
cfg = ModelConfig(filters="32,64,128,128", dense_units=128, dropout_rate=0.5, output="binomial", question="smooth-or-featured")
model = build_model(cfg, GZ_DECALS, (64, 64, 3))
compile_model(model, TrainConfig(shards="x", epochs=40, batch_size=32), cfg, GZ_DECALS)
rng = np.random.default_rng(0)
def ds(n, b):
    x = rng.uniform(0, 255, (n, 64, 64, 3)).astype(np.float32)
    k = rng.integers(0, 40, (n, GZ_DECALS.n_answers)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, k)).batch(b).cache()
tr, va = ds(160, 32), ds(300, 32)
model.fit(tr, validation_data=va, epochs=1, verbose=0)
t = time.perf_counter()
for e in range(8):
    model.fit(tr, validation_data=va, epochs=1, verbose=0)
print(f"threads={threads} pid={os.getpid()} s/epoch {(time.perf_counter() - t) / 8:.3f}", flush=True)
