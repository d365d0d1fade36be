"""Brute-force protection for logins: a growing delay per failure, then a temporary ban.

Everything is keyed by the client's IP address, never by the user name:
keying by name would let anyone lock a real user out, and would treat an
unknown name differently from a known one, which is what user enumeration
feeds on. Unknown names and wrong passwords are one kind of failure here.

* Delay: the n-th consecutive failure from an address waits
  ``login_failure_delay * 2**(n-1)`` seconds before its 530, capped at
  ``login_failure_delay_max``. A successful login to an account from the
  address resets it; an anonymous one does not (anyone can log in so, and
  would otherwise guess at the base delay for ever).
* Ban: ``ban_after_failures`` failures within ``ban_window`` seconds ban the
  address for ``ban_duration`` seconds, whatever logins succeeded in between
  (as fail2ban counts); connections from it then get 421 before the banner.
  Addresses in ``ban_exempt`` are never banned (they are still delayed).

Memory is bounded: a record expires once its failures are older than the
window and its ban is over, expired records are swept out at most once a
minute, and the table never holds more than ``max_entries`` addresses
(the least recently seen are dropped first), so a botnet of many addresses
cannot grow it without bound.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

from ketch.protocol.addresses import plain_network

if TYPE_CHECKING:
    from ketch.config import ServerConfig

__all__ = ["FailureVerdict", "LoginGuard", "ban_reply_text"]

log = logging.getLogger("ketch.server")

Clock = Callable[[], float]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Most client addresses remembered at once.
MAX_ENTRIES = 100_000
#: Seconds between full sweeps of expired records.
SWEEP_INTERVAL = 60.0


@dataclass(frozen=True)
class FailureVerdict:
    """What one failed login costs: the wait before replying, and a ban if it caused one."""

    delay: float
    #: Seconds of the ban this failure started, or None.
    banned_for: float | None = None


@dataclass
class _Record:
    """What is remembered about one client address."""

    #: Failures since the last success (drives the delay).
    consecutive: int = 0
    #: Times of the failures inside the ban window, oldest first.
    failures: deque[float] = field(default_factory=deque)
    banned_until: float = 0.0
    last_failure: float = 0.0


class _Limits(TypedDict):
    base_delay: float
    max_delay: float
    ban_after: int
    ban_window: float
    ban_duration: float
    exempt: Iterable[str]


def _limits(config: ServerConfig) -> _Limits:
    """The guard's limits as the configuration names them."""
    return {
        "base_delay": config.login_failure_delay,
        "max_delay": config.login_failure_delay_max,
        "ban_after": config.ban_after_failures,
        "ban_window": config.ban_window,
        "ban_duration": config.ban_duration,
        "exempt": config.ban_exempt,
    }


class LoginGuard:
    """Failure records per client IP, shared by every session of one server."""

    def __init__(
        self,
        *,
        base_delay: float,
        max_delay: float,
        ban_after: int,
        ban_window: float,
        ban_duration: float,
        exempt: Iterable[str] = (),
        max_entries: int = MAX_ENTRIES,
        clock: Clock = time.monotonic,
    ) -> None:
        self.set_limits(
            base_delay=base_delay,
            max_delay=max_delay,
            ban_after=ban_after,
            ban_window=ban_window,
            ban_duration=ban_duration,
            exempt=exempt,
        )
        self.max_entries = max_entries
        self._clock = clock
        # Least recently touched first, so the oldest are dropped when full.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._last_sweep = clock()

    def set_limits(
        self,
        *,
        base_delay: float,
        max_delay: float,
        ban_after: int,
        ban_window: float,
        ban_duration: float,
        exempt: Iterable[str],
    ) -> None:
        """(Re)set the limits; the records of failures and bans are kept."""
        self.base_delay = base_delay
        # The cap never lowers the first failure's delay below the base.
        self.max_delay = max(max_delay, base_delay)
        self.ban_after = ban_after
        self.ban_window = ban_window
        self.ban_duration = ban_duration
        # plain_network, as the addresses asked about are plain_ip's.
        self.exempt: tuple[Network, ...] = tuple(plain_network(cidr) for cidr in exempt)

    def reconfigure(self, config: ServerConfig) -> None:
        """Take the limits of a reloaded configuration (SIGHUP)."""
        self.set_limits(**_limits(config))

    @classmethod
    def from_config(cls, config: ServerConfig) -> LoginGuard:
        return cls(**_limits(config))

    def __len__(self) -> int:
        return len(self._records)

    # -- questions -------------------------------------------------------------

    def ban_remaining(self, ip: str) -> float | None:
        """Seconds left on ``ip``'s ban, or None when it may connect and log in."""
        record = self._records.get(ip)
        if record is None:
            return None
        now = self._clock()
        if record.banned_until <= now:
            return None
        # A banned address that keeps knocking stays remembered.
        self._records.move_to_end(ip)
        return record.banned_until - now

    def is_exempt(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.exempt)

    # -- events ----------------------------------------------------------------

    def record_failure(self, ip: str) -> FailureVerdict:
        """Count a failed login from ``ip``; say how long to wait and whether it is now banned."""
        now = self._clock()
        self._sweep_if_due(now)
        record = self._records.get(ip)
        if record is None or self._expired(record, now):
            record = _Record()
            self._records[ip] = record
            self._evict_oldest()
        self._records.move_to_end(ip)
        record.consecutive += 1
        record.last_failure = now
        delay = min(self.base_delay * 2.0 ** min(record.consecutive - 1, 64), self.max_delay)
        if self.ban_after <= 0:
            return FailureVerdict(delay)
        failures = record.failures
        failures.append(now)
        while failures and failures[0] <= now - self.ban_window:
            failures.popleft()
        if len(failures) < self.ban_after or self.is_exempt(ip):
            # Never more than ban_after times are needed to decide.
            while len(failures) > self.ban_after:
                failures.popleft()
            return FailureVerdict(delay)
        count = len(failures)
        failures.clear()
        record.banned_until = now + self.ban_duration
        log.warning(
            "banned client=%s failures=%d window=%gs duration=%gs",
            ip,
            count,
            self.ban_window,
            self.ban_duration,
        )
        return FailureVerdict(delay, banned_for=self.ban_duration)

    def record_success(self, ip: str, *, anonymous: bool = False) -> None:
        """A login from ``ip`` worked: the delay of an account's login starts again from
        the base. The failures counted toward a ban stay (see the module's docstring)."""
        record = self._records.get(ip)
        if record is None or anonymous:
            return
        record.consecutive = 0
        if not record.failures and record.banned_until <= self._clock():
            del self._records[ip]

    # -- housekeeping ------------------------------------------------------------

    def _expired(self, record: _Record, now: float) -> bool:
        return record.banned_until <= now and record.last_failure + self.ban_window <= now

    def _sweep_if_due(self, now: float) -> None:
        if now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for ip in [ip for ip, record in self._records.items() if self._expired(record, now)]:
            del self._records[ip]

    def _evict_oldest(self) -> None:
        while len(self._records) > self.max_entries:
            ip, _ = self._records.popitem(last=False)
            log.debug("login failure table full (%d): forgot client=%s", self.max_entries, ip)


def ban_reply_text(ip: str, remaining: float) -> str:
    """The text of the 421 a banned address gets."""
    return (
        f"Temporarily banned: too many failed logins from your address {ip}; "
        f"try again in {math.ceil(remaining)} s."
    )
