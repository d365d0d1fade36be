"""Permissions, password hashing and the authenticator, with real argon2 hashes."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import argon2
import pytest

from ketch.config import AnonymousConfig, ServerConfig, UserConfig
from ketch.server.auth import (
    ANONYMOUS_NAMES,
    Account,
    Authenticator,
    Permission,
    describe_access,
    hash_password,
    parse_permissions,
)
from ketch.server.verified_logins import MAX_REMEMBERED, VerifiedLogins

from fake_clock import FakeClock

# Cheap parameters keep the suite fast; verification reads them from the hash.
_CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


# -- permissions -----------------------------------------------------------------


def test_permission_words_combine() -> None:
    assert parse_permissions(["list", "read"]) == Permission.LIST | Permission.READ
    assert parse_permissions(["LIST", " Write "]) == Permission.LIST | Permission.WRITE
    assert parse_permissions([]) == Permission.NONE


def test_all_and_read_only_shorthands() -> None:
    assert parse_permissions(["read-only"]) == Permission.READ_ONLY
    assert Permission.READ_ONLY == Permission.LIST | Permission.READ
    assert parse_permissions(["all"]) == Permission.ALL
    singles = ["list", "read", "write", "append", "delete", "rename", "mkdir", "rmdir"]
    for word in singles:
        assert parse_permissions([word]) in Permission.ALL
    assert parse_permissions(singles) == Permission.ALL
    assert Permission.WRITE not in Permission.READ_ONLY


def test_unknown_permission_names_the_allowed_words() -> None:
    with pytest.raises(ValueError, match="unknown permission 'wrte'") as caught:
        parse_permissions(["read", "wrte"])
    message = str(caught.value)
    assert "did you mean 'write'?" in message
    for word in ("list", "read", "write", "append", "delete", "rename", "mkdir", "rmdir"):
        assert word in message
    assert "read-only" in message and "all" in message


# -- hashing -----------------------------------------------------------------------


def test_hash_password_round_trip_with_argon2id() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(hashed, "correct horse")
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        argon2.PasswordHasher().verify(hashed, "wrong horse")
    assert hash_password("correct horse") != hashed  # salted


# -- the authenticator ---------------------------------------------------------------


def _config(tmp_path: Path, *, anonymous: bool = True, **user_fields: object) -> ServerConfig:
    alice_home = tmp_path / "alice"
    alice_home.mkdir(exist_ok=True)
    alice = UserConfig.model_validate(
        {
            "name": "alice",
            "password_hash": _CHEAP.hash("s3cret"),
            "home": alice_home,
            "permissions": ["all"],
            **user_fields,
        }
    )
    return ServerConfig(
        root=tmp_path,
        users=[alice],
        anonymous=AnonymousConfig(enabled=anonymous),
    )


def test_right_password_gives_the_account(tmp_path: Path) -> None:
    authenticator = Authenticator(_config(tmp_path))
    account = asyncio.run(authenticator.authenticate("alice", "s3cret"))
    assert account == Account(
        name="alice",
        home=(tmp_path / "alice").resolve(),
        permissions=Permission.ALL,
        anonymous=False,
    )


def test_unknown_user_and_wrong_password_both_fail(tmp_path: Path) -> None:
    authenticator = Authenticator(_config(tmp_path))
    assert asyncio.run(authenticator.authenticate("alice", "wrong")) is None
    assert asyncio.run(authenticator.authenticate("mallory", "s3cret")) is None
    assert asyncio.run(authenticator.authenticate("ALICE", "s3cret")) is None  # names are exact
    assert asyncio.run(authenticator.authenticate("", "")) is None


def test_unknown_user_is_checked_against_a_hash_of_the_same_cost(tmp_path: Path) -> None:
    config = _config(tmp_path)
    authenticator = Authenticator(config)
    asyncio.run(authenticator.authenticate("mallory", "guess"))
    dummy = authenticator._dummy_hash
    assert dummy is not None
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(
        config.users[0].password_hash
    )


def test_password_check_does_not_block_the_event_loop(tmp_path: Path) -> None:
    # A deliberately slow hash: if it ran on the loop, the ticker would stall.
    slow = argon2.PasswordHasher(time_cost=3, memory_cost=32768, parallelism=1)
    config = _config(tmp_path, password_hash=slow.hash("s3cret"))
    authenticator = Authenticator(config)

    async def scenario() -> tuple[int, float]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = time.perf_counter()
        account = await authenticator.authenticate("alice", "s3cret")
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        assert account is not None
        return ticks, elapsed

    ticks, elapsed = asyncio.run(scenario())
    assert elapsed > 0.01, "the hash was too cheap for this test to mean anything"
    assert ticks >= 5


@pytest.mark.parametrize("name", ["anonymous", "ftp", "Anonymous", "FTP"])
def test_anonymous_names_log_in_with_any_password(tmp_path: Path, name: str) -> None:
    authenticator = Authenticator(_config(tmp_path))
    account = asyncio.run(authenticator.authenticate(name, "me@example.com"))
    assert account is not None
    assert account.anonymous
    assert account.name in ANONYMOUS_NAMES
    assert account.home == tmp_path.resolve()
    assert account.permissions == Permission.READ_ONLY


def test_anonymous_home_and_permissions_come_from_config(tmp_path: Path) -> None:
    pub = tmp_path / "pub"
    pub.mkdir()
    config = ServerConfig(
        root=tmp_path,
        anonymous=AnonymousConfig(home=pub, permissions=["list", "read", "write"]),
    )
    account = asyncio.run(Authenticator(config).authenticate("anonymous", ""))
    assert account is not None
    assert account.home == pub.resolve()
    assert account.permissions == Permission.LIST | Permission.READ | Permission.WRITE


def test_anonymous_disabled_refuses_anonymous(tmp_path: Path) -> None:
    authenticator = Authenticator(_config(tmp_path, anonymous=False))
    assert asyncio.run(authenticator.authenticate("anonymous", "me@example.com")) is None
    assert asyncio.run(authenticator.authenticate("ftp", "")) is None
    assert not authenticator.knows("anonymous")
    assert asyncio.run(authenticator.authenticate("alice", "s3cret")) is not None


def test_knows_names_that_could_log_in(tmp_path: Path) -> None:
    authenticator = Authenticator(_config(tmp_path))
    assert authenticator.knows("alice")
    assert authenticator.knows("Anonymous")
    assert not authenticator.knows("mallory")


# -- verified passwords remembered (login_cache_seconds) ---------------------------


class _CountingHasher(argon2.PasswordHasher):
    """A real argon2 verifier that counts its checks."""

    checks = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.checks += 1
        return super().verify(hash, password)


def _counted(config: ServerConfig) -> tuple[Authenticator, _CountingHasher]:
    authenticator = Authenticator(config)
    hasher = authenticator._verifier = _CountingHasher()
    return authenticator, hasher


def test_a_verified_password_is_not_checked_again_but_a_wrong_one_always_is(
    tmp_path: Path,
) -> None:
    authenticator, hasher = _counted(_config(tmp_path))

    async def logins() -> None:
        for _ in range(3):
            assert await authenticator.authenticate("alice", "s3cret") is not None
        assert hasher.checks == 1
        for guess in ("wrong", "s3cret ", "S3cret", ""):
            assert await authenticator.authenticate("alice", guess) is None
        assert hasher.checks == 5
        assert await authenticator.authenticate("alice", "s3cret") is not None
        assert hasher.checks == 5  # wrong guesses did not make it forget
        assert await authenticator.authenticate("mallory", "s3cret") is None  # the dummy hash
        assert hasher.checks == 6

    asyncio.run(logins())


def test_login_cache_seconds_0_checks_every_login(tmp_path: Path) -> None:
    config = _config(tmp_path).model_copy(update={"login_cache_seconds": 0.0})
    authenticator, hasher = _counted(config)

    async def logins() -> None:
        for _ in range(3):
            assert await authenticator.authenticate("alice", "s3cret") is not None

    asyncio.run(logins())
    assert hasher.checks == 3


def test_a_password_of_bytes_not_utf8_is_remembered_as_its_bytes(tmp_path: Path) -> None:
    raw = b"caf\xe9"  # Latin-1 on the wire: decoded with surrogate escapes
    password = raw.decode("utf-8", "surrogateescape")
    authenticator, hasher = _counted(_config(tmp_path, password_hash=_CHEAP.hash(raw)))

    async def logins() -> None:
        for _ in range(2):
            assert await authenticator.authenticate("alice", password) is not None
        assert await authenticator.authenticate("alice", "café") is None

    asyncio.run(logins())
    assert hasher.checks == 2


def test_verified_logins_expire_after_their_seconds() -> None:
    clock = FakeClock()
    verified = VerifiedLogins(60.0, clock)
    verified.remember("$hash-a", b"pw")
    assert verified.holds("$hash-a", b"pw")
    assert not verified.holds("$hash-a", b"pw2")
    assert not verified.holds("$hash-b", b"pw")  # another hash: another user or a new hash
    clock.now += 59.9
    assert verified.holds("$hash-a", b"pw")  # holding it does not extend it
    clock.now += 0.1
    assert not verified.holds("$hash-a", b"pw")
    verified.remember("$hash-a", b"pw")
    assert verified.holds("$hash-a", b"pw")


def test_verified_logins_keep_only_the_newest() -> None:
    verified = VerifiedLogins(60.0)
    for number in range(MAX_REMEMBERED):
        verified.remember(f"$hash-{number}", b"pw")
    verified.remember("$hash-0", b"pw")  # again: now the newest
    verified.remember("$hash-new", b"pw")  # one too many: $hash-1 goes
    assert verified.holds("$hash-0", b"pw")
    assert not verified.holds("$hash-1", b"pw")
    assert verified.holds("$hash-2", b"pw")
    assert verified.holds("$hash-new", b"pw")
    assert len(verified._checks) == MAX_REMEMBERED


def test_verified_logins_hold_no_password_and_no_unkeyed_digest() -> None:
    verified = VerifiedLogins(60.0)
    verified.remember("$hash", b"s3cret")
    digest, _ = verified._checks["$hash"]
    assert b"s3cret" not in digest
    for name in ("sha256", "sha512", "blake2b", "md5"):
        assert digest != hashlib.new(name, b"s3cret").digest()[: len(digest)]
    assert VerifiedLogins(60.0)._digest(b"s3cret") != digest  # each process has its own key


@pytest.mark.parametrize(
    ("words", "described"),
    [
        (["list", "read"], "read-only"),
        (["READ-ONLY"], "read-only"),
        (["All"], "read-write"),
        (["list", "read", "write", "append", "delete", "rename", "mkdir", "rmdir"], "read-write"),
        (["delete", "read", "list"], "list, read, delete"),
        (["write"], "write"),
        ([], "no access"),
    ],
)
def test_access_is_described_by_what_it_grants(words: list[str], described: str) -> None:
    assert describe_access(parse_permissions(words)) == described
