"""How many sessions each account has logged in, and how many it may have.

A stolen password shared around, or a client gone wild, should not take
every connection slot of the server: ``max_sessions_per_user`` caps the
logged-in sessions of one account, ``users[].max_sessions`` overrides it per
user, and all anonymous sessions count as the one account "anonymous"
(capped by ``anonymous.max_sessions``, which defaults to unlimited because a
public anonymous server serves everybody through that one account).
0 always means unlimited.

The count is taken only *after* the password was verified, so the refusal
tells nothing about an account to someone who does not know its password.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ketch.server.auth import Account

if TYPE_CHECKING:
    from ketch.config import ServerConfig

__all__ = ["ANONYMOUS_KEY", "UserSessions"]

#: The name every anonymous session is counted under.
ANONYMOUS_KEY = "anonymous"


class UserSessions:
    """Logged-in sessions per account, shared by every session of one server."""

    def __init__(self, config: ServerConfig) -> None:
        self._open: Counter[str] = Counter()
        self.reconfigure(config)

    def reconfigure(self, config: ServerConfig) -> None:
        """Take the limits of a (reloaded) configuration; open sessions stay counted."""
        self._default = config.max_sessions_per_user
        self._anonymous = config.anonymous.max_sessions
        self._per_user = {
            user.name: user.max_sessions for user in config.users if user.max_sessions is not None
        }

    @staticmethod
    def key(account: Account) -> str:
        return ANONYMOUS_KEY if account.anonymous else account.name

    def limit(self, account: Account) -> int:
        """The most sessions ``account`` may have at once; 0 means no limit."""
        if account.anonymous:
            return self._anonymous
        return self._per_user.get(account.name, self._default)

    def count(self, key: str) -> int:
        return self._open[key]

    def acquire(self, account: Account) -> str | None:
        """Count one more session for ``account``: its key, or None when it has its limit."""
        key = self.key(account)
        limit = self.limit(account)
        if limit and self._open[key] >= limit:
            return None
        self._open[key] += 1
        return key

    def release(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
