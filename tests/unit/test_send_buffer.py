"""The send queue a whole-file download asks for: only where it cannot make things worse.

SO_SNDBUF switches Linux's buffer autotuning off and is capped at
net.core.wmem_max, so asking for the large buffer on a system that would cap
it (a stock wmem_max is 208 KiB) would shrink the buffer instead. A client on
this host gets a short queue of unsent bytes (TCP_NOTSENT_LOWAT): there the
client's own kernel time would send what the server queued.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

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


class Sent(NamedTuple):
    received: bytes
    send_buffer: int  # SO_SNDBUF
    unsent_limit: int  # TCP_NOTSENT_LOWAT; 0: none (the sysctl's default, no limit)


def _download(path: Path, count: int | None) -> Sent:
    """Send ``path`` over loopback TCP with ``send_file``: what arrived, and the queue's sizes."""
    listener = socket.create_server(("127.0.0.1", 0))
    received = bytearray()

    def read_all(conn: socket.socket) -> None:
        with conn:
            while chunk := conn.recv(1 << 20):
                received.extend(chunk)

    async def run() -> tuple[int, int]:
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
            unsent = server_side.getsockopt(socket.IPPROTO_TCP, data_channel._TCP_NOTSENT_LOWAT)
        finally:
            os.close(fd)
            channel.close()
        reader.join(10)
        assert not reader.is_alive(), "the reader did not see the end of the data"
        return size, unsent

    with listener:
        size, unsent = asyncio.run(run())
    return Sent(bytes(received), size, unsent)


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
    received, size, unsent = _download(tmp_path / "big.bin", None)
    assert received == data
    # Over loopback the client's kernel time would send whatever the server queued.
    assert unsent == data_channel._LOCAL_UNSENT_LIMIT
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
    received, size, unsent = _download(tmp_path / "small.bin", 60_000)
    assert received == data[:60_000]
    assert size < 2 * data_channel._SEND_BUFFER
    assert unsent == 0  # its pace already keeps the queue short


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
    received, size, _ = _download(tmp_path / "file.bin", None)
    assert received == data
    assert size < 2 * data_channel._SEND_BUFFER
    assert data_channel._LargeSendBuffers.in_use == data_channel._LARGE_SEND_BUFFERS
    monkeypatch.setattr(data_channel._LargeSendBuffers, "in_use", 0)
    received, size, _ = _download(tmp_path / "file.bin", None)
    assert size == 2 * data_channel._SEND_BUFFER
    assert data_channel._LargeSendBuffers.in_use == 0  # given back when the channel closed


@pytest.mark.parametrize(
    ("peer", "local", "same"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", True),  # all of 127/8 is this host
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1", True),  # a dual-stack listener's view
        ("198.18.0.1", "198.18.0.1", True),  # our own address, reached without loopback
        ("fe80::1%veth0", "fe80::1%veth0", True),
        ("198.18.0.2", "198.18.0.1", False),  # another host: a real link
        ("2001:db8::2", "2001:db8::1", False),
        ("::ffff:198.18.0.2", "::ffff:198.18.0.1", False),
        ("", "", False),  # not an IP address: assume a real link
    ],
)
def test_only_a_peer_on_this_host_counts_as_local(peer: str, local: str, same: bool) -> None:
    assert data_channel.same_host(peer, local) is same
