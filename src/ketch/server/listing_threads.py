"""Big directory listings are made in a worker thread, so they do not stall other sessions.

Reading and formatting a directory takes about 4 µs per entry, all of it on
the event loop when done inline: a 10,000-entry LIST would hold every other
session for some 40 ms, a 100,000-entry one for most of a second. Small
directories, the usual case, are listed inline, where a thread's hand-off
would cost more than the listing. Whether a directory is big is judged from
its own ``st_size``, which the listing commands have from their first stat
anyway: on ext4 it grows by a 4 KiB block per hundred-odd names, on tmpfs by
some 20 bytes a name, so ``BIG_DIRECTORY`` means roughly 2,000-3,000 entries.
(ZFS reports its entry count instead: there only directories of 64K entries
and more go to a thread.) STAT with a path, whose listing goes over the
control connection, stays inline.

The threads are the listings' own, as hashing's are (see commands/hashing):
the default executor checks passwords, and a burst of big listings must not
hold up logins. What the threads call (the filesystem, the jail, the line
makers) keeps no state between calls, so sessions may share them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["BIG_DIRECTORY", "make_listing"]

#: A directory whose st_size is above this is listed in a worker thread.
BIG_DIRECTORY = 64 * 1024
#: Big listings made at once, per process; more wait their turn.
_THREADS = 2

T = TypeVar("T")


class _ListingThreads:
    """The listing threads of this process, created on first use."""

    executor: ThreadPoolExecutor | None = None


async def make_listing(make: Callable[[], T], directory_size: int) -> T:
    """``make()``, run in a listing thread when the directory is big, else right here."""
    if directory_size <= BIG_DIRECTORY:
        return make()
    if _ListingThreads.executor is None:
        _ListingThreads.executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="ketch-listing")
    return await asyncio.get_running_loop().run_in_executor(_ListingThreads.executor, make)
