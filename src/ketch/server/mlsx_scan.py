"""Read what MLSD and MLST show from the disk: one ``lstat`` per name, in one pass.

Called by :class:`~ketch.server.filesystem.LocalFilesystem` with real paths
it has already checked against the jail; nothing here resolves client input.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ketch.protocol.mlsx import MlsxEntry
from ketch.server.jail import UPLOAD_TEMP_PREFIX

__all__ = ["mlsx_entry", "scan_mlsx"]

_S_IFMT = 0o170000
_S_IFREG, _S_IFDIR, _S_IFLNK = 0o100000, 0o040000, 0o120000
_KINDS = {_S_IFREG: "file", _S_IFDIR: "dir", _S_IFLNK: "link"}
LinkTarget = Callable[[str], "str | None"]


def mlsx_entry(name: str, info: os.stat_result, link_target: str | None) -> MlsxEntry:
    kind = _KINDS.get(info.st_mode & _S_IFMT, "other")
    return MlsxEntry(
        name,
        kind,  # type: ignore[arg-type]  # one of the Literal values by construction
        info.st_size,
        info.st_mtime,
        info.st_mode,
        info.st_dev,
        info.st_ino,
        link_target if kind == "link" else None,
    )


def scan_mlsx(real: str, link_target: LinkTarget) -> list[MlsxEntry]:
    """The entries of the real directory ``real``, sorted by name.

    ``link_target(real_path)`` says what to show for a link's target (the
    jail hides absolute targets outside the home). Entries that vanish or
    cannot be stat'ed while the scan runs are skipped, and uploads in
    progress are never shown.
    """
    entries: list[MlsxEntry] = []
    append = entries.append
    kinds = _KINDS
    lstat = os.lstat
    make = tuple.__new__  # MlsxEntry(...) without its Python-level constructor (half the cost)
    directory = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # As LocalFilesystem.list_dir: names sorted first, then one lstat each
        # relative to the directory's descriptor.
        names = os.listdir(directory)
        names.sort()
        for name in names:
            if name.startswith(UPLOAD_TEMP_PREFIX):
                continue
            try:
                info = lstat(name, dir_fd=directory)
            except OSError:
                continue
            mode = info.st_mode
            kind = kinds.get(mode & _S_IFMT, "other")
            target = link_target(os.path.join(real, name)) if kind == "link" else None
            size, mtime, dev, inode = info.st_size, info.st_mtime, info.st_dev, info.st_ino
            append(make(MlsxEntry, (name, kind, size, mtime, mode, dev, inode, target)))
    finally:
        os.close(directory)
    return entries
