"""The client in active mode against a scripted server that misbehaves after connecting back.

The server is a small thread on loopback (real sockets) that connects to the
client's EPRT address and then refuses the transfer without a 150, which no
packaged server can be made to do on demand.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from ketch.client import Client, FtpError

from ftp_helpers import command_lines


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_a_refusal_after_the_server_connected_back_closes_that_connection(
    tmp_path: Path,
) -> None:
    """A server that connects back and then refuses (no 150) must not leave the socket open.

    A scripted server on loopback answers RETR by connecting to the EPRT
    address and replying 550. While the client's error is still held, the
    server must see the data connection closed.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    seen: dict[str, Any] = {}
    decided = threading.Event()

    def serve() -> None:
        control, _ = listener.accept()
        control.settimeout(10)
        with control:
            control.sendall(b"220 scripted\r\n")
            target: tuple[str, int] | None = None
            for line in command_lines(control):
                verb, _, argument = line.partition(" ")
                if verb == "USER":
                    control.sendall(b"331 password\r\n")
                elif verb == "PASS":
                    control.sendall(b"230 in\r\n")
                elif verb in ("TYPE", "EPRT"):
                    if verb == "EPRT":
                        _, _, host, port, _ = argument.split("|")
                        target = (host, int(port))
                    control.sendall(b"200 ok\r\n")
                elif verb == "RETR" and target is not None:
                    data = socket.create_connection(target, timeout=5)
                    with data:
                        control.sendall(b"550 refused after connecting\r\n")
                        try:
                            seen["eof"] = data.recv(1) == b""
                        except TimeoutError:
                            seen["eof"] = False
                        decided.set()
                elif verb == "QUIT":
                    control.sendall(b"221 bye\r\n")
                    return
                else:
                    control.sendall(b"502 not here\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def scenario() -> None:
        async with Client(
            "127.0.0.1",
            listener.getsockname()[1],
            user="u",
            password="p",
            mode="active",
            timeout=10,
        ) as ftp:
            with pytest.raises(FtpError) as refused:
                await ftp.download("file.bin", tmp_path / "file.bin")
            # The error (and the frames it holds) is still alive here.
            assert decided.wait(10), "the scripted server never connected back"
            assert "550" in str(refused.value)

    try:
        run(scenario())
    finally:
        listener.close()
        thread.join(10)
    assert not thread.is_alive()
    assert seen.get("eof") is True, "the client kept the server's data connection open"
