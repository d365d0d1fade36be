"""Per-session command rate limiting: a token bucket, and what a session does with it.

A client that sends commands faster than ``command_rate`` per second (after
a burst of ``command_burst``) is *slowed*, not answered with errors: the
session waits before dispatching its next command, so the flood backs up
into the client's TCP window. Error replies would only give a flooding
client more to read and legitimate pipelining clients (mirrors sending
SIZE/MDTM per file) something to trip over.

A client that keeps sending faster than the rate for ``command_flood_timeout``
seconds in a row, its commands queueing up ahead of the replies, is not
pipelining a burst; it is flooding, and the session closes with 421. A client
that waits for each reply before its next command is only ever held to the
rate (see :meth:`CommandThrottle.client_waited`). A run of throttled commands
also ends when a command finds a token waiting: the client slowed down, or the
server was busy with its commands (a transfer, a big listing) long enough to
earn it one. Not when the server merely overslept a throttling wait (a loaded
or preempted process): the tokens of an oversleep are dropped (see
:meth:`CommandThrottle.woke`), or a flood would be forgiven at every late
wake-up and go on for ever.

The clock is injected so unit tests can drive the bucket without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ketch.server.session import Session

__all__ = ["CommandThrottle", "TokenBucket", "pace"]

log = logging.getLogger("ketch.server")

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

    def drop_surplus(self) -> None:
        """Keep no tokens: those there now came from a wait that overran (see woke)."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

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

    __slots__ = ("_bucket", "_clock", "_throttled_since", "flood_timeout", "rate")

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
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock=clock) if rate > 0 else None
        #: When the current unbroken run of throttled commands began.
        self._throttled_since: float | None = None

    def delay(self) -> float | None:
        """Seconds to wait before the next command, or None to close the session (flood).

        A run of throttled commands ends at the first command that finds a
        token waiting, i.e. as soon as the client slows to the rate.
        """
        if self._bucket is None:
            return 0.0
        wait = self._bucket.reserve()
        now = self._clock()
        if wait <= 0:
            self._throttled_since = None
            return 0.0
        if self._throttled_since is None:
            self._throttled_since = now
        elif now + wait - self._throttled_since > self.flood_timeout:
            return None
        return wait

    def client_waited(self) -> None:
        """The next command came only after the last reply: the client follows the pace.

        A client that waits for each reply cannot send faster than it is
        answered, so however long it is held to the rate it is not flooding:
        the run of throttled commands ends here (the rate's wait still applies).
        """
        self._throttled_since = None

    def woke(self) -> None:
        """The wait that ``delay`` asked for is over, maybe later than asked.

        Time the server overslept is throttling time too: its tokens would
        end the run at the next command, although the client never slowed.
        """
        if self._bucket is not None:
            self._bucket.drop_surplus()


async def pace(session: Session, throttle: CommandThrottle, waited: bool) -> bool:
    """Wait as the command rate limit asks; False (after a 421) when the client floods.

    ``waited``: the command arrived only after the previous reply went out.
    """
    if waited:
        throttle.client_waited()
    delay = throttle.delay()
    if delay is None:
        config = session.config
        log.warning(
            "command flood client=%s user=%s: faster than %g commands/s for %g s",
            session.peer_ip,
            session.log_user,
            config.command_rate,
            config.command_flood_timeout,
        )
        await session.reply(
            421,
            f"Too many commands: more than {config.command_rate:g} per second "
            f"for {config.command_flood_timeout:g} s; closing the control connection.",
        )
        session.closing = True
        return False
    if delay > 0:
        await asyncio.sleep(delay)
        throttle.woke()
    return True
