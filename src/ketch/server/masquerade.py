"""Which address a PASV reply advertises: masquerade_map, masquerade_address, its TLS variant.

A server behind NAT must tell clients an address they can reach, which is
not the one its sockets are bound to. The choice, for one session (the
shared contract C1 in the NAT work):

1. a ``masquerade_map`` network holding the client (longest prefix wins);
2. else, a loopback client gets the control connection's local address;
3. else ``tls_masquerade_address`` for a TLS control connection, if set;
4. else ``masquerade_address``;
5. else the control connection's local address.

A configured value may be a host name (dynamic DNS): it is resolved at
start-up (a name that does not resolve stops the server, as a typo should),
then again at most every ``masquerade_refresh`` seconds when a PASV needs
it. The new lookup runs off the event loop and PASV waits for it only
briefly; a failed lookup keeps the last good address and is logged once
per streak of failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ketch.config import ServerConfig
from ketch.protocol.addresses import is_ip_literal

__all__ = [
    "AdvertisedAddress",
    "MapEntry",
    "MasqueradePolicy",
    "PrivateAdvertisementWarnings",
    "longest_prefix_match",
    "private_advertisement_warning",
    "resolve_ipv4",
    "resolve_ipv4_async",
]

log = logging.getLogger("ketch.server")

#: Resolves a host name to one IPv4 address (text); raises OSError or ValueError.
AsyncResolver = Callable[[str], Awaitable[str]]
Clock = Callable[[], float]

#: How long a PASV waits for a due re-resolution before using the last good address.
REFRESH_WAIT = 1.0
#: Longest a single re-resolution may take before it counts as failed.
RESOLVE_TIMEOUT = 10.0


def resolve_ipv4(name: str, setting: str = "masquerade_address") -> str:
    """The IPv4 address of an address setting (PASV can only carry IPv4); blocking.

    ``setting`` names the key in the error, which stops start-up or a reload.
    """
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise ValueError(
            f"{setting} {name!r} does not resolve to an IPv4 address ({reason}); "
            "use an IPv4 address or a name with an A record"
        ) from None
    return str(infos[0][4][0])


async def resolve_ipv4_async(name: str) -> str:
    """:func:`resolve_ipv4` for a running server: the lookup runs off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
    )
    if not infos:
        raise OSError(f"{name} has no IPv4 address")
    return str(infos[0][4][0])


class AdvertisedAddress:
    """One configured address (an IPv4 address or a host name) and its latest resolution."""

    def __init__(
        self,
        setting: str,
        configured: str,
        ip: str,
        *,
        refresh: float,
        resolver: AsyncResolver = resolve_ipv4_async,
        clock: Clock = time.monotonic,
    ) -> None:
        #: The key it comes from, for log lines: 'masquerade_map["10.0.0.0/8"]'.
        self.setting = setting
        self.configured = configured
        self._ip = ip
        self._is_name = not is_ip_literal(configured)
        self._refresh = refresh
        self._resolver = resolver
        self._clock = clock
        self._checked_at = clock()
        self._pending: asyncio.Task[None] | None = None
        self._failing = False

    @classmethod
    def resolved(
        cls,
        setting: str,
        configured: str,
        *,
        refresh: float,
        resolver: AsyncResolver = resolve_ipv4_async,
        clock: Clock = time.monotonic,
    ) -> AdvertisedAddress:
        """Resolve ``configured`` now (blocking: start-up or a reload's thread)."""
        ip = resolve_ipv4(configured, setting)
        return cls(setting, configured, ip, refresh=refresh, resolver=resolver, clock=clock)

    @property
    def ip(self) -> str:
        """The last good address, without looking it up again."""
        return self._ip

    async def current(self, wait: float = REFRESH_WAIT) -> str:
        """The address to advertise now, re-resolving a name that is due (waiting ``wait`` s)."""
        due = self._clock() - self._checked_at >= self._refresh
        if self._is_name and self._pending is None and due:
            self._checked_at = self._clock()
            self._pending = asyncio.get_running_loop().create_task(self._re_resolve())
        if self._pending is not None:
            # shield: a slow lookup goes on in the background for the next PASV.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pending), wait)
        return self._ip

    async def _re_resolve(self) -> None:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                ip = await self._resolver(self.configured)
            ip = str(ipaddress.IPv4Address(ip))
        except (OSError, ValueError, TimeoutError) as error:
            if not self._failing:
                self._failing = True
                log.warning(
                    "%s %r could not be resolved again (%s); PASV keeps advertising %s. "
                    "Check the name's DNS record, or set an IP address",
                    self.setting,
                    self.configured,
                    _reason(error),
                    self._ip,
                )
            return
        finally:
            self._pending = None
        if self._failing:
            self._failing = False
            log.info("%s %r resolves again, to %s", self.setting, self.configured, ip)
        if ip != self._ip:
            log.info(
                "%s %r now resolves to %s (was %s); PASV advertises the new address",
                self.setting,
                self.configured,
                ip,
                self._ip,
            )
            self._ip = ip


@dataclass(frozen=True)
class MapEntry:
    """One masquerade_map line: clients in ``network`` are told ``address``."""

    network: ipaddress.IPv4Network
    address: AdvertisedAddress


def longest_prefix_match(
    networks: list[ipaddress.IPv4Network], client_ip: str
) -> ipaddress.IPv4Network | None:
    """The most specific of ``networks`` holding ``client_ip``, or None."""
    if not networks:
        return None  # no masquerade_map: skip parsing the address on every PASV
    try:
        client = ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    holding = [network for network in networks if client in network]
    return max(holding, key=lambda network: network.prefixlen, default=None)


class MasqueradePolicy:
    """The advertised-address choice for a server's configuration (see the module text)."""

    def __init__(
        self,
        *,
        masquerade: AdvertisedAddress | None = None,
        tls_masquerade: AdvertisedAddress | None = None,
        entries: list[MapEntry] | None = None,
    ) -> None:
        self.masquerade = masquerade
        self.tls_masquerade = tls_masquerade
        self._entries = {entry.network: entry for entry in entries or []}

    @classmethod
    def from_config(
        cls,
        config: ServerConfig,
        *,
        resolver: AsyncResolver = resolve_ipv4_async,
        clock: Clock = time.monotonic,
    ) -> MasqueradePolicy:
        """Resolve every configured name now (blocking); ValueError names one that fails."""

        def address(setting: str, value: str | None) -> AdvertisedAddress | None:
            if value is None:
                return None
            return AdvertisedAddress.resolved(
                setting, value, refresh=config.masquerade_refresh, resolver=resolver, clock=clock
            )

        entries = []
        for network, value in config.masquerade_map.items():
            resolved = address(f'masquerade_map["{network}"]', value)
            assert resolved is not None
            entries.append(MapEntry(ipaddress.IPv4Network(network), resolved))
        return cls(
            masquerade=address("masquerade_address", config.masquerade_address),
            tls_masquerade=address("tls_masquerade_address", config.tls_masquerade_address),
            entries=entries,
        )

    def resolved_names(self) -> dict[str, str]:
        """Each configured value -> the address it stands for now (the start-up summary)."""
        addresses = [self.masquerade, self.tls_masquerade]
        addresses += [entry.address for entry in self._entries.values()]
        return {address.configured: address.ip for address in addresses if address is not None}

    def source_for(self, client_ip: str, *, tls: bool) -> AdvertisedAddress | None:
        """The configured address that applies to this client; None: the local address."""
        network = longest_prefix_match(list(self._entries), client_ip)
        if network is not None:
            return self._entries[network].address
        if _is_loopback(client_ip):
            return None
        if tls and self.tls_masquerade is not None:
            return self.tls_masquerade
        return self.masquerade

    async def advertised(self, client_ip: str, local_ip: str, *, tls: bool) -> str:
        """The address a PASV reply to this client names."""
        source = self.source_for(client_ip, tls=tls)
        return local_ip if source is None else await source.current()


# Cached: is_global walks a list of networks, twice per PASV; the pairs seen are few.
@functools.lru_cache(maxsize=1024)
def private_advertisement_warning(advertised: str, client_ip: str) -> str | None:
    """Why advertising ``advertised`` to ``client_ip`` will likely fail, or None.

    A client on a global address cannot reach a private one: the server is
    behind NAT and does not know its public address.
    """
    try:
        address = ipaddress.ip_address(advertised)
        client = ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    if address.is_global or not client.is_global:
        return None
    return (
        f"PASV advertises the private address {advertised} to client {client_ip}, which "
        "connects from a public address and probably cannot reach it: if the server is behind "
        "NAT, set masquerade_address to its public address (or a masquerade_map entry for "
        "that client's network)"
    )


class PrivateAdvertisementWarnings:
    """:func:`private_advertisement_warning`, but once per advertised address per server.

    One line tells the admin; a line per PASV would bury the log.
    """

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def check(self, advertised: str, client_ip: str) -> str | None:
        """The warning to log now, or None (nothing wrong, or said already)."""
        if advertised in self._warned:
            return None
        warning = private_advertisement_warning(advertised, client_ip)
        if warning is not None:
            self._warned.add(advertised)
        return warning


@functools.lru_cache(maxsize=1024)  # asked on every PASV, mostly for the same few clients
def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {RESOLVE_TIMEOUT:g} s"
    if isinstance(error, socket.gaierror):
        return error.strerror or str(error)
    return str(error) or type(error).__name__
