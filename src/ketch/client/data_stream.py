"""An established data connection: a non-blocking socket and bounded waits.

Raw sockets with the loop's ``sock_*`` calls rather than asyncio streams, so a
download reads into one preallocated buffer and an upload from a file goes
through ``os.sendfile`` instead of being copied through Python objects.

Under FTPS (PROT P) the socket is wrapped in an ``ssl.SSLSocket`` once the
server has answered the transfer command, resuming the control connection's
TLS session (tls.py). Then there is no sendfile (the kernel cannot encrypt):
file chunks are read into one preallocated buffer and written through TLS,
and closing sends close_notify, which servers (vsftpd) check on uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
import struct
from collections.abc import Awaitable
from typing import IO, TypeVar

from ketch.client.errors import DataConnectionFailed
from ketch.client.tls import call_tls
from ketch.protocol import format_host_port

__all__ = ["DataStream"]

T = TypeVar("T")

# A stall is a single call that waits too long, so one call must be able to
# finish within the stall timeout on a slow link: 256 KiB in 60 s is 4.4 KB/s.
_SENDFILE_CHUNK = 256 * 1024
_CLOSE_NOTIFY_WAIT = 5.0  # how long closing a TLS data connection waits for the peer's reply


class DataStream:
    """One data connection; a wait with no progress for ``stall_timeout`` fails.

    One timer per transfer looks at the current wait every ``stall_timeout``
    at most, instead of a timeout per chunk on the hot path.
    """

    def __init__(self, sock: socket.socket, *, mode: str, stall_timeout: float) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._tls: ssl.SSLSocket | None = None
        self._tls_failure: OSError | None = None
        self._file_buffer: memoryview | None = None  # TLS uploads: file chunks pass through here
        self._loop = asyncio.get_running_loop()
        self.mode = mode  # EPSV, PASV, EPRT or PORT: what made this connection
        self.stall_timeout = stall_timeout
        peer = sock.getpeername()
        self.peer = format_host_port(peer[0], peer[1])
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

    @property
    def tls_version(self) -> str | None:
        """The TLS version ("TLSv1.3") once TLS is on, else None."""
        return self._tls.version() if self._tls is not None else None

    @property
    def session_reused(self) -> bool:
        """Whether the TLS handshake resumed the control connection's session."""
        return self._tls is not None and bool(self._tls.session_reused)

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str, session: ssl.SSLSession | None
    ) -> None:
        """Become the TLS client on this connection, resuming ``session`` when given.

        The client is the TLS client in active mode too (RFC 4217 §7), although
        there the server opened the TCP connection.
        """
        tls = context.wrap_socket(
            self._sock,
            server_hostname=server_hostname,
            session=session,
            do_handshake_on_connect=False,
            # An end of data without close_notify may be a truncation: report it.
            suppress_ragged_eofs=False,
        )
        self._sock = self._tls = tls
        try:
            await self._guarded(call_tls(self._loop, tls, tls.do_handshake), "received")
        except DataConnectionFailed as error:
            raise DataConnectionFailed(
                f"TLS handshake on the data connection to {self.peer} failed: {error.what}",
                "the server refused TLS on the data connection; its reply on the control "
                "connection says why",
                mode=self.mode,
                address=self.peer,
            ) from None

    async def recv_into(self, buffer: memoryview) -> int:
        """Read some bytes into ``buffer``; 0 means the server finished sending."""
        tls = self._tls
        if tls is None:
            return await self._guarded(self._loop.sock_recv_into(self._sock, buffer), "received")
        if self._tls_failure is not None:  # held back from the last call (see below)
            raise self._broken(self._tls_failure)
        count = await self._guarded(
            call_tls(self._loop, tls, lambda: tls.recv_into(buffer)), "received"
        )
        # A TLS record holds at most 16 KiB: take what else is there without waiting.
        while count and count < len(buffer):
            try:
                more = tls.recv_into(buffer[count:])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as error:
                # The bytes read before it are authentic: they go out first (a download
                # cut short keeps them, for -c), and the failure with the next call.
                self._tls_failure = error
                break
            if not more:
                break
            count += more
        return count

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        tls = self._tls
        if tls is None:
            await self._guarded(self._loop.sock_sendall(self._sock, data), "accepted")
            return
        view = memoryview(data)
        while view:
            sending = call_tls(self._loop, tls, functools.partial(tls.send, view))
            view = view[await self._guarded(sending, "accepted") :]

    async def send_file_chunk(self, file: IO[bytes], offset: int) -> int:
        """Send up to one chunk of ``file`` from ``offset``; returns bytes sent (0 at EOF)."""
        if self._tls is None:
            sending = self._loop.sock_sendfile(
                self._sock, file, offset, _SENDFILE_CHUNK, fallback=True
            )
            return await self._guarded(sending, "accepted")
        if self._file_buffer is None:
            self._file_buffer = memoryview(bytearray(_SENDFILE_CHUNK))
        count = os.preadv(file.fileno(), [self._file_buffer], offset)
        if count:
            await self.send_all(self._file_buffer[:count])
        return count

    async def close(self) -> None:
        """Close; for an upload this is the end-of-file the server waits for."""
        self._watchdog.cancel()
        tls = self._tls
        if tls is not None:
            # close_notify, then the peer's (bounded): a TLS end of data, not a truncation.
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(min(_CLOSE_NOTIFY_WAIT, self.stall_timeout)):
                    await call_tls(self._loop, tls, tls.unwrap)
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
            advises_resume=True,
        )

    def _broken(self, error: OSError) -> DataConnectionFailed:
        if isinstance(error, ssl.SSLEOFError):
            return DataConnectionFailed(
                f"the TLS data connection from {self.peer} ended without TLS close_notify, "
                "so the data may be cut short",
                "try again (-c resumes a download); if it keeps happening, the server or "
                "something on the path cuts TLS connections short",
                mode=self.mode,
                address=self.peer,
                advises_resume=True,
            )
        reason = error.strerror or os.strerror(error.errno or 0) or str(error)
        return DataConnectionFailed(
            f"data connection to {self.peer} broke: {reason}",
            "try again (-c resumes a download)",
            mode=self.mode,
            address=self.peer,
            advises_resume=True,
        )
