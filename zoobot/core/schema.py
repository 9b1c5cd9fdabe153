"""Galaxy Zoo decision trees as data.

A schema is an ordered list of questions; each question has answers (each answer one count column
of the catalog) and names the answer it follows (None: asked of every galaxy). Everything a model
needs is derived from that: the ordered label columns, the index group of each question, and the
probability that a question is asked given the answers above it.

No TensorFlow or MLflow here: this module is imported by worker processes and fast tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class SchemaError(ValueError):
    """A schema definition that cannot describe a decision tree."""


@dataclass(frozen=True)
class Answer:
    name: str  # short label, e.g. "smooth"
    column: str  # catalog column holding its vote count, e.g. "smooth-or-featured_smooth"


@dataclass(frozen=True)
class Question:
    name: str
    answers: tuple[Answer, ...]
    follows: str | None = None  # column of the answer that leads here; None = asked of everyone
    binary_column: str | None = None  # a 0/1 catalog column the two answer counts are derived from

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(a.column for a in self.answers)


@dataclass(frozen=True)
class Schema:
    name: str
    questions: tuple[Question, ...]
    id_column: str = "id_str"
    description: str = ""
    # Derived in __post_init__; not part of the definition.
    label_cols: tuple[str, ...] = field(init=False, repr=False, compare=False)
    question_index_groups: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.questions:
            raise SchemaError(f"Schema '{self.name}' has no questions; a schema needs at least one.")
        label_cols: list[str] = []
        groups: list[tuple[int, int]] = []
        seen_questions: set[str] = set()
        for q in self.questions:
            if q.name in seen_questions:
                raise SchemaError(f"Schema '{self.name}' defines question '{q.name}' twice.")
            seen_questions.add(q.name)
            if len(q.answers) < 2:
                raise SchemaError(
                    f"Question '{q.name}' of schema '{self.name}' has {len(q.answers)} answer(s); "
                    "a question needs at least two (for a yes/no flag use binary_column)."
                )
            start = len(label_cols)
            label_cols.extend(q.columns)
            groups.append((start, len(label_cols)))
        duplicates = sorted({c for c in label_cols if label_cols.count(c) > 1})
        if duplicates:
            raise SchemaError(f"Schema '{self.name}' uses these answer columns more than once: {duplicates}.")
        for (start, stop), q in zip(groups, self.questions):
            # The loss slices label vectors by these groups, so each must be a contiguous run of
            # exactly this question's columns.
            if tuple(label_cols[start:stop]) != q.columns:
                raise SchemaError(f"Answers of question '{q.name}' are not contiguous in the label columns.")
        object.__setattr__(self, "label_cols", tuple(label_cols))
        object.__setattr__(self, "question_index_groups", tuple(groups))
        for q in self.questions:
            if q.follows is not None and q.follows not in label_cols:
                raise SchemaError(
                    f"Question '{q.name}' of schema '{self.name}' follows answer '{q.follows}', which is "
                    f"not an answer of any question. Known answers: {list(label_cols)}."
                )
        self.ordered_questions()  # raises on cycles

    # -- structure -------------------------------------------------------------------------------

    @property
    def question_names(self) -> tuple[str, ...]:
        return tuple(q.name for q in self.questions)

    @property
    def n_answers(self) -> int:
        return len(self.label_cols)

    def question(self, name: str) -> Question:
        for q in self.questions:
            if q.name == name:
                return q
        raise KeyError(f"Schema '{self.name}' has no question '{name}'; it has {list(self.question_names)}.")

    def question_of(self, column: str) -> Question:
        for q in self.questions:
            if column in q.columns:
                return q
        raise KeyError(f"'{column}' is not an answer column of schema '{self.name}'.")

    def parent_question(self, question: Question) -> Question | None:
        return None if question.follows is None else self.question_of(question.follows)

    def ordered_questions(self) -> list[Question]:
        """Questions with every parent before its children (for the reach computation)."""
        order: list[Question] = []
        state: dict[str, str] = {}

        def visit(q: Question, path: tuple[str, ...]):
            if state.get(q.name) == "done":
                return
            if q.name in path:
                raise SchemaError(f"Schema '{self.name}' has a cycle: {' -> '.join(path + (q.name,))}.")
            parent = self.parent_question(q)
            if parent is not None:
                visit(parent, path + (q.name,))
            state[q.name] = "done"
            order.append(q)

        for q in self.questions:
            visit(q, ())
        return order

    # -- maths on label arrays (n_galaxies, n_answers) --------------------------------------------

    def question_totals(self, counts: np.ndarray) -> np.ndarray:
        """Votes cast on each question, shape (n, n_questions)."""
        counts = np.asarray(counts, dtype=float)
        return np.stack([counts[:, a:b].sum(axis=1) for a, b in self.question_index_groups], axis=1)

    def vote_fractions(self, counts: np.ndarray) -> np.ndarray:
        """Counts divided by their question's total; NaN where nobody answered the question."""
        counts = np.asarray(counts, dtype=float)
        fractions = np.full_like(counts, np.nan)
        for a, b in self.question_index_groups:
            total = counts[:, a:b].sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                fractions[:, a:b] = np.where(total > 0, counts[:, a:b] / total, np.nan)
        return fractions

    def reach_probability(self, fractions: np.ndarray) -> np.ndarray:
        """Probability that a volunteer is asked each question, shape (n, n_questions).

        The product of the answer fractions along the path from the root: a question asked only
        after 'featured' and then 'not edge-on' is reached with p(featured) * p(not edge-on).
        """
        fractions = np.asarray(fractions, dtype=float)
        index = {name: i for i, name in enumerate(self.question_names)}
        column_index = {c: i for i, c in enumerate(self.label_cols)}
        reach = np.ones((fractions.shape[0], len(self.questions)))
        for q in self.ordered_questions():
            if q.follows is not None:
                parent = self.question_of(q.follows)
                reach[:, index[q.name]] = reach[:, index[parent.name]] * fractions[:, column_index[q.follows]]
        return reach

    # -- (de)serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "id_column": self.id_column,
            "description": self.description,
            "questions": [
                {
                    "name": q.name,
                    "answers": {a.name: a.column for a in q.answers},
                    "follows": q.follows,
                    **({"binary_column": q.binary_column} if q.binary_column else {}),
                }
                for q in self.questions
            ],
        }

    @classmethod
    def from_dict(cls, spec: dict, source: str = "schema") -> Schema:
        """Build a schema from the plain structure of a YAML/JSON file (see `load_schema`)."""
        if not isinstance(spec, dict) or "questions" not in spec:
            raise SchemaError(
                f"{source}: expected a mapping with keys 'name' and 'questions'; found {type(spec).__name__}"
                f"{' with keys ' + str(sorted(spec)) if isinstance(spec, dict) else ''}."
            )
        questions = tuple(_question_from_spec(q, source) for q in spec["questions"])
        return cls(
            name=str(spec.get("name", Path(source).stem)),
            questions=questions,
            id_column=str(spec.get("id_column", "id_str")),
            description=str(spec.get("description", "")),
        )


def _answer_name(raw) -> str:
    # PyYAML reads unquoted yes/no as booleans; a user writing `answers: [yes, no]` means the words.
    if raw is True:
        return "yes"
    if raw is False:
        return "no"
    return str(raw)


def _question_from_spec(spec: dict, source: str) -> Question:
    if not isinstance(spec, dict) or "name" not in spec:
        raise SchemaError(f"{source}: each question needs a 'name'; found {spec!r}.")
    name = str(spec["name"])
    follows = spec.get("follows")
    if "binary_column" in spec:
        binary = str(spec["binary_column"])
        answers = (Answer("yes", f"{binary}_yes"), Answer("no", f"{binary}_no"))
        return Question(name, answers, follows, binary_column=binary)
    raw_answers = spec.get("answers")
    if isinstance(raw_answers, dict):
        answers = tuple(Answer(_answer_name(k), str(v)) for k, v in raw_answers.items())
    elif isinstance(raw_answers, list):
        answers = tuple(Answer(_answer_name(a), f"{name}_{_answer_name(a)}") for a in raw_answers)
    else:
        raise SchemaError(
            f"{source}: question '{name}' needs 'answers' (a list of answer names, whose count columns are "
            f"'{name}_<answer>', or a mapping answer -> column) or 'binary_column'; found {raw_answers!r}."
        )
    return Question(name, answers, None if follows is None else str(follows))


def _decals_question(name: str, answers: list[str], follows: str | None = None) -> Question:
    return Question(name, tuple(Answer(a, f"{name}_{a}") for a in answers), follows)


# GZ DECaLS DR5 (Walmsley et al. 2022): count columns are `question_answer`.
GZ_DECALS = Schema(
    name="decals",
    id_column="iauname",
    description="Galaxy Zoo DECaLS, DR5 decision tree (Walmsley et al. 2022).",
    questions=(
        _decals_question("smooth-or-featured", ["smooth", "featured-or-disk", "artifact"]),
        _decals_question("disk-edge-on", ["yes", "no"], "smooth-or-featured_featured-or-disk"),
        _decals_question("has-spiral-arms", ["yes", "no"], "disk-edge-on_no"),
        _decals_question("bar", ["strong", "weak", "no"], "disk-edge-on_no"),
        _decals_question("bulge-size", ["dominant", "large", "moderate", "small", "none"], "disk-edge-on_no"),
        _decals_question("how-rounded", ["round", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
        _decals_question("edge-on-bulge", ["boxy", "none", "rounded"], "disk-edge-on_yes"),
        _decals_question("spiral-winding", ["tight", "medium", "loose"], "has-spiral-arms_yes"),
        _decals_question(
            "spiral-arm-count", ["1", "2", "3", "4", "more-than-4", "cant-tell"], "has-spiral-arms_yes"
        ),
        _decals_question("merging", ["none", "minor-disturbance", "major-disturbance", "merger"]),
    ),
)


def _gz2_question(task: str, answers: list[str], follows: str | None = None) -> Question:
    # Hart et al. 2016 columns: t01_smooth_or_features_a01_smooth_count (also _weight, _fraction,
    # _weighted_fraction, _debiased, _flag); the raw counts are what a likelihood needs.
    return Question(task, tuple(Answer(a.split("_", 1)[1], f"{task}_{a}_count") for a in answers), follows)


GZ2 = Schema(
    name="gz2",
    id_column="dr7objid",
    description="Galaxy Zoo 2 decision tree, Hart et al. 2016 catalogue columns.",
    questions=(
        _gz2_question("t01_smooth_or_features", ["a01_smooth", "a02_features_or_disk", "a03_star_or_artifact"]),
        _gz2_question("t02_edgeon", ["a04_yes", "a05_no"], "t01_smooth_or_features_a02_features_or_disk_count"),
        _gz2_question("t03_bar", ["a06_bar", "a07_no_bar"], "t02_edgeon_a05_no_count"),
        _gz2_question("t04_spiral", ["a08_spiral", "a09_no_spiral"], "t02_edgeon_a05_no_count"),
        _gz2_question(
            "t05_bulge_prominence",
            ["a10_no_bulge", "a11_just_noticeable", "a12_obvious", "a13_dominant"],
            "t02_edgeon_a05_no_count",
        ),
        _gz2_question("t06_odd", ["a14_yes", "a15_no"]),
        _gz2_question(
            "t07_rounded",
            ["a16_completely_round", "a17_in_between", "a18_cigar_shaped"],
            "t01_smooth_or_features_a01_smooth_count",
        ),
        _gz2_question(
            "t08_odd_feature",
            ["a19_ring", "a20_lens_or_arc", "a21_disturbed", "a22_irregular", "a23_other", "a24_merger",
             "a38_dust_lane"],
            "t06_odd_a14_yes_count",
        ),
        _gz2_question("t09_bulge_shape", ["a25_rounded", "a26_boxy", "a27_no_bulge"], "t02_edgeon_a04_yes_count"),
        _gz2_question("t10_arms_winding", ["a28_tight", "a29_medium", "a30_loose"], "t04_spiral_a08_spiral_count"),
        _gz2_question(
            "t11_arms_number",
            ["a31_1", "a32_2", "a33_3", "a34_4", "a36_more_than_4", "a37_cant_tell"],
            "t04_spiral_a08_spiral_count",
        ),
    ),
)

BUILTIN_SCHEMAS: dict[str, Schema] = {"decals": GZ_DECALS, "gz2": GZ2}


def load_schema(name_or_path: str | Path) -> Schema:
    """A built-in schema by name ('decals', 'gz2') or a user's own from a YAML or JSON file.

    A file looks like::

        name: rings
        id_column: objid
        questions:
          - name: ring
            answers: [yes, no]            # count columns ring_yes, ring_no
          - name: lens
            binary_column: is_lens        # a 0/1 column; counts is_lens_yes/is_lens_no are derived
          - name: ring-type
            answers: {inner: n_inner, outer: n_outer}   # answer -> count column
            follows: ring_yes
    """
    key = str(name_or_path)
    if key in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[key]
    path = Path(key)
    if path.suffix.lower() not in {".yaml", ".yml", ".json"}:
        raise SchemaError(
            f"Unknown schema '{key}': expected a built-in name ({sorted(BUILTIN_SCHEMAS)}) or the path of a "
            ".yaml/.yml/.json file describing your decision tree."
        )
    if not path.is_file():
        raise SchemaError(f"Schema file '{path}' does not exist. Check the path (relative paths resolve "
                          f"against {Path.cwd()}).")
    from zoobot.core.schema_files import SchemaFileError, read_schema_file

    try:
        spec = read_schema_file(path)
    except SchemaFileError as e:
        raise SchemaError(str(e)) from None
    return Schema.from_dict(spec, source=str(path))
