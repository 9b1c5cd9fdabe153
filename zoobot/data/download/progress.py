"""Progress of a download on stderr, one helper for both kinds: a catalog's bytes, a catalog's cutouts."""

from __future__ import annotations

import itertools
import sys
from typing import Callable

import click


class Progress:
    """click's progress bar on stderr while a download runs, then its final state as a line of its own.

    click draws the bar only on a terminal; anywhere else (a log file, CI, `CliRunner`) it prints the
    label once and nothing more, so there the last line is the only record of how the download ended.
    The bar opens at the first `move_to`, so a download that never starts shows nothing.
    """

    def __init__(self, label: str, status: Callable[[], str], enabled: bool):
        self.label, self.status, self.enabled = label, status, enabled
        self._bar = None

    def move_to(self, position: int, length: int | None) -> None:
        """Show `position` out of `length` (None: not known, e.g. a server that sends no Content-Length)."""
        if not self.enabled:
            return
        if self._bar is None:
            # click needs a length or an iterable; an endless iterable gives the bar for "size unknown".
            self._bar = click.progressbar(itertools.repeat(None) if length is None else None, length=length,
                                          label=self.label, file=sys.stderr, item_show_func=lambda _: self.status())
            self._bar.__enter__()
        bar = self._bar
        bar.length = length
        if position >= bar.pos:
            bar.update(position - bar.pos)
        else:  # a resumed download the server made start over
            bar.pos, bar.finished = position, False
            bar.render_progress()

    def close(self) -> None:
        if self._bar is None:
            return
        self._bar.__exit__(None, None, None)
        if not _is_terminal(self._bar.file):
            click.echo(f"{self.label}: {self.status()}", file=self._bar.file)
        self._bar = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False
