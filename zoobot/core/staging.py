"""One rule for every step that writes a folder of outputs (convert, simulate, predict).

A step writes everything into a staging folder *inside* its output folder (so a writable output
folder is all it needs, even inside a read-only parent), then moves the files into place with
renames, its record last: `manifest.json` for a conversion, `simulation.json` for a simulated
survey, `predictions.json` for predictions. The record lists every file the step wrote. So:

- a folder with a record is a finished output, and the record says which files are the step's own;
- `overwrite` replaces only files that a previous record lists (and the record itself); anything
  else in the folder (a catalog, its images, a user's notes) is never deleted or replaced: when a
  new output would land on a file that no record owns, the step refuses before it starts, naming it;
- a step killed at any moment leaves no record of a half-finished output. A kill while files are
  being moved leaves `.zoobot-pending.json`, listing them, so the next run knows they are its own.

No TensorFlow or MLflow here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

STAGING_PREFIX = ".zoobot-staging-"
PENDING = ".zoobot-pending.json"
_SHOW = 10


class OutputError(ValueError):
    """The output folder cannot be written as asked; the message says why and what to do."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it: a reader sees the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def owned_files(folder: Path, record: str, listed: Callable[[dict], Iterable[str]]) -> set[str]:
    """Files (relative paths) that earlier runs of the step wrote into `folder`: those its record
    lists, the record, and those of a move that was interrupted."""
    owned: set[str] = set()
    record_path = folder / record
    if record_path.is_file():
        try:
            owned |= {str(p) for p in listed(json.loads(record_path.read_text()))}
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # unreadable record: only the record itself is known to be ours
        owned.add(record)
    pending = folder / PENDING
    if pending.is_file():
        with contextlib.suppress(ValueError, OSError):
            owned |= set(json.loads(pending.read_text()))
    return owned


@contextlib.contextmanager
def staged_output(folder: str | Path, record: str, owned: set[str], overwrite: bool, step: str,
                  planned: Iterable[str] = (), beside_others: bool = False) -> Iterator[Path]:
    """Yield a staging folder inside `folder`; on success move what was written there into
    `folder` (record last), replacing only `owned` files. On failure nothing in `folder` changes.

    `owned`: what earlier runs wrote (see `owned_files`). `planned`: names the step knows now it
    will write, checked before any work starts. `beside_others`: a folder holding other files is
    fine without `overwrite` (predictions beside a user's files); otherwise it is refused.
    """
    folder = Path(folder).resolve()
    check_output_folder(folder, record, owned, overwrite, step, beside_others)
    refuse_unowned(folder, planned, owned, step)
    created = not folder.exists()
    staging = _make_staging(folder)
    try:
        yield staging
        written = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        refuse_unowned(folder, written, owned, step)
        _move_into_place(staging, folder, written, owned, record)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: it was made for this run
        raise
    shutil.rmtree(staging, ignore_errors=True)


def check_output_folder(folder: Path, record: str, owned: set[str], overwrite: bool, step: str,
                        beside_others: bool = False) -> None:
    """Refuse a file where the folder should be, and an existing output without `overwrite`."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output_dir '{folder}' is a file; choose a folder path.")
    if not folder.exists():
        return
    if (folder / record).exists() and not overwrite:
        raise FileExistsError(
            f"'{folder}' already holds the output of `{step}` ({record}). Pass overwrite=true to replace it (only the "
            f"files its {record} lists are replaced), or choose another output_dir.")
    others = [p.name for p in folder.iterdir() if not p.name.startswith(STAGING_PREFIX) and p.name != PENDING]
    if others and not overwrite and not owned and not beside_others:
        raise FileExistsError(
            f"'{folder}' exists and is not empty ({_listed(sorted(others))}). Choose a new or empty output_dir, or "
            f"pass overwrite=true to write `{step}`'s files beside them: files `{step}` did not write are never "
            "replaced or deleted.")


def refuse_unowned(folder: Path, names: Iterable[str], owned: set[str], step: str) -> None:
    """Refuse to write over files that no earlier run of the step wrote."""
    clashes = sorted(n for n in names if n not in owned and (folder / n).exists())
    if clashes:
        raise OutputError(
            f"`{step}` would replace {len(clashes)} files in '{folder}' that it did not write: {_listed(clashes)}. "
            "Nothing was changed. Move them away, or choose another output_dir.")


def _make_staging(folder: Path) -> Path:
    for old in folder.glob(f"{STAGING_PREFIX}*") if folder.is_dir() else ():
        shutil.rmtree(old, ignore_errors=True)  # left by a killed run: only ever ours
    staging = folder / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        blocked = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        raise OutputError(
            f"Cannot write to output_dir '{folder}': '{blocked}' is not writable ({e.strerror}). Choose an output_dir "
            "you can write to, or fix its permissions.") from None
    return staging


def _move_into_place(staging: Path, folder: Path, written: list[str], owned: set[str], record: str) -> None:
    # Record out first: from here until the new record is in, the folder claims no finished output.
    (folder / record).unlink(missing_ok=True)
    atomic_write_text(folder / PENDING, json.dumps(sorted(owned | set(written))))
    for name in written:
        if name != record:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, folder / name)
    for name in sorted(owned - set(written) - {record}):
        (folder / name).unlink(missing_ok=True)  # an earlier run's file this run did not write again
        _remove_empty_parents(folder / name, folder)
    if record in written:
        os.replace(staging / record, folder / record)
    (folder / PENDING).unlink(missing_ok=True)


def _remove_empty_parents(path: Path, top: Path) -> None:
    for parent in path.parents:
        if parent == top or top not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:
            return


def _listed(names: list[str]) -> str:
    more = f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return f"{names[:_SHOW]}{more}"
