"""What every session of one server shares: configuration, accounts, ports, counters."""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass, field

from ketch.config import PortRange, ServerConfig
from ketch.server.auth import Authenticator
from ketch.server.login_guard import LoginGuard
from ketch.server.passive_ports import PassivePortPool
from ketch.server.quota import QuotaBook
from ketch.server.throttle import RateBook
from ketch.server.user_sessions import UserSessions

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
    #: Disk usage per home, for users with a quota (shared by all their sessions).
    quotas: QuotaBook = field(default_factory=QuotaBook)
    #: Bandwidth buckets per account and direction (shared by all its sessions).
    rates: RateBook = field(default_factory=RateBook)
    #: Failed logins per client IP: growing delays and temporary bans.
    login_guard: LoginGuard = field(init=False)
    #: Logged-in sessions per account, against max_sessions_per_user.
    user_sessions: UserSessions = field(init=False)
    #: "worker 2 of 4 (pid N)" when this process is one of several workers (see workers.py).
    worker: str | None = None

    def __post_init__(self) -> None:
        self.login_guard = LoginGuard.from_config(self.config)
        self.user_sessions = UserSessions(self.config)

    @classmethod
    def from_config(
        cls, config: ServerConfig, passive_ports: PortRange | None = None
    ) -> ServerContext:
        """The context of a server; ``passive_ports`` narrows the range (a worker's slice)."""
        return cls(
            config=config,
            authenticator=Authenticator(config),
            passive_ports=PassivePortPool(passive_ports or config.passive_ports),
            masquerade_ip=resolve_ipv4(config.masquerade_address),
        )

    def reconfigure(
        self, config: ServerConfig, authenticator: Authenticator, masquerade_ip: str | None
    ) -> None:
        """Swap in a reloaded configuration (SIGHUP), all in one step.

        Whatever reads ``context.config`` or ``context.authenticator`` at use
        time sees the new values from here on. State that outlives a reload
        (passive ports in use, counters, failed logins and bans, open sessions
        per user) is kept, under the new limits.
        """
        self.config = config
        self.authenticator = authenticator
        self.masquerade_ip = masquerade_ip
        self.login_guard.reconfigure(config)
        self.user_sessions.reconfigure(config)


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
