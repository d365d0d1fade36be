"""What every session of one server shares: configuration, accounts, ports, counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ketch.config import PortRange, ServerConfig
from ketch.server.auth import Authenticator
from ketch.server.listing_workers import ListingWorkers
from ketch.server.login_guard import LoginGuard
from ketch.server.masquerade import MasqueradePolicy, PrivateAdvertisementWarnings
from ketch.server.passive_ports import PassivePortPool
from ketch.server.quota import QuotaBook
from ketch.server.throttle import RateBook
from ketch.server.tls import ServerTls
from ketch.server.user_sessions import UserSessions

__all__ = ["ServerContext"]


@dataclass
class ServerContext:
    config: ServerConfig
    authenticator: Authenticator
    passive_ports: PassivePortPool
    #: What PASV advertises to whom: masquerade_map, masquerade_address (kept resolved).
    masquerade: MasqueradePolicy = field(default_factory=MasqueradePolicy)
    #: Warns once per address when PASV advertises a private one to a public client.
    private_advertisements: PrivateAdvertisementWarnings = field(
        default_factory=PrivateAdvertisementWarnings
    )
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
    #: The TLS context for AUTH TLS, implicit FTPS and PROT P (None: no certificate, no FTPS).
    tls: ServerTls | None = None
    #: The processes that make big LIST and MLSD listings (started on first need).
    listing_workers: ListingWorkers = field(init=False)
    #: Set when a graceful shutdown begins: a session ends at its next wait for a command.
    stopping: bool = False

    def __post_init__(self) -> None:
        self.login_guard = LoginGuard.from_config(self.config)
        self.user_sessions = UserSessions(self.config)
        self.listing_workers = ListingWorkers(
            counters=self.counters, keep_names=self.config.listing_cache
        )

    @classmethod
    def from_config(
        cls, config: ServerConfig, passive_ports: PortRange | None = None
    ) -> ServerContext:
        """The context of a server; ``passive_ports`` narrows the range (a worker's slice)."""
        return cls(
            config=config,
            authenticator=Authenticator(config),
            passive_ports=PassivePortPool(
                passive_ports or config.passive_ports, configured=config.passive_ports
            ),
            masquerade=MasqueradePolicy.from_config(config),
        )

    def reconfigure(
        self, config: ServerConfig, authenticator: Authenticator, masquerade: MasqueradePolicy
    ) -> None:
        """Swap in a reloaded configuration (SIGHUP), all in one step.

        Whatever reads ``context.config`` or ``context.authenticator`` at use
        time sees the new values from here on. State that outlives a reload
        (passive ports in use, counters, failed logins and bans, open sessions
        per user) is kept, under the new limits.
        """
        self.config = config
        self.authenticator = authenticator
        self.masquerade = masquerade
        self.login_guard.reconfigure(config)
        self.user_sessions.reconfigure(config)
        self.listing_workers.keep_names = config.listing_cache
