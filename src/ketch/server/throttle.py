"""Bandwidth limits: one token bucket per user and direction, shared by that user's sessions.

``download_rate`` and ``upload_rate`` (bytes per second) cap what one
account moves in total: every session of that user draws from the same
bucket, so opening more connections does not buy more bandwidth. All
anonymous sessions count as one user. Listings are not limited.

The bucket is the command rate limiter's TokenBucket, counting bytes, with a
burst of one piece: whoever moves a piece takes its bytes and waits until
the bucket is out of debt. Sessions taking turns each wait behind the
others' pieces, which shares the rate between them. An unlimited account gets no throttle at all,
so the transfer loops do no extra work per chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, Protocol

from ketch.server.rate_limit import TokenBucket

if TYPE_CHECKING:
    from ketch.server.auth import Account

__all__ = ["Direction", "RateBook", "Throttle", "byte_bucket"]

Direction = Literal["download", "upload"]

# Pieces are an eighth of a second's worth of bytes, at most this much: small
# enough to keep the rate smooth, large enough to keep system calls few.
_MAX_CHUNK = 256 * 1024
_CHUNKS_PER_SECOND = 8


def byte_bucket(rate: int, *, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
    """A bucket of ``rate`` bytes per second whose burst is one piece (see chunk size)."""
    if rate <= 0:
        raise ValueError(f"rate must be at least 1 byte per second, not {rate}")
    chunk_size = max(1, min(_MAX_CHUNK, rate // _CHUNKS_PER_SECOND))
    return TokenBucket(rate, chunk_size, clock=clock)


class _Pausable(Protocol):
    paused: bool


class Throttle:
    """Paces one transfer against a (possibly shared) bucket."""

    def __init__(
        self,
        bucket: TokenBucket,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bucket = bucket
        self._sleep = sleep

    @property
    def chunk_size(self) -> int:
        """The pieces a throttled transfer moves between waits: the bucket's burst."""
        return self.bucket.burst

    async def pace(self, channel: _Pausable, count: int) -> None:
        """Account for ``count`` bytes just moved and wait as long as the bucket says.

        The channel is marked paused meanwhile, so the stall watchdog does
        not take the wait for a client that stopped moving data.
        """
        delay = self.bucket.reserve(count)
        if delay <= 0:
            return
        channel.paused = True
        try:
            await self._sleep(delay)
        finally:
            channel.paused = False


class RateBook:
    """The buckets of one server, created on first use, one per account and direction."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str, Direction], TokenBucket] = {}

    def throttle(self, account: Account, direction: Direction) -> Throttle | None:
        """The throttle for a transfer of ``account``; None when its rate is unlimited."""
        rate = account.download_rate if direction == "download" else account.upload_rate
        if rate <= 0:
            return None
        # Anonymous logins ("anonymous", "ftp") are one user with one pair of buckets.
        name = ("anonymous", "") if account.anonymous else ("user", account.name)
        key = (*name, direction)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:  # new, or the configuration changed
            bucket = self._buckets[key] = byte_bucket(rate, clock=self._clock)
        return Throttle(bucket)
