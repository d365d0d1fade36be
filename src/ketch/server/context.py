"""What every session of one server shares: configuration, accounts, ports, counters."""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass, field

from ketch.config import ServerConfig
from ketch.server.auth import Authenticator
from ketch.server.passive_ports import PassivePortPool

__all__ = ["ServerContext"]


@dataclass
class ServerContext:
    config: ServerConfig
    authenticator: Authenticator
    passive_ports: PassivePortPool
    #: The address PASV advertises to non-local clients (masquerade_address, resolved).
    masquerade_ip: str | None = None
    #: Event counters (logins, refusals, transfers...) for STAT and tests.
    counters: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServerContext:
        return cls(
            config=config,
            authenticator=Authenticator(config),
            passive_ports=PassivePortPool(config.passive_ports),
            masquerade_ip=resolve_ipv4(config.masquerade_address),
        )


def resolve_ipv4(name: str | None) -> str | None:
    """The IPv4 address of a masquerade name (PASV can only carry IPv4)."""
    if name is None:
        return None
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(
            f"masquerade_address {name!r} does not resolve to an IPv4 address ({error.strerror}); "
            "use an IPv4 address or a name with an A record"
        ) from None
    return str(infos[0][4][0])
