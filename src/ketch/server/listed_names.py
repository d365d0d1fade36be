"""The names of big directories lately listed, while the directories stay unchanged.

Reading and sorting a directory's names is the one step of a big listing
that cannot be split between listing workers: for 10,000 entries, some 7 ms
that every other part waits for. A directory listed again and again (a
mirror polling it, a client refreshing its view) mostly has not changed
since, and the kernel says so: on a local file system any entry created,
removed or renamed in it sets its ctime to the current time, which no
program can set back. So the names are kept with the directory's identity
and ctime, mtime and size, and used again while ``fstat`` of the directory
still shows those. Every entry is still ``lstat``-ed afresh: sizes and dates
never come from here.

One race is left: a change made in the same clock tick as the ``fstat``
would not move the ctime. Names are therefore only kept for directories
whose ctime is ``SETTLED_NS`` in the past when they are read, so any later
change gets a ctime of its own (unless the system clock is set back by more
than that). File systems that do not keep ctime so (some FUSE ones, such as
sshfs; NFS whose server clock lags this one's by more than ``SETTLED_NS``)
could show a listing without a change until the next one: ``listing_cache =
false`` is for them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["MAX_DIRECTORIES", "MAX_NAME_BYTES", "SETTLED_NS", "ListedNames"]

#: How long a directory must have gone unchanged before its names are kept.
SETTLED_NS = 2_000_000_000
#: Most directories whose names are kept; the least lately listed go first.
MAX_DIRECTORIES = 64
#: Most bytes of names kept in all; a directory with more is not kept at all.
MAX_NAME_BYTES = 32 * 1024 * 1024

_Identity = tuple[int, int]  # st_dev, st_ino
_Version = tuple[int, int, int]  # st_ctime_ns, st_mtime_ns, st_size


class ListedNames:
    """Names of directories by identity, each as the listing's parts (bytes as sent to workers)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock  # wall-clock ns, as ctimes are
        # In the order last used, so the first entry is the one to drop.
        self._kept: dict[_Identity, tuple[_Version, list[bytes]]] = {}
        self._bytes = 0

    def kept_parts(self, directory: os.stat_result, parts: int) -> list[bytes] | None:
        """The kept parts of ``directory`` (its fstat) if it is unchanged and was cut so."""
        identity = (directory.st_dev, directory.st_ino)
        kept = self._kept.pop(identity, None)
        if kept is None:
            return None
        version, names = kept
        if version != _version_of(directory) or len(names) != parts:
            self._bytes -= sum(map(len, names))
            return None
        self._kept[identity] = kept  # now the most lately used
        return names

    def may_keep(self, directory: os.stat_result) -> bool:
        """Whether names read from ``directory`` now could be kept (see ``SETTLED_NS``)."""
        return self._clock() - directory.st_ctime_ns > SETTLED_NS

    def keep(self, directory: os.stat_result, names: list[bytes]) -> None:
        """Keep the parts ``names``, read after ``directory`` was fstat-ed (and ``may_keep``)."""
        identity = (directory.st_dev, directory.st_ino)
        old = self._kept.pop(identity, None)
        if old is not None:
            self._bytes -= sum(map(len, old[1]))
        size = sum(map(len, names))
        if size > MAX_NAME_BYTES:
            return
        while self._kept and (
            len(self._kept) >= MAX_DIRECTORIES or self._bytes + size > MAX_NAME_BYTES
        ):
            dropped = self._kept.pop(next(iter(self._kept)))
            self._bytes -= sum(map(len, dropped[1]))
        self._kept[identity] = (_version_of(directory), names)
        self._bytes += size

    def clear(self) -> None:
        self._kept.clear()
        self._bytes = 0


def _version_of(directory: os.stat_result) -> _Version:
    return directory.st_ctime_ns, directory.st_mtime_ns, directory.st_size
