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
from typing import IO

from ketch.client.errors import DataConnectionFailed

__all__ = ["DataStream"]

_SENDFILE_CHUNK = 4 * 1024 * 1024  # progress and stall checks happen per chunk


class DataStream:
    """One data connection; every wait is bounded by ``stall_timeout``."""

    def __init__(self, sock: socket.socket, *, mode: str, stall_timeout: float) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self.mode = mode  # EPSV, PASV, EPRT or PORT: what made this connection
        self.stall_timeout = stall_timeout
        peer = sock.getpeername()
        self.peer = f"{peer[0]}:{peer[1]}"

    async def recv_into(self, buffer: memoryview) -> int:
        """Read some bytes into ``buffer``; 0 means the server finished sending."""
        try:
            async with asyncio.timeout(self.stall_timeout):
                return await self._loop.sock_recv_into(self._sock, buffer)
        except TimeoutError:
            raise self._stalled("received") from None
        except OSError as error:
            raise self._broken(error) from None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            async with asyncio.timeout(self.stall_timeout):
                await self._loop.sock_sendall(self._sock, data)
        except TimeoutError:
            raise self._stalled("accepted") from None
        except OSError as error:
            raise self._broken(error) from None

    async def send_file_chunk(self, file: IO[bytes], offset: int) -> int:
        """Send up to one chunk of ``file`` from ``offset``; returns bytes sent (0 at EOF)."""
        try:
            async with asyncio.timeout(self.stall_timeout):
                return await self._loop.sock_sendfile(
                    self._sock, file, offset, _SENDFILE_CHUNK, fallback=True
                )
        except TimeoutError:
            raise self._stalled("accepted") from None
        except OSError as error:
            raise self._broken(error) from None

    def close(self) -> None:
        """Close; for an upload this is the end-of-file the server waits for."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def abort(self) -> None:
        """Close at once with a reset, so the server's transfer ends now."""
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._sock.close()

    def _stalled(self, verb: str) -> DataConnectionFailed:
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
