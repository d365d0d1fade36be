"""ControlStream on real loopback sockets: what the session relies on from asyncio's streams."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from ketch.server.control_stream import ControlStream

TIMEOUT = 5.0


def _serve(scenario: Callable[[ControlStream, socket.socket], Awaitable[None]]) -> None:
    """Run ``scenario`` with a ControlStream accepted from a connected client socket."""

    async def main() -> None:
        accepted: asyncio.Future[ControlStream] = asyncio.get_running_loop().create_future()
        server = await asyncio.get_running_loop().create_server(
            lambda: ControlStream(accepted.set_result, limit=1024), "127.0.0.1", 0
        )
        client = socket.create_connection(server.sockets[0].getsockname()[:2], timeout=TIMEOUT)
        try:
            stream = await asyncio.wait_for(accepted, TIMEOUT)
            await asyncio.wait_for(scenario(stream, client), TIMEOUT)
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110  (polls a socket-driven condition, bounded by the caller)
        await asyncio.sleep(0.01)


def test_data_then_eof_is_read_then_empty_and_replies_still_go_out() -> None:
    async def scenario(stream: ControlStream, client: socket.socket) -> None:
        client.sendall(b"NOOP\r\n")
        client.shutdown(socket.SHUT_WR)
        assert await stream.read(8192) == b"NOOP\r\n"
        assert await stream.read(8192) == b""
        stream.write(b"221 Bye.\r\n")  # a half-closed connection still takes replies
        assert client.recv(100) == b"221 Bye.\r\n"

    _serve(scenario)


def test_a_reset_connection_raises_even_with_commands_buffered() -> None:
    async def scenario(stream: ControlStream, client: socket.socket) -> None:
        client.sendall(b"DELE a\r\nDELE b\r\n")
        # Until the lines are in the stream's buffer (read from the socket, not yet by anyone).
        await _until(lambda: bool(stream._buffer))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: nobody is left to read the replies
        await _until(stream.is_closing)
        with pytest.raises(ConnectionResetError):
            await stream.read(8192)

    _serve(scenario)


def test_reading_pauses_while_much_is_unread_and_resumes_once_read() -> None:
    async def scenario(stream: ControlStream, client: socket.socket) -> None:
        assert stream.transport is not None
        client.sendall(b"x" * 4096)  # four times the limit, no line end, nothing read
        await _until(lambda: not stream.transport.is_reading())  # type: ignore[union-attr]
        read = b""
        while len(read) < 4096:
            read += await stream.read(512)
        assert read == b"x" * 4096
        assert stream.transport.is_reading()

    _serve(scenario)
