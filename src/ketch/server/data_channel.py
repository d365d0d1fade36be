"""Data connections: prepared by PASV/EPSV/PORT/EPRT, used by one transfer.

A *data offer* is what a data-setup command leaves behind: a passive
listener waiting for the client, or an active target to connect to. The
next transfer command turns the offer into a :class:`DataChannel` (one
connected socket) and the offer is spent.

Both directions enforce RFC 2577: a passive listener only accepts the
control connection's own IP (a stranger racing for the port is refused and
logged), and active connections only go where the session policy allowed.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable

from ketch.protocol.addresses import HostPort, plain_ip
from ketch.server import port20_helper
from ketch.server.passive_ports import PassivePortPool
from ketch.server.readiness import Readiness

__all__ = ["ActiveOffer", "DataChannel", "DataConnectionError", "DataOffer", "PassiveOffer"]

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
        await self._loop.sock_sendall(self.sock, data)
        self.bytes_moved += len(data)

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

    async def readable(self) -> None:
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


class DataOffer:
    """What PASV/EPSV/PORT/EPRT prepared; ``connect`` makes the data channel once."""

    mode: str

    async def prepare(self) -> None:
        """What must happen before the 150 reply; nothing, unless the server connects out."""

    async def connect(self) -> DataChannel:
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the offer holds if it is never used."""


class PassiveOffer(DataOffer):
    """A listener in the passive range, accepting exactly one connection from the client.

    Accepting starts at once, because clients connect right after the 227/229
    reply and before sending RETR; the listener closes after the first
    legitimate connection or after ``timeout`` seconds.
    """

    def __init__(
        self,
        pool: PassivePortPool,
        bind_ip: str,
        *,
        client_ip: str,  # plain form (see protocol.addresses.plain_ip), as the session keeps it
        mode: str,
        timeout: float,
        advertised: str,
        on_expiry: Callable[[], None] | None = None,
    ) -> None:
        self.mode = mode
        self._pool = pool
        self._on_expiry = on_expiry
        self._listener = pool.open_listener(bind_ip)
        self.port: int = self._listener.getsockname()[1]
        self._client_ip = client_ip
        self._timeout = timeout
        #: The address the 227 reply names (logged when the client never connects).
        self.advertised = advertised
        self._port_released = False
        self._handed_over = False
        self._accepting = asyncio.get_running_loop().create_task(self._accept())
        self._accepting.add_done_callback(self._accept_done)

    def _accept_done(self, task: asyncio.Task[socket.socket]) -> None:
        # _accept closes the listener itself, but a task cancelled before its first step
        # (PASV and PASV read at once) runs none of it: the port would stay bound.
        self._listener.close()
        # The timeout is logged in _accept; mark it retrieved so asyncio does not log it again.
        if not task.cancelled():
            task.exception()

    async def _accept(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    conn, peer = await loop.sock_accept(self._listener)
                    if plain_ip(peer[0]) == self._client_ip:
                        conn.setblocking(False)
                        return conn
                    # RFC 2577 port theft: someone else raced the client to the port.
                    log.warning(
                        "refused passive data connection on port %d from %s: the control "
                        "connection is from %s (possible port theft, RFC 2577)",
                        self.port,
                        peer[0],
                        self._client_ip,
                    )
                    conn.close()
        except TimeoutError:
            # Shared contract C3: what was advertised, to whom, how long, and the fix.
            advertised = f"[{self.advertised}]" if ":" in self.advertised else self.advertised
            log.warning(
                "passive data connection not made (%s): no connection arrived at %s:%d "
                "from client %s within %g s. A firewall is probably dropping it: open "
                "passive_ports %s in the server's firewall (and any in front of it); if the "
                "server is behind NAT and %s is not its public address, set "
                "masquerade_address (or masquerade_map)",
                self.mode,
                advertised,
                self.port,
                self._client_ip,
                self._timeout,
                self._pool.ports,
                self.advertised,
            )
            if self._on_expiry is not None:
                self._on_expiry()
            raise
        finally:
            self._listener.close()

    async def connect(self) -> DataChannel:
        try:
            conn = await self._accepting
        except TimeoutError:
            self._release_port()
            raise DataConnectionError(
                f"no data connection arrived on port {self.port} within {self._timeout:g} s; "
                "check that your firewall allows outgoing connections to it, or use active mode"
            ) from None
        self._handed_over = True
        return DataChannel(conn, self.mode, self._release_port)

    def close(self) -> None:
        accepting = self._accepting
        if not accepting.done():
            accepting.cancel()
        elif not self._handed_over and not accepting.cancelled() and accepting.exception() is None:
            accepting.result().close()  # accepted, but no transfer ever used it
        self._release_port()

    def _release_port(self) -> None:
        if not self._port_released:
            self._port_released = True
            self._pool.release(self.port)


class ActiveOffer(DataOffer):
    """A PORT/EPRT target; the server connects when the transfer starts.

    It connects *before* the 150 reply (``prepare``), as vsftpd and pure-ftpd
    do: a client whose firewall or NAT drops the connection then gets the
    425 that says why at once, not a 150 and a wait for its own timeout.
    """

    def __init__(
        self,
        target: HostPort,
        *,
        local_ip: str,
        source_port: int | None,
        source_port_required: bool,
        mode: str,
        timeout: float,
    ) -> None:
        self.mode = mode
        self.target = target
        self._local_ip = local_ip
        self._source_port = source_port
        self._source_port_required = source_port_required
        self._timeout = timeout
        self._prepared: DataChannel | None = None

    async def prepare(self) -> None:
        if self._prepared is None:
            self._prepared = await self._connect()

    async def connect(self) -> DataChannel:
        await self.prepare()
        channel, self._prepared = self._prepared, None
        assert channel is not None
        return channel

    def close(self) -> None:
        if self._prepared is not None:  # connected, then the transfer never ran
            self._prepared.close()
            self._prepared = None

    async def _connect(self) -> DataChannel:
        try:
            return await self._connect_from(self._source_port)
        except TimeoutError:
            raise self._failure(f"no answer within {self._timeout:g} s") from None
        except OSError as error:
            # Port L-1 can collide with a connection to the same client port still in
            # TIME_WAIT; in "auto" mode an ephemeral port is fine, so try once more.
            retry = self._source_port is not None and not self._source_port_required
            if not retry or error.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
                raise self._failure(error.strerror or str(error)) from None
            log.debug(
                "active connect from port %s failed (%s); retrying from an ephemeral port",
                self._source_port,
                error.strerror,
            )
        try:
            return await self._connect_from(None)
        except TimeoutError:
            raise self._failure(f"no answer within {self._timeout:g} s") from None
        except OSError as error:
            raise self._failure(error.strerror or str(error)) from None

    def _failure(self, reason: str) -> DataConnectionError:
        return DataConnectionError(
            f"could not connect to {self.target.host} port {self.target.port} ({reason}); "
            "if you are behind NAT or a firewall, use passive mode"
        )

    async def _connect_from(self, source_port: int | None) -> DataChannel:
        family = socket.AF_INET6 if ":" in self.target.host else socket.AF_INET
        sock = await self._source_socket(family, source_port)
        try:
            sock.setblocking(False)
            async with asyncio.timeout(self._timeout):
                await asyncio.get_running_loop().sock_connect(
                    sock, (self.target.host, self.target.port)
                )
        except BaseException:
            sock.close()
            raise
        return DataChannel(sock, self.mode, _nothing)

    async def _source_socket(self, family: socket.AddressFamily, port: int | None) -> socket.socket:
        """A socket bound to the source port (L-1 by tradition) so client firewalls know us.

        After root was dropped (run_as), a port below 1024 comes from the port-20 helper.
        """
        helper = port20_helper.installed()
        if port is not None and helper is not None and helper.serves(port):
            try:
                return await helper.bound_socket(family, self._source_ip(family), port)
            except OSError as error:
                self._source_unavailable(port, error)
                return socket.socket(family, socket.SOCK_STREAM)
        sock = socket.socket(family, socket.SOCK_STREAM)
        if port is not None:
            try:
                self._bind_source(sock, port)
            except BaseException:
                sock.close()
                raise
        return sock

    def _source_ip(self, family: socket.AddressFamily) -> str:
        return self._local_ip if family == socket.AF_INET or ":" in self._local_ip else "::"

    def _bind_source(self, sock: socket.socket, port: int) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._source_ip(sock.family), port))
        except OSError as error:
            self._source_unavailable(port, error)

    def _source_unavailable(self, port: int, error: OSError) -> None:
        """Refuse the transfer if the port is required; else go on from an ephemeral port."""
        if self._source_port_required:
            raise DataConnectionError(
                f"cannot use source port {port} for active mode "
                f"({error.strerror}); the admin should change active_source_port"
            ) from None
        log.debug(
            "active source port %d unavailable (%s); using an ephemeral port",
            port,
            error.strerror,
        )


def _nothing() -> None:
    pass
