import sys, time
sys.path.insert(0, '/work/main')
import numpy as np
from scipy.special import gammaln
from zoobot.core import acquisition as A
from zoobot.core.predictions import Predictions
from zoobot.core.schema import GZ_DECALS
import zoobot.core.acquisition as acq
acq.usable_cores = lambda: 1
T = {}
def tick(name, t0):
    T[name] = T.get(name, 0) + time.perf_counter() - t0
    return time.perf_counter()
def kernel(votes, with_next, a, b):
    top = votes + 1 if with_next else votes
    n_rows, n_samples = a.shape
    results = [(np.empty(n_rows), np.empty(n_rows)) for _ in range(top - votes + 1)]
    width = (top + 1) * n_samples
    size = min(n_rows, max(1, A._CHUNK_ELEMENTS // width)) * width
    tables, log_pmf, pmf = np.empty(2 * size), np.empty(size), np.empty(size)
    for rows in A._row_chunks(n_rows, width):
        t = time.perf_counter()
        n = (rows.stop - rows.start) * n_samples
        x = np.concatenate([a[rows].T.reshape(-1), b[rows].T.reshape(-1)])
        ab = x[:n] + x[n:]
        table = tables[: 2 * (top + 1) * n].reshape(top + 1, 2 * n)
        t = tick("prep", t)
        table[0, :n] = gammaln(votes + 1.0) - np.log(ab + np.arange(votes, dtype=float)[:, None]).sum(axis=0)
        table[0, n:] = 0.0
        t = tick("table0", t)
        log_a, log_b = np.split(A._running_log_rising(x, table), 2, axis=1)
        t = tick("rising", t)
        for i, m in enumerate(range(votes, top + 1)):
            block = np.add(log_a[: m + 1], log_b[m::-1], out=log_pmf[: (m + 1) * n].reshape(m + 1, n))
            if m > votes:
                block += np.log(m / (ab + votes))
            t = tick("block", t)
            shape = (m + 1, n_samples, rows.stop - rows.start)
            mi, h = A._information(block.reshape(shape), 1, pmf[: (m + 1) * n].reshape(shape))
            t = tick("information", t)
            results[i][0][rows], results[i][1][rows] = mi, h
    return results
rng = np.random.default_rng(0)
n = 2048
base = rng.uniform(0.5, 30, (n, GZ_DECALS.n_answers, 1))
s = base * rng.lognormal(0, 0.3, (n, GZ_DECALS.n_answers, 30))
p = Predictions(np.array([f"g{i}" for i in range(n)]), s, "dirichlet", GZ_DECALS)
A._beta_binomial_kernel = kernel
t0 = time.perf_counter()
for _ in range(3): A.score("bald", p)
tot = (time.perf_counter() - t0) / 3
print("total per call (1 thread)", round(tot * 1000), "ms", {k: round(v / 3 * 1000, 1) for k, v in T.items()})
# element count
fr = np.concatenate([p.mean_fractions(q) for q in GZ_DECALS.question_names], axis=1)
votes = 40 * GZ_DECALS.reach_probability(fr)
print("mean votes per question", votes.mean(axis=0).round(1))
