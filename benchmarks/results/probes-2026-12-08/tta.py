import sys
sys.path.insert(0, '/work/main')
import numpy as np, pandas as pd
from zoobot.model.network import load_bundle
from zoobot.model.sampling import reseed, split_trunk_head, head_samples
from zoobot.data.manifest import Manifest, FEATURE_LABELS
from zoobot.data.shards import read_split
model, meta = load_bundle('/work/default12/mlruns/1/models/m-3b32b3fdb54240909d740c655d926714/artifacts/artifacts/bundle/model.keras')
manifest = Manifest.read('/work/default12/data/default/shards')
rec = read_split(manifest, 'test')
images = rec['image'].astype(np.float32); counts = rec[FEATURE_LABELS].astype(np.float32)
ids = np.array([v.decode() if isinstance(v, bytes) else v for v in rec['id_str']])
schema = manifest.schema_obj
trunk, head = split_trunk_head(model)
reseed(model, 0)
def views(x):
    out = []
    for k in range(4):
        r = np.rot90(x, k, axes=(1, 2))
        out += [r, r[:, :, ::-1]]
    return out
def samples_of(x, T):
    f = trunk.predict_on_batch(x)
    return head_samples(head, np.asarray(f), T)
q = 'smooth-or-featured'
a, b = schema.question_index_groups[schema.question_names.index(q)]
votes = counts[:, a:b]; n = votes.sum(1); ok = n > 0
vf = votes[ok, 0] / n[ok]
cat = pd.read_csv('/work/default12/data/default/survey/catalog.csv')
truthcol = [c for c in cat.columns if 'smooth' in c and ('true' in c or 'prob' in c)]
print('truth columns', truthcol[:5])
def rmse(s):
    frac = (s[:, a:b, :] / s[:, a:b, :].sum(1, keepdims=True)).mean(2)[:, 0]
    return np.sqrt(np.mean((frac[ok] - vf) ** 2)), frac
plain = samples_of(images, 30)
r0, f0 = rmse(plain)
vs = [samples_of(v, 30) for v in views(images)]
tta = np.concatenate(vs, axis=2)
r1, f1 = rmse(tta)
tta_small = np.concatenate([v[:, :, :4] for v in vs], axis=2)
r2, _ = rmse(tta_small)
print(f'plain T=30 rmse {r0:.4f}; 8 views x 30 {r1:.4f}; 8 views x 4 {r2:.4f}; n={ok.sum()}')
for i, v in enumerate(vs):
    print(i, round(rmse(v)[0], 4), end='; ')
print()
if truthcol:
    t = cat.set_index(cat.columns[0]).loc[ids, truthcol[0]].to_numpy()
    print('truth rmse plain', np.sqrt(np.mean((f0 - t) ** 2)).round(4), 'tta', np.sqrt(np.mean((f1 - t) ** 2)).round(4))
