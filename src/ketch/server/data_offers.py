"""Data offers: what PASV/EPSV/PORT/EPRT prepare for the next transfer command.

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
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketch.protocol.addresses import HostPort, plain_ip
from ketch.server import port20_helper
from ketch.server.data_channel import DataChannel, DataConnectionError
from ketch.server.passive_ports import PassivePortPool

if TYPE_CHECKING:
    from ketch.server.masquerade import MasqueradePolicy

__all__ = ["ActiveOffer", "DataOffer", "PassiveOffer"]

log = logging.getLogger("ketch.server.data")


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
    legitimate connection, or after ``timeout`` seconds without one (counted
    again from the transfer command, when that comes first). A stranger that
    races the client to the port is refused as soon as it connects.

    The listener is watched by a reader callback and bounded by a timer, not
    by a task awaiting ``sock_accept``: both are dropped synchronously in
    ``close``, so the port is free again at once. (A task cancelled by a
    second PASV only let go of its listener on a later loop pass: with a
    one-port range, that PASV found its own port still taken and got 425.)
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
        masquerade: MasqueradePolicy | None = None,
        tls: bool = False,
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
        #: PASV's: which setting chose ``advertised`` (asked only if the offer expires).
        self._masquerade = masquerade
        self._tls = tls
        self._port_released = False
        #: The client's connection, once accepted and until connect() hands it over.
        self._accepted: socket.socket | None = None
        #: Set when the offer ran out of time with no connection from the client.
        self._expired = False
        #: Set when the client's connection waited the timeout for a transfer command.
        self._unused = False
        #: Why accepting failed on our side (out of descriptors, say): connect() raises it.
        self._error: OSError | None = None
        #: What connect() awaits while none of those has happened.
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop = asyncio.get_running_loop()
        self._fd = self._listener.fileno()
        loop.add_reader(self._fd, self._on_readable)
        self._expiry: asyncio.TimerHandle | None = loop.call_later(timeout, self._expire)

    async def prepare(self) -> None:
        """Time ran out before the transfer command: 425 at once, not a 150 and then one."""
        if self._unused:
            raise DataConnectionError(
                f"the data connection to port {self.port} waited {self._timeout:g} s for a "
                "transfer command, so it was closed; send PASV again right before the "
                "transfer command"
            )
        if self._expired:
            self._release_port()
            raise DataConnectionError(
                f"nothing connected to port {self.port} within {self._timeout:g} s of the "
                f"{self.mode} reply, so it was closed; send {self.mode} again right before "
                "the transfer command (if the client did connect, a firewall dropped it: "
                "allow outgoing connections to the server's passive ports, or use active mode)"
            )

    async def connect(self) -> DataChannel:
        if self._fd >= 0:  # still listening: wait for the client, the timer or close()
            # The timeout counts from the transfer command too (as vsftpd's): a client
            # that took its time before RETR still gets all of it to connect.
            self._restart_expiry()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        conn, self._accepted = self._accepted, None
        if conn is not None:
            self._stop_listening()  # the timer for an unused connection (see _on_readable)
            return DataChannel(conn, self.mode, self._release_port)
        self._release_port()
        if self._error is not None:
            raise self._error  # a local error: the transfer says 451 and names it
        if not self._expired:
            raise DataConnectionError("the passive data connection was withdrawn; send PASV again")
        raise DataConnectionError(
            f"no data connection arrived on port {self.port} within {self._timeout:g} s; "
            "check that your firewall allows outgoing connections to it, or use active mode"
        )

    def close(self) -> None:
        self._stop_listening()
        self._wake()  # a connect() still waiting ends (no caller closes under one today)
        if self._accepted is not None:  # accepted, but no transfer ever used it
            self._accepted.close()
            self._accepted = None
        self._release_port()

    def _on_readable(self) -> None:
        """Accept what has arrived: the client's connection ends the listening."""
        while self._accepted is None:
            try:
                conn, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # reset while in the backlog: the next one may be the client's
            except OSError as error:
                # Out of descriptors, say. Stop listening rather than be called again at
                # once; the client's transfer gets a 451 naming the error, not firewall
                # advice (even at the deadline: whether the client came cannot be told).
                log.warning("passive data connection on port %d failed: %s", self.port, error)
                self._error = error
                self._stop_listening()
                self._wake()
                return
            if plain_ip(peer[0]) == self._client_ip:
                conn.setblocking(False)
                self._accepted = conn
                self._stop_listening()
                # Kept for the transfer command, but not for ever: a client that connects
                # and never sends one would hold a descriptor and a passive port.
                self._expiry = self._loop.call_later(self._timeout, self._drop_unused)
                self._wake()
                return
            # RFC 2577 port theft: someone else raced the client to the port.
            log.warning(
                "refused passive data connection on port %d from %s: the control "
                "connection is from %s (possible port theft, RFC 2577)",
                self.port,
                peer[0],
                self._client_ip,
            )
            conn.close()

    def _restart_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = self._loop.call_later(self._timeout, self._expire)

    def _drop_unused(self) -> None:
        """The client connected but sent no transfer command in time: close, free the port."""
        self._expiry = None
        if self._accepted is not None:
            self._accepted.close()
            self._accepted = None
        self._unused = True
        self._release_port()

    def _expire(self) -> None:
        """The offer's time is up with no connection from the client: log why, and close."""
        self._expiry = None
        self._on_readable()  # one that arrived this very moment still counts
        if self._fd < 0:
            return  # it did (or accepting failed, and said so)
        self._stop_listening()
        self._expired = True
        self._release_port()  # nothing listens on it now: another session may have it
        self._wake()
        # Shared contract C3: what was advertised, to whom, how long, and the fix.
        advertised = f"[{self.advertised}]" if ":" in self.advertised else self.advertised
        log.warning(
            "passive data connection not made (%s): no connection arrived at %s:%d "
            "from client %s within %g s. A firewall is probably dropping it: open "
            "passive_ports %s in the server's firewall (and any in front of it)%s",
            self.mode,
            advertised,
            self.port,
            self._client_ip,
            self._timeout,
            self._pool.configured,
            self._nat_advice(),
        )
        if self._on_expiry is not None:
            self._on_expiry()

    def _nat_advice(self) -> str:
        """The expiry line's advice for a server behind NAT, which depends on the mode.

        EPSV names no address (RFC 2428): the client reuses the control
        connection's, so only forwarding the ports can help. PASV names one:
        say which setting chose it, or suggest masquerade_address where it
        would apply (it never does to loopback clients).
        """
        if self._masquerade is None:
            return (
                f"; {self.mode} names no address (RFC 2428), so masquerade_address plays no "
                "part: if the server is behind NAT, that NAT must forward those ports to it"
            )
        source = self._masquerade.source_for(self._client_ip, tls=self._tls)
        if source is not None:
            return (
                f"; {self.advertised} is what {source.setting} gives this client: if that is "
                "not the server's public address, correct it; if it is, the NAT in front "
                "must forward those ports to the server"
            )
        if self._masquerade.masquerade is not None:
            return ""  # set, but not for this client: it would tell it no other address
        return (
            f"; if the server is behind NAT and {self.advertised} is not its public "
            "address, set masquerade_address (or masquerade_map)"
        )

    def _stop_listening(self) -> None:
        """Drop the reader, the timer and the listener; idempotent."""
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)  # before the close: the number may be reused
            self._fd = -1
            self._listener.close()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
                raise self._failure(_reason(error)) from None
            log.debug(
                "active connect from port %s failed (%s); retrying from an ephemeral port",
                self._source_port,
                _reason(error),
            )
        try:
            return await self._connect_from(None)
        except TimeoutError:
            raise self._failure(f"no answer within {self._timeout:g} s") from None
        except OSError as error:
            raise self._failure(_reason(error)) from None

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


def _reason(error: OSError) -> str:
    """The system's words for a failed connect ("Connection refused"), not the event
    loop's "Connect call failed ('10.0.0.5', 2000)", which says nothing of why."""
    return os.strerror(error.errno) if error.errno else str(error)
