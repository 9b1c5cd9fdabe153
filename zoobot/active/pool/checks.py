"""The errors of a campaign, the checks of what callers pass in, and the wording that names bad ids.

Public methods validate here, once, so the SQL behind them can trust its input.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from zoobot.active.pool.schema import INITIAL, STAGES

SHOW = 10  # ids quoted in an error message


class PoolError(ValueError):
    """A request the campaign cannot carry out; the message says why and how to fix it."""


class InvariantError(RuntimeError):
    """The campaign database breaks a rule that its own code never breaks: it was edited by hand,
    by another program, or is damaged."""


def as_ids(ids, what: str = "ids") -> list[str]:
    """Ids as a list of distinct strings; refuses a bare string, floats and duplicates."""
    if isinstance(ids, (str, bytes)):
        raise PoolError(f"Expected a sequence of {what}, found a single string {ids!r}; wrap it in a list.")
    out = []
    for value in ids:
        if isinstance(value, (str, np.str_)):
            out.append(str(value))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            out.append(str(int(value)))  # e.g. SDSS dr7objid; stored as exact text
        else:
            raise PoolError(f"Expected {what} as strings, found {value!r} ({type(value).__name__}). Ids are stored as "
                            "text; read them with dtype=str so large integers keep every digit.")
    duplicates = sorted(i for i, n in Counter(out).items() if n > 1)
    if duplicates:
        raise PoolError(f"These {what} appear more than once: {show(duplicates)}; pass each galaxy once.")
    return out


def as_iteration(value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PoolError(f"Iterations are whole numbers from 1; found {value!r}.")
    return int(value)  # sqlite3 cannot bind numpy integers


def check_stage_name(stage: str) -> None:
    if stage not in STAGES:
        raise PoolError(f"Unknown stage {stage!r}; the stages of an iteration are {list(STAGES)}.")


def to_json(value, what: str) -> str:
    try:
        # Key order is kept: a schema's answers mapping is ordered (it is the label-column order).
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise PoolError(f"{what} must be JSON-serialisable (str, int, float, bool, None, lists, dicts); {e}.") from e


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def show(ids: Sequence[str]) -> str:
    ids = list(ids)
    more = f" ... and {len(ids) - SHOW} more" if len(ids) > SHOW else ""
    return f"{ids[:SHOW]}{more}"


def listed(*groups: tuple[Sequence[str], str]) -> str:
    """'2 are not in this campaign ['a', 'b']; 1 are ...' for the non-empty groups."""
    return "; ".join(f"{len(ids)} {what} {show(ids)}" for ids, what in groups if ids)


def when_labelled(labelled_iteration: int) -> str:
    return "initial labelled set" if labelled_iteration == INITIAL else f"at iteration {labelled_iteration}"
