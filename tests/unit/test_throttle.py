"""Bandwidth buckets with an injected clock: rates, bursts, sharing, pauses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ketch.server.auth import Account, Permission
from ketch.server.rate_limit import TokenBucket
from ketch.server.throttle import RateBook, Throttle, byte_bucket

from fake_clock import FakeClock

KIB = 1024
MIB = 1024 * KIB


def finish_time(bucket: TokenBucket, clock: FakeClock, sizes: list[list[int]]) -> float:
    """Simulate sessions moving pieces as the bucket allows; when the last one finishes.

    Each inner list is one session's pieces; a session moves its next piece
    as soon as its previous wait is over (the earliest session goes first).
    """
    start = clock.now
    ready_at = [start] * len(sizes)
    queues = [list(pieces) for pieces in sizes]
    while any(queues):
        index = min((i for i, queue in enumerate(queues) if queue), key=lambda i: ready_at[i])
        clock.now = max(clock.now, ready_at[index])
        ready_at[index] = clock.now + bucket.reserve(queues[index].pop(0))
    return max(ready_at) - start


def pieces(total: int, size: int) -> list[int]:
    return [size] * (total // size)


def test_chunk_size_is_an_eighth_of_a_second_within_bounds() -> None:
    assert byte_bucket(512 * KIB).burst == 64 * KIB
    assert byte_bucket(100 * MIB).burst == 256 * KIB
    assert byte_bucket(4).burst == 1


def test_zero_rate_is_not_a_bucket() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        byte_bucket(0)


def test_one_piece_is_free_then_pieces_wait_their_time() -> None:
    clock = FakeClock()
    bucket = byte_bucket(512 * KIB, clock=clock)
    assert bucket.reserve(64 * KIB) == 0.0  # the burst allowance
    assert bucket.reserve(64 * KIB) == pytest.approx(0.125)
    assert bucket.reserve(64 * KIB) == pytest.approx(0.25)


def test_one_mebibyte_at_512_kib_per_second_takes_about_two_seconds() -> None:
    clock = FakeClock()
    bucket = byte_bucket(512 * KIB, clock=clock)
    elapsed = finish_time(bucket, clock, [pieces(MIB, bucket.burst)])
    assert elapsed == pytest.approx(2.0 - 0.125)


def test_idle_time_does_not_save_up_a_burst() -> None:
    clock = FakeClock()
    bucket = byte_bucket(512 * KIB, clock=clock)
    bucket.reserve(64 * KIB)
    clock.now += 60
    assert bucket.reserve(64 * KIB) == 0.0
    assert bucket.reserve(64 * KIB) == pytest.approx(0.125)


def test_two_sessions_on_one_bucket_share_the_rate() -> None:
    clock = FakeClock()
    shared = byte_bucket(512 * KIB, clock=clock)
    half = pieces(512 * KIB, shared.burst)
    together = finish_time(shared, clock, [half, half])
    alone = finish_time(byte_bucket(512 * KIB, clock=clock), clock, [half])
    assert alone == pytest.approx(1.0 - 0.125)
    # Twice the bytes through one bucket: twice the time, not the same time.
    assert together == pytest.approx(2.0 - 0.125, abs=0.13)


class Channel:
    paused = False


def test_pace_marks_the_channel_paused_while_waiting() -> None:
    clock = FakeClock()
    seen: list[tuple[float, bool]] = []
    channel = Channel()

    async def sleep(delay: float) -> None:
        seen.append((delay, channel.paused))
        clock.now += delay

    throttle = Throttle(byte_bucket(8 * KIB, clock=clock), sleep=sleep)

    async def run() -> None:
        await throttle.pace(channel, 1 * KIB)  # within the burst: no sleep at all
        await throttle.pace(channel, 1 * KIB)

    asyncio.run(run())
    assert seen == [(pytest.approx(0.125), True)]
    assert channel.paused is False


def test_pace_unpauses_when_cancelled() -> None:
    channel = Channel()
    throttle = Throttle(byte_bucket(1))

    async def run() -> None:
        task = asyncio.create_task(throttle.pace(channel, 100))
        await asyncio.sleep(0.01)
        assert channel.paused
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert channel.paused is False


def account(name: str, *, anonymous: bool = False, down: int = 0, up: int = 0) -> Account:
    return Account(
        name=name,
        home=Path("/srv"),
        permissions=Permission.ALL,
        anonymous=anonymous,
        download_rate=down,
        upload_rate=up,
    )


def test_rate_book_has_no_throttle_for_unlimited_accounts() -> None:
    book = RateBook()
    assert book.throttle(account("alice"), "download") is None
    assert book.throttle(account("alice", down=100), "upload") is None


def test_rate_book_shares_one_bucket_per_user_and_direction() -> None:
    book = RateBook()
    alice = account("alice", down=1000, up=2000)
    first = book.throttle(alice, "download")
    second = book.throttle(alice, "download")
    upload = book.throttle(alice, "upload")
    other = book.throttle(account("bob", down=1000), "download")
    assert first is not None and second is not None and upload is not None and other is not None
    assert first.bucket is second.bucket
    assert upload.bucket is not first.bucket and upload.bucket.rate == 2000
    assert other.bucket is not first.bucket


def test_rate_book_counts_all_anonymous_logins_as_one_user() -> None:
    book = RateBook()
    anonymous = book.throttle(account("anonymous", anonymous=True, down=1000), "download")
    ftp = book.throttle(account("ftp", anonymous=True, down=1000), "download")
    assert anonymous is not None and ftp is not None
    assert anonymous.bucket is ftp.bucket


def test_rate_book_makes_a_new_bucket_when_the_rate_changes() -> None:
    book = RateBook()
    old = book.throttle(account("alice", down=1000), "download")
    new = book.throttle(account("alice", down=5000), "download")
    assert old is not None and new is not None
    assert new.bucket is not old.bucket and new.bucket.rate == 5000
