"""One file over HTTP: written to a `.part` file, resumable, retried with back-off when that can help.

Connection errors, timeouts, 5xx/429 answers and cut-off bodies are `Transient` and retried with
exponential back-off; 4xx answers are `Permanent`, because asking again would get the same answer.
Callers verify the `.part` file and rename it into place themselves: what "verified" means differs
between a catalog and an image.
"""

from __future__ import annotations

import random
import time
from dataclasses import field
from pathlib import Path
from typing import Callable

import zoobot


class DownloadError(RuntimeError):
    """A download that could not be completed; the message says why and what to do."""


class ChecksumError(DownloadError):
    """A downloaded file differs from what its source publishes."""


class Transient(Exception):
    """Worth another attempt (network trouble, overloaded server)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class Permanent(Exception):
    """Asking again would get the same answer (4xx, wrong kind of file)."""


# -- the network settings every download config shares ---------------------------------------------


def retries_field():
    return field(default=3, metadata={
        "help": "Extra attempts after a connection error, timeout, 5xx/429 answer or cut-off body (not after 4xx)."})


def backoff_field():
    return field(default=1.0, metadata={
        "help": "Seconds before the first retry; doubled for each further one (a server's Retry-After, up to "
                "60 s, wins when longer)."})


def timeout_field():
    return field(default=60.0, metadata={"help": "Seconds to wait for the server to connect or send more data."})


def check_network(problems: list[str], retries: int, backoff: float, timeout: float) -> None:
    if not 0 <= retries <= 10:
        problems.append(f"retries must be between 0 and 10, got {retries}")
    if backoff < 0:
        problems.append(f"backoff must be >= 0 seconds, got {backoff}")
    if not timeout > 0:
        problems.append(f"timeout must be > 0 seconds, got {timeout}")


# -- fetching ----------------------------------------------------------------------------------------


def new_session():
    import requests

    session = requests.Session()
    # identity: sizes and checksums are of the bytes as published, not of a re-encoding.
    session.headers.update({"User-Agent": f"zoobot/{zoobot.__version__} (+{requests.utils.default_user_agent()})",
                            "Accept-Encoding": "identity"})
    return session


def fetch(session, url: str, part: Path, timeout: float, resume: bool = False,
          on_bytes: Callable[[int, int | None], None] | None = None) -> None:
    """One attempt at `url` -> `part`. With `resume`, an existing `part` is continued with a Range request.
    `on_bytes(received, expected)` is called after each chunk; `expected` is None when the server does
    not say."""
    import requests
    import urllib3

    offset = part.stat().st_size if resume and part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, stream=True, timeout=timeout, headers=headers) as response:
            _check_status(response, offset, part)
            appending = response.status_code == 206 and \
                response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")
            start = offset if appending else 0
            length = response.headers.get("Content-Length")
            expected = start + int(length) if length and length.isdigit() else None
            received = start
            with open(part, "ab" if appending else "wb") as out:
                for chunk in response.raw.stream(1 << 16, decode_content=False):
                    out.write(chunk)
                    received += len(chunk)
                    if on_bytes:
                        on_bytes(received, expected)
    except (requests.Timeout, urllib3.exceptions.TimeoutError) as e:
        raise Transient(f"timed out (no data for {timeout:g} s)") from e
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.IncompleteRead,
            requests.exceptions.ChunkedEncodingError) as e:
        raise Transient(f"truncated: the connection closed early ({short(e)})") from e
    except (requests.ConnectionError, urllib3.exceptions.HTTPError) as e:
        raise Transient(f"connection failed ({short(e)})") from e
    except requests.RequestException as e:
        raise Permanent(f"request failed ({short(e)})") from e
    if expected is not None and received != expected:
        raise Transient(f"truncated: received {received} of {expected} bytes")


def _check_status(response, offset: int, part: Path) -> None:
    status = response.status_code
    if status == 416 and offset:  # the part is not a prefix of what is there now: start again
        part.unlink()
        raise Transient("the partial download did not match the server's file; starting again", retry_after=0)
    if status >= 500 or status == 429:
        raise Transient(f"HTTP {status} {response.reason}", _retry_after(response))
    if status >= 400:
        raise Permanent(f"HTTP {status} {response.reason}")


def _retry_after(response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def short(error: Exception) -> str:
    """An error's message, cut to a length that fits a failures table."""
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


def with_retries(attempt: Callable[[], None], retries: int, backoff: float) -> None:
    """Run `attempt` until it succeeds, a Permanent error, or retries run out (then Permanent)."""
    for n in range(retries + 1):
        try:
            return attempt()
        except Transient as e:
            if n == retries:
                raise Permanent(f"{e} (after {retries + 1} attempts)") from e
            delay = backoff * 2 ** n * random.uniform(0.9, 1.1)  # jitter: parallel workers do not retry in step
            if e.retry_after is not None:
                delay = max(delay, min(e.retry_after, 60.0))
            time.sleep(delay)
