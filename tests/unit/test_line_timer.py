"""The slowloris line timer and the per-user session counts, without sockets."""

from __future__ import annotations

from pathlib import Path

from ketch.config import load_config
from ketch.server.auth import Account, Permission
from ketch.server.line_timer import LineTimer
from ketch.server.user_sessions import UserSessions

from fake_clock import FakeClock


def test_no_line_no_timer() -> None:
    timer = LineTimer(5.0, clock=FakeClock(100.0))
    timer.start_waiting()
    assert timer.remaining() is None
    timer.received(b"NOOP\r\n", ["NOOP"])
    timer.start_waiting()
    assert timer.remaining() is None


def test_unfinished_line_runs_from_the_first_wait_across_reads() -> None:
    clock = FakeClock(100.0)
    timer = LineTimer(5.0, clock=clock)
    timer.received(b"N", [])
    assert timer.remaining() is None  # busy with nothing yet: not waiting
    timer.start_waiting()
    clock.now += 2
    timer.received(b"O", [])  # a trickle does not restart it
    timer.start_waiting()
    clock.now += 2
    assert timer.remaining() == 1.0
    timer.received(b"OP\n", [])  # finished (the events are the caller's business)
    timer.start_waiting()
    assert timer.remaining() is None


def test_a_new_tail_after_complete_lines_starts_fresh() -> None:
    clock = FakeClock(100.0)
    timer = LineTimer(5.0, clock=clock)
    timer.received(b"N", [])
    timer.start_waiting()
    clock.now += 4
    timer.received(b"OOP\r\nSTA", ["NOOP"])
    clock.now += 60  # e.g. the NOOP waited for a transfer: not charged to "STA"
    timer.start_waiting()
    assert timer.remaining() == 5.0


def _account(name: str, anonymous: bool = False) -> Account:
    return Account(name, Path("/"), Permission.READ_ONLY, anonymous=anonymous)


def test_user_sessions_limits(tmp_path: Path) -> None:
    user = {"password_hash": "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNo"}
    config = load_config(
        overrides={
            "root": str(tmp_path),
            "max_sessions_per_user": 2,
            "anonymous": {"max_sessions": 1},
            "users": [
                {**user, "name": "alice", "home": str(tmp_path)},
                {**user, "name": "bob", "home": str(tmp_path), "max_sessions": 0},
            ],
        }
    )
    sessions = UserSessions(config)
    alice, bob = _account("alice"), _account("bob")
    assert [sessions.acquire(alice) for _ in range(3)] == ["alice", "alice", None]
    assert all(sessions.acquire(bob) == "bob" for _ in range(50))  # 0: no limit
    assert sessions.acquire(_account("anonymous", anonymous=True)) == "anonymous"
    assert sessions.acquire(_account("ftp", anonymous=True)) is None  # the same user
    sessions.release("alice")
    assert sessions.acquire(alice) == "alice"
    assert sessions.limit(alice) == 2 and sessions.limit(bob) == 0
