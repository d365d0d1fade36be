"""Per-user quotas: how many bytes and regular files a user's home may hold.

Usage is measured once per home directory, lazily: the first upload, DELE
or RNTO of an account with a quota walks the home in a worker thread
(regular files only, symlinks not followed, upload temporary files
skipped; sizes are apparent sizes, as listings show them). From then on
the server keeps the count itself: uploads charge what they write, DELE and
an RNTO that replaces a file give back what they remove. Directories are
free: MKD and RMD do not count.

One :class:`QuotaLedger` per home is shared by every session of the server
(through the server context), so concurrent sessions of a user draw on the
same numbers. Everything that changes a ledger runs on the event loop
without awaiting between checking and changing, so two sessions cannot both
take the last free byte. Every tracked change first waits for the scan, so
none can be lost or counted twice by racing it.

Limits: changes made outside ketch (a local user, another server process)
and changes by accounts without a quota that share the home are not seen
until the server restarts.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketch.server.jail import UPLOAD_TEMP_PREFIX
from ketch.server.transfers import TransferRefused

if TYPE_CHECKING:
    from ketch.server.auth import Account

__all__ = ["Quota", "QuotaBook", "QuotaExceeded", "QuotaLedger", "QuotaLimits", "scan_usage"]

Scanner = Callable[[str], tuple[int, int]]


class QuotaExceeded(TransferRefused):
    """An upload would take the home over its quota: reply 552."""

    def __init__(self, text: str) -> None:
        super().__init__(552, text)


def scan_usage(home: str) -> tuple[int, int]:
    """The bytes and regular files under ``home``; unreadable parts count as empty.

    ``os.fwalk`` goes down by directory descriptors and never through a
    symlink, so a directory swapped for a symlink meanwhile is not walked
    into: a local user cannot make the count take in a tree outside the home.
    """
    total_bytes = total_files = 0
    try:
        for _, _, names, directory in os.fwalk(home):
            for name in names:
                if name.startswith(UPLOAD_TEMP_PREFIX):
                    continue
                try:
                    info = os.stat(name, dir_fd=directory, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    total_bytes += info.st_size
                    total_files += 1
    except OSError:  # the home itself is missing or unreadable (fwalk stats it first)
        pass
    return total_bytes, total_files


@dataclass(frozen=True)
class QuotaLimits:
    """An account's quota; 0 means no limit on that measure."""

    bytes: int = 0
    files: int = 0


class QuotaLedger:
    """The usage of one home directory, measured once and then kept up to date."""

    def __init__(self, home: str, scan: Scanner = scan_usage) -> None:
        self.home = home
        self.bytes = 0
        self.files = 0
        self._scan = scan
        self._measuring: asyncio.Task[None] | None = None
        self._measured = False

    async def ready(self) -> None:
        """Wait until the home has been measured (one scan, however many sessions ask)."""
        if self._measured:
            return
        if self._measuring is None:
            self._measuring = asyncio.get_running_loop().create_task(self._measure())
        # Shielded: a session that gives up waiting must not cancel the others' scan.
        await asyncio.shield(self._measuring)

    async def _measure(self) -> None:
        used_bytes, used_files = await asyncio.to_thread(self._scan, self.home)
        self.bytes += used_bytes
        self.files += used_files
        self._measured = True

    def check(self, limits: QuotaLimits, add_bytes: int, add_files: int) -> None:
        """Raise QuotaExceeded if adding this much would go over ``limits``."""
        if add_files > 0 and limits.files and self.files + add_files > limits.files:
            raise QuotaExceeded(
                f"Quota exceeded ({limits.files} files allowed, {self.files} in use); "
                "delete files to make room."
            )
        if add_bytes > 0 and limits.bytes and self.bytes + add_bytes > limits.bytes:
            raise QuotaExceeded(
                f"Quota exceeded ({limits.bytes} bytes allowed, {self.bytes} in use "
                "including uploads in progress); delete files to make room."
            )

    def adjust(self, add_bytes: int, add_files: int) -> None:
        """Record a change that has happened (or is given back); never refused."""
        self.bytes += add_bytes
        self.files += add_files


@dataclass(frozen=True)
class Quota:
    """One account's limits applied to its home's ledger."""

    ledger: QuotaLedger
    limits: QuotaLimits

    def check(self, add_bytes: int, add_files: int) -> None:
        self.ledger.check(self.limits, add_bytes, add_files)

    def charge(self, add_bytes: int, add_files: int) -> None:
        """Record a growth, or raise QuotaExceeded and record nothing."""
        self.ledger.check(self.limits, add_bytes, add_files)
        self.ledger.adjust(add_bytes, add_files)

    def adjust(self, add_bytes: int, add_files: int) -> None:
        self.ledger.adjust(add_bytes, add_files)


class QuotaBook:
    """The ledgers of one server, one per home directory, made on first need."""

    def __init__(self, scan: Scanner = scan_usage) -> None:
        self._scan = scan
        self._ledgers: dict[str, QuotaLedger] = {}

    async def quota_for(self, account: Account) -> Quota | None:
        """The measured quota of ``account``, or None when it has none."""
        if not account.quota_bytes and not account.quota_files:
            return None
        home = str(account.home)  # already resolved when the configuration was loaded
        ledger = self._ledgers.get(home)
        if ledger is None:
            ledger = self._ledgers[home] = QuotaLedger(home, self._scan)
        await ledger.ready()
        return Quota(ledger, QuotaLimits(account.quota_bytes, account.quota_files))
