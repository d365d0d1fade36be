"""Passwords lately verified, so that logging in again skips the argon2 check.

An argon2 check costs what its hash's parameters say on every login, by
design: argon2-cffi's default is some 50 ms of CPU and 64 MiB, which makes a
stolen hash slow to crack. A script that logs in every few seconds, or a
client opening ten connections at once (``lftp mirror --parallel``), pays it
every time. Like Dovecot's auth cache, the server therefore remembers a
successful check for a while: as a BLAKE2b digest of the password, keyed with
a random key (made anew with each configuration), next to the hash it matched. A later login
with the same password against the same hash matches that digest in a
microsecond. A wrong password still costs a full check, so guessing is as
slow as ever; a changed hash (a reload) matches nothing; and the digests live
only in this process's memory, which the passwords themselves pass through.
The trade-off: a reader of that memory could test guesses against a digest
at BLAKE2b speed, not argon2's, for passwords used in the last ``seconds``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["MAX_REMEMBERED", "VerifiedLogins"]

#: Most (hash, password) pairs remembered at once; the oldest go first.
MAX_REMEMBERED = 4096


class VerifiedLogins:
    """Which password each hash was lately verified with, for ``seconds`` after the check."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # password hash -> (keyed digest of the password, when the check expires);
        # in the order the checks were made, so the first entry is the oldest.
        self._checks: dict[str, tuple[bytes, float]] = {}

    def holds(self, password_hash: str, secret: bytes) -> bool:
        """Whether ``secret`` was verified against ``password_hash`` in the last ``seconds``."""
        check = self._checks.get(password_hash)
        if check is None:
            return False
        digest, expires = check
        if self._clock() >= expires:
            del self._checks[password_hash]
            return False
        return hmac.compare_digest(digest, self._digest(secret))

    def remember(self, password_hash: str, secret: bytes) -> None:
        """Note that ``secret`` was just verified against ``password_hash``."""
        if self._seconds <= 0:
            return
        self._checks.pop(password_hash, None)  # to the end: the newest
        self._checks[password_hash] = (self._digest(secret), self._clock() + self._seconds)
        if len(self._checks) > MAX_REMEMBERED:
            del self._checks[next(iter(self._checks))]

    def _digest(self, secret: bytes) -> bytes:
        return hashlib.blake2b(secret, key=self._key, digest_size=32).digest()
