"""Similarity search and maps in a model's representation space (features from zoobot.model.embed).

Plain functions on arrays, with scikit-learn doing the work: the k galaxies nearest to a chosen one,
and a 2-D principal-component map of the whole set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def nearest_neighbours(ids, features: np.ndarray, query: str, k: int = 8, metric: str = "cosine") -> pd.DataFrame:
    """The k galaxies nearest to `query` (itself excluded): columns rank (1 = nearest), id_str,
    distance. Cosine distance is 1 - cos(angle) between representations; euclidean the plain norm."""
    from sklearn.neighbors import NearestNeighbors

    ids = np.asarray(ids).astype(str)
    where = np.flatnonzero(ids == str(query))
    if not where.size:
        shown = ", ".join(ids[:3])
        raise ValueError(f"Galaxy '{query}' is not among the {len(ids)} embedded galaxies (ids like {shown}); give an "
                       "id_str from the shards' galaxies.csv, or an image's path relative to the image folder.")
    if len(ids) < 2:
        raise ValueError("Similarity search needs at least two embedded galaxies.")
    k = min(k, len(ids) - 1)
    index = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(features)
    distances, rows = index.kneighbors(features[where[:1]])
    keep = rows[0] != where[0]  # the query itself (first, unless exact duplicates tie with it)
    rows, distances = rows[0][keep][:k], distances[0][keep][:k]
    return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id_str": ids[rows], "distance": distances})


def pca_map(features: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates (n, 2) on the first two principal components, the variance ratio each explains)."""
    from sklearn.decomposition import PCA

    if len(features) < 3:
        raise ValueError(f"A 2-D map needs at least 3 galaxies; found {len(features)}.")
    pca = PCA(n_components=2, random_state=seed)
    return pca.fit_transform(features), pca.explained_variance_ratio_
