"""Waiting for a socket to be readable or writable, registered once for a whole transfer loop.

A transfer loop moves data for as long as the kernel takes it and waits when
it would block. Over a fast link that is thousands of waits per GiB, and
registering with the event loop for each one costs syscalls every time:
uvloop makes and drops a poll handle (seven calls: epoll_ctl four times, an
ioctl, io_uring_enter), asyncio's own loop two epoll_ctl. A ``Readiness``
registers at its first wait and stays registered until its ``with`` block
ends, so a wait is a future and nothing more.

Epoll here is level-triggered: while registered, the callback also runs when
nobody waits, on each loop pass while the socket stays ready (the one pass in
which a woken transfer resumes, or a ``sleep(0)`` that yields to other
sessions). It does nothing then. So a registration must never outlive the
loop into a long pause, such as a rate limit's sleep between pieces, or stay
while the loop awaits something else (``release`` first): the event loop would
call it on every pass. The ``with`` block is the loop, nothing longer.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Readiness"]


class Readiness:
    """Waits until one socket is ready to read (or, with ``write``, to write)."""

    __slots__ = ("_fd", "_loop", "_registered", "_waiter", "_write")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
        self._loop = loop
        self._fd = fd
        self._write = write
        self._registered = False
        self._waiter: asyncio.Future[None] | None = None

    def __enter__(self) -> Readiness:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Drop the registration now, before awaiting anything else (the next wait renews it).

        The socket must still be open: its descriptor number, once closed, may
        belong to another connection, whose registration this would remove. The
        data channels close their socket only after the transfer loop has ended.
        """
        if self._registered:
            self._registered = False
            if self._write:
                self._loop.remove_writer(self._fd)
            else:
                self._loop.remove_reader(self._fd)

    async def wait(self) -> None:
        """Until the socket is ready (or has reached end-of-file, or an error, for a reader)."""
        if not self._registered:
            if self._write:
                self._loop.add_writer(self._fd, self._ready)
            else:
                self._loop.add_reader(self._fd, self._ready)
            self._registered = True
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def nudge(self) -> None:
        """End the current wait as if the socket were ready (the loop then looks itself)."""
        self._ready()

    def _ready(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
