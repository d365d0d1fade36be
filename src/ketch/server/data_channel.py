"""The data connection of one transfer: a connected socket and the loops that move bytes.

Offers (see data_offers) make a :class:`DataChannel` when a transfer command
arrives; the channel sends files with ``os.sendfile``, tunes its socket for
the kind of transfer, and closes once.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import ipaddress
import logging
import os
import socket
import sys
import termios
from collections.abc import Callable

from ketch.protocol.addresses import plain_ip
from ketch.server.readiness import Readiness

__all__ = ["DataChannel", "DataConnectionError"]

log = logging.getLogger("ketch.server.data")

# Largest piece handed to one os.sendfile call; the kernel sends what fits.
_SENDFILE_PIECE = 1 << 30
# SO_SNDBUF asked for before a whole-file sendfile; the kernel doubles it to 8 MiB, past
# the 4 MiB where autotuning stops (tcp_wmem's default maximum). On loopback that cut server
# CPU per GiB by about a quarter and raised throughput; a fixed 425 KiB buffer (all a stock
# net.core.wmem_max allows) made both worse, hence _large_send_buffer_allowed.
_SEND_BUFFER = 4 << 20
#: Downloads that may hold such a buffer at once. A fixed buffer fills up however slow
#: the client, so 1,000 slow downloads would pin 8 GiB of kernel memory; past this many,
#: downloads keep autotuning (which sizes the buffer to the path).
_LARGE_SEND_BUFFERS = 32


class _LargeSendBuffers:
    in_use = 0


#: Unsent bytes a download to a client on this host may queue in the kernel (TCP_NOTSENT_LOWAT).
#: On a same-host connection the kernel sends queued data from whichever process handles the
#: ACK that opens the window, and that is the receiving client: with the whole file queued
#: at once, a local client paid for the server's sending too (on loopback, 2,000 sessions of
#: a 1 MiB download: client kernel CPU per session 0.4 ms with this limit against 0.9 ms
#: without, and a client that reads 64 KiB at a time got a 1 GiB file some 25 % faster). Over
#: a real link ACKs arrive by interrupt, so the limit would only shorten the queue that
#: carries a download through moments when the event loop is busy: it is not set there.
_LOCAL_UNSENT_LIMIT = 64 * 1024
# Python 3.12+ names the option; before that, 25 is its number on Linux (kernel 3.12+),
# the only system where ketch sets it unnamed.
_TCP_NOTSENT_LOWAT: int | None = getattr(
    socket, "TCP_NOTSENT_LOWAT", 25 if sys.platform == "linux" else None
)


_WMEM_MAX = "/proc/sys/net/core/wmem_max"
_TCP_WMEM = "/proc/sys/net/ipv4/tcp_wmem"
#: Bytes a transfer loop moves back to back (without waiting for the socket)
#: before it lets the event loop run: a fast peer must not starve other sessions.
YIELD_EVERY = 16 << 20
# The ioctl's int argument, for FIONREAD to fill in.
_NO_BYTES = bytes(4)


class DataConnectionError(Exception):
    """The data connection could not be made; the text is for the reply (425, or ``code``)."""

    code = 425


class DataChannel:
    """One connected data socket, plus a byte counter the stall watchdog reads."""

    #: Bytes go on the socket as they are, so sendfile and the raw receive loop
    #: may use it directly (not so under TLS: see ketch.server.tls_data).
    zero_copy = True

    def __init__(self, sock: socket.socket, mode: str, on_close: Callable[[], None]) -> None:
        self.sock = sock
        self.mode = mode
        self.bytes_moved = 0
        #: True while a bandwidth limit holds the transfer back: not a stall.
        self.paused = False
        #: True once an upload reads from it: bytes waiting unread are progress then.
        self.receiving = False
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._closed = False
        #: Whether this connection holds one of the _LARGE_SEND_BUFFERS.
        self._large_buffer = False
        self._tuned_for_files = False

    async def send_file(self, fd: int, offset: int, count: int | None = None) -> int:
        """Send a regular file from ``offset`` with ``os.sendfile``; return the bytes sent.

        Sends to the end of the file, or at most ``count`` bytes (a throttled
        transfer sends bounded pieces). A hand-written loop rather than
        ``loop.sock_sendfile`` so that progress is visible after every kernel
        call (the stall watchdog needs it) without splitting the file into
        many awaited pieces: ``os.sendfile`` is called again for as long as it
        makes progress, and only a full socket buffer (EAGAIN) costs a wait.
        """
        out = self.sock.fileno()
        if count is None and not self._tuned_for_files:
            self._tune_for_files()
        sendfile = os.sendfile
        total = 0
        budget = YIELD_EVERY
        with self.readiness(write=True) as writable:
            while count is None or total < count:
                piece = _SENDFILE_PIECE if count is None else count - total
                try:
                    sent = sendfile(out, fd, offset, piece)
                except BlockingIOError:
                    await writable.wait()
                    budget = YIELD_EVERY
                    continue
                if sent == 0:
                    break
                offset += sent
                total += sent
                self.bytes_moved += sent
                budget -= sent
                if budget <= 0:
                    budget = YIELD_EVERY
                    await asyncio.sleep(0)
        return total

    def unread_bytes(self) -> int:
        """Bytes that have arrived on the socket and wait to be read.

        The upload loop sleeps until ``WAKE_AT`` bytes are queued, looking only every
        ``LOOK_EVERY`` (see ketch.server.receive_loop): a trickle may wait longer than a
        short stall timeout, and is progress all the same.
        """
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, _NO_BYTES)
        except OSError:  # closed already
            return 0
        return int.from_bytes(raw, sys.byteorder, signed=True)

    def unacknowledged_bytes(self) -> int:
        """Bytes handed to the kernel that the client has not acknowledged yet (SIOCOUTQ).

        A download can queue megabytes in the send buffer: a slow client then reads for
        longer than a stall timeout before the socket takes more, and its reading is
        progress all the same (0 where the system cannot tell).
        """
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, _NO_BYTES)
        except OSError:  # closed already, or not Linux
            return 0
        return int.from_bytes(raw, sys.byteorder, signed=True)

    def readiness(self, *, write: bool) -> Readiness:
        """A waiter for this socket that stays registered for one transfer loop (see
        ketch.server.readiness). It waits on the socket itself: under TLS, right for
        writing (OpenSSL asks for it), not for reading (records may be buffered)."""
        return Readiness(self._loop, self.sock.fileno(), write=write)

    def _tune_for_files(self) -> None:
        """Size the socket's send queue for whole files, once (see _SEND_BUFFER and
        _LOCAL_UNSENT_LIMIT)."""
        self._tuned_for_files = True
        if _LargeSendBuffers.in_use < _LARGE_SEND_BUFFERS and _large_send_buffer_allowed():
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            self._large_buffer = True
            _LargeSendBuffers.in_use += 1
        if _on_this_host(self.sock):
            _limit_unsent(self.sock)

    async def send_all(self, data: bytes) -> None:
        """Send ``data`` whole, counting every kernel write as it happens.

        Not ``loop.sock_sendall``, which counts nothing until the end: the stall
        watchdog would see no progress while a slow client takes in one piece of
        an ASCII download (512 KiB with CRLFs) or a whole listing.
        """
        view = memoryview(data)
        send = self.sock.send
        with self.readiness(write=True) as writable:
            while view:
                try:
                    sent = send(view)
                except BlockingIOError:
                    await writable.wait()
                    continue
                self.bytes_moved += sent
                view = view[sent:]

    async def receive_into(self, buffer: bytearray) -> int:
        count = await self._loop.sock_recv_into(self.sock, buffer)
        self.bytes_moved += count
        return count

    async def finish(self) -> None:
        """End the data stream cleanly before ``close`` (TLS sends close_notify here)."""

    def close(self) -> None:
        """Close after flushing: shutdown first so unread input cannot turn it into a reset."""
        if self._closed:
            return
        self._closed = True
        if self._large_buffer:
            _LargeSendBuffers.in_use -= 1
        try:  # noqa: SIM105  (suppress() would cost a context manager per data connection)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # the peer has gone already; close anyway
            pass
        self.sock.close()
        self._on_close()

    async def _readable(self) -> None:
        """Wait once until the socket has data or end-of-file (loops use ``readiness``)."""
        with self.readiness(write=False) as readable:
            await readable.wait()

    async def _writable(self) -> None:
        with self.readiness(write=True) as writable:
            await writable.wait()


def _on_this_host(sock: socket.socket) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):  # a socketpair, in tests
        return False
    try:
        return same_host(sock.getpeername()[0], sock.getsockname()[0])
    except OSError:  # the peer has gone: the transfer fails on its own
        return False


@functools.lru_cache(maxsize=1024)
def same_host(peer: str, local: str) -> bool:
    """Whether a connection's two ends are one host: the peer is loopback or our own address.

    Cached: every download asks, mostly for a few clients (parsing costs more than the rest).
    """
    peer, local = plain_ip(peer), plain_ip(local)
    try:
        return ipaddress.ip_address(peer).is_loopback or peer == local
    except ValueError:  # not an IP address: no reason to think it local
        return False


def _limit_unsent(sock: socket.socket) -> None:
    """Set ``_LOCAL_UNSENT_LIMIT``; a kernel without TCP_NOTSENT_LOWAT just queues as before."""
    if _TCP_NOTSENT_LOWAT is None:
        return
    try:  # noqa: SIM105  (one call per download; suppress() would cost a context manager)
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _LOCAL_UNSENT_LIMIT)
    except OSError:
        pass


@functools.cache
def _large_send_buffer_allowed() -> bool:
    """Whether asking for ``_SEND_BUFFER`` gives a bigger buffer than autotuning would.

    SO_SNDBUF turns autotuning off and is capped at net.core.wmem_max: under a
    low cap it would shrink the buffer, and where autotuning may grow past it
    it would hold the buffer back. Read once: admins rarely change either.
    """
    try:
        with open(_WMEM_MAX, "rb") as cap:
            settable = int(cap.read())
        with open(_TCP_WMEM, "rb") as tcp:
            autotuned = int(tcp.read().split()[2])
    except (OSError, ValueError, IndexError):
        return False
    return settable >= _SEND_BUFFER and autotuned < 2 * _SEND_BUFFER
