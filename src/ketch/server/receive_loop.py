"""The fast upload path: a binary, unthrottled upload straight from the socket to the file.

The data socket is non-blocking. The loop reads with ``recv_into`` into one
preallocated buffer for as long as the kernel has data, writing each piece
to the file's descriptor with ``os.write``; only when the socket would block
does it wait, with one future per *wait*, not per piece, and one reader
registration for the whole upload (see :mod:`ketch.server.readiness`).
Every ``YIELD_EVERY`` bytes read without waiting it still lets the event
loop run, so a client faster than the disk cannot starve other sessions
(or delay its own ABOR).

What the slower, general loop in :mod:`ketch.server.transfers` does stays
true here:

* ``channel.bytes_moved`` grows with every piece (the stall watchdog reads it);
* the meter (upload size limit, quota) is told each piece before it is
  written and may raise to stop the upload with nothing of that piece stored;
* cancellation (ABOR, a stall, shutdown) can only happen at a wait, and the
  reader is removed however the loop ends.

Why not ``splice`` (socket to pipe to file, Linux)? It saves the copy
into user space, but measured on loopback it was no faster than this loop
with a 1 MiB buffer, and it needs a pipe per upload and a fallback for
``O_APPEND`` files (APPE), which splice refuses.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable

from ketch.server.data_channel import YIELD_EVERY, DataChannel

__all__ = ["receive_to_fd"]

# One read takes at most this much; the kernel gives what it has queued.
_BUFFER_SIZE = 1 << 20


async def receive_to_fd(
    channel: DataChannel, fd: int, meter: Callable[[int], None] | None = None
) -> None:
    """Write everything the client sends to ``fd`` until it closes the data connection."""
    sock = channel.sock
    buffer = bytearray(_BUFFER_SIZE)
    view = memoryview(buffer)
    recv_into = sock.recv_into
    write = os.write
    budget = YIELD_EVERY
    with channel.readiness(write=False) as readable:
        while True:
            try:
                count = recv_into(buffer)
            except BlockingIOError:
                await readable.wait()
                budget = YIELD_EVERY
                continue
            if not count:
                return
            channel.bytes_moved += count
            if meter is not None:
                meter(count)
            written = write(fd, view[:count])
            while written < count:  # a short write: the disk filled up (the next write says so)
                more = write(fd, view[written:count])
                if not more:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += more
            budget -= count
            if budget <= 0:
                budget = YIELD_EVERY
                await asyncio.sleep(0)
