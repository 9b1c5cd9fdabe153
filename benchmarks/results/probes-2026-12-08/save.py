import sys, time, statistics, tempfile, os, shutil
sys.path.insert(0, '/work/main')
from zoobot.model.network import ModelConfig, build_model
from zoobot.core.schema import GZ_DECALS
from zoobot.model.train import TrainConfig, compile_model
cfg = ModelConfig(filters="32,64,128,128", dense_units=128, dropout_rate=0.5, output="binomial", question="smooth-or-featured")
model = build_model(cfg, GZ_DECALS, (64, 64, 3))
compile_model(model, TrainConfig(shards="x", epochs=40, batch_size=32), cfg, GZ_DECALS)
model.optimizer.build(model.trainable_variables)
d = tempfile.mkdtemp()
p = os.path.join(d, 'a.weights.h5')
model.save_weights(p)
print("size MB", os.path.getsize(p) / 1e6)
a, b = [], []
for r in range(10):
    t = time.perf_counter(); model.save_weights(p); a.append(time.perf_counter() - t)
    t = time.perf_counter(); shutil.copyfile(p, p + '.copy'); b.append(time.perf_counter() - t)
print("save ms", round(statistics.median(a) * 1000, 1), "copy ms", round(statistics.median(b) * 1000, 2))
