"""How a batch is taken from the pool once every galaxy has an acquisition score.

- top: the k best scores. One model's scores peak in one corner of the pool, so the batch is k
  near-identical galaxies.
- power: k drawn in proportion to score**power ("PowerBALD", Kirsch et al. 2023, TMLR): still
  informative, spread over the pool by chance.
- diverse: the `candidates` * k best (`DIVERSE_CANDIDATES`), clustered into k groups by k-means on
  the model's embedding of each galaxy, weighted by the score, and from each group the galaxy
  nearest its centre (Zhdanov 2019, "Diverse mini-batch active learning"): informative galaxies,
  spread over what the model sees as different, each typical of its group rather than an outlier.

No TensorFlow or MLflow here; pure numpy and scikit-learn.
"""

from __future__ import annotations

import numpy as np

SELECTIONS = ("top", "power", "diverse")
DIVERSE_CANDIDATES = 40  # candidates per galaxy acquired (Zhdanov's beta; 40 beat 10 in our study)


def candidates_needed(selection: str, k: int, candidates: int = DIVERSE_CANDIDATES) -> int:
    """How many of the best-scored galaxies' embeddings a selection needs (0: none)."""
    return candidates * k if selection == "diverse" else 0


def select(scores, ids, k: int, selection: str = "top", seed: int = 0, power: float = 1.0,
           features: np.ndarray | None = None) -> np.ndarray:
    """The k ids to acquire, best score first: see the module's guide for each `selection`.
    'diverse' needs `features`, one embedding row per id."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}; found {selection!r}.")
    if selection == "top":
        return top_k(scores, ids, k)
    if selection == "diverse":
        return diverse_k(scores, ids, features, k, seed=seed)
    scores = np.asarray(scores, dtype=float)
    if np.any(scores < 0):
        raise ValueError("selection='power' draws in proportion to the scores, which must be >= 0 (as BALD's are); "
                         f"found {int((scores < 0).sum())} negative. Use selection='top' for this acquisition.")
    with np.errstate(divide="ignore"):
        logits = power * np.log(np.maximum(scores, np.finfo(float).tiny))
    return top_k(logits + np.random.default_rng(seed).gumbel(size=scores.shape), ids, k)


def top_k(scores, ids, k: int) -> np.ndarray:
    """The ids of the k highest scores, best first; equal scores in ascending id order."""
    scores, ids = _check(scores, ids, k)
    return ids[_best_first(scores, ids)[:k]]


def diverse_k(scores, ids, features, k: int, seed: int = 0, candidates: int = DIVERSE_CANDIDATES) -> np.ndarray:
    """k ids spread over the embedding: the `candidates` * k best scores clustered into k groups by
    score-weighted k-means, and from each group the member nearest its centre; best score first.
    Repeats exactly for a seed. Fewer distinct embeddings than k: the rest by score."""
    from sklearn.cluster import KMeans

    scores, ids = _check(scores, ids, k)
    if features is None:
        raise ValueError("selection='diverse' clusters the galaxies' embeddings, and none were given. Fix: score "
                         "the pool with predictions that carry features (the campaign's predict step does), or "
                         "use selection='top'.")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) != len(scores):
        raise ValueError(f"features must have one row per galaxy, shape ({len(scores)}, n_features); "
                         f"found {features.shape}.")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"features must be finite; found {int((~np.isfinite(features)).any(axis=1).sum())} "
                         "galaxies with NaN or infinite values.")
    if k == 0:
        return ids[:0]
    best = _best_first(scores, ids)[:max(k, candidates * k)]
    points, weights = features[best], _weights(scores[best])
    n_groups = min(k, len(np.unique(points, axis=0)))
    kmeans = KMeans(n_clusters=n_groups, n_init=3, random_state=seed).fit(points, sample_weight=weights)
    distance = np.linalg.norm(points - kmeans.cluster_centers_[kmeans.labels_], axis=1)
    chosen = []
    for group in range(n_groups):
        members = np.flatnonzero(kmeans.labels_ == group)
        if len(members):
            chosen.append(members[np.argmin(distance[members])])  # ties: the better score (earlier in `best`)
    taken = set(chosen)
    rest = [i for i in range(len(best)) if i not in taken]
    picked = np.sort(np.array(chosen + rest[:k - len(chosen)], dtype=int))  # positions in best: best first
    return ids[best[picked]]


def _weights(scores: np.ndarray) -> np.ndarray:
    """k-means weights from scores: as they are when >= 0 (BALD, entropy), shifted to >= 0 otherwise,
    floored so that no candidate weighs nothing."""
    weights = scores - min(0.0, float(scores.min()))
    top = float(weights.max())
    return np.maximum(weights, 1e-6 * top) if top > 0 else np.ones_like(weights)


def _best_first(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.lexsort((ids, -scores))  # last key first: descending score, then ascending id


def _check(scores, ids, k) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    ids = np.asarray(ids)
    if scores.ndim != 1 or ids.shape != scores.shape:
        raise ValueError(f"scores and ids must be 1-d and the same length; found shapes {scores.shape} and "
                         f"{ids.shape}.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be finite; found {int((~np.isfinite(scores)).sum())} NaN or infinite values.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a whole number >= 0; found {k!r}.")
    if k > len(scores):
        raise ValueError(f"Cannot acquire k={k} galaxies from a pool of {len(scores)}. "
                         f"Fix: ask for at most {len(scores)}.")
    return scores, ids
