"""Read other servers' directory listings: MLSD (RFC 3659) and LIST.

A client needs names, kinds, sizes and times to mirror a tree or resume a
download. MLSD states them in a defined format; LIST, the fallback for servers
without MLSD, has no standard at all, and in practice is either ``ls -l`` lines
or, from IIS and other Windows servers, DOS ``dir`` lines. Both are parsed
here, without I/O, so every odd sample from the wild can be a unit test.

LIST lines carry no time zone; their times are taken as UTC, as ketch's own
server writes them. A server listing local time cannot be told apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

from ketch.protocol.reply_values import parse_mdtm_value

__all__ = [
    "MlsdSyntaxError",
    "RemoteEntry",
    "RemoteListing",
    "parse_list",
    "parse_list_line",
    "parse_mlsd",
    "parse_mlsd_line",
]

# "other": a device, socket or the like; "unknown": the listing did not say (an MLSD
# entry without the type fact).
Kind: TypeAlias = Literal["file", "dir", "link", "other", "unknown"]
Precision: TypeAlias = Literal["second", "minute", "day"]

_SELF_OR_PARENT_TYPES = frozenset({"cdir", "pdir"})
_SELF_OR_PARENT_NAMES = frozenset({".", ".."})
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS, start=1)}
# ls shows "HH:MM" instead of the year for times up to about a day ahead.
_FUTURE_SLACK = timedelta(days=1)
# Feb 29 can be eight years away from the last leap day (2096 -> 2104).
_YEARS_BACK = 9
_UNIX_KINDS: dict[str, Kind] = {"-": "file", "d": "dir", "l": "link"}

# RFC 3659 §2.3 time-val: 14 digits, optional fraction of a second.
_TIME_VAL = re.compile(r"[0-9]{14}(?:\.[0-9]+)?")
_MLSD_LINK = re.compile(r"os\.unix=(?:slink|symlink)(?::(?P<target>.*))?", re.IGNORECASE)

# ``ls -l``: type and mode (with an ACL or xattr marker), then link count,
# owner and group, which are skipped as whole words because servers leave out
# some of them; then size ("major, minor" for devices) and the date.
# Possessive quantifiers keep the skip linear on long garbage lines.
_UNIX_HEAD = (
    r"(?P<type>[-bcdDlnps?])(?P<mode>[-rwxsStTlL?]{9})[+.@]?\s++"
    r"(?:\S++\s++)*?"
    r"(?P<size>[0-9]++(?:,\s*+[0-9]++)?)\s++"
)
# Exactly one space: ls puts one before the name, so leading spaces survive.
_UNIX_NAME = r" (?P<name>.+)"
_UNIX_LINE = re.compile(
    _UNIX_HEAD + rf"(?P<month>(?i:{'|'.join(_MONTHS)}))\s++(?P<day>[0-9]{{1,2}})\s++"
    r"(?:(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})|(?P<year>[0-9]{4}))" + _UNIX_NAME
)
# GNU ls --time-style=long-iso "2026-10-02 10:15" (some servers' default), and
# full-iso "2026-10-02 10:15:30.123456789 +0200", the one that gives its zone.
_UNIX_ISO_LINE = re.compile(
    _UNIX_HEAD + r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})\s++"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.[0-9]++)?\s++(?P<zone>[-+][0-9]{4}))?" + _UNIX_NAME
)
# "total 12" before the entries, in the server's language ("insgesamt 12") and
# perhaps with a unit ("total 1.5M"): no entry, so nothing is lost.
_TOTAL_LINE = re.compile(r"\S++\s++[0-9][0-9.,]*+[A-Za-z]?")
# IIS "MM-DD-YY  HH:MMAM  <DIR>|size name"; it can also show 4-digit years and 24h times.
_DOS_LINE = re.compile(
    r"(?P<month>[0-9]{2})-(?P<day>[0-9]{2})-(?P<year>[0-9]{4}|[0-9]{2})\s++"
    r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})(?:\s*+(?P<half>[AP]M))?\s++"
    r"(?:(?P<dir><DIR>)|(?P<size>[0-9][0-9,]*+))\s++"
    r"(?P<name>.+)",
    re.IGNORECASE,
)


class MlsdSyntaxError(ValueError):
    """An MLSD/MLST line is not RFC 3659's ``fact=value;... name``; the message says why."""


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a remote directory listing.

    ``mtime`` is UTC and holds only what the listing could express;
    ``mtime_precision`` says how much that was ("second", "minute" or "day"),
    so that a mirror compares times no finer than the server reported them.
    ``facts`` holds MLSD facts under lower-case names (empty for LIST); it is
    typed read-only but is a plain dict, so entries stay picklable.
    """

    name: str
    kind: Kind
    size: int | None
    mtime: datetime | None
    mtime_precision: Precision | None
    link_target: str | None = None
    facts: Mapping[str, str] = field(default_factory=dict)
    permissions: str | None = None  # ls mode text "rwxr-xr-x", or MLSD's perm fact

    @property
    def is_self_or_parent(self) -> bool:
        """True for MLSD cdir/pdir entries and LIST "." and "..", which callers skip."""
        type_fact = self.facts.get("type", "").lower()
        return type_fact in _SELF_OR_PARENT_TYPES or self.name in _SELF_OR_PARENT_NAMES


class RemoteListing(list[RemoteEntry]):
    """A directory listing's entries, and the lines of it that could not be read.

    ``unreadable`` holds the LIST lines in a format the parser does not know,
    as sent (without line ends): the entries they stand for are not among the
    entries, and a caller tells the user rather than lose them silently.
    Blank lines and "total" lines are no entries and are not in it.
    """

    def __init__(self, entries: Iterable[RemoteEntry] = (), unreadable: Iterable[str] = ()) -> None:
        super().__init__(entries)
        self.unreadable = tuple(unreadable)


def _show(text: str) -> str:
    """Quote untrusted text for an error message, cut short."""
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _lines(text: str) -> list[str]:
    """Split on LF only: str.splitlines also splits on characters a name may hold (U+2028)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


# --- MLSD ----------------------------------------------------------------------


def _parse_facts(text: str) -> dict[str, str]:
    """``size=5;Type=file;`` as {"size": "5", "type": "file"}.

    A missing final ";" and empty facts (";;") are tolerated: neither leaves
    any doubt about where the facts end.
    """
    facts: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise MlsdSyntaxError(f"fact {_show(item)} is not name=value")
        facts[name.lower()] = value
    return facts


def _mlsd_kind(type_fact: str | None) -> tuple[Kind, str | None]:
    """Kind and link target from a type fact; values compare case-insensitively."""
    if not type_fact:  # absent, or "type=": the server did not say
        return "unknown", None
    lowered = type_fact.lower()
    if lowered == "file":
        return "file", None
    if lowered in ("dir", "cdir", "pdir"):
        return "dir", None
    link = _MLSD_LINK.fullmatch(type_fact)
    if link is not None:
        return "link", link["target"] or None
    return "other", None


def _decimal(text: str | None) -> int | None:
    """An unsigned ASCII decimal, or None; int() alone would accept signs and spaces."""
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _parse_time_val(text: str | None) -> datetime | None:
    """A UTC time-val with fractions dropped, or None if absent or impossible."""
    if text is None or _TIME_VAL.fullmatch(text) is None:
        return None
    moment = parse_mdtm_value(text)
    return None if moment is None else moment.replace(microsecond=0)


def parse_mlsd_line(line: str) -> RemoteEntry:
    """Parse one MLSD line (or the MLST fact line without its leading space).

    The facts contain no spaces (RFC 3659 §7.2), so the name is everything
    after the first space, spaces and semicolons included. A fact that is
    present but unreadable (a bad size or modify value) leaves that field None
    rather than losing the entry; it stays available in ``facts``. Without a type
    fact the kind is "unknown": callers that need it must not take it for a file.
    """
    line = line.removesuffix("\n").removesuffix("\r")
    facts_text, space, name = line.partition(" ")
    if not space:
        raise MlsdSyntaxError(f"no space between the facts and the name: {_show(line)}")
    if not name:
        raise MlsdSyntaxError(f"no name after the facts: {_show(line)}")
    facts = _parse_facts(facts_text)
    kind, target = _mlsd_kind(facts.get("type"))
    size = _decimal(facts["size"] if "size" in facts else facts.get("sizd"))
    mtime = _parse_time_val(facts.get("modify"))
    return RemoteEntry(
        name=name,
        kind=kind,
        size=size,
        mtime=mtime,
        mtime_precision="second" if mtime is not None else None,
        link_target=target,
        facts=facts,
        permissions=facts.get("perm"),
    )


def parse_mlsd(text: str) -> RemoteListing:
    """Entries of an MLSD listing, without cdir/pdir entries and blank lines.

    Raises MlsdSyntaxError for a malformed line: MLSD has one defined format,
    so a line outside it means the data is not MLSD output at all.
    """
    entries = []
    for line in _lines(text):
        if not line.strip(" "):
            continue
        entry = parse_mlsd_line(line)
        if not entry.is_self_or_parent:
            entries.append(entry)
    return RemoteListing(entries)


# --- LIST ----------------------------------------------------------------------


def _utc(now: datetime) -> datetime:
    """``now`` in UTC; a naive datetime is taken to be UTC already."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _recent_date(month: int, day: int, hour: int, minute: int, now: datetime) -> datetime | None:
    """The latest year in which the date is not more than a day after ``now``, as ls does."""
    try:
        limit = _utc(now) + _FUTURE_SLACK
    except OverflowError:  # now is within a day of datetime.max
        limit = _utc(now)
    for year in range(limit.year, max(limit.year - _YEARS_BACK, 0), -1):
        try:
            candidate = datetime(year, month, day, hour, minute, tzinfo=UTC)
        except ValueError:  # Feb 29 in a common year, or no such date at all
            continue
        if candidate <= limit:
            return candidate
    return None


def _unix_time(match: re.Match[str], now: datetime) -> tuple[datetime, Precision] | None:
    month = _MONTH_NUMBERS[match["month"].lower()]
    day = int(match["day"])
    if match["year"] is not None:
        try:
            return datetime(int(match["year"]), month, day, tzinfo=UTC), "day"
        except ValueError:
            return None
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        return None
    moment = _recent_date(month, day, hour, minute, now)
    return None if moment is None else (moment, "minute")


def _iso_time(match: re.Match[str]) -> tuple[datetime, Precision] | None:
    """A long-iso time (taken as UTC, as other LIST times) or a full-iso one (its zone)."""
    year, month, day, hour, minute = (
        int(match[name]) for name in ("year", "month", "day", "hour", "minute")
    )
    second = match["second"]
    try:
        moment = datetime(year, month, day, hour, minute, int(second or 0), tzinfo=UTC)
    except ValueError:  # no such date or time (24:00, 23:59:60 among them)
        return None
    if second is None:
        return moment, "minute"
    zone = match["zone"]
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:]))
    try:
        return (moment - offset if zone[0] == "+" else moment + offset), "second"
    except OverflowError:  # within a day of year 1 or 9999
        return None


def _unix_entry(
    match: re.Match[str], time: tuple[datetime, Precision] | None
) -> RemoteEntry | None:
    if time is None:
        return None  # an impossible date: not a listing line after all
    kind = _UNIX_KINDS.get(match["type"], "other")
    name, target = match["name"], None
    if kind == "link":
        # ls cannot escape " -> ", so a link whose name contains it is ambiguous;
        # the first arrow is the usual reading.
        name, arrow, target_text = name.partition(" -> ")
        target = target_text if arrow else None
    if not name:
        return None
    size_text = match["size"]
    return RemoteEntry(
        name=name,
        kind=kind,
        size=None if "," in size_text else int(size_text),  # "major, minor" of a device
        mtime=time[0],
        mtime_precision=time[1],
        link_target=target,
        permissions=match["mode"],
    )


def _dos_hour(hour: int, half: str | None) -> int | None:
    """24-hour clock from "HH" and an optional AM/PM; None if out of range."""
    if half is None:
        return hour if hour <= 23 else None
    if not 1 <= hour <= 12:
        return None
    return hour % 12 + (12 if half.upper() == "PM" else 0)


def _dos_entry(match: re.Match[str]) -> RemoteEntry | None:
    year = int(match["year"])
    if len(match["year"]) == 2:
        year += 1900 if year >= 69 else 2000  # the POSIX strptime %y pivot
    hour = _dos_hour(int(match["hour"]), match["half"])
    if hour is None:
        return None
    month, day, minute = int(match["month"]), int(match["day"]), int(match["minute"])
    try:
        mtime = datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:
        return None
    is_dir = match["dir"] is not None
    return RemoteEntry(
        # The name's column depends on the server, so its leading spaces cannot
        # be told from padding and are lost.
        name=match["name"],
        kind="dir" if is_dir else "file",
        size=None if is_dir else int(match["size"].replace(",", "")),
        mtime=mtime,
        mtime_precision="minute",
    )


def parse_list_line(line: str, now: datetime) -> RemoteEntry | None:
    """Parse one LIST line, ``ls -l`` (month names or ISO dates) or DOS style; None for
    anything else.

    ``now`` decides the year of ``ls`` dates given as "Mon DD HH:MM". Lines
    such as "total 12", blank lines and garbage give None rather than an error,
    since LIST output has no grammar that would make them wrong.
    """
    line = line.removesuffix("\n").removesuffix("\r")
    unix = _UNIX_LINE.fullmatch(line)
    if unix is not None:
        return _unix_entry(unix, _unix_time(unix, now))
    iso = _UNIX_ISO_LINE.fullmatch(line)
    if iso is not None:
        return _unix_entry(iso, _iso_time(iso))
    dos = _DOS_LINE.fullmatch(line)
    if dos is not None:
        return _dos_entry(dos)
    return None


def _is_no_entry(line: str) -> bool:
    """A line that stands for no entry: blank, or "total 12" in some language."""
    return not line.strip() or _TOTAL_LINE.fullmatch(line) is not None


def parse_list(text: str, now: datetime) -> RemoteListing:
    """Entries of a LIST listing, without "." and ".." and lines that are not entries.

    The lines that are neither entries nor blank or "total" lines (a date in
    the server's language, a format not known here) are kept in
    ``unreadable``, for the caller to report.
    """
    entries = []
    unreadable = []
    for line in _lines(text):
        entry = parse_list_line(line, now)
        if entry is None:
            if not _is_no_entry(line):
                unreadable.append(line)
        elif not entry.is_self_or_parent:
            entries.append(entry)
    return RemoteListing(entries, unreadable)
