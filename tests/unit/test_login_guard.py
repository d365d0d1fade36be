"""Brute-force protection: growing delays, temporary bans, bounded memory; on a fake clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ketch.server.login_guard import LoginGuard, ban_reply_text

from fake_clock import FakeClock

IP = "192.0.2.7"


def make_guard(clock: FakeClock, **overrides: Any) -> LoginGuard:
    settings: dict[str, Any] = {
        "base_delay": 1.0,
        "max_delay": 8.0,
        "ban_after": 10,
        "ban_window": 600.0,
        "ban_duration": 900.0,
    }
    settings.update(overrides)
    return LoginGuard(clock=clock, **settings)


# -- the delay -----------------------------------------------------------------------


def test_delay_doubles_per_failure_up_to_the_cap() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=0)
    delays = [guard.record_failure(IP).delay for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_delay_is_per_address() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=0)
    guard.record_failure(IP)
    guard.record_failure(IP)
    assert guard.record_failure("192.0.2.8").delay == 1.0


def test_success_resets_the_delay() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=0)
    for _ in range(3):
        guard.record_failure(IP)
    guard.record_success(IP)
    assert guard.record_failure(IP).delay == 1.0
    assert len(guard) == 1


def test_logins_in_between_never_reset_the_count_toward_a_ban() -> None:
    # A guesser that logs in anonymously (or to an account of its own) between tries
    # must still be banned after ban_after failures in the window.
    guard = make_guard(FakeClock(5000.0), ban_after=5)
    verdicts = []
    for round_ in range(3):
        for _ in range(2):
            verdicts.append(guard.record_failure(IP))
        guard.record_success(IP, anonymous=round_ % 2 == 0)
    assert [v.banned_for is not None for v in verdicts] == [False] * 4 + [True, False]


def test_an_anonymous_login_does_not_reset_the_delay() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=0)
    for _ in range(3):
        guard.record_failure(IP)
    guard.record_success(IP, anonymous=True)
    assert guard.record_failure(IP).delay == 8.0


def test_cap_below_the_base_keeps_the_base() -> None:
    guard = make_guard(FakeClock(5000.0), base_delay=2.0, max_delay=0.5, ban_after=0)
    assert [guard.record_failure(IP).delay for _ in range(3)] == [2.0, 2.0, 2.0]


def test_zero_base_means_no_delay() -> None:
    guard = make_guard(FakeClock(5000.0), base_delay=0.0, ban_after=0)
    assert all(guard.record_failure(IP).delay == 0.0 for _ in range(100))


def test_huge_failure_counts_do_not_overflow() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=0)
    for _ in range(2000):
        delay = guard.record_failure(IP).delay
    assert delay == 8.0


def test_delay_is_forgotten_after_the_window() -> None:
    clock = FakeClock(5000.0)
    guard = make_guard(clock, ban_after=0, ban_window=60.0)
    for _ in range(4):
        guard.record_failure(IP)
    clock.advance(61)
    assert guard.record_failure(IP).delay == 1.0


# -- the ban ---------------------------------------------------------------------------


def test_ban_after_n_failures_within_the_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(5000.0)
    guard = make_guard(clock, ban_after=3)
    assert guard.record_failure(IP).banned_for is None
    assert guard.record_failure(IP).banned_for is None
    assert guard.ban_remaining(IP) is None
    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        verdict = guard.record_failure(IP)
    assert verdict.banned_for == 900.0
    assert guard.ban_remaining(IP) == 900.0
    clock.advance(899)
    assert guard.ban_remaining(IP) == pytest.approx(1.0)
    clock.advance(1)
    assert guard.ban_remaining(IP) is None
    (record,) = caplog.records
    assert IP in record.message and "failures=3" in record.message
    assert "duration=900s" in record.message


def test_failures_spread_wider_than_the_window_do_not_ban() -> None:
    clock = FakeClock(5000.0)
    guard = make_guard(clock, ban_after=3, ban_window=10.0)
    for _ in range(10):
        assert guard.record_failure(IP).banned_for is None
        clock.advance(6)  # never three inside ten seconds


def test_ban_is_per_address() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=2)
    guard.record_failure(IP)
    guard.record_failure(IP)
    assert guard.ban_remaining(IP) is not None
    assert guard.ban_remaining("192.0.2.8") is None


def test_zero_turns_banning_off() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=0)
    for _ in range(1000):
        assert guard.record_failure(IP).banned_for is None
    assert guard.ban_remaining(IP) is None


@pytest.mark.parametrize(
    ("exempt", "ip"),
    [
        (["192.0.2.0/24"], IP),
        (["::1/128"], "::1"),
        (["127.0.0.1"], "127.0.0.1"),
        # The listener unmaps a dual-stack socket's ::ffff:127.0.0.1 before asking.
        (["::ffff:127.0.0.0/120"], "127.0.0.1"),
    ],
)
def test_exempt_networks_are_delayed_but_never_banned(exempt: list[str], ip: str) -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=2, exempt=exempt)
    verdicts = [guard.record_failure(ip) for _ in range(10)]
    assert all(v.banned_for is None for v in verdicts)
    assert verdicts[-1].delay == 8.0
    assert guard.ban_remaining(ip) is None
    # Others are still banned.
    guard.record_failure("198.51.100.1")
    assert guard.record_failure("198.51.100.1").banned_for == 900.0


def test_success_does_not_lift_a_ban() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=1)
    guard.record_failure(IP)
    guard.record_success(IP)
    assert guard.ban_remaining(IP) is not None


def test_ban_text_names_address_and_time() -> None:
    text = ban_reply_text(IP, 899.2)
    assert "banned" in text and "failed logins" in text and IP in text and "900 s" in text


# -- memory ------------------------------------------------------------------------------


def test_table_is_capped_dropping_the_least_recent() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=1, max_entries=100)
    for n in range(1000):
        guard.record_failure(f"10.0.{n // 256}.{n % 256}")
    assert len(guard) == 100
    assert guard.ban_remaining("10.0.0.0") is None  # the oldest went first
    assert guard.ban_remaining("10.0.3.231") is not None  # the newest (999) stays


def test_a_banned_address_that_keeps_knocking_is_kept() -> None:
    guard = make_guard(FakeClock(5000.0), ban_after=1, max_entries=10)
    guard.record_failure(IP)
    for n in range(50):
        assert guard.ban_remaining(IP) is not None  # connects again, moves to the back
        guard.record_failure(f"10.0.0.{n}")
    assert guard.ban_remaining(IP) is not None


def test_expired_records_are_swept() -> None:
    clock = FakeClock(5000.0)
    guard = make_guard(clock, ban_after=3, ban_window=10.0, ban_duration=20.0)
    for n in range(500):
        guard.record_failure(f"10.0.{n // 256}.{n % 256}")
    assert len(guard) == 500
    clock.advance(120)  # past every window, and past the sweep interval
    guard.record_failure(IP)
    assert len(guard) == 1


def test_bans_outlive_their_window_in_the_sweep() -> None:
    clock = FakeClock(5000.0)
    guard = make_guard(clock, ban_after=1, ban_window=10.0, ban_duration=3600.0)
    guard.record_failure(IP)
    clock.advance(120)
    guard.record_failure("10.0.0.1")  # triggers a sweep
    assert guard.ban_remaining(IP) is not None
