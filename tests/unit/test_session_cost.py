"""What keeps a session cheap: logins without a thread hop, shared accounts, slotted state.

A server holds thousands of idle sessions and serves many short ones; these
tests pin the properties that keep each one small and quick, so a later
change cannot quietly give them back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import argon2
import pytest

from ketch.config import AnonymousConfig, ServerConfig, UserConfig
from ketch.protocol.commands import Command, CommandLineReader
from ketch.protocol.extension_state import ExtensionState
from ketch.protocol.security import TlsState
from ketch.protocol.session_state import SessionState
from ketch.server.auth import Account, Authenticator
from ketch.server.line_timer import LineTimer
from ketch.server.listener import sweep_period
from ketch.server.rate_limit import CommandThrottle, TokenBucket
from ketch.server.session import Session

_T = TypeVar("_T")

# The cheapest argon2id (what the test suite and the bench use) and one that costs
# about a millisecond: below and above the cost that is verified on the event loop.
_CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
_COSTLY = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor (asyncio.to_thread's), counting what it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(  # type: ignore[override]
        self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[_T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def _authenticator(tmp_path: Path, hasher: argon2.PasswordHasher) -> Authenticator:
    home = tmp_path / "alice"
    home.mkdir(exist_ok=True)
    alice = UserConfig.model_validate(
        {
            "name": "alice",
            "password_hash": hasher.hash("s3cret"),
            "home": home,
            "permissions": ["all"],
        }
    )
    return Authenticator(
        ServerConfig(root=tmp_path, users=[alice], anonymous=AnonymousConfig(enabled=False))
    )


def _logins(authenticator: Authenticator, attempts: list[tuple[str, str]]) -> tuple[list[Any], int]:
    """The results of ``attempts`` in order, and how many went to a worker thread."""
    executor = _CountingExecutor()

    async def run() -> list[Account | None]:
        asyncio.get_running_loop().set_default_executor(executor)
        return [await authenticator.authenticate(name, secret) for name, secret in attempts]

    try:
        return asyncio.run(run()), executor.submitted
    finally:
        executor.shutdown()


def test_a_cheap_hash_is_checked_on_the_loop_and_still_checked(tmp_path: Path) -> None:
    authenticator = _authenticator(tmp_path, _CHEAP)
    attempts = [("alice", "s3cret"), ("alice", "wrong"), ("mallory", "s3cret")]
    (right, wrong, unknown), threads = _logins(authenticator, attempts)
    assert isinstance(right, Account) and right.name == "alice"
    assert wrong is None and unknown is None
    assert threads == 0


def test_a_costly_hash_is_checked_in_a_worker_thread(tmp_path: Path) -> None:
    """A real hash must not stall every other session on the event loop."""
    authenticator = _authenticator(tmp_path, _COSTLY)
    attempts = [("alice", "s3cret"), ("alice", "wrong"), ("mallory", "s3cret")]
    (right, wrong, unknown), threads = _logins(authenticator, attempts)
    assert isinstance(right, Account) and wrong is None and unknown is None
    # The unknown name is checked against a dummy hash of the same cost, in a thread too.
    assert threads == 3


def test_sessions_of_one_user_share_one_account(tmp_path: Path) -> None:
    authenticator = _authenticator(tmp_path, _CHEAP)
    (first, second), _ = _logins(authenticator, [("alice", "s3cret")] * 2)
    assert first is second


@pytest.mark.parametrize(
    ("idle_timeout", "line_timeout", "period"),
    [(300.0, 30.0, 1.0), (2.0, 30.0, 0.25), (0.4, 30.0, 0.05), (300.0, 0.01, 0.05)],
)
def test_timeouts_fire_at_most_one_sweep_late(
    tmp_path: Path, idle_timeout: float, line_timeout: float, period: float
) -> None:
    config = ServerConfig(root=tmp_path, idle_timeout=idle_timeout, line_timeout=line_timeout)
    assert sweep_period(config) == pytest.approx(period)


@pytest.mark.parametrize(
    "kind",
    [
        Session,
        SessionState,
        ExtensionState,
        TlsState,
        Command,
        CommandLineReader,
        LineTimer,
        CommandThrottle,
        TokenBucket,
    ],
)
def test_per_session_objects_carry_no_instance_dict(kind: type) -> None:
    """A __dict__ per object was most of an idle session's memory; slots keep it out."""
    assert kind.__dictoffset__ == 0, f"{kind.__name__} instances have a __dict__ again"
