"""What the client commands print: data lines, transfer summaries, progress bars.

stdout carries only the data asked for (listings, a downloaded file); status
goes to stderr. Progress bars appear only on a terminal; otherwise the output
is plain text without ANSI codes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ketch.client import TransferResult
from ketch.client.transfers import Progress as ProgressCallback

__all__ = ["Display", "amount", "describe_transfer", "safe_text", "write_out"]

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What surrogateescape makes of the bytes 0x80-0xFF that are not part of UTF-8.
_STRAY_BYTES = re.compile("[\udc80-\udcff]")


def safe_text(text: str) -> str:
    """``text`` fit for one terminal line: control characters (ESC, CR, LF) shown as "?",
    and a name's bytes that are not UTF-8 (kept as surrogate escapes) as ``\\xNN``."""
    text = _CONTROL_CHARACTERS.sub("?", text)
    return _STRAY_BYTES.sub(lambda byte: f"\\x{ord(byte[0]) - 0xDC00:02x}", text)


def write_out(text: str, stream: IO[bytes] | None = None) -> None:
    """A line on stdout; names that are not UTF-8 go out as the bytes they were."""
    out = stream or sys.stdout.buffer
    out.write(text.encode("utf-8", "surrogateescape") + b"\n")


def amount(count: int) -> str:
    """A byte count people can read: exact, plus binary units from 1 KiB on."""
    if count < 1024:
        return f"{count} byte{'' if count == 1 else 's'}"
    return f"{count} bytes ({_binary(count)})"


def _binary(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1024
    return f"{count:.1f} TiB"


def describe_transfer(verb: str, name: str, result: TransferResult, *, verbose: bool) -> str:
    """One line for one transfer: "get a.txt: 6 bytes in 0.01 s (1.2 KiB/s) via EPSV"."""
    if result.skipped:
        return f"{verb} {name}: already complete ({amount(result.offset)}); nothing to transfer"
    rate = _binary(result.bytes / result.seconds) + "/s" if result.seconds > 0 else "-"
    text = f"{verb} {name}: {amount(result.bytes)} in {result.seconds:.2f} s ({rate})"
    if result.offset:
        text += f", resumed at byte {result.offset}"
    if verbose:
        text += f" via {result.mode}"
    return text


class Display:
    """Progress bars on stderr when it is a terminal (and not -q); status lines otherwise.

    Without a terminal nothing but plain text is written: no ANSI codes.
    """

    def __init__(self, *, verbose: bool = False, quiet: bool = False, bars: bool = True) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self._progress: Progress | None = None
        if bars and not quiet and sys.stderr.isatty():
            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=False,  # downloads to stdout must not pass through rich
            )

    def __enter__(self) -> Display:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, text: str) -> None:
        """A status line on stderr, unless -q."""
        if not self.quiet:
            self.error_line(text)

    def error_line(self, text: str) -> None:
        """A line on stderr even under -q (failures)."""
        click.echo(safe_text(text), err=True)

    def add_bar(self, description: str, total: int | None) -> TaskID | None:
        if self._progress is None:
            return None
        return self._progress.add_task(safe_text(description), total=total)

    def update_bar(self, task: TaskID | None, completed: int, total: int | None) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, completed=completed, total=total)

    def advance_bar(self, task: TaskID | None, by: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, by)

    def remove_bar(self, task: TaskID | None) -> None:
        if self._progress is not None and task is not None:
            self._progress.remove_task(task)

    @contextmanager
    def bar(self, description: str, total: int | None = None) -> Iterator[ProgressCallback | None]:
        """A bar for one transfer: yields the progress callback (None without a terminal)."""
        task = self.add_bar(description, total)
        if task is None:
            yield None
            return

        def progress(done: int, size: int | None) -> None:
            self.update_bar(task, done, size)

        try:
            yield progress
        finally:
            self.remove_bar(task)
