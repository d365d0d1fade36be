"""The send buffer a whole-file download asks for: only where it cannot make things worse.

SO_SNDBUF switches Linux's buffer autotuning off and is capped at
net.core.wmem_max, so asking for the large buffer on a system that would cap
it (a stock wmem_max is 208 KiB) would shrink the buffer instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.server import data_channel
from ketch.server.data_channel import DataChannel


@pytest.fixture
def limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """Stand-ins for wmem_max and tcp_wmem; the cached answer is forgotten around them."""
    wmem_max, tcp_wmem = tmp_path / "wmem_max", tmp_path / "tcp_wmem"
    monkeypatch.setattr(data_channel, "_WMEM_MAX", str(wmem_max))
    monkeypatch.setattr(data_channel, "_TCP_WMEM", str(tcp_wmem))
    tcp_wmem.write_text("4096\t16384\t4194304\n")  # the kernel's default
    data_channel._large_send_buffer_allowed.cache_clear()
    yield wmem_max, tcp_wmem
    data_channel._large_send_buffer_allowed.cache_clear()


def test_the_large_buffer_is_asked_for_only_where_the_system_allows_it(
    limits: tuple[Path, Path],
) -> None:
    limits[0].write_text("4194304\n")
    assert data_channel._large_send_buffer_allowed()


@pytest.mark.parametrize("content", ["212992\n", "", "not a number"])
def test_a_small_or_unreadable_cap_leaves_autotuning_on(
    limits: tuple[Path, Path], content: str
) -> None:
    limits[0].write_text(content)
    assert not data_channel._large_send_buffer_allowed()


def test_a_missing_cap_leaves_autotuning_on(limits: tuple[Path, Path]) -> None:
    assert not data_channel._large_send_buffer_allowed()


def test_autotuning_that_grows_further_is_left_on(limits: tuple[Path, Path]) -> None:
    limits[0].write_text("16777216\n")
    limits[1].write_text("4096\t16384\t16777216\n")
    assert not data_channel._large_send_buffer_allowed()


def _download(path: Path, count: int | None) -> tuple[bytes, int]:
    """Send ``path`` over loopback TCP with ``send_file``: what arrived and the SO_SNDBUF used."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def read_all(conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(1 << 20):
                received.extend(chunk)

    async def run() -> int:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server_side, _ = listener.accept()
        server_side.setblocking(False)
        reader = threading.Thread(target=read_all, args=(client,), daemon=True)
        reader.start()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        fd = os.open(path, os.O_RDONLY)
        try:
            await channel.send_file(fd, 0, count)
            size = server_side.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        finally:
            os.close(fd)
            channel.close()
        reader.join(10)
        assert not reader.is_alive(), "the reader did not see the end of the data"
        return size

    with listener:
        size = asyncio.run(run())
    return bytes(received), size


def _system_limits() -> tuple[int, int]:
    """net.core.wmem_max (cap of SO_SNDBUF) and the largest buffer autotuning reaches."""
    wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    autotuned = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return wmem_max, autotuned


def test_a_whole_file_download_uses_the_large_buffer_and_arrives_intact(
    limits: tuple[Path, Path], tmp_path: Path
) -> None:
    limits[0].write_text(str(data_channel._SEND_BUFFER))
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "big.bin").write_bytes(data)
    received, size = _download(tmp_path / "big.bin", None)
    assert received == data
    if _system_limits()[0] >= data_channel._SEND_BUFFER:
        assert size == 2 * data_channel._SEND_BUFFER  # Linux reports twice what was asked


def test_a_bounded_piece_keeps_the_autotuned_buffer(
    limits: tuple[Path, Path], tmp_path: Path
) -> None:
    # A throttled transfer sends bounded pieces: a big buffer would only hide its pace.
    if _system_limits()[1] >= 2 * data_channel._SEND_BUFFER:
        pytest.skip("autotuning here reaches the large buffer too: the two cannot be told apart")
    limits[0].write_text(str(data_channel._SEND_BUFFER))
    data = os.urandom(100_000)
    (tmp_path / "small.bin").write_bytes(data)
    received, size = _download(tmp_path / "small.bin", 60_000)
    assert received == data[:60_000]
    assert size < 2 * data_channel._SEND_BUFFER


def test_only_a_few_downloads_hold_a_large_buffer_at_once(
    limits: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fixed buffer fills however slow the client: past the allowance, autotuning decides.
    if _system_limits()[0] < data_channel._SEND_BUFFER:
        pytest.skip("net.core.wmem_max here is below the large buffer: it is never asked for")
    limits[0].write_text(str(data_channel._SEND_BUFFER))
    data = os.urandom(100_000)
    (tmp_path / "file.bin").write_bytes(data)
    monkeypatch.setattr(data_channel._LargeSendBuffers, "in_use", data_channel._LARGE_SEND_BUFFERS)
    received, size = _download(tmp_path / "file.bin", None)
    assert received == data
    assert size < 2 * data_channel._SEND_BUFFER
    assert data_channel._LargeSendBuffers.in_use == data_channel._LARGE_SEND_BUFFERS
    monkeypatch.setattr(data_channel._LargeSendBuffers, "in_use", 0)
    received, size = _download(tmp_path / "file.bin", None)
    assert size == 2 * data_channel._SEND_BUFFER
    assert data_channel._LargeSendBuffers.in_use == 0  # given back when the channel closed
