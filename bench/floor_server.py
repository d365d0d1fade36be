"""The floor: the least a Python FTP server on uvloop can do for one bench session.

Not a server for use. It answers exactly what the sessions scenario sends
(USER, PASS, TYPE, PASV/EPSV, RETR, QUIT) with one asyncio Protocol and no
features: no state machine, no jail beyond refusing "..", no limits, no
timeouts, no logging, no error replies worth the name. Its server CPU per
session is a lower bound for any server written in Python on this event loop,
which puts ketch's figure (and the issue's "0.8x pyftpdlib" target) in
proportion: `make bench-floor` runs it beside ketch and pyftpdlib.

Its sockets are left as the kernel makes them, so a download is queued whole
and, on loopback, the client's ACKs send most of it, charged to the client (as
with pyftpdlib). ketch limits what a same-host client's download queues
(TCP_NOTSENT_LOWAT, see ketch.server.data_channel) and pays for that sending
itself: part of the difference between the two is that, not Python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import BinaryIO, cast

import uvloop


class FloorSession(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace, ports: list[int]) -> None:
        self.args = args
        self.ports = ports  # the passive range, as a ring shared by all sessions
        self.pending = b""
        self.listener: socket.socket | None = None
        self.user = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self.transport.write(b"220 floor\r\n")

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while b"\r\n" in self.pending:
            line, self.pending = self.pending.split(b"\r\n", 1)
            verb, _, argument = line.partition(b" ")
            self.command(verb.upper(), argument)

    def command(self, verb: bytes, argument: bytes) -> None:
        write = self.transport.write
        if verb == b"USER":
            self.user = argument
            write(b"331 password\r\n")
        elif verb == b"PASS":
            good = self.user == self.args.user and argument == self.args.password
            write(b"230 in\r\n" if good else b"530 no\r\n")
        elif verb == b"TYPE":
            write(b"200 ok\r\n")
        elif verb in (b"PASV", b"EPSV"):
            port = self.listen()
            if port is None:
                write(b"425 no free passive port\r\n")
            elif verb == b"EPSV":
                write(b"229 ok (|||%d|)\r\n" % port)
            else:
                write(b"227 ok (127,0,0,1,%d,%d)\r\n" % (port >> 8, port & 255))
        elif verb == b"RETR":
            self.retrieve(argument.decode())
        elif verb == b"QUIT":
            write(b"221 bye\r\n")
            self.transport.close()
        else:
            write(b"502 not here\r\n")

    def listen(self) -> int | None:
        """A listener on the next free port of the range (None: every port is taken)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for _ in range(len(self.ports)):
            port = self.ports.pop(0)
            self.ports.append(port)
            listener = socket.socket()
            # As every server: the port's last data connection may linger in TIME_WAIT.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", port))
            except OSError:
                listener.close()
                continue
            listener.listen(1)
            listener.setblocking(False)
            self.listener = listener
            return port
        return None

    def retrieve(self, name: str) -> None:
        listener, self.listener = self.listener, None
        if listener is None or ".." in name.split("/"):
            if listener is not None:
                listener.close()
            self.transport.write(b"550 no\r\n")
            return
        try:
            file = open(os.path.join(self.args.home, name.lstrip("/")), "rb")  # noqa: SIM115
        except OSError:
            listener.close()
            self.transport.write(b"550 no such file\r\n")
            return
        self.transport.write(b"150 sending\r\n")
        asyncio.get_running_loop().create_task(self.send(listener, file))

    async def send(self, listener: socket.socket, file: BinaryIO) -> None:
        loop = asyncio.get_running_loop()
        try:
            with listener:
                connection, _ = await loop.sock_accept(listener)
            with connection:
                await send_file(loop, connection, file.fileno())
        finally:
            file.close()
        self.transport.write(b"226 sent\r\n")


async def send_file(loop: asyncio.AbstractEventLoop, connection: socket.socket, fd: int) -> None:
    out, offset = connection.fileno(), 0
    while True:
        try:
            sent = os.sendfile(out, fd, offset, 1 << 30)
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(out, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(out)
            continue
        if sent == 0:
            return
        offset += sent


async def serve(args: argparse.Namespace) -> None:
    low, high = (int(port) for port in args.passive.split("-"))
    ports = list(range(low, high + 1))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FloorSession(args, ports), "127.0.0.1", args.port, backlog=2048
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--user", required=True, type=os.fsencode)
    parser.add_argument("--password", required=True, type=os.fsencode)
    parser.add_argument("--passive", required=True, metavar="LOW-HIGH")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
