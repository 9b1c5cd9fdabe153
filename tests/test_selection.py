"""Taking a batch from the scored pool: top-k, PowerBALD draws, and the diverse (clustered) batch."""

import numpy as np
import pytest

from zoobot.core.selection import diverse_k, select, top_k


def test_top_k_takes_the_highest_scores_and_breaks_ties_by_id():
    ids = np.array(["g5", "g2", "g9", "g1", "g7"])
    scores = np.array([0.3, 0.9, 0.3, 0.3, 0.1])
    assert list(top_k(scores, ids, 3)) == ["g2", "g1", "g5"]
    assert list(top_k(scores, ids, 5)) == ["g2", "g1", "g5", "g9", "g7"]
    assert list(top_k(scores[::-1], ids[::-1], 3)) == ["g2", "g1", "g5"]  # input order does not matter
    assert len(top_k(scores, ids, 0)) == 0
    with pytest.raises(ValueError, match="k=6 galaxies from a pool of 5"):
        top_k(scores, ids, 6)
    with pytest.raises(ValueError, match="must be finite"):
        top_k(np.array([0.1, np.nan]), ids[:2], 1)
    with pytest.raises(ValueError, match="same length"):
        top_k(scores, ids[:4], 1)


def test_power_selection_draws_in_proportion_to_the_score_and_repeats_with_the_seed():
    ids = np.array([f"g{i}" for i in range(200)])
    scores = np.where(np.arange(200) < 100, 1.0, 9.0)  # the second half 9x as likely per draw
    chosen = select(scores, ids, 20, "power", seed=4)
    assert len(set(chosen)) == 20 and np.array_equal(chosen, select(scores, ids, 20, "power", seed=4))
    assert not np.array_equal(chosen, select(scores, ids, 20, "power", seed=5))
    picks = np.concatenate([select(scores, ids, 20, "power", seed=s) for s in range(50)])
    high = np.isin(picks, ids[100:]).mean()
    assert 0.8 < high < 0.97  # ~0.9 (9 / 10), never only the top scores as top-k would take
    assert list(select(scores, ids, 3, "top")) == ["g100", "g101", "g102"]
    with pytest.raises(ValueError, match="must be >= 0"):
        select(-scores, ids, 3, "power")
    with pytest.raises(ValueError, match="selection must be one of"):
        select(scores, ids, 3, "best")


def blobs(rng, n_blobs=4, per_blob=25):
    """Galaxies in well-separated groups of the embedding; the first group the most informative."""
    centres = np.eye(n_blobs, 8) * 20
    group = np.repeat(np.arange(n_blobs), per_blob)
    features = centres[group] + rng.normal(0, 1, (len(group), 8))
    scores = np.where(group == 0, 1.0, 0.5) + rng.uniform(0, 0.05, len(group))
    ids = np.array([f"g{i:03d}" for i in range(len(group))])
    return ids, scores, features, group


def test_a_diverse_batch_takes_one_typical_galaxy_from_each_group_where_top_k_takes_one_group():
    rng = np.random.default_rng(0)
    ids, scores, features, group = blobs(rng, per_blob=10)  # 40 galaxies: all candidates for 4 picks
    by_id = dict(zip(ids, group))
    assert {by_id[i] for i in top_k(scores, ids, 4)} == {0}
    chosen = select(scores, ids, 4, "diverse", seed=1, features=features)
    assert sorted(by_id[i] for i in chosen) == [0, 1, 2, 3]
    # each the member nearest its group's (score-weighted) centre: typical, not an outlier
    for i in chosen:
        members = group == by_id[i]
        centre = np.average(features[members], axis=0, weights=scores[members])
        nearest = ids[members][np.argmin(np.linalg.norm(features[members] - centre, axis=1))]
        assert i == nearest
    assert list(chosen) == list(ids[np.isin(ids, chosen)][np.argsort(-scores[np.isin(ids, chosen)], kind="stable")])
    np.testing.assert_array_equal(chosen, select(scores, ids, 4, "diverse", seed=1, features=features))


def test_a_diverse_batch_considers_only_the_best_candidates():
    rng = np.random.default_rng(1)
    ids, scores, features, group = blobs(rng, n_blobs=4, per_blob=25)
    chosen = diverse_k(scores, ids, features, 2, candidates=10)  # the 20 best: all of group 0
    assert set(group[np.isin(ids, chosen)]) == {0} and len(set(chosen)) == 2


def test_a_diverse_batch_of_one_candidate_per_pick_is_the_top_k():
    rng = np.random.default_rng(2)
    ids, scores, features, _ = blobs(rng)
    np.testing.assert_array_equal(diverse_k(scores, ids, features, 5, candidates=1), top_k(scores, ids, 5))


def test_a_diverse_batch_of_identical_embeddings_falls_back_to_the_scores():
    ids = np.array([f"g{i}" for i in range(10)])
    scores = np.arange(10, dtype=float)
    chosen = diverse_k(scores, ids, np.ones((10, 3)), 3)
    assert len(set(chosen)) == 3 and chosen[0] in ("g9", "g8", "g7")
    assert len(diverse_k(scores, ids, np.ones((10, 3)), 0)) == 0


def test_a_diverse_batch_says_what_it_needs():
    ids, scores = np.array(["a", "b"]), np.array([0.2, 0.1])
    with pytest.raises(ValueError, match="none were given"):
        select(scores, ids, 1, "diverse")
    with pytest.raises(ValueError, match=r"one row per galaxy, shape \(2, n_features\)"):
        diverse_k(scores, ids, np.ones((3, 4)), 1)
    with pytest.raises(ValueError, match="features must be finite"):
        diverse_k(scores, ids, np.array([[0.0], [np.nan]]), 1)
