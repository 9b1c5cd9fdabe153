"""The vote likelihoods and training metrics against independent scipy/numpy computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from zoobot.model.losses import (
    QuestionNLL,
    VoteFractionRMSE,
    VoteLoss,
    binomial_nll,
    dirichlet_multinomial_nll,
    dirichlet_multinomial_nll_per_question,
    fraction_rmse_metric,
    make_loss,
    question_loss_metrics,
    resolve_question,
)
from zoobot.core.schema import Answer, Question, Schema


@pytest.fixture
def schema() -> Schema:
    """Three questions of 3, 2 and 4 answers; the second is asked only after answer 'shape_round'."""
    def question(name, answers, follows=None):
        return Question(name, tuple(Answer(a, f"{name}_{a}") for a in answers), follows)

    return Schema("tiny", (
        question("shape", ["round", "disk", "artifact"]),
        question("bar", ["yes", "no"], follows="shape_round"),
        question("merging", ["none", "minor", "major", "merger"]),
    ))


def random_case(schema: Schema, n: int, seed: int, max_votes: int = 40):
    """Counts (with some questions unanswered) and concentrations in the model's [1, 100] range."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    for a, b in schema.question_index_groups:
        totals = rng.integers(0, max_votes, n)
        totals[rng.random(n) < 0.3] = 0  # nobody was asked this question for ~30% of galaxies
        for i in range(n):
            counts[i, a:b] = rng.multinomial(totals[i], rng.dirichlet(np.ones(b - a)))
    alpha = rng.uniform(1, 100, (n, schema.n_answers))
    return counts, alpha


def scipy_dirichlet_nll(schema: Schema, counts, alpha) -> np.ndarray:
    """(n, n_questions) -logpmf question by question; 0 where nobody answered."""
    out = np.zeros((len(counts), len(schema.question_index_groups)))
    for i in range(len(counts)):
        for j, (a, b) in enumerate(schema.question_index_groups):
            total = counts[i, a:b].sum()
            if total > 0:
                out[i, j] = -stats.dirichlet_multinomial.logpmf(counts[i, a:b], alpha[i, a:b], total)
    return out


# -- Dirichlet-multinomial ----------------------------------------------------------------------


@pytest.mark.parametrize("seed,max_votes", [(0, 40), (1, 5), (2, 5000)])
def test_dirichlet_multinomial_matches_scipy(schema, seed, max_votes):
    counts, alpha = random_case(schema, 20, seed, max_votes)
    expected = scipy_dirichlet_nll(schema, counts, alpha)
    groups = schema.question_index_groups
    per_question = dirichlet_multinomial_nll_per_question(counts, alpha.astype(np.float32), groups).numpy()
    assert per_question.shape == (20, 3)
    np.testing.assert_allclose(per_question, expected, rtol=1e-5, atol=1e-4)
    total = dirichlet_multinomial_nll(counts, alpha.astype(np.float32), groups).numpy()
    np.testing.assert_allclose(total, expected.sum(axis=1), rtol=1e-5, atol=1e-4)


def test_unasked_question_contributes_exactly_zero(schema):
    counts = np.array([[10, 5, 1, 0, 0, 0, 0, 0, 0]], dtype=float)  # only 'shape' answered
    alpha = np.random.default_rng(0).uniform(1, 100, (1, 9)).astype(np.float32)
    per_question = dirichlet_multinomial_nll_per_question(counts, alpha, schema.question_index_groups).numpy()
    assert per_question[0, 1] == 0.0 and per_question[0, 2] == 0.0
    assert per_question[0, 0] > 0
    # An unasked question's alpha gets no gradient: the loss carries no information about it.
    alpha_var = tf.Variable(alpha)
    with tf.GradientTape() as tape:
        loss = dirichlet_multinomial_nll(counts, alpha_var, schema.question_index_groups)
    grad = tape.gradient(loss, alpha_var).numpy()
    assert np.all(grad[0, 3:] == 0) and np.all(grad[0, :3] != 0)


def test_dirichlet_gradients_finite_for_extreme_cases(schema):
    counts, _ = random_case(schema, 8, seed=3, max_votes=20000)
    counts[0] = 0  # a galaxy with no votes at all
    alpha = tf.Variable(np.where(np.arange(9) % 2, 1.0, 100.0)[None].repeat(8, 0).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(dirichlet_multinomial_nll(counts, alpha, schema.question_index_groups))
    grad = tape.gradient(loss, alpha).numpy()
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(grad))
    assert np.all(grad[0] == 0)


def test_dirichlet_rejects_labels_of_another_schema(schema):
    counts, alpha = random_case(schema, 2, seed=0)
    with pytest.raises(ValueError, match="same number of columns"):
        dirichlet_multinomial_nll(counts[:, :8], alpha, schema.question_index_groups)
    with pytest.raises(ValueError, match="cover 5 answers"):
        dirichlet_multinomial_nll(counts, alpha, [(0, 3), (3, 5)])


# -- binomial ---------------------------------------------------------------------------------


def test_binomial_matches_scipy_including_extreme_p_and_large_n():
    rng = np.random.default_rng(0)
    n = np.concatenate([rng.integers(1, 60, 20), [5000, 5000, 40, 40, 40, 40]])
    p = np.concatenate([rng.uniform(0.01, 0.99, 20), [0.3, 0.97, 1e-6, 1 - 1e-6, 1e-6, 1 - 1e-6]])
    k = rng.binomial(n, p)
    k[-2:] = [3, 37]  # votes the model thought nearly impossible: a large but finite loss
    ours = binomial_nll(k, n, p).numpy()  # float64 p: exact comparison
    np.testing.assert_allclose(ours, -stats.binom.logpmf(k, n, p), rtol=1e-6)
    ours32 = binomial_nll(k, n, p.astype(np.float32)).numpy()
    assert ours32.dtype == np.float32
    np.testing.assert_allclose(ours32, -stats.binom.logpmf(k, n, p.astype(np.float32)), rtol=2e-5, atol=1e-4)


def test_binomial_is_zero_without_votes_and_finite_at_p_0_and_1():
    k = np.array([0, 0, 3, 0, 4])
    n = np.array([0, 0, 4, 4, 4])
    p = tf.Variable(np.array([0.0, 1.0, 0.0, 1.0, 1.0], dtype=np.float32))
    with tf.GradientTape() as tape:
        loss = binomial_nll(k, n, p)
        total = tf.reduce_sum(loss)
    values, grad = loss.numpy(), tape.gradient(total, p).numpy()
    assert values[0] == 0 and values[1] == 0
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))
    assert values[2] > 30 and values[3] > 30  # clipped, not inf: 3 of 4 votes against p = 0
    assert values[4] == pytest.approx(0, abs=1e-5)


def test_binomial_gradients_finite_inside_range():
    p = tf.Variable(np.array([1e-6, 0.5, 1 - 1e-6], dtype=np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(binomial_nll([2, 5, 0], [10000, 20, 10000], p))
    grad = tape.gradient(loss, p).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad != 0)


# -- make_loss ---------------------------------------------------------------------------------


def test_make_loss_dirichlet_reads_the_full_label_vector(schema):
    counts, alpha = random_case(schema, 6, seed=5)
    loss = make_loss("dirichlet", schema, None)
    expected = scipy_dirichlet_nll(schema, counts, alpha).sum(axis=1)
    for labels in (counts, counts.astype(np.float32)):
        values = loss(tf.constant(labels), tf.constant(alpha, tf.float32)).numpy()
        assert values.shape == (6,)
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("question,group", [(None, (0, 3)), ("", (0, 3)), ("bar", (3, 5))])
def test_make_loss_binomial_picks_first_answer_of_its_question(schema, question, group):
    counts, _ = random_case(schema, 6, seed=6)
    p = np.random.default_rng(0).uniform(0.05, 0.95, (6, 1))
    values = make_loss("binomial", schema, question)(counts, p.astype(np.float32)).numpy()
    a, b = group
    k, n = counts[:, a], counts[:, a:b].sum(axis=1)
    expected = np.where(n > 0, -stats.binom.logpmf(k, n, p[:, 0]), 0.0)
    assert values.shape == (6,)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)


def test_loss_and_metrics_survive_keras_serialisation(schema):
    counts, alpha = random_case(schema, 4, seed=7)
    for original in (make_loss("binomial", schema, "merging"), *question_loss_metrics("dirichlet", schema),
                     fraction_rmse_metric("dirichlet", schema)):
        config = keras.saving.serialize_keras_object(original)
        rebuilt = keras.saving.deserialize_keras_object(config)
        assert type(rebuilt) is type(original) and rebuilt.get_config() == original.get_config()
    config = keras.saving.serialize_keras_object(make_loss("dirichlet", schema))
    loss = keras.saving.deserialize_keras_object(config)
    assert isinstance(loss, VoteLoss)
    np.testing.assert_allclose(loss(counts, alpha).numpy(), scipy_dirichlet_nll(schema, counts, alpha).sum(1),
                               rtol=1e-6)


def test_question_choice_errors_say_what_to_do(schema):
    with pytest.raises(ValueError, match=r"not a question of schema 'tiny'.*\['shape', 'bar', 'merging'\]"):
        make_loss("binomial", schema, "spiral")
    with pytest.raises(ValueError, match="takes no question"):
        make_loss("dirichlet", schema, "bar")
    with pytest.raises(ValueError, match=r"output must be one of \['dirichlet', 'binomial'\]"):
        make_loss("beta", schema, None)
    assert resolve_question("binomial", schema, "") == "shape"


# -- metrics ------------------------------------------------------------------------------------


def test_question_loss_metrics_are_per_question_means_that_add_up_to_the_loss(schema):
    counts, alpha = random_case(schema, 10, seed=8)
    expected = scipy_dirichlet_nll(schema, counts, alpha)
    metrics = question_loss_metrics("dirichlet", schema, None)
    assert [m.name for m in metrics] == ["loss_shape", "loss_bar", "loss_merging"]
    # Two batches, as during an epoch: the metric is the mean over all galaxies seen.
    for metric in metrics:
        metric.update_state(counts[:4], alpha[:4].astype(np.float32))
        metric.update_state(counts[4:], alpha[4:].astype(np.float32))
    results = np.array([float(m.result()) for m in metrics])
    np.testing.assert_allclose(results, expected.mean(axis=0), rtol=1e-5)
    loss = make_loss("dirichlet", schema)(counts, alpha.astype(np.float32)).numpy().mean()
    assert results.sum() == pytest.approx(loss, rel=1e-5)


def test_question_loss_metric_binomial_is_the_one_question(schema):
    counts, _ = random_case(schema, 10, seed=9)
    p = np.full((10, 1), 0.3, dtype=np.float32)
    (metric,) = question_loss_metrics("binomial", schema, "merging")
    assert isinstance(metric, QuestionNLL) and metric.name == "loss_merging"
    metric.update_state(counts, p)
    k, n = counts[:, 5], counts[:, 5:9].sum(axis=1)
    expected = np.where(n > 0, -stats.binom.logpmf(k, n, 0.3), 0).mean()
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_fraction_rmse_dirichlet_masks_unanswered_questions(schema):
    counts, alpha = random_case(schema, 12, seed=10)
    metric = fraction_rmse_metric("dirichlet", schema)
    assert isinstance(metric, VoteFractionRMSE) and metric.name == "fraction_rmse"
    metric.update_state(counts[:5], alpha[:5].astype(np.float32))
    metric.update_state(counts[5:], alpha[5:].astype(np.float32))
    predicted = np.concatenate([alpha[:, a:b] / alpha[:, a:b].sum(axis=1, keepdims=True)
                                for a, b in schema.question_index_groups], axis=1)
    observed = schema.vote_fractions(counts)  # NaN where a question got no votes
    assert np.isnan(observed).any()
    expected = np.sqrt(np.nanmean((predicted - observed) ** 2))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_fraction_rmse_binomial_compares_p_with_first_answer_fraction(schema):
    counts, _ = random_case(schema, 12, seed=11)
    p = np.random.default_rng(1).uniform(0, 1, (12, 1)).astype(np.float32)
    metric = fraction_rmse_metric("binomial", schema, "bar")
    metric.update_state(counts, p)
    observed = schema.vote_fractions(counts)[:, 3]
    answered = ~np.isnan(observed)
    assert 0 < answered.sum() < 12
    expected = np.sqrt(np.mean((p[answered, 0] - observed[answered]) ** 2))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)


def test_loss_and_metrics_in_compile_and_fit(schema):
    """Keras accepts them: the logs carry the loss, loss_<question> and fraction_rmse."""
    counts, _ = random_case(schema, 16, seed=12)
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(schema.n_answers, activation="sigmoid")(inputs)
    outputs = keras.layers.Rescaling(99.0, offset=1.0)(dense)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=make_loss("dirichlet", schema),
                  metrics=[*question_loss_metrics("dirichlet", schema),
                           fraction_rmse_metric("dirichlet", schema)])
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    logs = model.evaluate(x, counts.astype(np.float32), batch_size=16, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "loss_shape", "loss_bar", "loss_merging", "fraction_rmse"}
    per_question = sum(logs[f"loss_{q}"] for q in schema.question_names)
    assert logs["loss"] == pytest.approx(per_question, rel=1e-4)
    history = model.fit(x, counts, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("half", [tf.bfloat16, tf.float16])
def test_half_precision_predictions_give_float32_losses_and_metrics(schema, half):
    """A mixed-precision model whose output was not kept float32 still gets a float32 loss, equal to the
    loss of the same (rounded) outputs given as float32: no bfloat16 rounding of the loss itself."""
    counts, alpha = random_case(schema, 8, seed=13, max_votes=2000)
    rounded = tf.cast(tf.cast(alpha, half), tf.float32)
    loss = make_loss("dirichlet", schema)(counts.astype(np.float32), tf.cast(alpha, half))
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss, make_loss("dirichlet", schema)(counts.astype(np.float32), rounded), rtol=1e-6)
    p = tf.constant([[0.3], [0.9]], half)
    binomial = make_loss("binomial", schema, "merging")(counts[:2].astype(np.float32), p)
    assert binomial.dtype == tf.float32 and np.all(np.isfinite(binomial))
    metrics = [*question_loss_metrics("dirichlet", schema), fraction_rmse_metric("dirichlet", schema)]
    for metric in metrics:
        metric.update_state(counts.astype(np.float32), tf.cast(alpha, half))
        assert metric.result().dtype == tf.float32, metric.name
    per_question = dirichlet_multinomial_nll_per_question(counts, rounded, schema.question_index_groups)
    assert float(metrics[0].result()) == pytest.approx(float(tf.reduce_mean(per_question[:, 0])), rel=1e-5)
