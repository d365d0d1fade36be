"""The fast data loops: uploads from socket to descriptor, downloads with sendfile.

Both call the kernel for as long as it makes progress, wait (one future)
only when the socket would block, and let other tasks run now and then.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from ketch.server import data_channel, receive_loop
from ketch.server.data_channel import DataChannel
from ketch.server.receive_loop import receive_to_fd
from ketch.server.transfers import TransferRefused, receive_file


def pair() -> tuple[socket.socket, socket.socket]:
    server_side, client_side = socket.socketpair()
    server_side.setblocking(False)
    return server_side, client_side


def send_then_close(sock: socket.socket, data: bytes) -> threading.Thread:
    def run() -> None:
        with sock:
            sock.sendall(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_everything_sent_arrives_and_is_counted(tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 17)
    target = tmp_path / "up.bin"
    metered: list[int] = []

    async def run() -> int:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        thread = send_then_close(client_side, data)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            await receive_to_fd(channel, fd, metered.append)
        finally:
            os.close(fd)
            channel.close()
        thread.join(5)
        return channel.bytes_moved

    assert asyncio.run(run()) == len(data)
    assert target.read_bytes() == data
    assert sum(metered) == len(data)


def test_a_refusing_meter_stops_before_the_piece_is_written(tmp_path: Path) -> None:
    target = tmp_path / "up.bin"

    def meter(count: int) -> None:
        raise TransferRefused(552, "too big")

    async def run() -> None:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        thread = send_then_close(client_side, b"x" * 1000)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(TransferRefused):
                await receive_to_fd(channel, fd, meter)
        finally:
            os.close(fd)
            channel.close()
        thread.join(5)

    asyncio.run(run())
    assert target.read_bytes() == b""


def test_cancelling_while_waiting_removes_the_reader(tmp_path: Path) -> None:
    async def run() -> bool:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        fd = os.open(tmp_path / "up.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            arrived = asyncio.Event()
            client_side.sendall(b"first")
            task = asyncio.create_task(receive_to_fd(channel, fd, lambda _: arrived.set()))
            await arrived.wait()
            await asyncio.sleep(0.05)  # written, and now waiting for more
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Nothing left registered: removing the reader again finds none.
            return asyncio.get_running_loop().remove_reader(server_side.fileno())
        finally:
            os.close(fd)
            channel.close()
            client_side.close()

    assert asyncio.run(run()) is False
    assert (tmp_path / "up.bin").read_bytes() == b"first"


def test_a_fast_sender_does_not_starve_other_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receive_loop, "YIELD_EVERY", 4096)
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def run() -> int:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        # Everything, and the end, is queued before the loop starts: it never has to wait.
        client_side.sendall(b"y" * 65536)
        client_side.close()
        fd = os.open(tmp_path / "up.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = len(ticks)
        try:
            await receive_to_fd(channel, fd)
        finally:
            os.close(fd)
            channel.close()
            other.cancel()
        return len(ticks) - before

    assert asyncio.run(run()) >= 1


def test_receive_file_takes_the_fast_loop_only_for_unbuffered_binary_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[int] = []
    original = receive_loop.receive_to_fd

    async def spy(channel: DataChannel, fd: int, meter: object = None) -> None:
        used.append(fd)
        await original(channel, fd)

    monkeypatch.setattr("ketch.server.transfers.receive_to_fd", spy)

    async def upload(path: Path, *, ascii: bool, buffered: bool) -> None:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        thread = send_then_close(client_side, b"a\r\nb\r\n")
        with path.open("wb", buffering=-1 if buffered else 0) as file:
            await receive_file(channel, file, ascii=ascii)
        channel.close()
        thread.join(5)

    asyncio.run(upload(tmp_path / "fast", ascii=False, buffered=False))
    assert len(used) == 1
    asyncio.run(upload(tmp_path / "ascii", ascii=True, buffered=False))
    asyncio.run(upload(tmp_path / "buffered", ascii=False, buffered=True))
    assert len(used) == 1
    assert (tmp_path / "fast").read_bytes() == b"a\r\nb\r\n"
    assert (tmp_path / "ascii").read_bytes() == b"a\nb\n"
    assert (tmp_path / "buffered").read_bytes() == b"a\r\nb\r\n"


def test_a_download_that_never_waits_still_lets_other_tasks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_channel, "YIELD_EVERY", 4096)
    source = tmp_path / "down.bin"
    source.write_bytes(os.urandom(65536))
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def run() -> tuple[int, int]:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = len(ticks)
        try:
            with source.open("rb", buffering=0) as file:
                sent = await channel.send_file(file.fileno(), 0)  # fits the socket buffer
        finally:
            other.cancel()
            channel.close()
        received = b""
        while chunk := client_side.recv(1 << 20):
            received += chunk
        client_side.close()
        assert received == source.read_bytes()
        return sent, len(ticks) - before

    sent, ticked = asyncio.run(run())
    assert sent == 65536
    assert ticked >= 1
