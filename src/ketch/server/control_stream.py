"""The control connection's byte stream: one small protocol object instead of asyncio's three.

asyncio's StreamReader, StreamReaderProtocol and StreamWriter each carry a
``__dict__`` (about a kilobyte of every idle session between them), and a
command costs a dozen Python calls in them: a read, a wake-up, a write and a
``drain()`` coroutine per reply. A session needs less: the bytes that have
arrived (or a wait for them), a write, a wait only while the client is not
taking replies (flow control), and a close. ``ControlStream`` is that, as an
``asyncio.Protocol`` with slots.

It keeps what the session relies on from asyncio's streams: reading pauses
while more than ``limit`` unread bytes are buffered (a client flooding
commands is held back by TCP), a half-closed connection still takes the last
replies (EOF is not the end, except over TLS), and a lost connection ends a
wait with the error or EOF. ``secure`` replaces the stream by a new one on
AUTH TLS, so that bytes sent in the clear after the AUTH line stay in the old
buffer and are never read as commands (CVE-2011-0411).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

__all__ = ["ControlStream"]


class ControlStream(asyncio.Protocol):
    """The bytes of one control connection, read and written by its session."""

    __slots__ = (
        "_buffer",
        "_closed_waiter",
        "_drain_waiter",
        "_eof",
        "_error",
        "_limit",
        "_lost",
        "_on_connect",
        "_read_waiter",
        "_reading_paused",
        "_writing_paused",
        "transport",
    )

    def __init__(self, on_connect: Callable[[ControlStream], None] | None, limit: int) -> None:
        self._on_connect = on_connect
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport: no isinstance).
        self.transport = cast(asyncio.Transport, transport)
        on_connect, self._on_connect = self._on_connect, None
        if on_connect is not None:
            on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        # Paused above twice the limit and resumed at the limit, as asyncio's streams do.
        if len(self._buffer) > 2 * self._limit and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Keep a half-closed TCP connection open for the last replies, as asyncio's
        # streams do; TLS cannot be half-closed (asyncio warns if asked).
        return self.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        self._wake_reader()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():  # as asyncio: a clean end just ends it
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        closed, self._closed_waiter = self._closed_waiter, None
        if closed is not None and not closed.done():
            closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- what the session uses ------------------------------------------------

    def has_data(self) -> bool:
        """Whether received bytes wait to be read (the client sent ahead of the replies)."""
        return bool(self._buffer)

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes, waiting for some; b"" at EOF. Raises the connection's error.

        A reset connection raises even with commands still buffered, as asyncio's
        streams do: nobody is left to read their replies.
        """
        assert self._read_waiter is None, "one reader at a time"
        if not self._buffer and not self._eof and not self._lost:
            waiter = asyncio.get_running_loop().create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                self._read_waiter = None
        if self._error is not None:
            raise self._error
        if not self._buffer:
            return b""
        if len(self._buffer) <= limit:  # as a rule: a command line or two
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
        if self._reading_paused and len(self._buffer) <= self._limit and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    @property
    def must_drain(self) -> bool:
        """Whether a writer has to ``drain()``: the client is not taking replies, or is gone."""
        return self._writing_paused or self._lost

    async def drain(self) -> None:
        """Wait while the transport's buffer is full; ConnectionResetError once it is lost."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        if self._drain_waiter is None:
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain_waiter)

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping whatever the client has not taken."""
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Until the connection is gone (after ``close``)."""
        if self._lost:
            return
        if self._closed_waiter is None:
            self._closed_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed_waiter)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    async def secure(self, context: ssl.SSLContext, handshake_timeout: float) -> ControlStream:
        """The server side of a TLS handshake on this connection: the stream to use after it.

        This stream and whatever is left in its buffer are done with, whether the
        handshake works or not: the transport now belongs to TLS, and this
        protocol hears nothing more of it.
        """
        assert self.transport is not None
        secured = ControlStream(None, self._limit)
        try:
            transport = await asyncio.get_running_loop().start_tls(
                self.transport,
                secured,
                context,
                server_side=True,
                ssl_handshake_timeout=handshake_timeout,
            )
        except BaseException:
            self.connection_lost(None)  # start_tls closed the transport
            raise
        self.connection_lost(None)
        # The connection closed during the handshake: asyncio returns None, uvloop a
        # transport that is closed already.
        if transport is None or transport.is_closing():
            raise ConnectionResetError("control connection closed during the TLS handshake")
        secured.connection_made(transport)  # start_tls does not: the stream needs its transport
        return secured
