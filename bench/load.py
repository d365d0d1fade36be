"""The load client: FTP over raw non-blocking sockets on asyncio, not ketch.client.

It does as little as a client can: replies are split into lines and their
codes checked; downloads go through ``sock_recv_into`` into one buffer
allocated up front (nothing is copied or kept); uploads send one
preallocated block of random bytes again and again. Every wait is bounded
by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

TIMEOUT = 30.0  # one reply, one connect, one accept
_PASV = re.compile(rb"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)")


class FtpError(Exception):
    """An unexpected reply, a short transfer or a closed connection."""


def transfer_timeout(size: int) -> float:
    """Time allowed for moving ``size`` bytes: at least 10 MB/s, plus a minute."""
    return 60.0 + size / 10e6


def passive_port(reply: str) -> int:
    """The port a 227 reply names (the address is the control connection's, as curl does)."""
    found = _PASV.search(reply.encode())
    if found is None:
        raise FtpError(f"unreadable PASV reply {reply!r}")
    numbers = [int(value) for value in found.groups()]
    return numbers[4] * 256 + numbers[5]


def take_reply(pending: bytearray) -> tuple[int, str] | None:
    """A complete reply taken from the front of ``pending`` (bytes received), else None."""
    start = 0
    code = b""
    while True:
        end = pending.find(b"\n", start)
        if end < 0:
            return None
        line = bytes(pending[start:end])
        start = end + 1
        if not code:
            code = line[:3]
            if line[3:4] != b"-":
                break
        elif line[:3] == code and line[3:4] == b" ":
            break
    text = bytes(pending[:start]).decode("latin-1").rstrip()
    del pending[:start]
    if not code.isdigit():
        raise FtpError(f"not an FTP reply: {text[:80]!r}")
    return int(code), text


async def _connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _DataChannel:
    """A passive connection made before the command, or an active listener."""

    def __init__(self, sock: socket.socket, listening: bool) -> None:
        self.sock = sock
        self.listening = listening

    async def connected(self) -> socket.socket:
        if not self.listening:
            return self.sock
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(TIMEOUT):
                conn, _ = await loop.sock_accept(self.sock)
        finally:
            self.sock.close()
        conn.setblocking(False)
        self.sock, self.listening = conn, False
        return conn

    def close(self) -> None:
        self.sock.close()


class Control:
    """One control connection."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host
        self.pending = bytearray()
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, host: str, port: int) -> Control:
        control = cls(await _connect(host, port), host)
        try:
            await control.expect(220)
        except BaseException:
            control.sock.close()
            raise
        return control

    async def reply(self, within: float = TIMEOUT) -> tuple[int, str]:
        async with asyncio.timeout(within):
            while True:
                taken = take_reply(self.pending)
                if taken is not None:
                    return taken
                chunk = await self.loop.sock_recv(self.sock, 4096)
                if not chunk:
                    raise FtpError("control connection closed")
                self.pending += chunk

    async def send(self, line: str) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.loop.sock_sendall(self.sock, line.encode() + b"\r\n")

    async def expect(self, *codes: int, within: float = TIMEOUT) -> tuple[int, str]:
        code, text = await self.reply(within)
        if code not in codes:
            raise FtpError(f"expected {codes}, got {text[:120]!r}")
        return code, text

    async def command(self, line: str, *codes: int) -> tuple[int, str]:
        await self.send(line)
        return await self.expect(*codes)

    async def login(self, user: str, password: str) -> None:
        code, _ = await self.command(f"USER {user}", 230, 331)
        if code == 331:
            await self.command(f"PASS {password}", 230)
        await self.command("TYPE I", 200)

    async def features(self) -> set[str]:
        code, text = await self.command("FEAT", 211, 500, 502)
        if code != 211:
            return set()
        return {line.split()[0].upper() for line in text.splitlines()[1:-1] if line.strip()}

    async def data_channel(self, mode: str) -> _DataChannel:
        """PASV and connect (passive), or listen and PORT (active)."""
        if mode == "passive":
            _, text = await self.command("PASV", 227)
            return _DataChannel(await _connect(self.host, passive_port(text)), False)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setblocking(False)
        listener.bind((self.host, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        address = self.host.replace(".", ",")
        try:
            await self.command(f"PORT {address},{port // 256},{port % 256}", 200)
        except BaseException:
            listener.close()
            raise
        return _DataChannel(listener, True)

    async def quit(self) -> None:
        try:
            await self.send("QUIT")
            await self.reply(5.0)
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()


async def _read_all(sock: socket.socket, buffer: bytearray, count_lines: bool) -> tuple[int, int]:
    """Bytes (and line ends) received until the peer closes, into ``buffer`` again and again."""
    loop = asyncio.get_running_loop()
    view = memoryview(buffer)
    total = lines = 0
    while True:
        received = await loop.sock_recv_into(sock, view)
        if not received:
            return total, lines
        total += received
        if count_lines:
            lines += buffer.count(b"\n", 0, received)


async def download(
    control: Control, command: str, mode: str, buffer: bytearray, *, count_lines: bool = False,
    within: float = TIMEOUT,
) -> tuple[int, int]:  # fmt: skip
    """RETR, LIST or MLSD: (bytes, lines) received; raises on any unexpected reply."""
    channel = await control.data_channel(mode)
    try:
        async with asyncio.timeout(within):
            await control.send(command)
            await control.expect(125, 150)
            sock = await channel.connected()
            received = await _read_all(sock, buffer, count_lines)
            channel.close()
            await control.expect(226, 250)
    finally:
        channel.close()
    return received


async def upload(control: Control, path: str, mode: str, size: int, block: bytes) -> None:
    """STOR ``size`` bytes, ``block`` after ``block``."""
    loop = asyncio.get_running_loop()
    channel = await control.data_channel(mode)
    try:
        async with asyncio.timeout(transfer_timeout(size)):
            await control.send(f"STOR {path}")
            await control.expect(125, 150)
            sock = await channel.connected()
            view, remaining = memoryview(block), size
            while remaining > 0:
                piece = view[: min(len(view), remaining)]
                await loop.sock_sendall(sock, piece)
                remaining -= len(piece)
            channel.close()
            await control.expect(226, 250)
    finally:
        channel.close()


# -- many sessions ----------------------------------------------------------------


class Stage:
    """How far a session got: failures are counted by stage."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "connect"


async def short_session(
    host: str, port: int, user: str, password: str, command: str, expected: int,
    buffer: bytearray, stage: Stage,
) -> None:  # fmt: skip
    """Connect, log in, download (passive) exactly ``expected`` bytes, QUIT."""
    stage.name = "connect"
    control = Control(await _connect(host, port), host)
    try:
        stage.name = "banner"
        await control.expect(220)
        stage.name = "login"
        await control.login(user, password)
        stage.name = "transfer"
        got, _ = await download(control, command, "passive", buffer)
        if got != expected:
            raise FtpError(f"received {got} of {expected} bytes")
        stage.name = "quit"
        await control.quit()
    finally:
        control.close()


@dataclass
class SessionResults:
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return f"{type(error).__name__}: {str(error)[:60]}"


async def run_sessions(
    work: Callable[[bytearray, Stage], Awaitable[None]], count: int, concurrency: int,
    buffer_size: int,
    session_timeout: float,
) -> SessionResults:  # fmt: skip
    """``count`` runs of ``work``, ``concurrency`` at a time; latencies and failure reasons."""
    results = SessionResults()
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        buffer = bytearray(buffer_size)
        while remaining > 0:
            remaining -= 1
            started, stage = time.perf_counter(), Stage()
            try:
                async with asyncio.timeout(session_timeout):
                    await work(buffer, stage)
            except (OSError, FtpError, TimeoutError, EOFError) as error:
                results.failures[f"{stage.name}: {_reason(error)}"] += 1
            else:
                results.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    results.seconds = time.perf_counter() - started
    return results


async def open_idle(
    host: str, port: int, user: str, password: str, count: int, concurrency: int
) -> tuple[list[Control], Counter[str]]:
    """``count`` logged-in control connections left open, and why others failed."""
    controls: list[Control] = []
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            control: Control | None = None
            stage = "connect"
            try:
                async with asyncio.timeout(TIMEOUT * 2):
                    control = await Control.open(host, port)
                    stage = "login"
                    await control.login(user, password)
            except (OSError, FtpError, TimeoutError) as error:
                failures[f"{stage}: {_reason(error)}"] += 1
                if control is not None:
                    control.close()
            else:
                controls.append(control)

    await asyncio.gather(*(one() for _ in range(count)))
    return controls, failures


async def close_all(controls: list[Control], concurrency: int = 100) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(control: Control) -> None:
        async with gate:
            try:
                await control.quit()
            except (OSError, FtpError, TimeoutError):
                control.close()

    await asyncio.gather(*(one(control) for control in controls))
