"""The command rate limit: a token bucket and the session's throttle, on a fake clock."""

from __future__ import annotations

import pytest

from ketch.server.rate_limit import CommandThrottle, TokenBucket

from fake_clock import FakeClock


def test_burst_is_free_then_each_token_costs_one_interval() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0] * 5
    assert bucket.reserve() == pytest.approx(0.1)
    # The caller waits its 0.1 s; the next token is one more interval away.
    clock.advance(0.1)
    assert bucket.reserve() == pytest.approx(0.1)


def test_reserving_without_waiting_accumulates_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=1, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.5)
    assert bucket.reserve() == pytest.approx(1.0)
    assert bucket.tokens == pytest.approx(-2.0)


def test_refill_is_capped_at_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.advance(3600)
    assert bucket.tokens == 3.0
    assert [bucket.reserve() for _ in range(3)] == [0.0] * 3
    assert bucket.reserve() > 0


def test_sustained_rate_is_held() -> None:
    """A consumer that waits as told gets ``rate`` tokens per second after the burst."""
    clock = FakeClock()
    bucket = TokenBucket(rate=50, burst=10, clock=clock)
    start = clock.now
    for _ in range(10 + 500):
        clock.advance(bucket.reserve())
    assert clock.now - start == pytest.approx(500 / 50)


def test_a_clock_going_backwards_adds_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    bucket.reserve()
    clock.advance(-100)
    assert bucket.tokens == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_nonsense_parameters_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


def test_throttle_with_rate_zero_never_waits() -> None:
    throttle = CommandThrottle(0, 1, 1.0, clock=FakeClock())
    assert all(throttle.delay() == 0.0 for _ in range(10_000))


def test_throttle_slows_then_closes_a_flood() -> None:
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=2, flood_timeout=3.0, clock=clock)
    assert throttle.delay() == 0.0
    assert throttle.delay() == 0.0
    waited = 0.0
    while (delay := throttle.delay()) is not None:
        assert delay == pytest.approx(0.1)
        clock.advance(delay)
        waited += delay
    # Closed once throttling would have lasted past the flood timeout, not before.
    assert 2.8 <= waited <= 3.0


def test_throttle_forgives_a_client_that_slows_down() -> None:
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    for _ in range(20):  # five seconds in all, never throttled for a whole second
        for _ in range(5):
            delay = throttle.delay()
            assert delay is not None
            clock.advance(delay)
        clock.advance(0.2)  # a pause: a token is waiting at the next command
        assert throttle.delay() == 0.0


def test_a_client_that_waited_for_the_reply_ends_the_run_but_still_waits() -> None:
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    assert throttle.delay() == 0.0
    for _ in range(50):  # five seconds at the rate, each command after the last reply
        throttle.client_waited()
        delay = throttle.delay()
        assert delay is not None and delay > 0
        clock.advance(delay)
        throttle.woke()


def test_a_server_that_oversleeps_does_not_forgive_a_flood() -> None:
    """Tokens that come only from waking up late do not end the run of a flood."""
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    assert throttle.delay() == 0.0
    started = clock.now
    for command in range(1, 200):
        delay = throttle.delay()
        if delay is None:
            break
        assert delay > 0, f"command {command} found a token left by an oversleep"
        clock.advance(delay + (0.3 if command % 3 == 0 else 0.0))  # every third wake-up late
        throttle.woke()
    else:
        pytest.fail("a flood served by a server that oversleeps was never closed")
    assert 0.9 <= clock.now - started <= 1.5


def test_time_spent_on_commands_still_forgives() -> None:
    """A wait that is not throttling (a transfer ran) earns tokens and ends the run."""
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    assert throttle.delay() == 0.0
    for _ in range(8):  # 0.8 s of a throttled run
        delay = throttle.delay()
        assert delay is not None and delay > 0
        clock.advance(delay)
        throttle.woke()
    clock.advance(5.0)  # a transfer: the next command was pipelined behind it
    assert throttle.delay() == 0.0
    throttled = 0.0
    while (delay := throttle.delay()) is not None:  # a new run, with its own full second
        clock.advance(delay)
        throttle.woke()
        throttled += delay
    assert 0.8 <= throttled <= 1.0
