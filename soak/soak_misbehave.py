"""Misbehaving sessions: clients that break the rules, spoken over raw sockets.

Each misbehaving session runs *episodes* on fresh connections until the
run ends, taking the kinds in turn. An episode states what a correct server
does about the misbehaviour (a 426 after a stall, a 421 after idling, a
usable session after ABOR or garbage) and is counted as "expected" when the
server did that, "unexpected" with a note otherwise. These counts are kept
apart from the well-behaved sessions' failures: misbehaving is their job.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable

from soak_common import Settings, Stats

from ketch.protocol import (
    HostPort,
    Reply,
    ReplyParser,
    format_eprt_argument,
    format_port_argument,
    parse_epsv_reply,
    parse_pasv_reply,
)

_TIMEOUT = 30.0


class Unexpected(Exception):
    """The server did not do what a correct server does here."""


class _Closed(Exception):
    pass


def _reset(sock: socket.socket | None) -> None:
    """Close with a TCP reset (SO_LINGER 0): the most abrupt way to go."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class RawControl:
    """A control connection with no manners: lines go out exactly as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ReplyParser()
        self.ready: deque[Reply] = deque()

    @classmethod
    async def open(cls, host: str, port: int) -> RawControl:
        async with asyncio.timeout(_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, wait: float = _TIMEOUT) -> Reply:
        async with asyncio.timeout(wait):
            while not self.ready:
                data = await self.reader.read(65536)
                if not data:
                    raise _Closed("the server closed the control connection")
                self.ready.extend(self.parser.feed(data))
        return self.ready.popleft()

    async def command(self, line: str, *codes: int) -> Reply:
        await self.send(line)
        return expect(await self.reply(), line, *codes)

    async def login(self, settings: Settings) -> None:
        expect(await self.reply(), "greeting", 220)
        await self.command(f"USER {settings.user}", 331)
        await self.command(f"PASS {settings.password}", 230)
        await self.command("TYPE I", 200)

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()


def expect(reply: Reply, what: str, *codes: int) -> Reply:
    if codes and reply.code not in codes:
        raise Unexpected(f"{what[:40]!r} answered {reply.code} {reply.text.strip()[:120]}")
    return reply


class RawData:
    """The data connection of one transfer, made the way ``verb`` says."""

    def __init__(self, verb: str, receive_buffer: int | None) -> None:
        self.verb = verb
        self.receive_buffer = receive_buffer
        self.sock: socket.socket | None = None
        self.listener: socket.socket | None = None

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self.receive_buffer:  # before connect/listen, so the window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        return sock

    async def prepare(self, control: RawControl) -> None:
        """EPSV/PASV and connect, or listen and EPRT/PORT."""
        loop = asyncio.get_running_loop()
        if self.verb in ("EPSV", "PASV"):
            reply = await control.command(self.verb, 229 if self.verb == "EPSV" else 227)
            port = (
                parse_epsv_reply(reply.text)
                if self.verb == "EPSV"
                else parse_pasv_reply(reply.text).port
            )
            self.sock = self._socket()
            async with asyncio.timeout(_TIMEOUT):
                await loop.sock_connect(self.sock, ("127.0.0.1", port))
            return
        self.listener = self._socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        here = HostPort("127.0.0.1", self.listener.getsockname()[1])
        argument = format_eprt_argument(here) if self.verb == "EPRT" else format_port_argument(here)
        await control.command(f"{self.verb} {argument}", 200)

    async def connected(self) -> socket.socket:
        """The data socket, once the server has connected (active) or at once (passive)."""
        if self.sock is None:
            assert self.listener is not None
            async with asyncio.timeout(_TIMEOUT):
                self.sock, _ = await asyncio.get_running_loop().sock_accept(self.listener)
            self.sock.setblocking(False)
            self.listener.close()
            self.listener = None
        return self.sock

    async def read(self, at_least: int) -> int:
        sock = await self.connected()
        loop = asyncio.get_running_loop()
        got = 0
        async with asyncio.timeout(_TIMEOUT):
            while got < at_least:
                count = len(await loop.sock_recv(sock, 65536))
                if not count:
                    break
                got += count
        return got

    async def write(self, data: memoryview) -> None:
        sock = await self.connected()
        async with asyncio.timeout(_TIMEOUT):
            await asyncio.get_running_loop().sock_sendall(sock, data)

    def reset(self) -> None:
        _reset(self.sock)
        _reset(self.listener)

    def close(self) -> None:
        for sock in (self.sock, self.listener):
            if sock is not None:
                sock.close()


class Episode:
    """One misbehaviour on one connection; closes what it opened, however it ends."""

    def __init__(self, sid: int, settings: Settings, pool: memoryview, rng: random.Random) -> None:
        self.sid = sid
        self.settings = settings
        self.pool = pool
        self.rng = rng
        self.opened: list[RawControl | RawData] = []

    async def control(self) -> RawControl:
        control = await RawControl.open(self.settings.host, self.settings.port)
        self.opened.append(control)
        return control

    async def logged_in(self) -> RawControl:
        control = await self.control()
        await control.login(self.settings)
        return control

    def data(self, receive_buffer: int | None = None) -> RawData:
        data = RawData(self.rng.choice(("EPSV", "PASV", "EPRT", "PORT")), receive_buffer)
        self.opened.append(data)
        return data

    def close(self) -> None:
        for thing in self.opened:
            with contextlib.suppress(Exception):
                thing.close()

    # -- the misbehaviours ------------------------------------------------------

    async def drop_mid_retr(self) -> None:
        """RETR a large file, read a little, then reset both connections."""
        control = await self.logged_in()
        data = self.data()
        await data.prepare(control)
        await control.command(f"RETR {self.settings.big_file}", 150)
        await data.read(self.rng.randint(1, 1024 * 1024))
        data.reset()
        control.reset()

    async def drop_mid_stor(self) -> None:
        """STOR, send part of the file, then reset both connections."""
        control = await self.logged_in()
        data = self.data()
        await data.prepare(control)
        await control.command(f"STOR /m{self.sid}/dropped.bin", 150)
        size = self.rng.randint(1, 1024 * 1024)
        await data.write(self.pool[:size])
        data.reset()
        control.reset()

    async def _abort(self, control: RawControl, data: RawData) -> None:
        """ABOR (half the time behind Telnet IP/Synch) must give 426 then 226, or just 226."""
        if self.rng.random() < 0.5:
            await control.send(b"\xff\xf4\xff\xf2ABOR\r\n")
        else:
            await control.send("ABOR")
        first = await control.reply()
        if first.code == 426:
            expect(await control.reply(), "ABOR (after 426)", 226)
        else:
            expect(first, "ABOR", 226)
        data.close()
        await control.command("NOOP", 200)

    async def abor_mid_retr(self) -> None:
        control = await self.logged_in()
        data = self.data()
        await data.prepare(control)
        big = self.settings.big_file
        await control.command(f"RETR {big}", 150)
        await data.read(self.rng.randint(1, 1024 * 1024))
        await self._abort(control, data)
        await control.command(f"SIZE {big}", 213)  # still a working session
        await control.command("QUIT", 221)

    async def abor_mid_stor(self) -> None:
        control = await self.logged_in()
        data = self.data()
        await data.prepare(control)
        path = f"/m{self.sid}/aborted.bin"
        await control.command(f"STOR {path}", 150)
        await data.write(self.pool[: self.rng.randint(1, 1024 * 1024)])
        await self._abort(control, data)
        # 550 when the server discards an aborted upload (atomic uploads) rather than keeping it.
        await control.command(f"DELE {path}", 250, 550)
        await control.command("QUIT", 221)

    async def stall_retr(self) -> None:
        """Stop reading a big download: after its stall timeout the server must give up, 426."""
        control = await self.logged_in()
        data = self.data(receive_buffer=4096)
        await data.prepare(control)
        await control.command(f"RETR {self.settings.big_file}", 150)
        await data.read(64 * 1024)
        stalled_at = time.monotonic()
        limit = self.settings.stall_timeout
        reply = await control.reply(limit + 20)
        waited = time.monotonic() - stalled_at
        expect(reply, "RETR left unread", 426)
        if waited < limit * 0.9:
            raise Unexpected(f"426 after {waited:.1f} s, before the {limit:g} s stall timeout")
        data.close()
        await control.command("NOOP", 200)
        await control.command("QUIT", 221)

    async def garbage(self) -> None:
        """Junk before and after login; every line gets one refusal, the session lives on."""
        control = await self.control()
        expect(await control.reply(), "greeting", 220)
        junk = "#" + "".join(chr(self.rng.randint(33, 126)) for _ in range(self.rng.randint(0, 60)))
        await self._refused(
            control,
            [
                b"HELLO there\r\n",
                b"\x00\x01\x02\x7f junk\r\n",
                b"\xc3\x28\xfe\xfd\r\n",
                b"A" * 5000 + b"\r\n",
                b"\r\n",
                b"RETR /etc/passwd\r\n",
                b"PASS nobody-asked\r\n",
                junk.encode() + b"\r\n",
            ],
        )
        await control.command(f"USER {self.settings.user}", 331)
        await control.command(f"PASS {self.settings.password}", 230)
        lines = [
            "PORT 10,0,0,1,0,21",
            "EPRT |1|127.0.0.1|21|",
            "EPRT |9|nowhere|1|",
            "PORT 1,2,3",
            "RETR ../../../../../../../../etc/passwd",
            "REST abc",
            "TYPE Z",
            "MODE Z",
            "STRU Q",
            "RNTO nothing",
            "DELE /",
            "MKD " + "x" * 300,
            "SIZE /no/such/file",
            "LIST",
            "XYZZY",
            "SITE EXEC rm -rf /",
        ]
        await self._refused(control, [line.encode() + b"\r\n" for line in lines])
        await control.command("CWD ../../../../../../../..", 250, 550)
        where = await control.command("PWD", 257)
        if '"/"' not in where.text:
            raise Unexpected(f"CWD above the home left the session in {where.text.strip()!r}")
        await control.command("QUIT", 221)

    async def _refused(self, control: RawControl, lines: list[bytes]) -> None:
        """Send ``lines`` in one go then NOOP: one 4xx/5xx each, then NOOP's 200."""
        await control.send(b"".join(lines) + b"NOOP\r\n")
        codes = []
        while True:
            reply = await control.reply()
            if reply.code == 200:
                break
            codes.append(reply.code)
            if reply.code < 400 or "internal error" in reply.text.lower():
                raise Unexpected(f"garbage line answered {reply.code} {reply.text.strip()[:120]}")
        if len(codes) != len(lines):
            raise Unexpected(f"{len(lines)} garbage lines got {len(codes)} replies: {codes}")

    async def idle(self) -> None:
        """Log in and say nothing: 421 after the idle timeout, then the connection closes."""
        control = await self.logged_in()
        started = time.monotonic()
        limit = self.settings.idle_timeout
        reply = await control.reply(limit + 20)
        waited = time.monotonic() - started
        expect(reply, "silence", 421)
        if waited < limit * 0.9:
            raise Unexpected(f"421 after {waited:.1f} s, before the {limit:g} s idle timeout")
        try:
            extra = await control.reply(10)
        except _Closed:
            return
        raise Unexpected(f"after 421 the connection stayed open and said {extra.code}")

    async def pasv_flood(self) -> None:
        """Many PASV/EPSV without transfers (some connected to): each must free its port."""
        control = await self.logged_in()
        loop = asyncio.get_running_loop()
        connected: list[socket.socket] = []
        try:
            for index in range(self.rng.randint(20, 60)):
                verb = "EPSV" if index % 2 else "PASV"
                reply = await control.command(verb, 229 if verb == "EPSV" else 227)
                if self.rng.random() < 0.3:
                    port = (
                        parse_epsv_reply(reply.text)
                        if verb == "EPSV"
                        else parse_pasv_reply(reply.text).port
                    )
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    connected.append(sock)
                    async with asyncio.timeout(_TIMEOUT):
                        await loop.sock_connect(sock, ("127.0.0.1", port))
            await control.command("QUIT", 221)
        finally:
            for sock in connected:
                sock.close()

    async def no_data_connection(self) -> None:
        """A transfer whose data connection never comes: 150, then 425."""
        control = await self.logged_in()
        if self.rng.random() < 0.5:
            await control.command("EPSV", 229)  # and never connect
            limit = self.settings.data_connect_timeout + 20
        else:
            # Nothing listens there. Not a port just freed by this client: that would be
            # in the ephemeral range, where another session's listener may take it next.
            port = self.settings.dead_port
            await control.command(f"EPRT |1|127.0.0.1|{port}|", 200)
            limit = _TIMEOUT
        path = self.rng.choice(list(self.settings.shared))
        await control.command(f"RETR {path}", 150)
        expect(await control.reply(limit), "RETR without a data connection", 425)
        await control.command("NOOP", 200)
        await control.command("QUIT", 221)

    async def connect_drop(self) -> None:
        """Connect and vanish: before the greeting, after USER, or in the middle of a line."""
        control = await self.control()
        choice = self.rng.randrange(3)
        if choice == 0:
            control.reset()
            return
        expect(await control.reply(), "greeting", 220)
        if choice == 1:
            await control.command(f"USER {self.settings.user}", 331)
            control.reset()
        else:
            await control.send(b"NOO")
            control.close()


KINDS: tuple[str, ...] = (
    "drop_mid_retr",
    "abor_mid_retr",
    "garbage",
    "stall_retr",
    "drop_mid_stor",
    "abor_mid_stor",
    "pasv_flood",
    "idle",
    "no_data_connection",
    "connect_drop",
)


def _when(settings: Settings) -> str:
    return f"t={time.time() - settings.start:.0f}s"


async def misbehaving_session(sid: int, settings: Settings, pool: bytes, stats: Stats) -> None:
    rng = random.Random(settings.seed * 7919 + sid)
    await asyncio.sleep(rng.uniform(0, min(10.0, settings.duration / 6)))
    turn = sid
    while time.time() < settings.deadline:
        kind = KINDS[turn % len(KINDS)]
        turn += 1
        episode = Episode(sid, settings, memoryview(pool), rng)
        run: Callable[[], Awaitable[None]] = getattr(episode, kind)
        try:
            await run()
        except Unexpected as error:
            stats.episode(kind, "unexpected", f"{_when(settings)} session={sid} {error}")
        except Exception as error:  # a reset, a timeout, a closed connection, a bad reply
            stats.episode(kind, "unexpected", f"{_when(settings)} session={sid} {error!r}")
        else:
            stats.episode(kind, "expected")
        finally:
            episode.close()
        await asyncio.sleep(rng.uniform(0.2, 2.0))
