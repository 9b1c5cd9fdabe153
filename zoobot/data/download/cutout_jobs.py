"""Many cutouts fetched concurrently, each a whole non-blank image before it takes its final name.

One galaxy's failure is recorded with its reason and never stops the others. Images only get their
final name after a full check, so a rerun keeps what is there and tries the rest again.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from zoobot.data.download.http import Permanent, fetch, new_session, short, with_retries
from zoobot.data.download.progress import Progress

if TYPE_CHECKING:
    from zoobot.data.download.images_config import DownloadImagesConfig

Outcome = tuple[str, "str | None"]  # ('downloaded' | 'present' | 'failed', reason of a failure)


@dataclass(frozen=True)
class CutoutJob:
    row: int  # 1-based data row of the catalog
    id: str
    url: str
    path: Path


def run_jobs(jobs: list[CutoutJob], config: DownloadImagesConfig, progress: bool) -> list[Outcome]:
    """(status, reason) per job: 'downloaded', 'present' or 'failed'."""
    outcomes: list[Outcome] = [("failed", "not attempted")] * len(jobs)
    counts = {"done": 0, "failed": 0}
    started = time.monotonic()

    def status() -> str:
        finished = counts["done"] + counts["failed"]
        rate = finished / max(time.monotonic() - started, 1e-9)
        return (f"{counts['done']} done, {counts['failed']} failed, {len(jobs) - finished} remaining "
                f"({rate:.1f}/s)")

    bar = Progress("Cutouts", status, enabled=progress)
    bar.move_to(0, len(jobs))
    sessions = _Sessions()
    with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="zoobot-download") as pool:
        try:
            for k, outcome in _as_completed(pool, lambda job: _fetch_one(job, sessions, config), jobs,
                                            in_flight=config.workers * 4):
                outcomes[k] = outcome
                counts["failed" if outcome[0] == "failed" else "done"] += 1
                bar.move_to(counts["done"] + counts["failed"], len(jobs))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            bar.close()
            sessions.close()
    return outcomes


def _as_completed(pool: Executor, function: Callable, items: list, in_flight: int) -> Iterator[tuple[int, object]]:
    """(index, function(item)) as each finishes. At most `in_flight` are submitted at a time, so a catalog
    of 300,000 galaxies does not become 300,000 pending futures."""
    pending = iter(range(len(items)))
    running = {}
    while True:
        for k in pending:
            running[pool.submit(function, items[k])] = k
            if len(running) >= in_flight:
                break
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            yield running.pop(future), future.result()


class _Sessions:
    """A requests session per worker thread (sessions are not thread-safe), all closed at the end."""

    def __init__(self):
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def get(self):
        if not hasattr(self._local, "session"):
            self._local.session = new_session()
            with self._lock:
                self._all.append(self._local.session)
        return self._local.session

    def close(self) -> None:
        for session in self._all:
            session.close()


def _fetch_one(job: CutoutJob, sessions: _Sessions, config: DownloadImagesConfig) -> Outcome:
    if job.path.is_file() and _already_there(job.path, config.image_format):
        return "present", None
    job.path.parent.mkdir(parents=True, exist_ok=True)
    part = job.path.with_name(job.path.name + ".part")

    def attempt():
        fetch(sessions.get(), job.url, part, config.timeout)
        verify_image(part, config.image_format)

    try:
        with_retries(attempt, config.retries, config.backoff)
        os.replace(part, job.path)
        return "downloaded", None
    except Permanent as e:
        return "failed", str(e)
    except OSError as e:  # a full disk, a read-only folder: this galaxy fails, the others go on
        return "failed", f"could not write {job.path}: {e}"
    finally:
        part.unlink(missing_ok=True)


def _already_there(path: Path, image_format: str) -> bool:
    """An earlier run's file, complete. Files are only renamed into place after a full check, so the
    cheap look at the first and last bytes normally decides; anything unusual gets the full check."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(max(0, size - 2))
        tail = f.read(2)
    if image_format == "jpeg" and head[:2] == b"\xff\xd8" and tail == b"\xff\xd9":
        return True
    if image_format == "fits" and head == b"SIMPLE" and size % 2880 == 0:
        return True
    try:
        verify_image(path, image_format)
    except Permanent:
        return False
    return True


def verify_image(path: Path, image_format: str) -> None:
    """Permanent unless `path` is a whole, non-blank image of the format asked for."""
    if image_format == "jpeg":
        pixels = _jpeg_pixels(path)
    else:
        from zoobot.data.images import ImageReadError, read_fits_array

        try:
            pixels, _ = read_fits_array(path)
        except ImageReadError as e:
            raise Permanent(f"not a readable FITS image ({short(e)})") from e
        pixels = np.nan_to_num(pixels)
    if pixels.size == 0 or pixels.min() == pixels.max():
        raise Permanent("blank cutout (every pixel the same): the position is probably outside the survey")


def _jpeg_pixels(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                raise Permanent(f"not a JPEG image but {image.format}")
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        with open(path, "rb") as f:
            head = f.read(64)
        if b"<html" in head.lower() or b"<!doctype" in head.lower():
            raise Permanent(f"not an image: the server sent a web page ({head[:40]!r}...)") from e
        raise Permanent(f"not a readable JPEG ({short(e)})") from e
