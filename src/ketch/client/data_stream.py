"""An established data connection: a non-blocking socket and bounded waits.

Raw sockets with the loop's ``sock_*`` calls rather than asyncio streams, so a
download reads into one preallocated buffer and an upload from a file goes
through ``os.sendfile`` instead of being copied through Python objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable
from typing import IO, TypeVar

from ketch.client.errors import DataConnectionFailed

__all__ = ["DataStream"]

T = TypeVar("T")

# A stall is a single call that waits too long, so one call must be able to
# finish within the stall timeout on a slow link: 256 KiB in 60 s is 4.4 KB/s.
_SENDFILE_CHUNK = 256 * 1024


class DataStream:
    """One data connection; a wait with no progress for ``stall_timeout`` fails.

    One timer per transfer looks at the current wait every ``stall_timeout``
    at most, instead of a timeout per chunk on the hot path.
    """

    def __init__(self, sock: socket.socket, *, mode: str, stall_timeout: float) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self.mode = mode  # EPSV, PASV, EPRT or PORT: what made this connection
        self.stall_timeout = stall_timeout
        peer = sock.getpeername()
        self.peer = f"{peer[0]}:{peer[1]}"
        self._waiting: asyncio.Task[object] | None = None
        self._waiting_since = 0.0
        self._stalled = False
        self._watchdog = self._loop.call_later(stall_timeout, self._check)

    def _check(self) -> None:
        """Cancel a wait that has lasted ``stall_timeout``; otherwise look again later."""
        delay = self.stall_timeout
        if self._waiting is not None:
            waited = self._loop.time() - self._waiting_since
            if waited >= self.stall_timeout:
                self._stalled = True
                self._waiting.cancel()
                return
            delay -= waited
        self._watchdog = self._loop.call_later(delay, self._check)

    async def _guarded(self, operation: Awaitable[T], verb: str) -> T:
        task = asyncio.current_task()
        self._waiting = task
        self._waiting_since = self._loop.time()
        try:
            result = await operation
        except asyncio.CancelledError:
            if self._stalled and task is not None and task.uncancel() == 0:
                raise self._stall_error(verb) from None
            raise
        except OSError as error:
            raise self._broken(error) from None
        finally:
            self._waiting = None
        return result

    async def recv_into(self, buffer: memoryview) -> int:
        """Read some bytes into ``buffer``; 0 means the server finished sending."""
        return await self._guarded(self._loop.sock_recv_into(self._sock, buffer), "received")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._guarded(self._loop.sock_sendall(self._sock, data), "accepted")

    async def send_file_chunk(self, file: IO[bytes], offset: int) -> int:
        """Send up to one chunk of ``file`` from ``offset``; returns bytes sent (0 at EOF)."""
        sending = self._loop.sock_sendfile(self._sock, file, offset, _SENDFILE_CHUNK, fallback=True)
        return await self._guarded(sending, "accepted")

    def close(self) -> None:
        """Close; for an upload this is the end-of-file the server waits for."""
        self._watchdog.cancel()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def abort(self) -> None:
        """Close at once with a reset, so the server's transfer ends now."""
        self._watchdog.cancel()
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._sock.close()

    def _stall_error(self, verb: str) -> DataConnectionFailed:
        return DataConnectionFailed(
            f"data connection to {self.peer} stalled: nothing {verb} for {self.stall_timeout:g} s",
            "the network or the server stopped moving data; try again (-c resumes a download)",
            mode=self.mode,
            address=self.peer,
        )

    def _broken(self, error: OSError) -> DataConnectionFailed:
        reason = error.strerror or os.strerror(error.errno or 0) or str(error)
        return DataConnectionFailed(
            f"data connection to {self.peer} broke: {reason}",
            "try again (-c resumes a download)",
            mode=self.mode,
            address=self.peer,
        )
