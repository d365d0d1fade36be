"""Who may log in, and what they may do once in.

Passwords are stored only as argon2id hashes. Verifying one costs tens of
milliseconds of CPU by design, so it runs in a worker thread: a burst of
logins must not freeze every other session on the event loop. A hash made
with a deliberately tiny cost (see ``_INLINE_COST``) is checked on the loop
instead, since the thread hand-off would cost more than the check. Unknown
user names are checked against a dummy hash of the same cost, so a client
cannot tell "no such user" from "wrong password" by timing the reply. A
password verified lately is remembered for ``login_cache_seconds`` (see
verified_logins), so logging in again with it costs no second check.
"""

from __future__ import annotations

import asyncio
import difflib
import enum
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from ketch.server.verified_logins import VerifiedLogins

if TYPE_CHECKING:
    from ketch.config import ServerConfig

__all__ = [
    "ANONYMOUS_NAMES",
    "Account",
    "Authenticator",
    "Permission",
    "describe_access",
    "hash_password",
    "parse_permissions",
]

log = logging.getLogger(__name__)

ANONYMOUS_NAMES = frozenset({"anonymous", "ftp"})

#: Argon2 hashes whose time_cost x memory_cost (KiB) is at most this are verified on
#: the event loop: they take under ~60 us, about what handing the check to a worker
#: thread and back costs in CPU (measured with argon2-cffi 23), so a thread only adds
#: work. Any real cost (argon2-cffi's default is 3 x 64 MiB) goes to the thread.
_INLINE_COST = 64


class Permission(enum.Flag):
    """One flag per kind of command a user may be allowed to run."""

    NONE = 0
    LIST = 1
    READ = 2
    WRITE = 4
    APPEND = 8
    DELETE = 16
    RENAME = 32
    MKDIR = 64
    RMDIR = 128
    READ_ONLY = LIST | READ
    ALL = LIST | READ | WRITE | APPEND | DELETE | RENAME | MKDIR | RMDIR


_PERMISSION_WORDS: dict[str, Permission] = {
    "list": Permission.LIST,
    "read": Permission.READ,
    "write": Permission.WRITE,
    "append": Permission.APPEND,
    "delete": Permission.DELETE,
    "rename": Permission.RENAME,
    "mkdir": Permission.MKDIR,
    "rmdir": Permission.RMDIR,
    "all": Permission.ALL,
    "read-only": Permission.READ_ONLY,
}

PERMISSION_WORDS: tuple[str, ...] = tuple(_PERMISSION_WORDS)
"""The words ``parse_permissions`` accepts, in documentation order."""


def parse_permissions(names: Iterable[str]) -> Permission:
    """Combine permission words from the configuration into one flag set.

    Words are case-insensitive. An unknown word is an error rather than
    being ignored, since a typo would otherwise silently withhold access.
    """
    granted = Permission.NONE
    for name in names:
        flag = _PERMISSION_WORDS.get(name.strip().lower())
        if flag is None:
            close = difflib.get_close_matches(name.lower(), PERMISSION_WORDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown permission {name!r}; {hint}"
                f"allowed words are: {', '.join(PERMISSION_WORDS)}"
            )
        granted |= flag
    return granted


def describe_access(granted: Permission) -> str:
    """What ``granted`` allows, as people say it: "read-only" (list and read),
    "read-write" (everything), else the words granted ("list, read, delete")."""
    if granted == Permission.READ_ONLY:
        return "read-only"
    if granted == Permission.ALL:
        return "read-write"
    words = [str(flag.name).lower() for flag in Permission if flag & granted]
    return ", ".join(words) or "no access"


@dataclass(frozen=True)
class Account:
    """A logged-in identity: where it lives, what it may do, and its limits (0: none)."""

    name: str
    home: Path
    permissions: Permission
    anonymous: bool = False
    #: Bytes and regular files the home may hold (see ketch.server.quota).
    quota_bytes: int = 0
    quota_files: int = 0
    #: Bytes per second for all of this account's sessions together (ketch.server.throttle).
    download_rate: int = 0
    upload_rate: int = 0


def hash_password(password: str | bytes) -> str:
    """An argon2id hash of ``password`` with argon2-cffi's default cost."""
    return argon2.PasswordHasher().hash(password)


class Authenticator:
    """Checks user names and passwords against the configuration."""

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._users = {user.name: user for user in config.users}
        self._verifier = argon2.PasswordHasher()
        self._verified = VerifiedLogins(config.login_cache_seconds)
        # Same parameters as the users' hashes, so an unknown name costs the
        # same time as a wrong password. Built now (one hash, once) so even the
        # first unknown name is not slower; with no users there is nobody to
        # enumerate, and it is built on first need instead.
        self._dummy_hash: str | None = self._make_dummy_hash() if self._users else None
        self._accounts: dict[str, Account] = {}
        #: Hashes cheap enough to verify without a thread (see _INLINE_COST).
        self._inline_hashes = {
            hashed
            for hashed in [self._dummy_hash, *(user.password_hash for user in config.users)]
            if hashed is not None and _cheap_to_verify(hashed)
        }

    def knows(self, name: str) -> bool:
        """Whether ``name`` could log in at all; for log messages only."""
        if name.lower() in ANONYMOUS_NAMES:
            return self._config.anonymous_enabled()
        return name in self._users

    async def authenticate(self, name: str, password: str) -> Account | None:
        """The account for ``name`` if ``password`` is right, else None."""
        if name.lower() in ANONYMOUS_NAMES:
            return self._anonymous_account(name) if self._config.anonymous_enabled() else None

        user = self._users.get(name)
        if user is None:
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(self._make_dummy_hash)
            await self._check(self._dummy_hash, password)
            return None

        if not await self._check(user.password_hash, password):
            return None
        account = self._accounts.get(name)
        if account is None:
            # Made once per configuration: an Account is immutable, so every session
            # of the user shares it instead of holding a copy.
            account = self._accounts[name] = Account(
                name=user.name,
                home=user.home,
                permissions=parse_permissions(user.permissions),
                quota_bytes=user.quota_bytes,
                quota_files=user.quota_files,
                download_rate=user.download_rate,
                upload_rate=user.upload_rate,
            )
        return account

    def _anonymous_account(self, name: str) -> Account:
        # Any password is accepted: by convention it is the user's e-mail address.
        return Account(
            name=name.lower(),
            home=self._config.anonymous_home(),
            permissions=parse_permissions(self._config.anonymous.permissions),
            anonymous=True,
            download_rate=self._config.anonymous.download_rate,
            upload_rate=self._config.anonymous.upload_rate,
        )

    async def _check(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches: remembered, else verified (see _INLINE_COST)."""
        # A password that is not UTF-8 on the wire holds surrogate escapes;
        # check its original bytes, so it is checked, not an internal error.
        secret = password.encode("utf-8", "surrogateescape")
        if self._verified.holds(password_hash, secret):
            return True
        if password_hash in self._inline_hashes:
            matches = self._verify(password_hash, secret)
        else:
            matches = await asyncio.to_thread(self._verify, password_hash, secret)
        if matches:
            self._verified.remember(password_hash, secret)
        return matches

    def _verify(self, password_hash: str, secret: bytes) -> bool:
        """Runs in a worker thread; blocking for the hash's full cost is the point."""
        try:
            return self._verifier.verify(password_hash, secret)
        except VerificationError:
            return False
        except InvalidHashError:
            log.warning(
                "a password_hash in the configuration is not a valid argon2 hash; "
                "create a new one with `ketch user hash`"
            )
            return False

    def _make_dummy_hash(self) -> str:
        """A hash of a random secret with the same parameters as a real user's."""
        hasher = argon2.PasswordHasher()
        for user in self._users.values():
            try:
                hasher = argon2.PasswordHasher.from_parameters(
                    argon2.extract_parameters(user.password_hash)
                )
                break
            except InvalidHashError:
                continue
        return hasher.hash(secrets.token_hex(16))


def _cheap_to_verify(password_hash: str) -> bool:
    """Whether ``password_hash`` is an argon2 hash under ``_INLINE_COST`` (False if no hash)."""
    try:
        parameters = argon2.extract_parameters(password_hash)
    except InvalidHashError:
        return False
    return parameters.time_cost * parameters.memory_cost <= _INLINE_COST
