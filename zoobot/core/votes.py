"""The one check of volunteer vote counts, wherever they enter Zoobot.

The catalog (`zoobot.data.catalog`), a campaign's label ingest (`PoolState.ingest_labels`) and the
reduced-votes import (`zoobot.active.oracle.read_reduced_votes`) all take counts from users; they all judge
them here, so a count one of them refuses is never accepted by another.

A count is usable when it is present, a number, finite, a whole number, >= 0 and at most
`MAX_VOTES`. The ceiling is not Galaxy Zoo's (a galaxy gets ~40-80 votes in all) but a guard: a
larger count is a unit or parsing mistake, and one that does not fit in int64 would silently wrap
round to a negative number and turn the loss into NaN.

An id is usable when it is present and appears once; every copy of a duplicated id is set aside,
since which one is right cannot be known.

No TensorFlow or MLflow here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

REJECTED_COLUMNS = ["row", "id_str", "reason"]  # every table of set-aside rows has these columns
MAX_VOTES = 1_000_000  # per answer of one galaxy
_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}


def shown(value) -> str:
    """A cell as the user wrote it, for messages: numpy scalars repr as np.int64(7), users wrote 7."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def id_text(value) -> str | None:
    """An id cell as stripped text, or None when it is empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def id_problems(ids: Sequence[str | None], id_column: str, rows: Sequence[int]) -> dict[int, list[str]]:
    """Position -> problems, for missing ids and for every copy of a duplicated one."""
    problems: dict[int, list[str]] = {}
    positions: dict[str, list[int]] = {}
    for i, value in enumerate(ids):
        if value is None:
            problems.setdefault(i, []).append(f"missing id in column '{id_column}'")
        else:
            positions.setdefault(value, []).append(i)
    for value, where in positions.items():
        if len(where) > 1:
            listed = ", ".join(str(rows[j]) for j in where)
            for j in where:
                problems.setdefault(j, []).append(f"duplicate id '{value}' (rows {listed}); keep one row per galaxy")
    return problems


def count_problems(raw: pd.Series, column: str) -> tuple[np.ndarray, dict[int, str]]:
    """The column's counts as floats (NaN where unusable) and the problem of each bad position."""
    values, problems = _as_floats(raw, column)
    with np.errstate(invalid="ignore"):
        missing = np.isnan(values)
        infinite = np.isinf(values)
        finite = ~missing & ~infinite
        negative = finite & (values < 0)
        fractional = finite & ~negative & (values != np.round(values))
        huge = finite & (values > MAX_VOTES)
    for i in np.flatnonzero(missing):
        problems.setdefault(int(i), f"'{column}' is missing (NaN)")
    for i in np.flatnonzero(infinite):
        problems[int(i)] = f"'{column}' is not finite ({values[i]}); expected vote counts"
    for i in np.flatnonzero(negative):
        problems[int(i)] = f"'{column}' is negative ({values[i]:g}); vote counts are >= 0"
    for i in np.flatnonzero(fractional):
        problems[int(i)] = f"'{column}' is not a whole number ({values[i]:g}); expected vote counts"
    for i in np.flatnonzero(huge):
        problems[int(i)] = (f"'{column}' is {values[i]:.6g}, more than {MAX_VOTES:,} votes for one answer: "
                            "not a plausible vote count (a unit or parsing mistake?)")
    bad = missing | infinite | negative | fractional | huge
    return np.where(bad, np.nan, values), problems


def _as_floats(raw: pd.Series, column: str) -> tuple[np.ndarray, dict[int, str]]:
    """Numbers as floats; text cells that are not numbers are problems, empty ones NaN."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=float, na_value=np.nan), {}
    values = np.full(len(raw), np.nan)
    problems: dict[int, str] = {}
    for i, value in enumerate(raw.tolist()):
        if isinstance(value, str):
            value = value.strip()
            if value.lower() in _MISSING_TEXT:
                continue
        elif value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, (bool, np.bool_)):
            problems[i] = f"'{column}' is not a number: {value!r}"
            continue
        try:
            values[i] = float(value)
        except (TypeError, ValueError, OverflowError):
            problems[i] = f"'{column}' is not a number: {value!r}"
    return values, problems


def validate_votes(frame: pd.DataFrame, label_cols: Sequence[str], id_column: str = "id_str",
                   rows: Sequence[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a table of vote counts into good rows and rejected rows, with every reason for each.

    `frame` must already have `id_column` and every label column (a missing column is a problem of
    the whole file, for the caller to report). `rows` numbers the rows in reports (default 1, 2, ...).

    Returns (good: id_str, row, label columns as int64; rejected: row, id_str, reason).
    """
    n = len(frame)
    row_numbers = np.arange(1, n + 1) if rows is None else np.asarray(rows, dtype=np.int64)
    ids = [id_text(v) for v in frame[id_column].tolist()]
    reasons: list[list[str]] = [[] for _ in range(n)]
    for i, problems in id_problems(ids, id_column, row_numbers).items():
        reasons[i].extend(problems)
    counts = np.zeros((n, len(label_cols)), dtype=np.int64)
    for k, column in enumerate(label_cols):
        values, problems = count_problems(frame[column], column)
        for i, problem in problems.items():
            reasons[i].append(problem)
        counts[:, k] = np.where(np.isfinite(values), values, 0).astype(np.int64)
    bad = np.array([bool(r) for r in reasons], dtype=bool)
    good = pd.DataFrame({"id_str": [ids[i] for i in np.flatnonzero(~bad)], "row": row_numbers[~bad]})
    for k, column in enumerate(label_cols):
        good[column] = counts[~bad, k]
    return good, rejected_rows(row_numbers[bad], [ids[i] or "" for i in np.flatnonzero(bad)],
                               ["; ".join(reasons[i]) for i in np.flatnonzero(bad)])


def rejected_rows(rows, ids, reasons) -> pd.DataFrame:
    """The table of set-aside rows, with whole-number row numbers."""
    frame = pd.DataFrame({"row": rows, "id_str": ids, "reason": reasons}, columns=REJECTED_COLUMNS)
    frame["row"] = frame["row"].astype(np.int64)
    return frame
