"""MC-dropout predictions as a value: ids, samples, and what the samples mean.

`samples` has shape (n_galaxies, n_outputs, n_samples): the MC-sample axis is last everywhere.
Two kinds of model output:

- "dirichlet": Dirichlet concentrations alpha > 0, one per answer of the schema (n_outputs =
  n_answers). For each question, votes are Dirichlet-multinomial(N, alpha of its answers).
- "binomial": the probability p of the question's first answer, for one question (n_outputs = 1).
  Votes for that answer are Binomial(N, p) of the question's N votes (Walmsley et al. 2020).

No TensorFlow or MLflow here: acquisition, coverage and the metrics read predictions too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoobot.core.schema import Schema

KINDS = ("dirichlet", "binomial")


@dataclass(frozen=True)
class Predictions:
    id_str: np.ndarray  # (n_galaxies,)
    samples: np.ndarray  # (n_galaxies, n_outputs, n_samples)
    kind: str  # "dirichlet" or "binomial"
    schema: Schema
    question: str | None = None  # the one question of a binomial model
    features: np.ndarray | None = None  # (n_galaxies, n_features): the model's embedding, when asked for

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Predictions kind must be one of {KINDS}, got {self.kind!r}.")
        if self.samples.ndim != 3 or self.samples.shape[0] != len(self.id_str):
            raise ValueError(
                f"samples must have shape (n_galaxies={len(self.id_str)}, n_outputs, n_samples); "
                f"got {self.samples.shape}.")
        expected = self.schema.n_answers if self.kind == "dirichlet" else 1
        if self.samples.shape[1] != expected:
            raise ValueError(f"A {self.kind} model has {expected} outputs per galaxy; samples have "
                             f"{self.samples.shape[1]}.")
        if self.features is not None and (self.features.ndim != 2 or len(self.features) != len(self.id_str)):
            raise ValueError(f"features must have shape (n_galaxies={len(self.id_str)}, n_features); "
                             f"got {self.features.shape}.")
        if self.kind == "binomial" and self.question not in self.schema.question_names:
            raise ValueError(f"A binomial model names its question; {self.question!r} is not one of "
                             f"{list(self.schema.question_names)}.")

    @property
    def n_samples(self) -> int:
        return self.samples.shape[2]

    @property
    def questions(self) -> tuple[str, ...]:
        """The questions these predictions speak about."""
        return self.schema.question_names if self.kind == "dirichlet" else (self.question,)

    def answer_columns(self, question: str) -> tuple[str, ...]:
        return self.schema.question(question).columns

    def sample_fractions(self, question: str) -> np.ndarray:
        """Expected vote fraction of each answer of `question` per MC sample: (n, n_answers_q, T)."""
        if self.kind == "binomial":
            self._check_question(question)
            p = self.samples[:, 0, :]
            rest = len(self.answer_columns(question)) - 1
            # A binomial model says nothing about how the other answers share 1 - p: split evenly.
            return np.concatenate([p[:, None, :], np.repeat(((1 - p) / rest)[:, None, :], rest, axis=1)], axis=1)
        a, b = self._group(question)
        alpha = self.samples[:, a:b, :]
        return alpha / alpha.sum(axis=1, keepdims=True)

    def mean_fractions(self, question: str) -> np.ndarray:
        """Posterior-mean vote fraction of each answer: (n, n_answers_q)."""
        return self.sample_fractions(question).mean(axis=2)

    def concentrations(self, question: str) -> np.ndarray:
        """Dirichlet concentrations of `question`'s answers per sample: (n, n_answers_q, T)."""
        if self.kind != "dirichlet":
            raise ValueError("Only a dirichlet model has concentrations.")
        a, b = self._group(question)
        return self.samples[:, a:b, :]

    def _group(self, question: str) -> tuple[int, int]:
        self._check_question(question)
        return self.schema.question_index_groups[self.schema.question_names.index(question)]

    def _check_question(self, question: str) -> None:
        if question not in self.questions:
            raise KeyError(f"These {self.kind} predictions cover {list(self.questions)}, not {question!r}.")

    def subset(self, index) -> Predictions:
        features = None if self.features is None else self.features[index]
        return Predictions(self.id_str[index], self.samples[index], self.kind, self.schema, self.question, features)
