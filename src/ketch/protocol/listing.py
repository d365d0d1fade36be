"""Directory listings for LIST, NLST and MDTM.

LIST output has no standard; the de facto one is ``/bin/ls -l`` output, which
is what curl, lftp, FileZilla and Python's ftplib users know how to parse. It
is produced here in UTC with English month names regardless of locale, so the
output does not depend on how the server process was started.
"""

from __future__ import annotations

import functools
import stat
import time
from collections.abc import Iterable
from typing import Literal, NamedTuple

from ketch.protocol.commands import encode_text

__all__ = [
    "FileFacts",
    "ListLineMaker",
    "format_list_line",
    "format_listing",
    "format_mdtm",
    "format_name_list",
    "format_nlst_line",
    "list_payload",
]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# ls shows the time of day for files from about the last six months.
_RECENT = 180 * 86400
_FUTURE_SLACK = 86400  # tolerate clocks slightly ahead, as ls does
# gmtime's four-digit-year range: 0001-01-01 .. 9999-12-31 23:59:59 UTC.
_EARLIEST = -62135596800.0
_LATEST = 253402300799.0
_KIND_CHARS = {"file": "-", "dir": "d", "link": "l", "other": "?"}


class FileFacts(NamedTuple):
    """What a listing needs to know about one directory entry.

    A plain value rather than an os.stat_result, so the server's filesystem
    layer can be virtual and tests can build entries directly. A named tuple
    (immutable, and about twice as quick to make as a frozen dataclass: a
    listing of a big directory makes one per entry).
    """

    name: str  # may contain surrogate escapes for non-UTF-8 names
    kind: Literal["file", "dir", "link", "other"]
    size: int
    mtime: float  # POSIX seconds, UTC
    mode: int  # st_mode: permission bits and file type
    nlink: int = 1
    owner: str = "ftp"
    group: str = "ftp"
    link_target: str | None = None


@functools.lru_cache(maxsize=512)
def _permissions(mode: int, kind: str) -> str:
    """``drwxr-xr-x`` style text; falls back to ``kind`` when mode has no type bits."""
    text = stat.filemode(mode)
    if stat.S_IFMT(mode) == 0:
        text = _KIND_CHARS.get(kind, "?") + text[1:]
    return text


def _utc(mtime: float) -> time.struct_time:
    """gmtime that cannot fail: NaN counts as the epoch, extremes are clamped."""
    if mtime != mtime:  # NaN
        mtime = 0.0
    return time.gmtime(min(max(mtime, _EARLIEST), _LATEST))


def _one_line(name: str) -> str:
    """Replace CR and LF in a name so it cannot break the listing into fake lines."""
    if "\n" in name or "\r" in name:
        return name.replace("\r", "?").replace("\n", "?")
    return name


def _date_text(mtime: float, recent: bool) -> str:
    """``Nov 21 08:17`` for a recent time, ``Nov 21  2019`` for another."""
    tm = _utc(mtime)
    clock = f"{tm.tm_hour:02d}:{tm.tm_min:02d}" if recent else f"{tm.tm_year:>5}"
    return f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:>2} {clock}"


def format_list_line(facts: FileFacts, now: float) -> str:
    """One ``ls -l`` style line, e.g. ``-rw-r--r--   1 ftp      ftp   1234 Nov 21 08:17 a``."""
    name, kind, size, mtime, mode, nlink, owner, group, target = facts
    return ListLineMaker(now).line(name, kind, size, mtime, mode, nlink, target, owner, group)


class ListLineMaker:
    """``format_list_line`` for the entries of one listing, with their shared parts made once.

    Entries of one directory mostly share a few modes, link counts and owners,
    and few minutes, so the columns before the size (permissions, links, owner,
    group) are made once per combination and the date text once per minute
    (``ls`` shows no finer, and a day or year never changes within a minute).
    Only the two minutes holding the recent/old boundaries are not kept: an
    entry there may fall on either side. ``line`` takes plain values, so the
    server can feed it straight from ``lstat`` with no FileFacts in between.
    """

    __slots__ = ("_dates", "_earliest", "_first_minute", "_last_minute", "_latest", "_prefixes")

    def __init__(self, now: float) -> None:
        self._earliest, self._latest = now - _RECENT, now + _FUTURE_SLACK
        self._first_minute, self._last_minute = self._earliest // 60, self._latest // 60
        self._dates: dict[float, str] = {}
        self._prefixes: dict[tuple[int, str, int, str, str], str] = {}

    def line(
        self,
        name: str,
        kind: str,
        size: int,
        mtime: float,
        mode: int,
        nlink: int,
        link_target: str | None = None,
        owner: str = "ftp",
        group: str = "ftp",
    ) -> str:
        """The line of one entry; ``link_target`` is shown only for a link."""
        minute = mtime // 60  # NaN for NaN and infinities: never found, always made
        date = self._dates.get(minute)
        if date is None:
            date = _date_text(mtime, self._earliest <= mtime <= self._latest)
            if minute != self._first_minute and minute != self._last_minute:
                self._dates[minute] = date
        prefix = self._prefixes.get((mode, kind, nlink, owner, group))
        if prefix is None:
            prefix = self._prefixes[mode, kind, nlink, owner, group] = (
                f"{_permissions(mode, kind)} {nlink:>3} {owner:<8} {group:<8} "
            )
        if "\n" in name or "\r" in name or (kind == "link" and link_target is not None):
            name = _one_line(name)
            if kind == "link" and link_target is not None:
                name = f"{name} -> {_one_line(link_target)}"
        return f"{prefix}{size:>8} {date} {name}"


def _list_lines(entries: Iterable[FileFacts], now: float) -> list[str]:
    """``format_list_line`` of every entry (see ListLineMaker)."""
    line = ListLineMaker(now).line
    return [
        line(name, kind, size, mtime, mode, nlink, target, owner, group)
        for name, kind, size, mtime, mode, nlink, owner, group, target in entries
    ]


def list_payload(lines: list[str]) -> bytes:
    """The data-connection payload of LIST or NLST lines: CRLF after each, encoded once.

    Takes the list over (it gets the empty last line): a copy of a big listing's
    lines would cost more than the rest of this.
    """
    if not lines:
        return b""
    lines.append("")
    return encode_text("\r\n".join(lines))


def format_nlst_line(facts: FileFacts) -> str:
    """NLST sends bare names, one per line (CR/LF in a name become "?")."""
    return _one_line(facts.name)


def format_listing(entries: Iterable[FileFacts], now: float, *, names_only: bool = False) -> bytes:
    """The whole data-connection payload for LIST (or NLST with ``names_only``).

    Every line is CRLF-terminated; encoding once at the end keeps it fast.
    """
    if names_only:
        return list_payload([format_nlst_line(facts) for facts in entries])
    return list_payload(_list_lines(entries, now))


def format_name_list(names: Iterable[str]) -> bytes:
    """The NLST payload from bare names: ``format_listing(..., names_only=True)`` without facts."""
    return list_payload([_one_line(name) for name in names])


def format_mdtm(mtime: float) -> str:
    """RFC 3659 time-val "YYYYMMDDHHMMSS" in UTC, fractions of a second dropped (rounded down)."""
    tm = _utc(mtime)
    return (
        f"{tm.tm_year:04d}{tm.tm_mon:02d}{tm.tm_mday:02d}"
        f"{tm.tm_hour:02d}{tm.tm_min:02d}{tm.tm_sec:02d}"
    )
