import sys, time, statistics
sys.path.insert(0, '/work/main')
import numpy as np
from scipy.special import gammaln
from zoobot.core import acquisition as A
from zoobot.core.predictions import Predictions
from zoobot.core.schema import GZ_DECALS

def kernel32(votes, with_next, a, b):
    top = votes + 1 if with_next else votes
    n_rows, n_samples = a.shape
    results = [(np.empty(n_rows), np.empty(n_rows)) for _ in range(top - votes + 1)]
    width = (top + 1) * n_samples
    size = min(n_rows, max(1, A._CHUNK_ELEMENTS // width)) * width
    f = np.float32
    tables, log_pmf, pmf = np.empty(2 * size, f), np.empty(size, f), np.empty(size, f)
    for rows in A._row_chunks(n_rows, width):
        n = (rows.stop - rows.start) * n_samples
        x = np.concatenate([a[rows].T.reshape(-1), b[rows].T.reshape(-1)])
        ab = x[:n] + x[n:]
        table = tables[: 2 * (top + 1) * n].reshape(top + 1, 2 * n)
        table[0, :n] = gammaln(votes + 1.0) - np.log(ab + np.arange(votes, dtype=float)[:, None]).sum(axis=0)
        table[0, n:] = 0.0
        x32 = x.astype(f)
        steps = np.arange(top, dtype=f)[:, None]
        terms = table[1:]
        np.add(x32, steps, out=terms); terms *= f(1.0) / (steps + f(1.0)); np.log(terms, out=terms)
        for k in range(1, top + 1): table[k] += table[k - 1]
        log_a, log_b = np.split(table, 2, axis=1)
        for i, m in enumerate(range(votes, top + 1)):
            block = np.add(log_a[: m + 1], log_b[m::-1], out=log_pmf[: (m + 1) * n].reshape(m + 1, n))
            if m > votes:
                block += np.log(m / (ab + votes)).astype(f)
            shape = (m + 1, n_samples, rows.stop - rows.start)
            mi, h = info32(block.reshape(shape), 1, pmf[: (m + 1) * n].reshape(shape))
            results[i][0][rows], results[i][1][rows] = mi, h
    return results

def info32(log_pmf, sample_axis, pmf):
    layout = "ktr"
    T = log_pmf.shape[1]
    pmf = np.exp(log_pmf, out=pmf)
    mixture = np.einsum(f"{layout}->kr", pmf); mixture /= T
    log_mixture = np.log(np.maximum(mixture, np.finfo(np.float32).tiny))
    log_pmf -= log_mixture[:, None, :]
    mi = np.einsum(f"{layout},{layout}->r", pmf, log_pmf, dtype=np.float64) / T
    h = -np.einsum("kr,kr->r", mixture, log_mixture, dtype=np.float64)
    return np.maximum(mi, 0), np.maximum(h, 0)

rng = np.random.default_rng(0)
n = 2048
samples = rng.uniform(1.0, 100.0, (n, GZ_DECALS.n_answers, 30))
# realistic: agreeing-ish samples around a per-galaxy mean
base = rng.uniform(0.5, 30, (n, GZ_DECALS.n_answers, 1))
samples2 = base * rng.lognormal(0, 0.3, (n, GZ_DECALS.n_answers, 30))
for s in (samples, samples2):
    p = Predictions(np.array([f"g{i}" for i in range(n)]), s, "dirichlet", GZ_DECALS)
    orig = A._beta_binomial_kernel
    ref = A.score("bald", p)
    A._beta_binomial_kernel = kernel32
    new = A.score("bald", p)
    A._beta_binomial_kernel = orig
    print("max rel err", np.max(np.abs(new - ref) / np.maximum(ref, 1e-3)), "max abs", np.max(np.abs(new-ref)), "ref median", np.median(ref))
    times = {"64": [], "32": []}
    for r in range(5):
        for k, kern in (("64", orig), ("32", kernel32)):
            A._beta_binomial_kernel = kern
            t = time.perf_counter(); A.score("bald", p); times[k].append(time.perf_counter() - t)
    A._beta_binomial_kernel = orig
    print({k: round(statistics.median(v) * 1000, 1) for k, v in times.items()})
