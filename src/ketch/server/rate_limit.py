"""Per-session command rate limiting: a token bucket, and what a session does with it.

A client that sends commands faster than ``command_rate`` per second (after
a burst of ``command_burst``) is *slowed*, not answered with errors: the
session waits before dispatching its next command, so the flood backs up
into the client's TCP window. Error replies would only give a flooding
client more to read and legitimate pipelining clients (mirrors sending
SIZE/MDTM per file) something to trip over.

A client that keeps sending faster than the rate for ``command_flood_timeout``
seconds in a row is not pipelining a burst; it is flooding, and the session
closes with 421. "In a row" is counted in commands, not read off the clock:
a run of ``rate * flood_timeout`` throttled commands. A clock would be fooled
both ways: a server that oversleeps its waits (busy, or preempted) finds
tokens waiting and would forgive a flood, and a long transfer in the middle
of a run would count against a client that pipelined one command after it.

The clock is injected so unit tests can drive the bucket without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["CommandThrottle", "TokenBucket"]

Clock = Callable[[], float]


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; taking may go into debt.

    :meth:`reserve` always takes the token and returns how long the caller
    must wait before acting on it; a single consumer that waits that long
    before the next :meth:`reserve` is held to ``rate`` on average.
    """

    __slots__ = ("_clock", "_tokens", "_updated", "burst", "rate")  # one per session

    def __init__(self, rate: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be greater than 0")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while the bucket is in debt)."""
        self._refill()
        return self._tokens

    def reserve(self, count: float = 1.0) -> float:
        """Take ``count`` tokens; the seconds until they are really there (0: they are)."""
        self._refill()
        self._tokens -= count
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)


class CommandThrottle:
    """Decides, command by command, how long a session waits and when it gives up.

    ``rate`` 0 turns the limit off: :meth:`delay` is then always 0.
    """

    __slots__ = ("_bucket", "_flood_count", "_throttled", "flood_timeout", "rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        flood_timeout: float,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.rate = rate
        self.flood_timeout = flood_timeout
        self._bucket = TokenBucket(rate, burst, clock=clock) if rate > 0 else None
        #: Throttled commands a run may hold: flood_timeout seconds' worth at the rate.
        self._flood_count = rate * flood_timeout
        #: Throttled commands in the current run.
        self._throttled = 0

    def delay(self, *, backlogged: bool = False) -> float | None:
        """Seconds to wait before the next command, or None to close the session (flood).

        ``backlogged``: the command had arrived before the server was ready for
        it (it was buffered already). A run of throttled commands ends at the
        first command that finds a token waiting and was *not* backlogged: the
        client slowed to the rate. A backlogged one that finds a token says
        only that the server was late (it overslept, or a transfer ran), so it
        neither ends the run nor counts in it.
        """
        if self._bucket is None:
            return 0.0
        wait = self._bucket.reserve()
        if wait <= 0:
            if not backlogged:
                self._throttled = 0
            return 0.0
        self._throttled += 1
        if self._throttled > self._flood_count:
            return None
        return wait
