"""Bandwidth limits on real sockets, and a client that stops reading blocking nobody else."""

from __future__ import annotations

import ftplib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import RunningServer, alice_with
from ftp_helpers import connect

KIB = 1024
MIB = 1024 * KIB
RATE = 512 * KIB


def timed_download(ftp: ftplib.FTP, name: str) -> tuple[bytes, float]:
    received = bytearray()
    started = time.monotonic()
    ftp.retrbinary(f"RETR {name}", received.extend)
    return bytes(received), time.monotonic() - started


@pytest.fixture
def payload(served_tree: tuple[Path, Path]) -> bytes:
    data = os.urandom(MIB)
    (served_tree[1] / "one.bin").write_bytes(data)
    return data


def test_download_rate_slows_a_retr_to_the_rate(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path], payload: bytes
) -> None:
    server = make_server(**alice_with(served_tree[1], download_rate=RATE))
    data, seconds = timed_download(connect(server), "one.bin")
    assert data == payload
    # 1 MiB at 512 KiB/s: 2 s, less the one-piece burst allowance (1/8 s).
    assert 1.7 <= seconds < 4.0


def test_unlimited_download_is_not_slowed(server: RunningServer, payload: bytes) -> None:
    data, seconds = timed_download(connect(server), "one.bin")
    assert data == payload
    assert seconds < 0.5


def test_upload_rate_slows_a_stor_to_the_rate(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    server = make_server(**alice_with(served_tree[1], upload_rate=RATE))
    ftp = connect(server)
    data = os.urandom(MIB)
    started = time.monotonic()
    ftp.storbinary("STOR up.bin", _Reader(data))
    seconds = time.monotonic() - started
    assert (served_tree[1] / "up.bin").read_bytes() == data
    assert 1.7 <= seconds < 4.0


class _Reader:
    """A file-like source for storbinary."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int) -> bytes:
        piece, self._data = self._data[:size], self._data[size:]
        return bytes(piece)


def test_two_sessions_of_one_user_share_the_rate(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    home = served_tree[1]
    halves = [os.urandom(512 * KIB), os.urandom(512 * KIB)]
    for index, half in enumerate(halves):
        (home / f"half{index}.bin").write_bytes(half)
    server = make_server(**alice_with(home, download_rate=RATE))
    sessions = [connect(server), connect(server)]
    results: dict[int, bytes] = {}

    def download(index: int) -> None:
        results[index] = timed_download(sessions[index], f"half{index}.bin")[0]

    started = time.monotonic()
    threads = [threading.Thread(target=download, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    seconds = time.monotonic() - started
    assert results == {0: halves[0], 1: halves[1]}
    # Each half alone takes about 0.9 s; sharing 512 KiB/s, the pair takes about 1.9 s.
    assert 1.6 <= seconds < 4.0


def test_anonymous_rate_applies_to_anonymous_only(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    root, home = served_tree
    data = os.urandom(384 * KIB)
    (root / "pub.bin").write_bytes(data)
    (home / "pub.bin").write_bytes(data)
    server = make_server(anonymous={"download_rate": 256 * KIB})
    anonymous = ftplib.FTP(timeout=10)
    anonymous.connect(server.host, server.port)
    anonymous.login()
    got, seconds = timed_download(anonymous, "pub.bin")
    assert got == data and 1.2 <= seconds < 4.0  # 1.5 s less the 1/8 s burst
    got, seconds = timed_download(connect(server), "pub.bin")  # alice has no limit
    assert got == data and seconds < 0.5


def test_waiting_for_the_rate_is_not_a_stall(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    home = served_tree[1]
    data = os.urandom(128 * KIB)
    (home / "slow.bin").write_bytes(data)
    # Pieces of 16 KiB every 1/8 s: each wait is longer than the stall timeout.
    server = make_server(**alice_with(home, download_rate=128 * KIB), data_stall_timeout=0.1)
    got, seconds = timed_download(connect(server), "slow.bin")
    assert got == data and seconds >= 0.8
    assert server.counters.get("transfer_stalled", 0) == 0


def test_a_client_that_stops_reading_blocks_no_other_session(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    home = served_tree[1]
    with (home / "huge.bin").open("wb") as file:
        file.truncate(64 * MIB)  # sparse: quick to make, 64 MiB on the wire
    small = os.urandom(MIB)
    (home / "small.bin").write_bytes(small)
    server = make_server(data_stall_timeout=3)

    stuck = connect(server)
    stuck.voidcmd("TYPE I")
    started = time.monotonic()
    stuck_data = stuck.transfercmd("RETR huge.bin")
    stuck_data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Never read: the socket buffers fill and the server cannot send more.

    other = connect(server)
    assert sorted(other.nlst()) == ["huge.bin", "small.bin"]
    got, _ = timed_download(other, "small.bin")
    assert got == small
    other.quit()
    served_in = time.monotonic() - started
    assert served_in < 2.5, f"another session took {served_in:.1f} s while one was stuck"
    # The stuck transfer is still running: no reply on its control connection yet.
    assert select.select([stuck.sock], [], [], 0)[0] == []

    stuck.sock.settimeout(15)
    reply = stuck.getmultiline()
    assert reply.startswith("426") and "no data moved for 3 s" in reply
    assert 3.0 <= time.monotonic() - started < 10
    stuck_data.close()
    assert stuck.voidcmd("NOOP").startswith("200")
    fresh = connect(server)
    assert fresh.voidcmd("NOOP").startswith("200")
    fresh.quit()
