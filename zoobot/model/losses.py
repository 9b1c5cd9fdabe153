"""Likelihoods of volunteer votes given a model's output, and the metrics logged while training.

Two outputs (see zoobot/core/predictions.py for what they mean):

- "dirichlet": concentrations alpha > 0 for every answer of the schema. The votes on each question
  are Dirichlet-multinomial(N, alpha of its answers); questions are independent given alpha, so the
  negative log-likelihood is a sum over questions. Nothing but the index groups of the questions is
  needed: the loss never has to know the shape of the decision tree.
- "binomial": the probability p of the first answer of one question; its votes are Binomial(N, p)
  (Walmsley et al. 2020).

A question nobody answered (N = 0) contributes exactly 0: the volunteers were not asked it, which
says nothing about the galaxy. Labels are always the full vector of vote counts in schema order, so
one catalog serves both outputs.

The maths is done in float64 and cast back to float32 (float64 for float64 predictions): with
thousands of votes, lgamma terms of ~1e4 cancel to a loss of ~10, which float32 would leave with only
3-4 correct digits. A bfloat16 or float16 prediction (a mixed-precision model whose output layer was
not kept float32) still gives a float32 loss and float32 metrics: bfloat16's 8-bit mantissa would
round a loss of ~10 to steps of 0.06.
"""

from __future__ import annotations

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras
import numpy as np
import tensorflow as tf

from zoobot.core.schema import Schema

OUTPUTS = ("dirichlet", "binomial")

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before taking logs. The model's own output
# is kept inside [1e-6, 1 - 1e-6] (zoobot.model.network), so the clip never cuts a model's gradient; it only
# keeps a hand-made p of exactly 0 or 1 from giving inf.
EPSILON = 1e-7


# -- the likelihoods ---------------------------------------------------------------------------


def dirichlet_multinomial_nll_per_question(counts, concentrations, question_index_groups) -> tf.Tensor:
    """-log DirichletMultinomial(counts | alpha) of each question, shape (B, n_questions).

    `counts` and `concentrations` are (B, n_answers) in the same column order; `question_index_groups`
    are the half-open (start, stop) column ranges of the questions. Includes the multinomial
    coefficient, so each entry equals -scipy.stats.dirichlet_multinomial.logpmf.
    """
    out_dtype = _float_dtype(concentrations)
    counts = tf.cast(counts, tf.float64)
    alpha = tf.cast(concentrations, tf.float64)
    membership = tf.constant(_membership(question_index_groups, _n_columns(alpha, counts)))

    # Sums within each question, computed for all questions at once as a product with the 0/1
    # answer-to-question matrix instead of a Python loop over slices.
    total = tf.matmul(counts, membership)
    alpha_total = tf.matmul(alpha, membership)
    per_answer = tf.math.lgamma(counts + alpha) - tf.math.lgamma(alpha) - tf.math.lgamma(counts + 1.0)
    log_pmf = (
        tf.matmul(per_answer, membership)
        + tf.math.lgamma(total + 1.0)
        + tf.math.lgamma(alpha_total)
        - tf.math.lgamma(total + alpha_total)
    )
    # The terms cancel to ~0 when N = 0, but only to rounding; unasked questions must be exactly 0.
    nll = tf.where(total > 0, -log_pmf, tf.zeros_like(log_pmf))
    return tf.cast(nll, out_dtype)


def dirichlet_multinomial_nll(counts, concentrations, question_index_groups) -> tf.Tensor:
    """-log likelihood of all votes of each galaxy, summed over questions: shape (B,)."""
    per_question = dirichlet_multinomial_nll_per_question(counts, concentrations, question_index_groups)
    return tf.reduce_sum(per_question, axis=-1)


def binomial_nll(k, n, p) -> tf.Tensor:
    """-log Binomial(k | n, p), shape (B,); 0 where n == 0.

    `k`, `n`, `p` are (B,) (or anything broadcastable). Equals -scipy.stats.binom.logpmf for p in
    [EPSILON, 1 - EPSILON]; p outside is clipped so the loss stays finite.
    """
    out_dtype = _float_dtype(p)
    k = tf.cast(k, tf.float64)
    n = tf.cast(n, tf.float64)
    p = tf.clip_by_value(tf.cast(p, tf.float64), EPSILON, 1.0 - EPSILON)
    log_pmf = (
        tf.math.lgamma(n + 1.0) - tf.math.lgamma(k + 1.0) - tf.math.lgamma(n - k + 1.0)
        + k * tf.math.log(p) + (n - k) * tf.math.log1p(-p)
    )
    nll = tf.where(n > 0, -log_pmf, tf.zeros_like(log_pmf))
    return tf.cast(nll, out_dtype)


# -- which question a model speaks about --------------------------------------------------------


def resolve_question(output: str, schema: Schema, question: str | None) -> str | None:
    """The one question of a binomial model (default: the schema's first); None for dirichlet.

    The single place where output and question are checked against a schema, shared by the loss,
    the metrics and zoobot.model.network.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}; found {output!r}.")
    if output == "dirichlet":
        if question:
            raise ValueError(
                f"A dirichlet model predicts every question of schema '{schema.name}', so it takes no "
                f"question; found question={question!r}. Leave question empty, or use output='binomial' "
                "to model only that question."
            )
        return None
    if not question:
        return schema.question_names[0]
    if question not in schema.question_names:
        raise ValueError(
            f"question {question!r} is not a question of schema '{schema.name}'; expected one of "
            f"{list(schema.question_names)}."
        )
    return question


def _target(output: str, schema: Schema, question: str | None) -> tuple[list[list[int]], int | None]:
    """Plain (JSON-able) description of what to score: the index groups and the binomial question."""
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a zoobot.core.schema.Schema; found {type(schema).__name__}.")
    question = resolve_question(output, schema, question)
    groups = [[int(a), int(b)] for a, b in schema.question_index_groups]
    index = None if question is None else schema.question_names.index(question)
    return groups, index


def _binomial_k_n(y_true, group) -> tuple[tf.Tensor, tf.Tensor]:
    start, stop = group
    counts = tf.cast(y_true, tf.float64)
    return counts[:, start], tf.reduce_sum(counts[:, start:stop], axis=-1)


# -- the training loss --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="zoobot")
class VoteLoss:
    """Per-galaxy negative log-likelihood of the votes, (B,); Keras averages it over the batch.

    A small callable class rather than a closure so that a compiled model can be saved and its loss
    rebuilt from the config (a closure has no config to save).
    """

    def __init__(self, output: str, question_index_groups, question_index: int | None = None):
        self.output = output
        self.question_index_groups = [list(map(int, g)) for g in question_index_groups]
        self.question_index = question_index
        self.__name__ = f"{output}_nll"  # Keras names the loss after this

    def __call__(self, y_true, y_pred):
        if self.output == "dirichlet":
            return dirichlet_multinomial_nll(y_true, y_pred, self.question_index_groups)
        k, n = _binomial_k_n(y_true, self.question_index_groups[self.question_index])
        return binomial_nll(k, n, _single_column(y_pred))

    def get_config(self) -> dict:
        return {
            "output": self.output,
            "question_index_groups": self.question_index_groups,
            "question_index": self.question_index,
        }

    @classmethod
    def from_config(cls, config: dict) -> VoteLoss:
        return cls(**config)


def make_loss(output: str, schema: Schema, question: str | None = None) -> VoteLoss:
    """The loss for `model.compile(loss=...)`: callable(y_true, y_pred) -> (B,).

    y_true is the full (B, n_answers) vote-count vector in schema order. For "binomial", k is the
    count of `question`'s first answer and n that question's total (question defaults to the first).
    """
    groups, index = _target(output, schema, question)
    return VoteLoss(output, groups, index)


# -- metrics logged during fit ------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="zoobot")
class QuestionNLL(keras.metrics.Mean):
    """Mean over galaxies of one question's negative log-likelihood.

    Galaxies not asked the question count as 0, so the per-question metrics of a dirichlet model
    add up to its loss, showing which question the loss is spent on.
    """

    def __init__(self, output: str, question_index_groups, question_index: int, name=None, dtype="float32"):
        super().__init__(name=name or f"loss_q{question_index}", dtype=dtype)
        self.output = output
        self.question_index_groups = [list(map(int, g)) for g in question_index_groups]
        self.question_index = int(question_index)

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.output == "dirichlet":
            per_question = dirichlet_multinomial_nll_per_question(y_true, y_pred, self.question_index_groups)
            values = per_question[:, self.question_index]
        else:
            k, n = _binomial_k_n(y_true, self.question_index_groups[self.question_index])
            values = binomial_nll(k, n, _single_column(y_pred))
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "output": self.output,
            "question_index_groups": self.question_index_groups,
            "question_index": self.question_index,
        }


def question_loss_metrics(output: str, schema: Schema, question: str | None = None) -> list[QuestionNLL]:
    """One `loss_<question>` metric per question (dirichlet) or for the one question (binomial)."""
    groups, index = _target(output, schema, question)
    indices = range(len(groups)) if output == "dirichlet" else [index]
    return [QuestionNLL(output, groups, i, name=f"loss_{schema.question_names[i]}") for i in indices]


@keras.saving.register_keras_serializable(package="zoobot")
class VoteFractionRMSE(keras.metrics.Metric):
    """RMSE between predicted expected vote fractions and observed ones, over answered questions.

    Predicted fraction: alpha / (sum of alpha within the question) for dirichlet, p for binomial
    (its question's first answer only). Answers of questions with no votes are left out, not
    counted as 0, since there is no observed fraction to compare with.
    """

    def __init__(self, output: str = "dirichlet", question_index_groups=(), question_index: int | None = None,
                 name: str = "fraction_rmse", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.output = output
        self.question_index_groups = [list(map(int, g)) for g in question_index_groups]
        self.question_index = question_index
        self.squared_error = self.add_variable(shape=(), initializer="zeros", name="squared_error")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("fraction_rmse takes no sample weights; compile it with metrics=, not "
                             "weighted_metrics=.")
        if self.output == "dirichlet":
            error, mask = _dirichlet_fraction_error(y_true, y_pred, self.question_index_groups)
        else:
            k, n = _binomial_k_n(y_true, self.question_index_groups[self.question_index])
            p = tf.cast(_single_column(y_pred), tf.float64)
            mask = n > 0
            error = p - k / tf.where(mask, n, tf.ones_like(n))
        squared = tf.where(mask, tf.square(error), tf.zeros_like(error))
        self.squared_error.assign_add(tf.cast(tf.reduce_sum(squared), self.dtype))
        self.count.assign_add(tf.cast(tf.math.count_nonzero(mask), self.dtype))

    def result(self):
        # An epoch in which no question got a vote has no error to report: 0, not NaN.
        return tf.sqrt(tf.math.divide_no_nan(self.squared_error, self.count))

    def reset_state(self):
        self.squared_error.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "output": self.output,
            "question_index_groups": self.question_index_groups,
            "question_index": self.question_index,
        }


def fraction_rmse_metric(output: str, schema: Schema, question: str | None = None) -> VoteFractionRMSE:
    """The `fraction_rmse` metric for a model of this output, schema and question."""
    groups, index = _target(output, schema, question)
    return VoteFractionRMSE(output, groups, index)


def _dirichlet_fraction_error(y_true, y_pred, groups) -> tuple[tf.Tensor, tf.Tensor]:
    counts = tf.cast(y_true, tf.float64)
    alpha = tf.cast(y_pred, tf.float64)
    membership = tf.constant(_membership(groups, _n_columns(alpha, counts)))
    # Each answer's question total, broadcast back onto its answers: (B, n_answers).
    total = tf.matmul(tf.matmul(counts, membership), membership, transpose_b=True)
    alpha_total = tf.matmul(tf.matmul(alpha, membership), membership, transpose_b=True)
    mask = total > 0
    observed = counts / tf.where(mask, total, tf.ones_like(total))
    return alpha / alpha_total - observed, mask


# -- shapes ---------------------------------------------------------------------------------------


def _membership(question_index_groups, n_columns: int | None) -> np.ndarray:
    """(n_answers, n_questions) 0/1 matrix: which question each answer column belongs to."""
    groups = [tuple(g) for g in question_index_groups]
    if not groups:
        raise ValueError("question_index_groups is empty; expected one (start, stop) pair per question.")
    width = max(stop for _, stop in groups)
    if n_columns is not None and n_columns != width:
        raise ValueError(
            f"Labels/predictions have {n_columns} columns but the questions' index groups cover {width} "
            "answers. Use labels and a model built from the same schema (columns in schema.label_cols order)."
        )
    matrix = np.zeros((width, len(groups)))
    for j, (start, stop) in enumerate(groups):
        if not 0 <= start < stop:
            raise ValueError(f"Question index group {j} is {(start, stop)}; expected 0 <= start < stop.")
        if matrix[start:stop].any():
            raise ValueError(f"Question index group {j} {(start, stop)} overlaps an earlier group.")
        matrix[start:stop, j] = 1.0
    return matrix


def _n_columns(*tensors) -> int | None:
    widths = {t.shape[-1] for t in tensors if t.shape.rank is not None and t.shape[-1] is not None}
    if len(widths) > 1:
        raise ValueError(
            f"Labels and predictions must have the same number of columns; found {sorted(widths)}.")
    return widths.pop() if widths else None


def _single_column(y_pred) -> tf.Tensor:
    """p of a binomial model: (B, 1) -> (B,); a (B,) vector passes through."""
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank == 2:
        if y_pred.shape[-1] not in (1, None):
            raise ValueError(
                f"A binomial model outputs one probability per galaxy, shape (B, 1); found {y_pred.shape}."
            )
        return y_pred[:, 0]
    return y_pred


def _float_dtype(x) -> tf.DType:
    """The dtype of a loss or metric value for prediction `x`: float64 stays float64, anything else
    (float32, and half precision from a mixed-precision model) is float32."""
    dtype = tf.as_dtype(getattr(x, "dtype", tf.float32))
    return tf.float64 if dtype == tf.float64 else tf.float32
