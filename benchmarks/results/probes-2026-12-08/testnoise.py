import sys
sys.path.insert(0, '/work/main')
import numpy as np
from pathlib import Path
from zoobot.model.network import load_bundle
from zoobot.model.sampling import reseed
from zoobot.model.inputs import training_data, epoch_seed
from zoobot.model.train import TrainConfig
from zoobot.data.manifest import Manifest
root = Path('/work/sci13/work/science_seed_0')
manifest = Manifest.read(root / 'al_shards')
for arm in ('bald', 'random'):
  for it in (2, 4):
    model, meta = load_bundle(root / f'binomial/campaign/{arm}/iteration_00{it}/model/model.keras')
    tc = TrainConfig(shards=str(manifest.root), epochs=1, batch_size=32, seed=0)
    from zoobot.model.train import compile_model
    from zoobot.model.network import ModelConfig
    compile_model(model, tc, ModelConfig(output='binomial', question='smooth-or-featured'), manifest.schema_obj)
    test = training_data(manifest, 'test', tc, model.input_shape[-1], False)
    losses = []
    for s in range(8):
        reseed(model, epoch_seed(s, 20_000))
        losses.append(model.evaluate(test, verbose=0, return_dict=True)['loss'])
    print(arm, it, 'mask-seed losses', np.round(losses, 3), 'mean', round(float(np.mean(losses)), 3), 'std', round(float(np.std(losses)), 3), flush=True)
