"""Dirichlet BALD over the whole tree in one pass against the per-question implementation it
replaced (kept in tests/test_acquisition.py as the reference the new code must agree with).

    .venv/bin/python benchmarks/bald_speed.py        # 2,000 galaxies x 34 answers x T=30, 5 repeats

The two alternate within every repeat, so load from elsewhere hits both alike; printed: ms per
1,000 galaxies (min and median) and the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from tests.test_acquisition import _reference_bald_dirichlet  # noqa: E402
from zoobot.core.acquisition import score  # noqa: E402
from zoobot.core.predictions import Predictions  # noqa: E402
from zoobot.core.schema import GZ_DECALS  # noqa: E402


def main(n_galaxies: int = 2000, n_samples: int = 30, repeats: int = 5) -> None:
    rng = np.random.default_rng(0)
    samples = rng.uniform(1.0, 100.0, (n_galaxies, GZ_DECALS.n_answers, n_samples))
    predictions = Predictions(np.array([f"g{i}" for i in range(n_galaxies)]), samples, "dirichlet", GZ_DECALS)
    variants = {"before (per question)": lambda: _reference_bald_dirichlet(predictions),
                "after (whole tree)": lambda: score("bald", predictions)}
    times = {name: [] for name in variants}
    for repeat in range(repeats):
        for name in (list(variants) if repeat % 2 == 0 else list(variants)[::-1]):
            start = time.perf_counter()
            variants[name]()
            times[name].append((time.perf_counter() - start) * 1000 / n_galaxies * 1000)
    print(f"score('bald') on {n_galaxies} galaxies x {GZ_DECALS.n_answers} answers x T={n_samples}, {repeats} repeats")
    for name, values in times.items():
        print(f"  {name:24s} ms per 1,000 galaxies: min {min(values):.1f}  median {statistics.median(values):.1f}")
    before, after = times["before (per question)"], times["after (whole tree)"]
    print(f"  ratio before/after: min {min(before) / min(after):.2f}x  median "
          f"{statistics.median(before) / statistics.median(after):.2f}x")


if __name__ == "__main__":
    main()
