"""Machine-readable listings (RFC 3659 §7): MLST and MLSD facts, written and selected.

Everything here is pure: the server hands in what it found on disk (one
:class:`MlsxEntry` per name) and what the account may do (:class:`Access`),
and gets back the exact text of the fact lines. The facts ketch offers are
``type``, ``size``, ``modify``, ``perm``, ``unique`` and ``UNIX.mode``; a
client picks a subset with ``OPTS MLST`` (§7.9) and FEAT marks the selected
ones with ``*``.

Decisions where the RFC leaves a choice:

* A symbolic link is listed as a link, not as its target: ``type=OS.unix=slink``
  with ``:target`` appended when the target is shown in LIST too (it stays
  inside the home) and is made only of characters a fact value may hold. Its
  target is not followed, so a link cannot reveal facts about files outside
  the home. FIFOs, sockets and devices are ``OS.unix=fifo``, ``socket``,
  ``chr`` and ``blk``.
* ``size`` is given for regular files only: the size of a directory or link
  is not something a client can transfer.
* ``modify`` is whole seconds, UTC (MFMT sets no more than that either).
* ``perm`` comes from the account's permissions, not from the mode bits: it
  says what the server will allow this user, which is what §7.5.5 asks. The
  home (named "/") is never removed or renamed, so it has no ``d`` or ``f``;
  FIFOs, sockets and devices are never transferred, so they have only those two.
* ``unique`` is ``<st_dev>g<st_ino>`` in hex, so hard links share it.
"""

from __future__ import annotations

import calendar
import math
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ketch.protocol.commands import encode_text
from ketch.protocol.listing import format_mdtm

__all__ = [
    "FACT_NAMES",
    "Access",
    "MlsxEntry",
    "fact_line",
    "format_mlsd",
    "mlst_feature",
    "mlst_reply_lines",
    "opts_mlst_reply",
    "parse_time_val",
    "select_facts",
]

#: Every fact ketch can give, in the order FEAT and every fact line show them.
FACT_NAMES: tuple[str, ...] = ("type", "size", "modify", "perm", "unique", "UNIX.mode")
_BY_LOWER = {name.lower(): name for name in FACT_NAMES}

# RFC 3659 §7.1 RCHAR: what a fact value may hold (no space, ";" or "=").
_FACT_VALUE = re.compile(r"[A-Za-z0-9,.:!@#$%^&()\-_+?/\\'\"]+")
# RFC 3659 §2.3 time-val: 14 digits, optionally a fraction of a second.
_TIME_VAL = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})(\.[0-9]+)?")
_SPECIAL_TYPES = {
    stat.S_IFIFO: "OS.unix=fifo",
    stat.S_IFSOCK: "OS.unix=socket",
    stat.S_IFCHR: "OS.unix=chr",
    stat.S_IFBLK: "OS.unix=blk",
}


class MlsxEntry(NamedTuple):
    """What the facts of one name are made from (``lstat``: links are not followed)."""

    name: str  # "/" for the home itself; may contain surrogate escapes (names not UTF-8)
    kind: Literal["file", "dir", "link", "other"]
    size: int
    mtime: float  # POSIX seconds, UTC
    mode: int  # st_mode
    dev: int
    ino: int
    link_target: str | None = None  # as LIST shows it; None when hidden or unreadable


@dataclass(frozen=True)
class Access:
    """What the account may do, as far as the ``perm`` fact is concerned."""

    list: bool = False
    read: bool = False
    write: bool = False
    append: bool = False
    delete: bool = False
    rename: bool = False
    mkdir: bool = False
    rmdir: bool = False

    def file_perm(self) -> str:
        """§7.5.5 letters for a file: a(ppend) d(elete) f(rename) r(etrieve) w(rite)."""
        return _letters(
            ("a", self.append), ("d", self.delete), ("f", self.rename),
            ("r", self.read), ("w", self.write),
        )  # fmt: skip

    def dir_perm(self) -> str:
        """§7.5.5 letters for a directory: c(reate files) d(elete) e(nter) f(rename)
        l(ist) m(ake directories) p(urge: delete files in it)."""
        return _letters(
            ("c", self.write), ("d", self.rmdir), ("e", self.list), ("f", self.rename),
            ("l", self.list), ("m", self.mkdir), ("p", self.delete),
        )  # fmt: skip

    def home_perm(self) -> str:
        """``dir_perm`` without d and f for the home: no session may remove or rename it."""
        return _letters(
            ("c", self.write), ("e", self.list), ("l", self.list), ("m", self.mkdir),
            ("p", self.delete),
        )  # fmt: skip

    def link_perm(self) -> str:
        """A link itself can only be deleted or renamed; what its target allows is not shown."""
        return _letters(("d", self.delete), ("f", self.rename))

    def special_perm(self) -> str:
        """A FIFO, socket or device can be deleted or renamed; RETR and STOR refuse it."""
        return _letters(("d", self.delete), ("f", self.rename))


def _letters(*pairs: tuple[str, bool]) -> str:
    return "".join(letter for letter, granted in pairs if granted)


# -- selection (OPTS MLST, FEAT) ------------------------------------------------


def select_facts(text: str) -> tuple[str, ...]:
    """The facts an ``OPTS MLST`` argument selects, in canonical order and spelling.

    Names compare case-insensitively; unknown names are ignored and an empty
    argument selects none, both as RFC 3659 §7.9 says.
    """
    wanted = {_BY_LOWER.get(name.strip().lower()) for name in text.split(";")}
    return tuple(name for name in FACT_NAMES if name in wanted)


def mlst_feature(selected: Iterable[str]) -> str:
    """The FEAT line, e.g. ``MLST type*;size*;modify;...`` (``*``: selected now)."""
    chosen = set(selected)
    return "MLST " + "".join(f"{name}{'*' if name in chosen else ''};" for name in FACT_NAMES)


def opts_mlst_reply(selected: Iterable[str]) -> str:
    """The 200 reply text to OPTS MLST: ``MLST OPTS type;size;`` (RFC 3659 §7.9)."""
    facts = "".join(f"{name};" for name in selected)
    return f"MLST OPTS {facts}" if facts else "MLST OPTS"


# -- writing facts ----------------------------------------------------------------


def _type_value(entry: MlsxEntry, own_type: str | None) -> str:
    if own_type is not None:
        return own_type
    kind = entry.kind
    if kind == "file" or kind == "dir":
        return kind
    if kind == "link":
        target = entry.link_target
        if target and _FACT_VALUE.fullmatch(target):
            return f"OS.unix=slink:{target}"
        return "OS.unix=slink"
    return _SPECIAL_TYPES.get(stat.S_IFMT(entry.mode), "OS.unix=special")


def _perm_value(entry: MlsxEntry, access: Access) -> str:
    if entry.kind == "file":
        return access.file_perm()
    if entry.kind == "dir":
        return access.home_perm() if entry.name == "/" else access.dir_perm()
    if entry.kind == "link":
        return access.link_perm()
    return access.special_perm()


def fact_line(
    entry: MlsxEntry, selected: Iterable[str], access: Access, *, own_type: str | None = None
) -> str:
    """The facts of one entry, e.g. ``type=file;size=5;modify=20240101000000;`` (no name).

    ``own_type`` replaces the type (``cdir`` for the listed directory itself).
    A fact that does not apply to the entry (``size`` of a directory) is left out.
    """
    parts: list[str] = []
    for name in selected:
        if name == "type":
            parts.append(f"type={_type_value(entry, own_type)};")
        elif name == "size":
            if entry.kind == "file":
                parts.append(f"size={entry.size};")
        elif name == "modify":
            parts.append(f"modify={format_mdtm(entry.mtime)};")
        elif name == "perm":
            parts.append(f"perm={_perm_value(entry, access)};")
        elif name == "unique":
            parts.append(f"unique={entry.dev:x}g{entry.ino:x};")
        elif name == "UNIX.mode":
            parts.append(f"UNIX.mode={stat.S_IMODE(entry.mode):04o};")
    return "".join(parts)


def _one_line(name: str) -> str:
    """CR or LF in a name would end the line early: shown as "?" (as LIST does)."""
    if "\n" in name or "\r" in name:
        return name.replace("\r", "?").replace("\n", "?")
    return name


def mlst_reply_lines(
    entry: MlsxEntry, path: str, selected: Iterable[str], access: Access
) -> list[str]:
    """The 250 reply body of MLST: the fact line starts with one space (RFC 3659 §7.2)."""
    facts = fact_line(entry, selected, access)
    return [f"Listing {_one_line(path)}", f" {facts} {_one_line(path)}", "End"]


def format_mlsd(
    entries: Iterable[MlsxEntry],
    selected: Iterable[str],
    access: Access,
    *,
    listed: MlsxEntry | None = None,
) -> bytes:
    """The MLSD payload: ``listed`` as ``type=cdir`` named ".", then each entry.

    Lines end with CRLF and the whole is encoded once. Entries of a directory
    mostly share their fact text apart from size, time and unique, so the
    time text is kept per second and the perm text per kind: 10,000 entries
    take a few milliseconds.
    """
    selected = tuple(selected)
    lines: list[str] = []
    if listed is not None:
        lines.append(f"{fact_line(listed, selected, access, own_type='cdir')} .")
    perms = {
        "file": access.file_perm(),
        "dir": access.dir_perm(),
        "link": access.link_perm(),
        "other": access.special_perm(),
    }
    if selected == FACT_NAMES:
        _all_fact_lines(entries, perms, lines)
    else:
        _selected_fact_lines(entries, selected, perms, lines)
    if not lines:
        return b""
    lines.append("")
    return encode_text("\r\n".join(lines))


def _selected_fact_lines(
    entries: Iterable[MlsxEntry], selected: tuple[str, ...], perms: dict[str, str], lines: list[str]
) -> None:
    """The lines with the facts OPTS MLST selected."""
    want_type, want_size, want_modify, want_perm, want_unique, want_mode = (
        name in selected for name in FACT_NAMES
    )
    times: dict[int, str] = {}
    append = lines.append
    for entry in entries:
        name, kind, size, mtime, mode, dev, ino, _ = entry
        text = ""
        if want_type:
            text = (
                f"type={kind};" if kind in ("file", "dir") else f"type={_type_value(entry, None)};"
            )
        if want_size and kind == "file":
            text += f"size={size};"
        if want_modify:
            text += f"modify={_cached_time(times, mtime)};"
        if want_perm:
            text += f"perm={perms[kind]};"
        if want_unique:
            text += f"unique={dev:x}g{ino:x};"
        if want_mode:
            text += f"UNIX.mode={mode & 0o7777:04o};"
        if "\n" in name or "\r" in name:
            name = _one_line(name)
        append(f"{text} {name}")


def _all_fact_lines(entries: Iterable[MlsxEntry], perms: dict[str, str], lines: list[str]) -> None:
    """The lines with every fact (the default selection) in one f-string each, for speed.

    What entries share is made once: the time text per second, the ``UNIX.mode``
    fact per mode, and a file's ``perm`` fact with the device half of ``unique``
    per device (one for a whole directory, as a rule).
    """
    times: dict[int, str] = {}
    modes: dict[int, str] = {}
    file_facts: dict[int, str] = {}
    file_perm = perms["file"]
    append = lines.append
    for entry in entries:
        name, kind, size, mtime, mode, dev, ino, _ = entry
        if 0 <= mtime < 1e11:  # the usual range, where int() is floor(); NaN fails the test
            second = int(mtime)
            when = times.get(second)
            if when is None:
                when = times[second] = format_mdtm(mtime)
        else:
            when = format_mdtm(mtime)
        mode_fact = modes.get(mode)
        if mode_fact is None:
            mode_fact = modes[mode] = f"UNIX.mode={mode & 0o7777:04o};"
        if "\n" in name or "\r" in name:
            name = _one_line(name)
        if kind == "file":
            perm_and_device = file_facts.get(dev)
            if perm_and_device is None:
                perm_and_device = file_facts[dev] = f"perm={file_perm};unique={dev:x}g"
            append(
                f"type=file;size={size};modify={when};{perm_and_device}{ino:x};{mode_fact} {name}"
            )
        else:
            append(
                f"type={_type_value(entry, None)};modify={when};perm={perms[kind]};"
                f"unique={dev:x}g{ino:x};{mode_fact} {name}"
            )


def _cached_time(times: dict[int, str], mtime: float) -> str:
    """``format_mdtm`` kept per whole second: entries of a directory share few seconds."""
    try:
        second = math.floor(mtime)
    except (ValueError, OverflowError):  # NaN or infinite: clamped, not cached
        return format_mdtm(mtime)
    shown = times.get(second)
    if shown is None:
        shown = times[second] = format_mdtm(mtime)
    return shown


# -- reading a time-val (MFMT) ------------------------------------------------------


def parse_time_val(text: str) -> float | None:
    """POSIX seconds for an RFC 3659 time-val (UTC), or None if it is not a valid one."""
    match = _TIME_VAL.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(group) for group in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(max(year, 1), month)[1]):
        return None
    if year < 1 or hour > 23 or minute > 59 or second > 60:  # 60: a leap second, as §2.3 allows
        return None
    fraction = float(match.group(7)) if match.group(7) else 0.0
    return calendar.timegm((year, month, day, hour, minute, min(second, 59))) + fraction
