"""The fast data loops: uploads from socket to descriptor, downloads with sendfile.

Both call the kernel for as long as it makes progress, wait (one future)
only when the socket would block, and let other tasks run now and then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ketch.server import data_channel, readiness, receive_loop
from ketch.server.data_channel import DataChannel
from ketch.server.receive_loop import receive_to_fd
from ketch.server.tls_data import TlsDataChannel
from ketch.server.transfers import StallWatchdog, TransferRefused, receive_file
from ketch.tools.certificates import write_certificate

T = TypeVar("T")


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


def counting(base: type[asyncio.AbstractEventLoop]) -> type[asyncio.AbstractEventLoop]:
    """``base`` that counts reader/writer registrations and knows which stand.

    Tracked here because uvloop's remove_reader/remove_writer return None
    whether or not anything was registered.
    """

    class Counting(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.added = {"reader": 0, "writer": 0}
            self.standing: set[tuple[str, int]] = set()

        def add_reader(self, fd: int, *args: Any) -> None:
            self.added["reader"] += 1
            self.standing.add(("reader", fd))
            super().add_reader(fd, *args)

        def add_writer(self, fd: int, *args: Any) -> None:
            self.added["writer"] += 1
            self.standing.add(("writer", fd))
            super().add_writer(fd, *args)

        def remove_reader(self, fd: int) -> bool:
            self.standing.discard(("reader", fd))
            return bool(super().remove_reader(fd))

        def remove_writer(self, fd: int) -> bool:
            self.standing.discard(("writer", fd))
            return bool(super().remove_writer(fd))

    return Counting


LOOPS = ["asyncio", "uvloop"]


def run_on(loop_name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` on a fresh counting loop of the named kind."""
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        base: type[asyncio.AbstractEventLoop] = uvloop.Loop
    else:
        base = asyncio.SelectorEventLoop
    with asyncio.Runner(loop_factory=counting(base)) as runner:
        return runner.run(main())


def added(kind: str) -> int:
    """Readers or writers added so far on the running loop (made by ``run_on``)."""
    return int(asyncio.get_running_loop().added[kind])  # type: ignore[attr-defined]


def standing() -> set[tuple[str, int]]:
    """The (kind, fd) registrations standing on the running loop (made by ``run_on``)."""
    return set(asyncio.get_running_loop().standing)  # type: ignore[attr-defined]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Grows by one at every Readiness.wait."""
    counted: list[int] = []
    wait = readiness.Readiness.wait

    async def counted_wait(self: readiness.Readiness) -> None:
        counted.append(1)
        await wait(self)

    monkeypatch.setattr(readiness.Readiness, "wait", counted_wait)
    return counted


@pytest.fixture
def small_send_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads keep the socket's own small buffer, so they wait again and again."""
    monkeypatch.setattr(data_channel, "_large_send_buffer_allowed", lambda: False)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A loopback TCP connection: sendfile into a socketpair may block whatever its flags."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client_side = socket.create_connection(listener.getsockname(), timeout=30)
        server_side, _ = listener.accept()
    server_side.setblocking(False)
    return server_side, client_side


def slow_reader(sock: socket.socket, into: bytearray) -> threading.Thread:
    """Reads in small pieces with pauses, so the sender waits for the socket again and again."""

    def run() -> None:
        with sock:
            while chunk := sock.recv(16384):
                into.extend(chunk)
                time.sleep(0.0005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("loop_name", LOOPS)
def test_send_all_counts_progress_as_the_client_takes_it(loop_name: str) -> None:
    # What the stall watchdog reads: a slow client taking one big piece (an ASCII
    # download's, a listing) must show progress long before the piece is all sent.
    data = os.urandom(2 * 1024 * 1024 + 5)
    received = bytearray()

    async def run() -> list[int]:
        server_side, client_side = tcp_pair()
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        channel = DataChannel(server_side, "EPSV", lambda: None)
        reader = slow_reader(client_side, received)
        seen: list[int] = []

        async def watch() -> None:
            while True:
                seen.append(channel.bytes_moved)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        try:
            await channel.send_all(data)
        finally:
            watcher.cancel()
            channel.close()
        await asyncio.to_thread(reader.join, 30)
        return seen

    seen = run_on(loop_name, run)
    assert bytes(received) == data
    partial = {count for count in seen if 0 < count < len(data)}
    assert len(partial) > 10, sorted(partial)[:20]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_download_registers_for_writability_once_however_often_it_waits(
    tmp_path: Path, loop_name: str, waits: list[int], small_send_buffer: None
) -> None:
    data = os.urandom(4 * 1024 * 1024 + 3)
    source = tmp_path / "down.bin"
    source.write_bytes(data)
    received = bytearray()

    async def run() -> tuple[int, set[tuple[str, int]]]:
        server_side, client_side = tcp_pair()
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        channel = DataChannel(server_side, "EPSV", lambda: None)
        reader = slow_reader(client_side, received)
        try:
            with source.open("rb", buffering=0) as file:
                await channel.send_file(file.fileno(), 0)
            left = standing()
        finally:
            channel.close()
        await asyncio.to_thread(reader.join, 30)
        return added("writer"), left

    writers, left = run_on(loop_name, run)
    assert bytes(received) == data
    assert len(waits) > 10  # a 32 KiB buffer for 4 MiB, read slowly
    assert writers == 1
    assert left == set()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_upload_registers_for_readability_once_however_often_it_waits(
    tmp_path: Path, loop_name: str, waits: list[int]
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    target = tmp_path / "up.bin"

    def trickle(sock: socket.socket) -> None:
        with sock:
            for start in range(0, len(data), 65536):
                sock.sendall(data[start : start + 65536])
                time.sleep(0.001)

    async def run() -> tuple[int, set[tuple[str, int]]]:
        server_side, client_side = pair()
        channel = DataChannel(server_side, "EPSV", lambda: None)
        sender = threading.Thread(target=trickle, args=(client_side,), daemon=True)
        sender.start()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            await receive_to_fd(channel, fd)
            left = standing()
        finally:
            os.close(fd)
            channel.close()
        await asyncio.to_thread(sender.join, 30)
        return added("reader"), left

    readers, left = run_on(loop_name, run)
    assert target.read_bytes() == data
    assert len(waits) > 1  # some 30 pieces, a millisecond apart
    assert readers == 1
    assert left == set()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_cancelled_download_leaves_no_writer_registered(tmp_path: Path, loop_name: str) -> None:
    source = tmp_path / "down.bin"
    source.write_bytes(os.urandom(8 * 1024 * 1024))

    async def run() -> set[tuple[str, int]]:
        server_side, client_side = tcp_pair()  # nobody reads: the download waits for good
        channel = DataChannel(server_side, "EPSV", lambda: None)
        try:
            with source.open("rb", buffering=0) as file:
                task = asyncio.create_task(channel.send_file(file.fileno(), 0))
                for _ in range(200):
                    await asyncio.sleep(0.005)
                    if standing():
                        break
                assert standing(), "the download never waited for the socket"
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            return standing()
        finally:
            channel.close()
            client_side.close()

    assert run_on(loop_name, run) == set()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_paced_piece_leaves_no_writer_registered_for_the_pause(
    tmp_path: Path, loop_name: str, waits: list[int], small_send_buffer: None
) -> None:
    # A rate limit sleeps between pieces: a writer still registered then would
    # be called on every pass of the loop while the socket is writable.
    source = tmp_path / "down.bin"
    source.write_bytes(os.urandom(1024 * 1024))
    received = bytearray()

    async def run() -> list[set[tuple[str, int]]]:
        server_side, client_side = tcp_pair()
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        channel = DataChannel(server_side, "EPSV", lambda: None)
        reader = slow_reader(client_side, received)
        left: list[set[tuple[str, int]]] = []
        try:
            with source.open("rb", buffering=0) as file:
                offset = 0
                while sent := await channel.send_file(file.fileno(), offset, 256 * 1024):
                    offset += sent
                    left.append(standing())
        finally:
            channel.close()
        await asyncio.to_thread(reader.join, 30)
        return left

    left = run_on(loop_name, run)
    assert len(received) == 1024 * 1024
    assert waits  # the pieces did wait for the socket
    assert left == [set()] * 4


class TlsWantingToRead:
    """Stands in for an SSLSocket whose write needs the socket writable, then readable.

    OpenSSL asks a writer to read while a handshake (renegotiation) is under
    way: hard to provoke from a real peer, so the first two sends say so.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sends = 0
        self.standing_at_third_send: set[tuple[str, int]] | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> int:
        return 0

    def send(self, piece: memoryview) -> int:
        self.sends += 1
        if self.sends == 1:
            raise ssl.SSLWantWriteError()
        if self.sends == 2:
            raise ssl.SSLWantReadError()
        if self.sends == 3:
            self.standing_at_third_send = standing()
        return self.sock.send(piece)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_tls_send_waiting_to_read_keeps_no_writer_registered(loop_name: str) -> None:
    # A writable socket would call a standing writer on every pass of the loop
    # for as long as the read wait lasts (up to the stall timeout): a busy loop.
    async def run() -> tuple[TlsWantingToRead, set[tuple[str, int]]]:
        server_side, client_side = tcp_pair()
        tls = TlsWantingToRead(server_side)
        plain = DataChannel(server_side, "EPSV", lambda: None)
        channel = TlsDataChannel(tls, "EPSV", plain)  # type: ignore[arg-type]
        try:
            asyncio.get_running_loop().call_later(0.2, client_side.send, b"x")
            async with asyncio.timeout(10):
                await channel.send_all(b"hello")
            return tls, standing()
        finally:
            server_side.close()
            client_side.close()

    tls, left = run_on(loop_name, run)
    assert tls.sends == 3
    assert tls.standing_at_third_send == set()  # the read wait's reader is gone too
    assert left == set()


async def upload_over_tcp(
    target: Path, send: Callable[[socket.socket, DataChannel], None]
) -> float:
    """``receive_to_fd`` of what ``send(client_side, channel)`` sends from a thread over
    loopback TCP (which, unlike a socketpair, honours SO_RCVLOWAT); seconds it took."""
    server_side, client_side = tcp_pair()
    channel = DataChannel(server_side, "EPSV", lambda: None)

    def sending() -> None:
        with client_side:
            send(client_side, channel)

    sender = threading.Thread(target=sending, daemon=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    started = time.monotonic()
    sender.start()
    try:
        await receive_to_fd(channel, fd)
    finally:
        os.close(fd)
        channel.close()
    took = time.monotonic() - started
    await asyncio.to_thread(sender.join, 30)
    return took


@pytest.mark.parametrize("loop_name", LOOPS)
def test_an_upload_in_small_pieces_does_not_wake_the_loop_for_each(
    tmp_path: Path, loop_name: str, waits: list[int]
) -> None:
    # curl writes 64 KiB at a time: woken for each, the loop would read and write each.
    data = os.urandom(4 * 1024 * 1024)
    target = tmp_path / "up.bin"

    def small_pieces(sock: socket.socket, _: DataChannel) -> None:
        for start in range(0, len(data), 16384):
            sock.sendall(data[start : start + 16384])
            time.sleep(0.0005)  # slower than the loop reads: else pieces pile up anyway

    took = run_on(loop_name, lambda: upload_over_tcp(target, small_pieces))
    assert target.read_bytes() == data
    # Woken per piece, the loop would wait some 256 times. A wake finds WAKE_AT queued,
    # or a full receive window (small while the connection starts), or is a periodic look.
    assert len(waits) <= len(data) // 65536 + 2 + took / receive_loop.LOOK_EVERY


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_slow_uploads_bytes_are_read_and_counted_as_they_come(
    tmp_path: Path, loop_name: str
) -> None:
    # Far less than WAKE_AT in all: the socket never reports readable before the end,
    # yet the stall watchdog must see progress (and the file grow) meanwhile.
    pieces = [os.urandom(1000) for _ in range(12)]
    target = tmp_path / "up.bin"
    counted_while_sending: list[int] = []

    def slowly(sock: socket.socket, channel: DataChannel) -> None:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.1)
        counted_while_sending.append(channel.bytes_moved)

    run_on(loop_name, lambda: upload_over_tcp(target, slowly))
    assert target.read_bytes() == b"".join(pieces)
    # A look every LOOK_EVERY (0.2 s) of the 1.2 s: most pieces were read before the end.
    assert counted_while_sending[0] >= 6000


class CountingFile(io.BytesIO):
    """A file that counts its writes."""

    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


def tls_pair(directory: Path) -> tuple[ssl.SSLSocket, ssl.SSLSocket, DataChannel]:
    """Loopback TCP under real TLS: the server's end (non-blocking), the client's (blocking,
    with room to queue a few hundred KiB unread), and the plain channel TLS wrapped."""
    files = write_certificate(directory, ["127.0.0.1"], days=1)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.certificate, files.key)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE  # a test's own certificate
    server_side, client_side = tcp_pair()
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    plain = DataChannel(server_side, "EPSV", lambda: None)
    server_side.setblocking(True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        client = pool.submit(client_context.wrap_socket, client_side)
        server = server_context.wrap_socket(
            server_side, server_side=True, suppress_ragged_eofs=False
        )
        client_tls = client.result(timeout=30)
    server.setblocking(False)
    return server, client_tls, plain


@pytest.mark.parametrize("ending", ["close_notify", "cut short"])
@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_tls_upload_is_written_a_buffer_at_a_time_not_a_record_at_a_time(
    tmp_path: Path, loop_name: str, ending: str
) -> None:
    # OpenSSL decrypts one 16 KiB record per read: 200,000 bytes are 13 of them.
    data = os.urandom(200_000)
    stored = CountingFile()

    async def run() -> str | None:
        server, client, plain = tls_pair(tmp_path)
        channel = TlsDataChannel(server, "EPSV", plain)
        queued = threading.Event()

        def send() -> None:
            client.sendall(data)
            queued.set()
            if ending == "close_notify":
                client.unwrap()  # returns once the server's close_notify arrives
            else:  # a FIN without close_notify: a truncation, after all the data
                client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            assert await asyncio.to_thread(queued.wait, 30)
            await asyncio.sleep(0.05)  # the last records through loopback
            refusal = None
            try:
                await receive_file(channel, stored, ascii=False)
                await channel.finish()
            except TransferRefused as error:
                refusal = f"{error.code} {error.text}"
        finally:
            channel.close()
        await asyncio.to_thread(sender.join, 30)
        client.close()
        return refusal

    refusal = run_on(loop_name, run)
    assert stored.getvalue() == data  # all that arrived, in either ending
    assert stored.writes <= 2
    if ending == "close_notify":
        assert refusal is None
    else:
        assert refusal is not None and refusal.startswith("426 ") and "close_notify" in refusal


def test_a_download_the_client_drains_slowly_is_progress_to_the_stall_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client elsewhere (no TCP_NOTSENT_LOWAT): sendfile queues megabytes at once, then
    # waits for room far longer than the stall timeout while a slow client reads them.
    monkeypatch.setattr(data_channel, "_on_this_host", lambda _: False)
    path = tmp_path / "big.bin"
    with path.open("wb") as file:
        file.truncate(64 * 1024 * 1024)
    stop = threading.Event()

    def read_slowly(sock: socket.socket) -> None:  # some 80 KiB/s, in small windows
        with sock:
            while not stop.is_set() and sock.recv(4096):
                time.sleep(0.05)

    async def run() -> tuple[bool, int]:
        server_side, client_side = tcp_pair()
        client_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        channel = DataChannel(server_side, "EPSV", lambda: None)
        reader = threading.Thread(target=read_slowly, args=(client_side,), daemon=True)
        reader.start()
        with path.open("rb") as file:
            sending = asyncio.create_task(channel.send_file(file.fileno(), 0))
            watchdog = StallWatchdog(channel, sending, 1.0)
            try:
                await asyncio.wait((sending,), timeout=3.0)  # three stall timeouts
            finally:
                watchdog.stop()
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
                stop.set()
                channel.close()
        reader.join(5)
        return watchdog.stalled, channel.bytes_moved

    stalled, queued = asyncio.run(run())
    assert queued > 1024 * 1024  # megabytes went into the send buffer in one go
    assert not stalled
