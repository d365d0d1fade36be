"""Read what LIST, MLSD and MLST show from the disk: one ``lstat`` per name, in one pass.

Called by :class:`~ketch.server.filesystem.LocalFilesystem` with places it
has already checked against the jail (see ``Jail.place``), and by the
listing workers (see listing_worker) with a directory descriptor the server
opened the same way; nothing here resolves client input, and every call is
relative to a held directory.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator
from typing import Literal

from ketch.protocol.listing import ListLineMaker
from ketch.protocol.mlsx import MlsxEntry
from ketch.server.jail import UPLOAD_TEMP_PREFIX, Place, link_stays_inside, virtual_path_in

__all__ = [
    "LinkTarget",
    "ScannedEntry",
    "directory_names",
    "list_lines_of",
    "mlsx_entries_of",
    "mlsx_entry",
    "open_listed",
    "scan_directory",
    "scan_names",
    "shown_link_target",
]

_S_IFMT = 0o170000
_S_IFREG, _S_IFDIR, _S_IFLNK = 0o100000, 0o040000, 0o120000
Kind = Literal["file", "dir", "link", "other"]
_KINDS: dict[int, Kind] = {_S_IFREG: "file", _S_IFDIR: "dir", _S_IFLNK: "link"}
#: What to show for a link: called with its name and its directory's descriptor.
LinkTarget = Callable[[str, int], "str | None"]
#: One directory entry as read: name, its lstat, its kind, and a link's shown target.
ScannedEntry = tuple[str, os.stat_result, Kind, "str | None"]
# The checked name was resolved: a symlink there now was swapped in, and is not followed.
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


def open_listed(place: Place) -> int:
    """A descriptor for reading the entries of the directory at ``place``; the caller closes it."""
    return os.open(place.name, _LIST_FLAGS, dir_fd=place.dir_fd)


def shown_link_target(name: str, dir_fd: int, home: str, directory: str | None) -> str | None:
    """What a listing shows after "->" for the link ``name``, without revealing real paths.

    ``directory`` is the real path of the link's directory (``dir_fd``), None
    when unknown. A target is shown only when it stays inside the real
    ``home`` (see ``link_stays_inside``): a relative one as written, an
    absolute one as its virtual path. Any other is hidden, so a listing names
    nothing outside the home.
    """
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None
    if not link_stays_inside(home, directory, target):
        return None
    return virtual_path_in(home, target) if os.path.isabs(target) else target


def mlsx_entry(name: str, info: os.stat_result, link_target: str | None) -> MlsxEntry:
    kind = _KINDS.get(info.st_mode & _S_IFMT, "other")
    return MlsxEntry(
        name,
        kind,
        info.st_size,
        info.st_mtime,
        info.st_mode,
        info.st_dev,
        info.st_ino,
        link_target if kind == "link" else None,
    )


def directory_names(directory: int) -> list[str]:
    """The names a listing shows of the directory open at ``directory``, sorted.

    ``listdir`` rather than ``scandir``, whose DirEntry objects cost more than
    they save here, and bare names sort quicker than entries by key. Uploads
    in progress (see atomic_file) are never shown: sorted, they sit together,
    so they are cut out without a look at every name.
    """
    names = os.listdir(directory)
    names.sort()
    start = end = bisect.bisect_left(names, UPLOAD_TEMP_PREFIX)
    while end < len(names) and names[end].startswith(UPLOAD_TEMP_PREFIX):
        end += 1
    del names[start:end]
    return names


def scan_names(directory: int, names: list[str], link_target: LinkTarget) -> Iterator[ScannedEntry]:
    """``(name, lstat, kind, link target)`` for each of ``names`` in the directory open at
    ``directory``.

    One ``lstat`` per name relative to the directory's descriptor: no path
    lookup from the root each time. Entries that vanish meanwhile are skipped;
    any other failure (EACCES: the directory is not searchable, so no entry
    could be looked at) is raised, rather than passed off as an empty listing.
    ``link_target(name, dir_fd)`` says what to show for a link (see
    ``shown_link_target``). LIST and MLSD both read directories through this
    one loop.
    """
    kinds = _KINDS
    lstat = os.lstat
    for name in names:
        try:
            info = lstat(name, dir_fd=directory)
        except FileNotFoundError:
            continue
        kind = kinds.get(info.st_mode & _S_IFMT, "other")
        target = link_target(name, directory) if kind == "link" else None
        yield name, info, kind, target


def scan_directory(place: Place, link_target: LinkTarget) -> Iterator[ScannedEntry]:
    """``scan_names`` of every name ``directory_names`` shows of the directory at ``place``."""
    directory = open_listed(place)
    try:
        yield from scan_names(directory, directory_names(directory), link_target)
    finally:
        os.close(directory)


def list_lines_of(entries: Iterator[ScannedEntry], now: float) -> list[str]:
    """LIST's ``ls -l`` lines of scanned entries: each lstat goes straight into its line.

    A big directory's LIST costs a tenth less than making FileFacts first
    (see ListLineMaker).
    """
    line = ListLineMaker(now).line
    return [
        line(name, kind, info.st_size, info.st_mtime, info.st_mode, info.st_nlink, target)
        for name, info, kind, target in entries
    ]


def mlsx_entries_of(entries: Iterator[ScannedEntry]) -> list[MlsxEntry]:
    """The MLSD entries of scanned entries, in their order."""
    make = tuple.__new__  # MlsxEntry(...) without its Python-level constructor (half the cost)
    return [
        make(
            MlsxEntry,
            (
                name,
                kind,
                info.st_size,
                info.st_mtime,
                info.st_mode,
                info.st_dev,
                info.st_ino,
                target,
            ),
        )
        for name, info, kind, target in entries
    ]
