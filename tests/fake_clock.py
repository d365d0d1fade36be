"""A clock a test sets by hand: what the code under test reads as the time."""

from __future__ import annotations


class FakeClock:
    """Returns ``now``, which the test moves (``clock.now += 5``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
