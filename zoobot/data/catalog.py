"""Read and validate a galaxy catalog: the boundary where user data enters Zoobot.

A catalog is a table (CSV, Parquet or FITS) with one row per galaxy: an id, the path of its image,
and the vote counts of a schema. Problems with the file as a whole (missing columns, unreadable
file) raise `CatalogError`; problems with single rows set the row aside with a reason, so one bad
galaxy never takes the good ones down with it.

No TensorFlow or MLflow here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from zoobot.core.schema import Schema, load_schema
from zoobot.core.votes import count_problems, id_problems, id_text, rejected_rows, shown

ID = "id_str"  # normalised id column of every table after the catalog
IMAGE = "image_path"  # normalised, absolute image path
ROW = "catalog_row"  # 1-based data row of the catalog file, for reports
TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".fits", ".fit", ".fits.gz")


class CatalogError(ValueError):
    """The catalog file as a whole cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class Catalog:
    path: Path
    schema: Schema
    galaxies: pd.DataFrame  # good rows: id_str, image_path, catalog_row, label columns (int64), the rest as given
    rejected: pd.DataFrame  # row (1-based data row), id_str, reason
    sha256: str  # of the catalog file, so later steps can tell which catalog they came from
    has_labels: bool

    @property
    def labels(self) -> np.ndarray:
        return self.galaxies[list(self.schema.label_cols)].to_numpy(dtype=np.int64)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: str | Path, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV, Parquet or FITS table; `text_columns` are kept as exact strings (ids, paths)."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"Catalog '{path}' does not exist. Check the path (relative paths resolve against "
                           f"{Path.cwd()}).")
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            # Read ids as text: 64-bit SDSS ids lose digits if pandas makes them floats.
            return pd.read_csv(path, dtype={c: str for c in text_columns}, keep_default_na=True)
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".fits", ".fit", ".fits.gz")):
            return _read_fits_table(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise CatalogError(f"Catalog '{path}' could not be read as a table: {e}") from e
    raise CatalogError(
        f"Catalog '{path}' has an unsupported file type; expected one of {list(TABLE_SUFFIXES)}. "
        "Save it as CSV, Parquet or a FITS binary table."
    )


def _read_fits_table(path: Path) -> pd.DataFrame:
    from astropy.table import Table

    table = Table.read(path)
    # Vector columns (e.g. per-band fluxes) have no place in a flat table; keep the scalar ones.
    table = table[[c for c in table.colnames if len(table[c].shape) <= 1]]
    frame = table.to_pandas()
    for column in frame.columns:
        if frame[column].dtype == object and len(frame) and isinstance(frame[column].iloc[0], bytes):
            frame[column] = frame[column].str.decode("utf-8").str.strip()
    return frame


def load_catalog(
    path: str | Path,
    schema: Schema | str,
    id_column: str | None = None,
    image_column: str = "file_loc",
    image_root: str | Path | None = None,
    require_labels: bool = True,
) -> Catalog:
    """Read `path` and validate it against `schema`.

    Image paths that are relative resolve against `image_root`, or the catalog's folder when it is
    not given. With `require_labels=False` vote columns are not needed (a catalog to predict on).
    """
    path = Path(path)
    schema = load_schema(schema) if isinstance(schema, str) else schema
    id_column = id_column or schema.id_column
    table = read_table(path, text_columns=(id_column, image_column))
    if table.empty:
        raise CatalogError(f"Catalog '{path}' has no rows.")
    _check_columns(path, table, schema, id_column, image_column, require_labels)

    reasons = pd.Series([[] for _ in range(len(table))], index=table.index)

    def reject(mask: pd.Series, reason) -> None:
        for i in np.flatnonzero(mask.to_numpy()):
            text = reason(i) if callable(reason) else reason
            reasons.iloc[i].append(text)

    ids = pd.Series([id_text(v) for v in table[id_column].tolist()], index=table.index, dtype=object)
    for i, problems in id_problems(ids.tolist(), id_column, np.arange(1, len(table) + 1)).items():
        reasons.iloc[i].extend(problems)

    galaxies = table.copy()
    galaxies[ID] = ids
    galaxies[ROW] = np.arange(1, len(table) + 1)
    galaxies[IMAGE] = _resolve_images(table[image_column], Path(image_root) if image_root else path.parent)
    missing_path = table[image_column].isna() | (table[image_column].astype("string").str.strip() == "")
    reject(missing_path, f"missing image path in column '{image_column}'")
    exists = galaxies[IMAGE].map(lambda p: isinstance(p, str) and Path(p).is_file())
    reject(~exists & ~missing_path, lambda i: f"image not found: {galaxies[IMAGE].iloc[i]}")

    if require_labels:
        for question in schema.questions:
            if question.binary_column:
                _derive_binary(galaxies, question, reject)
            else:
                for column in question.columns:
                    values, problems = count_problems(galaxies[column], column)
                    for i, problem in problems.items():
                        reasons.iloc[i].append(problem)
                    galaxies[column] = values

    bad = reasons.map(len) > 0
    rejected = rejected_rows(np.flatnonzero(bad.to_numpy()) + 1, ids[bad].fillna("").astype(str).to_numpy(),
                             reasons[bad].map("; ".join).to_numpy())
    good = galaxies[~bad].reset_index(drop=True)
    if require_labels:
        good[list(schema.label_cols)] = good[list(schema.label_cols)].astype(np.int64)
    return Catalog(path, schema, good, rejected, file_sha256(path), has_labels=require_labels)


def _check_columns(path, table, schema, id_column, image_column, require_labels) -> None:
    needed = [id_column, image_column]
    if require_labels:
        for question in schema.questions:
            needed.extend([question.binary_column] if question.binary_column else question.columns)
    missing = [c for c in needed if c not in table.columns]
    if not missing:
        return
    hint = ""
    if id_column in missing:
        hint += f" Name the id column with --id-column (the schema's default is '{schema.id_column}')."
    if image_column in missing:
        hint += " Name the image-path column with --image-column."
    other = _best_matching_schema(table.columns, schema)
    if other:
        hint += f" The columns look like the '{other}' schema: try --schema {other}."
    elif require_labels and any(f"{c}_fraction" in table.columns for c in missing):
        hint += " The catalog has vote fractions but the schema needs vote counts."
    raise CatalogError(
        f"Catalog '{path}' is missing columns {missing} required by schema '{schema.name}'; "
        f"it has {list(table.columns)[:40]}{' ...' if len(table.columns) > 40 else ''}.{hint}"
    )


def _best_matching_schema(columns, current: Schema) -> str | None:
    from zoobot.core.schema import BUILTIN_SCHEMAS

    present = set(columns)
    for name, other in BUILTIN_SCHEMAS.items():
        if name != current.name and set(other.label_cols) <= present:
            return name
    return None


def _resolve_images(column: pd.Series, root: Path) -> pd.Series:
    def resolve(value):
        if pd.isna(value) or not str(value).strip():
            return None
        p = Path(str(value).strip()).expanduser()
        return str(p if p.is_absolute() else (root / p).resolve())

    return column.map(resolve).astype(object)


def _derive_binary(galaxies: pd.DataFrame, question, reject) -> None:
    raw = galaxies[question.binary_column]
    values = pd.to_numeric(raw.map(lambda v: int(v) if isinstance(v, (bool, np.bool_)) else v), errors="coerce")
    bad = ~values.isin([0, 1])
    reject(bad, lambda i: f"'{question.binary_column}' must be 0 or 1, found {shown(raw.iloc[i])}")
    yes, no = question.columns
    galaxies[yes] = values.where(~bad)
    galaxies[no] = 1 - values.where(~bad)

