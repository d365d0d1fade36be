"""``ketch doctor``'s network side: connect, log in, ask SITE NATINFO, try each mode once.

Each mode gets a DataConnector pinned to it (data_modes.py: EPSV only, PASV
trusting the advertised address, PASV connecting to the server's own address,
EPRT only, PORT only) and lists the URL's path. After each attempt, a server
that offers ``SITE NATINFO`` (ketch) says what it sent or received for it.

A failed attempt must not spoil the next one: the connector leaves the
control connection in step (ABOR and NOOP after a failed active attempt),
and when it could not, the probe logs in again on a new connection.
Everything here only records; doctor.py judges.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from ketch.client import Client
from ketch.client.data_modes import DataConnector, DataSettings, OpenedData
from ketch.client.errors import (
    ConnectFailed,
    DataConnectionFailed,
    FtpError,
    LoginFailed,
    ProtocolError,
    ReplyError,
    reply_error,
    unresolvable,
)
from ketch.client.tls import TlsMode
from ketch.protocol import Reply, format_host_port, plain_ip
from ketch.protocol.reply_values import parse_natinfo
from ketch.tools.doctor_facts import (
    MODES,
    PASSIVE_MODES,
    Attempt,
    ModeName,
    Observations,
    ServerFacts,
    Step,
    verb_of,
)

__all__ = ["ProbeSettings", "probe"]

_LISTING_LIMIT = 256 * 1024  # a diagnosis needs data to flow, not a whole huge listing
_IPV4_ONLY: tuple[ModeName, ...] = ("PASV", "PASV-fixup", "PORT")
# The 425 a server sends after 150 when it could not connect back, as the connector words it.
_CONNECT_BACK_REPLY = re.compile(r"\((4[0-9][0-9] .*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class ProbeSettings:
    host: str
    port: int
    user: str | None
    password: str | None
    path: str  # listed by every attempt; "" lists the login directory
    timeout: float  # for each data connection
    active_address: str | None = None
    active_ports: range | None = None
    #: FTPS: "explicit" (AUTH TLS) or "implicit" (ftps://), with the client's certificate check.
    tls: TlsMode | None = None
    cafile: str | None = None
    verify: bool = True

    @property
    def url(self) -> str:
        """The URL without credentials, as the report shows it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "ftps" if self.tls == "implicit" else "ftp"
        return f"{scheme}://{host}:{self.port}/{quote(self.path, safe='/')}"

    @property
    def control_timeout(self) -> float:
        """For connecting and for each reply: longer than a data connection may take."""
        return max(self.timeout * 3, 5.0)

    def pinned(self, mode: ModeName) -> DataSettings:
        """Data settings that allow ``mode`` and nothing else: no fallback, no fix-up."""
        wait = self.timeout
        if mode == "EPSV":
            return DataSettings(mode="passive", passive_command="EPSV", connect_timeout=wait)
        if mode in ("PASV", "PASV-fixup"):
            return DataSettings(
                mode="passive",
                passive_command="PASV",
                trust_pasv_address=mode == "PASV",
                pasv_to_peer=mode == "PASV-fixup",
                connect_timeout=wait,
            )
        return DataSettings(
            mode="active",
            active_command="EPRT" if mode == "EPRT" else "PORT",
            active_address=self.active_address,
            active_ports=self.active_ports,
            connect_timeout=wait,
        )


async def probe(settings: ProbeSettings) -> Observations:
    """Everything ``ketch doctor`` learns about the server; never raises an FtpError."""
    run = _Probe(settings)
    return await run.observe()


class _Probe:
    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self.steps: list[Step] = []
        self.client: Client | None = None
        self.server_ip: str | None = None  # once connected
        self.client_address: str | None = None
        self.natinfo_offered = False

    def _observations(
        self,
        *,
        natinfo: ServerFacts | None = None,
        natinfo_reply: str = "",
        attempts: tuple[Attempt, ...] = (),
        fatal: FtpError | None = None,
        fatal_step: Literal["", "resolve", "connect", "login"] = "",
    ) -> Observations:
        return Observations(
            url=self.settings.url,
            host=self.settings.host,
            server_ip=self.server_ip,
            server_port=self.settings.port,
            client_address=self.client_address,
            natinfo=natinfo,
            natinfo_reply=natinfo_reply,
            attempts=attempts,
            fatal=fatal,
            fatal_step=fatal_step,
            steps=tuple(self.steps),
        )

    async def observe(self) -> Observations:
        try:
            await self._resolve()
        except ConnectFailed as error:
            self.steps.append(Step("resolve", False, str(error)))
            return self._observations(fatal=error, fatal_step="resolve")
        try:
            client = await self._log_in(first=True)
        except FtpError as error:
            await self._close()
            step: Literal["connect", "login"] = "connect"
            if isinstance(error, LoginFailed) or self.server_ip is not None:
                step = "login"
            return self._observations(fatal=error, fatal_step=step)
        try:
            facts, natinfo_reply = await self._natinfo(client)
            attempts = [await self._attempt(mode) for mode in MODES]
        finally:
            await self._close()
        return self._observations(
            natinfo=facts, natinfo_reply=natinfo_reply, attempts=tuple(attempts)
        )

    # -- before the data connections --

    async def _resolve(self) -> None:
        host, port = self.settings.host, self.settings.port
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.control_timeout):
                found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise ConnectFailed(
                f"resolving {host!r} timed out after {self.settings.control_timeout:g} s",
                "check your DNS server",
            ) from None
        except socket.gaierror as error:
            raise unresolvable(host, error) from None
        addresses = list(dict.fromkeys(str(entry[4][0]) for entry in found))
        self.steps.append(Step("resolve", True, f"{host} is {', '.join(addresses)}"))

    async def _log_in(self, *, first: bool = False) -> Client:
        settings = self.settings
        self.client = client = Client(
            settings.host,
            settings.port,
            user=settings.user,
            password=settings.password,
            connect_timeout=settings.control_timeout,
            data_connect_timeout=settings.timeout,
            timeout=settings.control_timeout,
            tls=settings.tls,
            cafile=settings.cafile,
            verify=settings.verify,
        )
        try:
            greeting = await client.connect()
        except FtpError as error:
            if first:
                self.steps.append(Step("connect", False, str(error)))
            raise
        if first:
            control = client.control
            self.server_ip, self.client_address = control.peer_ip, control.local_ip
            text = greeting.lines[0].strip() + (" ..." if len(greeting.lines) > 1 else "")
            where = format_host_port(control.peer_ip, settings.port)
            self.steps.append(
                Step("connect", True, f"{where} from {control.local_ip}: {greeting.code} {text}")
            )
        try:
            await client.login()
        except FtpError as error:
            if first:
                self.steps.append(Step("login", False, str(error)))
            raise
        if first:
            self.steps.append(Step("login", True, f"logged in as {client.user}"))
        return client

    async def _natinfo(self, client: Client) -> tuple[ServerFacts | None, str]:
        """NATINFO's facts, or None and the reply that said it is not there."""
        try:
            reply = await client.command("SITE NATINFO")
        except FtpError as error:  # the next attempt logs in again if this broke the session
            reply = Reply(500, (error.what,))
        facts = parse_natinfo(reply.lines) if reply.code == 200 else {}
        shown = _reply_text(reply)
        if not facts:
            text = f"not offered ({shown}): the address the server sees cannot be checked"
            self.steps.append(Step("natinfo", False, text))
            return None, shown
        self.natinfo_offered = True
        server_facts = ServerFacts.from_natinfo(facts)
        mine, seen = client.control.local_ip, server_facts.client_address or "?"
        nat = "you are behind NAT" if plain_ip(seen) != plain_ip(mine) else "no NAT between you"
        text = f"the server sees you as {seen} (your address {mine}): {nat}"
        self.steps.append(Step("natinfo", True, text))
        return server_facts, ""

    async def _close(self) -> None:
        if self.client is not None:
            await self.client.quit()
            self.client = None

    # -- one mode --

    async def _attempt(self, mode: ModeName) -> Attempt:
        try:
            client = await self._session()
        except FtpError as error:
            return Attempt(mode, failure=f"could not log in again after the last attempt: {error}")
        if mode in _IPV4_ONLY and ":" in plain_ip(client.control.peer_ip):
            why = f"not tried: {verb_of(mode)} cannot describe an IPv6 address (EPSV and EPRT can)"
            return Attempt(mode, failure=why, skipped=why)
        attempt = await self._list_with(client, mode)
        if self.natinfo_offered and _usable(client):
            try:
                facts = parse_natinfo((await client.command("SITE NATINFO")).lines)
            except FtpError:
                facts = {}
            key = "last-passive-reply" if mode in PASSIVE_MODES else "last-active-command"
            attempt = dataclasses.replace(attempt, server_saw=facts.get(key))
        return attempt

    async def _session(self) -> Client:
        """The logged-in session, or a new one when the last attempt left it out of step."""
        client = self.client
        if client is not None and _usable(client):
            return client
        await self._close()
        return await self._log_in()

    async def _list_with(self, client: Client, mode: ModeName) -> Attempt:
        settings = self.settings
        connector = client.pinned_connector(settings.pinned(mode))
        line = f"LIST {settings.path}" if settings.path else "LIST"
        limit = settings.timeout * 3 + settings.control_timeout * 2
        try:
            async with asyncio.timeout(limit):
                opened = await connector.open(line)
                listed = await _read_listing(client, opened)
        except DataConnectionFailed as error:
            found = _CONNECT_BACK_REPLY.search(error.what)
            return _attempt(
                mode,
                connector,
                failure=error.what,
                cause=error.cause,
                connected_to=error.address or None,
                transfer_reply=found[1] if found and mode not in PASSIVE_MODES else None,
            )
        except ReplyError as error:  # to LIST: the data connection is not to blame
            transfer = _reply_text(error.reply)
            return _attempt(mode, connector, failure=error.what, transfer_reply=transfer)
        except ProtocolError as error:  # no reply in time, or the connection broke
            await _drop(client)
            return _attempt(mode, connector, failure=_unanswered(mode, connector, error))
        except FtpError as error:
            return _attempt(mode, connector, failure=error.what)
        except TimeoutError:
            await _drop(client)
            failure = f"the attempt did not finish within {limit:g} s"
            return _attempt(mode, connector, failure=failure, cause="timeout")
        return _attempt(mode, connector, connected_to=opened.stream.peer, listed_bytes=listed)


async def _drop(client: Client) -> None:
    """Close a session that is out of step (or already lost): the next attempt logs in again."""
    with contextlib.suppress(ProtocolError):  # what Client says when it is already closed
        await client.control.close()


def _usable(client: Client) -> bool:
    try:
        return not client.control.closed
    except ProtocolError:  # what Client says when its connection is closed
        return False


async def _read_listing(client: Client, opened: OpenedData) -> int:
    """Read the listing (up to a limit) and its final reply; the byte count."""
    stream = opened.stream
    if opened.reply.code >= 200:  # the server finished without sending data
        await stream.close()
        return 0
    buffer = memoryview(bytearray(64 * 1024))
    received = 0
    try:
        while received < _LISTING_LIMIT and (count := await stream.recv_into(buffer)):
            received += count
    except FtpError:
        stream.abort()
        if _usable(client):
            await client.control.resync()  # closes the connection if it cannot
        raise
    except BaseException:
        stream.abort()
        raise
    if received >= _LISTING_LIMIT:  # enough to know data flows: stop the rest
        stream.abort()
        if _usable(client):
            await client.control.resync()
        return received
    await stream.close()
    final = await client.control.read_reply()
    if final.code not in (226, 250):
        raise reply_error("LIST", final)
    return received


def _attempt(
    mode: ModeName,
    connector: DataConnector,
    *,
    failure: str | None = None,
    cause: str = "",
    connected_to: str | None = None,
    transfer_reply: str | None = None,
    listed_bytes: int = 0,
) -> Attempt:
    """The attempt as seen: the set-up line sent and its reply, then how it ended."""
    sent: str | None = None
    reply: str | None = None
    if connector.last_setup is not None:
        sent, setup_reply = connector.last_setup
        reply = _reply_text(setup_reply)
    return Attempt(
        mode,
        sent=sent,
        reply=reply,
        connected_to=connected_to,
        failure=failure,
        cause=cause,
        transfer_reply=transfer_reply,
        listed_bytes=listed_bytes,
    )


def _unanswered(mode: ModeName, connector: DataConnector, error: ProtocolError) -> str:
    """The failure text; in passive mode, silence after a connect that worked says more."""
    setup = connector.last_setup
    if mode not in PASSIVE_MODES or setup is None or setup[1].code not in (227, 229):
        return error.what
    return (
        f"the data connection was accepted, but the server never answered LIST ({error.what}): "
        "something other than the server took the connection"
    )


def _reply_text(reply: Reply) -> str:
    return f"{reply.code} " + " ".join(line.strip() for line in reply.lines)
