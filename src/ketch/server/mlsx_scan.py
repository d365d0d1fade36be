"""Read what MLSD and MLST show from the disk: one ``lstat`` per name, in one pass.

Called by :class:`~ketch.server.filesystem.LocalFilesystem` with places it
has already checked against the jail (see ``Jail.place``); nothing here
resolves client input, and every call is relative to a held directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Literal

from ketch.protocol.mlsx import MlsxEntry
from ketch.server.jail import UPLOAD_TEMP_PREFIX, Place

__all__ = ["ScannedEntry", "mlsx_entry", "scan_directory", "scan_mlsx"]

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


def scan_directory(place: Place, link_target: LinkTarget) -> Iterator[ScannedEntry]:
    """``(name, lstat, kind, link target)`` for each entry of the directory at ``place``.

    Names are sorted first (bare names sort quicker than entries by key), then
    each gets one ``lstat`` relative to the directory's descriptor: no path
    lookup from the root each time, and ``listdir`` rather than ``scandir``,
    whose DirEntry objects cost more than they save here. Entries that vanish
    or cannot be stat'ed meanwhile are skipped, and uploads in progress (see
    atomic_file) are never shown. ``link_target(name, dir_fd)`` says what to show
    for a link (the jail hides absolute targets outside the home). LIST and
    MLSD both read directories through this one loop.
    """
    kinds = _KINDS
    lstat = os.lstat
    directory = os.open(place.name, _LIST_FLAGS, dir_fd=place.dir_fd)
    try:
        names = os.listdir(directory)
        names.sort()
        for name in names:
            if name.startswith(UPLOAD_TEMP_PREFIX):
                continue
            try:
                info = lstat(name, dir_fd=directory)
            except OSError:
                continue
            kind = kinds.get(info.st_mode & _S_IFMT, "other")
            target = link_target(name, directory) if kind == "link" else None
            yield name, info, kind, target
    finally:
        os.close(directory)


def scan_mlsx(place: Place, link_target: LinkTarget) -> list[MlsxEntry]:
    """The MLSD entries of the directory at ``place``, sorted by name."""
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
        for name, info, kind, target in scan_directory(place, link_target)
    ]
