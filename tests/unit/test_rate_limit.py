"""The command rate limit: a token bucket and the session's throttle, on a fake clock."""

from __future__ import annotations

import pytest

from ketch.server.rate_limit import CommandThrottle, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


def test_a_late_server_does_not_forgive_a_backlogged_flood() -> None:
    """Tokens found because the server overslept do not end a flood's run."""
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    assert throttle.delay() == 0.0
    throttled = 0
    for command in range(1, 200):
        delay = throttle.delay(backlogged=True)
        if delay is None:
            break
        throttled += delay > 0
        # Every third wake-up comes 0.3 s late: the next command finds a token.
        clock.advance(delay + (0.3 if command % 3 == 0 else 0.0))
    else:
        pytest.fail("a flood served by a late server was never closed")
    assert throttled == 10  # 1.0 s worth of commands at 10/s
    # The same wake-ups with commands that arrive only when asked for: forgiven.
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    for command in range(1, 200):
        delay = throttle.delay()
        assert delay is not None
        clock.advance(delay + (0.3 if command % 3 == 0 else 0.0))


def test_a_long_wait_of_the_server_does_not_count_against_the_client() -> None:
    """A command pipelined behind a long transfer is not held against its run."""
    clock = FakeClock()
    throttle = CommandThrottle(rate=10, burst=1, flood_timeout=1.0, clock=clock)
    assert throttle.delay() == 0.0
    for _ in range(8):
        delay = throttle.delay(backlogged=True)
        assert delay is not None and delay > 0
        clock.advance(delay)
    clock.advance(60)  # a transfer runs; the next command was sent behind it
    assert throttle.delay(backlogged=True) == 0.0
    assert throttle.delay(backlogged=True) is not None  # 9th throttled
    assert throttle.delay(backlogged=True) is not None  # 10th
    assert throttle.delay(backlogged=True) is None  # 11th: more than 1.0 s worth
