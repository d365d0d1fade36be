"""How the client gets a data connection: passive, active, or auto with fallback.

Passive (EPSV, else PASV) works through the client's own NAT and firewall, so
it comes first. When its connection cannot be made, ``auto`` tries active
mode, and the mode that worked is remembered per server in a ``ModeMemory``
that every client of one run can share (mirror's parallel sessions). Each
failure becomes a DataConnectionFailed whose message names the address that
failed, the likely cause and the fix.

The ordering matters for recovery: in passive mode the data connection is
made *before* the transfer command is sent, so a failed attempt leaves the
server with nothing pending and the fallback starts clean. In active mode
the command has already gone out when the server fails to connect back, so
the control connection is resynchronised with ABOR and NOOP.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from ketch.client.control import ControlConnection
from ketch.client.data_stream import DataStream
from ketch.client.errors import (
    DataConnectionFailed,
    FtpError,
    InvalidArgument,
    ProtocolError,
    reply_error,
)
from ketch.client.tls import secure_data_connection
from ketch.protocol import (
    AddressSyntaxError,
    HostPort,
    Reply,
    format_eprt_argument,
    format_host_port,
    format_port_argument,
    parse_epsv_reply,
    parse_pasv_reply,
    plain_ip,
)

__all__ = ["DataConnector", "DataSettings", "ModeMemory", "OpenedData", "is_unroutable"]

log = logging.getLogger("ketch.client")

Mode = Literal["auto", "passive", "active"]
PassiveCommand = Literal["auto", "EPSV", "PASV"]
ActiveCommand = Literal["auto", "EPRT", "PORT"]

# Any permanent refusal of EPSV/EPRT makes PASV/PORT worth a try: besides the
# "not implemented" codes, servers that deny the command by policy (vsftpd's
# cmds_denied) answer 550.
_NOT_SUPPORTED = frozenset(range(500, 600))


@dataclass(frozen=True)
class DataSettings:
    """The data-connection settings of a client (see Client's docstring)."""

    mode: Mode = "auto"
    passive_command: PassiveCommand = "auto"
    active_command: ActiveCommand = "auto"
    trust_pasv_address: bool = False
    # Connect to the control connection's peer whatever a 227 reply names
    # (ketch doctor's "PASV with fix-up" probe); fix-up above is only for private ones.
    pasv_to_peer: bool = False
    active_ports: range | None = None
    active_address: str | None = None
    connect_timeout: float = 10.0


class ModeMemory:
    """Which mode worked for each server, for the rest of a session or run."""

    def __init__(self) -> None:
        self._modes: dict[tuple[str, int], Literal["passive", "active"]] = {}

    def get(self, server: tuple[str, int]) -> Literal["passive", "active"] | None:
        return self._modes.get(server)

    def remember(self, server: tuple[str, int], mode: Literal["passive", "active"]) -> None:
        self._modes[server] = mode


@dataclass
class OpenedData:
    """A data connection ready to move bytes, and the reply that announced it."""

    stream: DataStream
    reply: Reply  # 125/150, or a 2xx when the server finished without data


def is_unroutable(host: str) -> bool:
    """Whether ``host`` cannot be reached across the internet (private, loopback, ...)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # Not is_private: it misses 100.64.0.0/10 (RFC 6598, carrier-grade NAT) on
    # Python 3.11; not is_global takes it in, as ketch doctor's rule does.
    return not address.is_global or address.is_reserved or address.is_multicast


class _PassiveUnreachable(DataConnectionFailed):
    """Passive mode failed before the transfer command went out (auto may fall back)."""


class DataConnector:
    """Makes the data connection for one transfer command on one control connection."""

    def __init__(
        self,
        control: ControlConnection,
        settings: DataSettings,
        memory: ModeMemory,
        server: tuple[str, int],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._control = control
        self._settings = settings
        self._memory = memory
        self._server = server
        self._tls = tls  # PROT P is in force: every data connection speaks TLS
        self._epsv_refused = settings.passive_command == "PASV"
        self._eprt_refused = settings.active_command == "PORT"
        self._pasv_advertised: HostPort | None = None  # what the last 227 named
        # The last EPSV/PASV/EPRT/PORT line sent and the reply it got, exactly as
        # they were on the wire: ketch doctor compares them with what the server saw.
        self.last_setup: tuple[str, Reply] | None = None

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The TLS context data connections use (PROT P), or None in the clear."""
        return self._tls

    async def open(self, command_line: str) -> OpenedData:
        """Set up the data connection, send ``command_line`` and connect (and secure it)."""
        opened = await self._open_by_mode(command_line)
        if self._tls is not None and _preliminary(opened.reply):
            await secure_data_connection(self._control, opened.stream, self._tls)
        return opened

    async def _open_by_mode(self, command_line: str) -> OpenedData:
        mode = self._settings.mode
        if mode == "passive":
            return await self._open_passive(command_line)
        if mode == "active" or self._memory.get(self._server) == "active":
            return await self._open_active(command_line)
        try:
            opened = await self._open_passive(command_line)
        except _PassiveUnreachable as passive_error:
            log.info("passive mode failed: %s; trying active mode", passive_error.what)
            opened = await self._fall_back_to_active(command_line, passive_error)
            self._memory.remember(self._server, "active")
            log.info(
                "active mode works with %s; using it for the rest of the session",
                self._control.host,
            )
            return opened
        self._memory.remember(self._server, "passive")
        return opened

    async def _fall_back_to_active(
        self, command_line: str, passive_error: DataConnectionFailed
    ) -> OpenedData:
        try:
            return await self._open_active(command_line)
        except DataConnectionFailed as active_error:
            # Each mode failed for a reason of its own (a busy server, a firewall, a
            # setting): the hint gives the remedy each attempt reported.
            raise DataConnectionFailed(
                f"no data connection to {self._control.host}: {passive_error.what}; "
                f"then {active_error.what}",
                f"{passive_error.remedy}; {active_error.remedy}",
                mode=active_error.mode,
                address=active_error.address,
            ) from None

    # -- passive ---------------------------------------------------------------

    async def _open_passive(self, command_line: str) -> OpenedData:
        sock, via = await self._connect_passive()
        stream = DataStream(sock, mode=via, stall_timeout=self._control.timeout)
        try:
            reply = await self._start(command_line)
        except BaseException:
            stream.abort()
            raise
        return OpenedData(stream, reply)

    async def _connect_passive(self) -> tuple[socket.socket, str]:
        """The passive data connection: EPSV's, else PASV's (as curl, for the session).

        PASV is tried only when EPSV's connection was refused or unreachable, not
        when it timed out (a firewall dropping the passive range drops PASV's too, and
        each try costs a whole timeout), and only when PASV names another host.
        """
        target, via = await self._request_passive()
        try:
            return await self._connect(target, via), via
        except _PassiveUnreachable as error:
            pinned = self._settings.passive_command == "EPSV"
            if via != "EPSV" or pinned or error.cause == "timeout":
                raise
            epsv_error, epsv_host = error, plain_ip(target.host)
        # A forwarder or NAT in front of the server passes the control port only:
        # EPSV's port is at the control peer, PASV's address may be the right one.
        log.info(
            "EPSV's %s; trying PASV for the rest of the session (--no-epsv: from the start)",
            epsv_error.what,
        )
        self._epsv_refused = True
        try:
            target, via = await self._request_passive()
        except _PassiveUnreachable as refusal:  # no PASV here: EPSV's failure is the news
            log.debug("PASV refused too: %s", refusal.what)
            raise epsv_error from None
        if plain_ip(target.host) == epsv_host:  # the host that just refused EPSV's port
            epsv_error.hint += self._pasv_address_advice(target)
            raise epsv_error
        try:
            return await self._connect(target, via), via
        except _PassiveUnreachable as pasv_error:
            raise _PassiveUnreachable(
                f"EPSV's {epsv_error.what}; then PASV's {pasv_error.what}",
                f"{pasv_error.hint}{self._pasv_address_advice(target)}",
                mode=via,
                address=pasv_error.address,
                cause=pasv_error.cause,
                remedy=pasv_error.remedy,
            ) from None

    def _pasv_address_advice(self, target: HostPort) -> str:
        """Advice when the connection went to the server's address, not the PASV reply's."""
        advertised = self._pasv_advertised
        if advertised is None or plain_ip(advertised.host) == plain_ip(target.host):
            return ""
        return (
            f"; or, if {advertised.host} (the address PASV gave) is reachable from here, "
            "--no-epsv --trust-pasv-address"
        )

    async def _request_passive(self) -> tuple[HostPort, str]:
        """Send EPSV (or PASV) and work out where to connect."""
        if not self._epsv_refused:
            reply = await self._setup_command("EPSV")
            if reply.code == 229:
                try:
                    port = parse_epsv_reply(reply.text)
                except AddressSyntaxError as error:
                    raise ProtocolError(
                        f"unreadable EPSV reply: {error}", "try --no-epsv"
                    ) from None
                return HostPort(self._control.peer_ip, port), "EPSV"
            if reply.code not in _NOT_SUPPORTED or self._settings.passive_command == "EPSV":
                raise self._refused_passive("EPSV", reply)
            log.debug("EPSV refused (%s); using PASV", reply.code)
            self._epsv_refused = True
        reply = await self._setup_command("PASV")
        if reply.code != 227:
            raise self._refused_passive("PASV", reply)
        try:
            advertised = parse_pasv_reply(reply.text)
        except AddressSyntaxError as error:
            raise ProtocolError(f"unreadable PASV reply: {error}", "try --epsv") from None
        self._pasv_advertised = advertised
        return self._fix_up(advertised), "PASV"

    async def _setup_command(self, line: str) -> Reply:
        reply = await self._control.command(line)
        self.last_setup = (line, reply)
        return reply

    def _refused_passive(self, verb: str, reply: Reply) -> DataConnectionFailed:
        error = reply_error(verb, reply)
        if reply.code >= 500:
            remedy = "the server does not allow passive mode: ask its admin to allow EPSV or PASV"
        elif reply.code == 421:
            remedy = error.hint
        else:  # 425 "all passive ports are busy" and the like: a passing state
            remedy = (
                "the server has no passive port free just now: try again later, "
                "or ask its admin to widen passive_ports"
            )
        return _PassiveUnreachable(
            f"the server refused passive mode: {error.what}",
            "try --active",
            mode=verb,
            remedy=remedy,
        )

    def _fix_up(self, advertised: HostPort) -> HostPort:
        """Replace a private PASV address with the server's own (as curl and FileZilla do)."""
        peer = self._control.peer_ip
        if self._settings.pasv_to_peer:
            return HostPort(peer, advertised.port)
        if self._settings.trust_pasv_address or plain_ip(advertised.host) == plain_ip(peer):
            return advertised
        if not is_unroutable(advertised.host):
            return advertised
        log.debug(
            "PASV advertises %s, a private address that differs from the server's %s; "
            "connecting to %s instead (--trust-pasv-address turns this off)",
            advertised.host,
            peer,
            format_host_port(peer, advertised.port),
        )
        return HostPort(peer, advertised.port)

    async def _connect(self, target: HostPort, via: str) -> socket.socket:
        address = format_host_port(target.host, target.port)
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        timeout = self._settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, (target.host, target.port))
        except TimeoutError:
            sock.close()
            reason, remedy = self._why_passive_timed_out(target, timeout)
            raise _PassiveUnreachable(
                f"passive data connection to {address} timed out: {reason}",
                f"{self._instead(via)}, or {remedy}",
                mode=via,
                address=address,
                cause="timeout",
                remedy=remedy,
            ) from None
        except OSError as error:
            sock.close()
            raise _PassiveUnreachable(
                f"passive data connection to {address} failed: {_describe(error)}",
                f"{self._instead(via)}, or the server's admin should check its passive port "
                "range and masquerade_address",
                mode=via,
                address=address,
                cause=_cause_of(error),
                remedy=_passive_connect_remedy(error),
            ) from None
        return sock

    def _instead(self, via: str) -> str:
        """What to try instead of a passive connection ``via`` that failed."""
        if via == "EPSV" and self._settings.passive_command == "EPSV":
            return "try --no-epsv (PASV), or --active"  # pinned: PASV was not tried
        return "try --active"

    def _why_passive_timed_out(self, target: HostPort, timeout: float) -> tuple[str, str]:
        """Why the connection timed out, and the remedy."""
        differs = plain_ip(target.host) != plain_ip(self._control.peer_ip)
        if differs and is_unroutable(target.host):
            return (
                "the server advertises a private address",
                "the server's admin should set masquerade_address",
            )
        return (
            f"nothing answered within {timeout:g} s, so a firewall or NAT drops it",
            "the server's admin should open its passive port range",
        )

    # -- active ----------------------------------------------------------------

    async def _open_active(self, command_line: str) -> OpenedData:
        host = self._active_host()
        listener = self._listen()
        try:
            port = listener.getsockname()[1]
            advertised = HostPort(host, port)
            via = await self._request_active(advertised)
            await self._control.send(command_line)
            verb = command_line.split(" ", 1)[0]
            sock, reply = await self._await_connect_back(listener, advertised, verb, via)
        finally:
            listener.close()
        return OpenedData(DataStream(sock, mode=via, stall_timeout=self._control.timeout), reply)

    def _active_host(self) -> str:
        """The address EPRT/PORT names; InvalidArgument for an active_address they cannot."""
        given = self._settings.active_address
        if given is None:
            # As the server sees this end: a connection to ::ffff:a.b.c.d is IPv4 on the
            # wire, so EPRT |1| or PORT (the server refuses |2| there), and no zone id.
            return plain_ip(self._control.local_ip)
        try:
            address = ipaddress.ip_address(given)
        except ValueError:
            raise InvalidArgument(
                f"--active-address {given!r} is not an IP address",
                "give this host's address as the server should connect to it, e.g. 203.0.113.7",
            ) from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            # A zone only means something on this host: EPRT has no field for it.
            raise InvalidArgument(
                f"--active-address {given} has a zone id, which EPRT cannot send",
                f"give the address without it ({given.partition('%')[0]})",
            )
        return self._same_family(ipaddress.ip_address(plain_ip(given)))

    def _same_family(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """``address`` if the server can connect back to it: over the control connection's
        IP version. Otherwise EPRT and PORT both got a 522, which read as "no active mode"."""
        ours = ipaddress.ip_address(plain_ip(self._control.local_ip)).version
        if address.version != ours:
            raise InvalidArgument(
                f"--active-address {address} is an IPv{address.version} address, but the "
                f"connection to {self._control.host} uses IPv{ours}",
                f"the server connects back over IPv{ours}: give an IPv{ours} address, or "
                f"connect to the server over IPv{address.version}",
            )
        return str(address)

    def _listen(self) -> socket.socket:
        local = self._control.local_ip
        if ":" not in plain_ip(local):
            # An IPv4-mapped address: the server connects to the IPv4 address it is
            # given, which an IPv4 socket takes even where IPv6 sockets are v6-only.
            local = plain_ip(local)
        family = socket.AF_INET6 if ":" in local else socket.AF_INET
        ports = list(self._settings.active_ports or [0])
        random.shuffle(ports)  # parallel sessions should not all collide on the first port
        for port in ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            # The port's last data connection may be in TIME_WAIT (after an upload we close
            # first): without this, a range of N ports allowed N transfers a minute.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((local, port))
            except OSError:
                sock.close()
                continue
            sock.listen(1)
            sock.setblocking(False)
            return sock
        span = self._settings.active_ports
        shown = f"{span.start}-{span.stop - 1}" if span else "any port"
        raise DataConnectionFailed(
            f"no free local port for active mode in {shown}",
            "widen --active-ports or use passive mode",
            mode="EPRT",
            remedy="widen --active-ports",
        )

    async def _request_active(self, advertised: HostPort) -> str:
        """Send EPRT (or PORT) naming ``advertised``; return the verb that worked."""
        ipv4 = ":" not in advertised.host
        if not self._eprt_refused or not ipv4:
            reply = await self._setup_command(f"EPRT {format_eprt_argument(advertised)}")
            if reply.code == 200:
                return "EPRT"
            pinned = self._settings.active_command == "EPRT"
            if reply.code not in _NOT_SUPPORTED or pinned or not ipv4:
                raise self._refused_active("EPRT", reply)
            log.debug("EPRT refused (%s); using PORT", reply.code)
            self._eprt_refused = True
        reply = await self._setup_command(f"PORT {format_port_argument(advertised)}")
        if reply.code != 200:
            raise self._refused_active("PORT", reply)
        return "PORT"

    def _refused_active(self, verb: str, reply: Reply) -> DataConnectionFailed:
        error = reply_error(verb, reply)
        hint = "use passive mode (--passive)"
        if reply.code in (500, 501) and is_unroutable(self._settings.active_address or ""):
            hint = "the server may refuse private addresses; use passive mode (--passive)"
        return DataConnectionFailed(
            f"the server refused active mode: {error.what}",
            hint,
            mode=verb,
            remedy=_active_refusal_remedy(reply, error.hint),
        )

    async def _await_connect_back(
        self, listener: socket.socket, advertised: HostPort, verb: str, via: str
    ) -> tuple[socket.socket, Reply]:
        """Wait for the server's connection while watching the control connection.

        Servers differ in whether they connect before or after their 150 reply,
        and one that cannot connect says so with a 425 (some after their 150), so
        the control connection is watched until the connection comes.
        """
        strangers: list[str] = []
        accept = asyncio.ensure_future(self._accept_from_server(listener, strangers))
        answer = asyncio.ensure_future(self._control.read_reply())
        preliminary: Reply | None = None
        handed_over = False
        try:
            try:
                async with asyncio.timeout(self._settings.connect_timeout):
                    while not accept.done():
                        await asyncio.wait({accept, answer}, return_when=asyncio.FIRST_COMPLETED)
                        if accept.done() or not answer.done():
                            continue
                        reply = answer.result()
                        if _preliminary(reply):
                            # Some servers say 150 before they connect, and 425 if they
                            # cannot: keep listening, or that 425 waits out the timeout.
                            preliminary = reply
                            answer = asyncio.ensure_future(self._control.read_reply())
                        elif reply.code < 300:
                            sock = await accept  # finished before we accepted
                            handed_over = True
                            return sock, self._opening_reply(preliminary, reply)
                        else:
                            raise self._connect_back_refused(advertised, verb, via, reply)
                    sock = accept.result()
            except TimeoutError:
                await self._resync(answer)
                if strangers:
                    raise self._connected_from_elsewhere(strangers[0], via) from None
                raise DataConnectionFailed(
                    f"active mode: the server did not connect back to "
                    f"{format_host_port(advertised.host, advertised.port)} within "
                    f"{self._settings.connect_timeout:g} s",
                    "a NAT or firewall in front of this client drops inbound connections; "
                    "use passive mode (--passive)",
                    mode=via,
                    address=format_host_port(advertised.host, advertised.port),
                    cause="timeout",
                    remedy=_INBOUND_BLOCKED,
                ) from None
            if preliminary is not None and not answer.done():
                # The read begun after the 150 must be over before anyone reads replies
                # again (a StreamReader takes one reader); a reply it got meanwhile stays.
                answer.cancel()
                await asyncio.wait((answer,))
            if preliminary is not None and answer.cancelled():
                handed_over = True
                return sock, preliminary
            try:
                reply = await answer
            except BaseException:
                sock.close()
                raise
            if not _preliminary(reply) and reply.code >= 300:
                sock.close()
                raise reply_error(verb, reply)
            handed_over = True
            return sock, self._opening_reply(preliminary, reply)
        finally:
            if not answer.done():  # left by an error or a cancel: over before the next read
                answer.cancel()
                await asyncio.wait((answer,))
            if not accept.cancel() and not handed_over:
                _close_accepted(accept)  # the server connected, then refused (or we were cancelled)

    def _opening_reply(self, preliminary: Reply | None, reply: Reply) -> Reply:
        """The reply that opens the transfer, given the one read after ``preliminary``.

        After a 1xx, a 2xx is the final reply (RFC 959 §4.2), even when it came
        before the connection was accepted: it is kept for the transfer's final
        read, or the data would be taken as never sent.
        """
        if preliminary is None or _preliminary(reply):
            return reply
        self._control.keep_for_next_read(reply)
        return preliminary

    def _connect_back_refused(
        self, advertised: HostPort, verb: str, via: str, reply: Reply
    ) -> FtpError:
        if reply.code == 425:
            if "source port" in reply.text.lower():
                # ketch's words when it cannot bind its active_source_port: a server
                # setting, not a firewall here.
                remedy = _SOURCE_PORT_UNUSABLE
                hint = f"{remedy}; or use passive mode (--passive)"
            else:
                remedy = _INBOUND_BLOCKED
                hint = (
                    "a NAT or firewall in front of this client blocks inbound connections; "
                    "use passive mode (--passive)"
                )
            return DataConnectionFailed(
                f"active mode: the server could not connect back to "
                f"{format_host_port(advertised.host, advertised.port)} "
                f"({reply.code} {reply.text.strip()})",
                hint,
                mode=via,
                address=format_host_port(advertised.host, advertised.port),
                remedy=remedy,
            )
        return reply_error(verb, reply)

    def _connected_from_elsewhere(self, stranger: str, via: str) -> DataConnectionFailed:
        server_ip = plain_ip(self._control.peer_ip)
        return DataConnectionFailed(
            f"active mode: a data connection came from {stranger}, not from {server_ip} (the "
            "server's address), and was refused as a possible theft (RFC 2577)",
            "the server connects from another address (behind a proxy or a load balancer, "
            "or with several addresses): use passive mode (--passive)",
            mode=via,
            remedy="the server connects back from another address than its own (behind a "
            "proxy or a load balancer), so active mode cannot work with it",
        )

    async def _accept_from_server(
        self, listener: socket.socket, strangers: list[str]
    ) -> socket.socket:
        """Accept the first connection from the server's own address; drop others (and
        note where they came from in ``strangers``)."""
        loop = asyncio.get_running_loop()
        server_ip = plain_ip(self._control.peer_ip)
        while True:
            sock, peer = await loop.sock_accept(listener)
            if plain_ip(peer[0]) == server_ip:
                return sock
            strangers.append(plain_ip(peer[0]))
            log.warning(
                "refused a data connection from %s: only the server (%s) may connect",
                format_host_port(peer[0], peer[1]),
                server_ip,
            )
            sock.close()

    async def _resync(self, pending: asyncio.Future[Reply]) -> None:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, FtpError):
            await pending
        await self._control.resync()

    async def _start(self, command_line: str) -> Reply:
        """Send the transfer command and read the reply that starts the data."""
        reply = await self._control.command(command_line)
        if _preliminary(reply) or reply.code < 300:
            return reply
        raise reply_error(command_line.split(" ", 1)[0], reply)


def _preliminary(reply: Reply) -> bool:
    return 100 <= reply.code < 200


# Remedies for active mode (DataConnectionFailed.remedy): what makes that mode work.
_INBOUND_BLOCKED = (
    "a NAT or firewall in front of this client blocks the server's connections back: pick "
    "--active-ports and open them there (behind NAT, forward them to this host)"
)
_SOURCE_PORT_UNUSABLE = (
    "the server cannot use its active source port: its admin should change active_source_port"
)


def _passive_connect_remedy(error: OSError) -> str:
    """What makes a passive connection work that failed with ``error``."""
    if error.errno == errno.ECONNREFUSED:
        return (
            "nothing accepts connections on the server's passive port: its admin should check "
            "its passive port range, its firewall and port forwarding, and masquerade_address"
        )
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "the server's admin should check masquerade_address (the advertised address)"
    return "the server's admin should check its passive port range and masquerade_address"


def _active_refusal_remedy(reply: Reply, generic: str) -> str:
    """What makes active mode work when the server refused EPRT/PORT with ``reply``."""
    if reply.code in (500, 502):
        return "the server does not offer active mode"
    if reply.code == 421:
        return generic
    return (
        "the server will not connect to the address this client gives: behind NAT, give "
        "--active-address (the public address) and forward --active-ports to this host"
    )


def _cause_of(error: OSError) -> str:
    """DataConnectionFailed.cause for a failed connect."""
    if error.errno == errno.ECONNREFUSED:
        return "refused"
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return ""


def _describe(error: OSError) -> str:
    if error.errno == errno.ECONNREFUSED:
        return "connection refused (nothing listens on that port)"
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "no route to that address"
    return error.strerror or str(error)


def _close_accepted(accept: asyncio.Future[socket.socket]) -> None:
    """Close the socket a finished accept made, when nobody took it."""
    if not accept.cancelled() and accept.exception() is None:
        accept.result().close()
