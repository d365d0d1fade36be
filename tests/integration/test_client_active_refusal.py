"""The client in active mode against scripted servers that refuse in odd orders.

Each server is a small thread on loopback (real sockets): one connects to the
client's EPRT address and then refuses the transfer without a 150; another
says 150 before connecting and then 425 without connecting; a third finishes
its transfer before the client accepts. No packaged server can be made to do
any of these on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ketch.client import Client, DataConnectionFailed, FtpError, InvalidArgument

from ftp_helpers import command_lines


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@contextlib.contextmanager
def serving(serve: Callable[[], None], listener: socket.socket) -> Iterator[None]:
    """Run the scripted server ``serve`` on a thread; close ``listener`` and join it after."""
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.close()
        thread.join(10)
    assert not thread.is_alive(), "the scripted server did not finish"


def active_client(listener: socket.socket, **settings: Any) -> Client:
    """A client in active mode for the scripted server behind ``listener``."""
    port = listener.getsockname()[1]
    return Client("127.0.0.1", port, user="u", password="p", mode="active", timeout=10, **settings)


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

    async def scenario() -> None:
        async with active_client(listener) as ftp:
            with pytest.raises(FtpError) as refused:
                await ftp.download("file.bin", tmp_path / "file.bin")
            # The error (and the frames it holds) is still alive here.
            assert decided.wait(10), "the scripted server never connected back"
            assert str(refused.value).startswith("RETR failed: 550"), refused.value

    with serving(serve, listener):
        run(scenario())
    assert seen.get("eof") is True, "the client kept the server's data connection open"


def serve_canned_replies(
    listener: socket.socket,
    replies: dict[str, bytes],
    otherwise: bytes,
    heard: list[str] | None = None,
) -> None:
    """One scripted session: anyone logs in, each verb gets its reply from ``replies``
    (``otherwise`` for the rest), until QUIT; each line read goes to ``heard``."""
    control, _ = listener.accept()
    control.settimeout(20)
    replies = {"USER": b"331 password\r\n", "PASS": b"230 in\r\n", **replies}
    with control:
        control.sendall(b"220 scripted\r\n")
        for line in command_lines(control):
            if heard is not None:
                heard.append(line)
            verb = line.partition(" ")[0]
            if verb == "QUIT":
                control.sendall(b"221 bye\r\n")
                return
            control.sendall(replies.get(verb, otherwise))


def test_a_425_after_a_150_ends_the_wait_for_the_connection_at_once(tmp_path: Path) -> None:
    # Some servers reply 150 before they connect back, and 425 when they cannot: the
    # client must take that 425, not wait out its data-connection timeout.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        replies = {
            "TYPE": b"200 ok\r\n",
            "EPRT": b"200 ok\r\n",
            "RETR": b"150 connecting\r\n425 cannot open the data connection\r\n",
            "NOOP": b"200 still here\r\n",
        }
        serve_canned_replies(listener, replies, otherwise=b"502 not here\r\n")

    async def scenario() -> None:
        async with active_client(listener, data_connect_timeout=30) as ftp:
            with pytest.raises(DataConnectionFailed) as refused:
                await ftp.download("file.bin", tmp_path / "file.bin")
            message = str(refused.value)
            assert "could not connect back" in message and "425" in message, message
            assert (await ftp.command("NOOP")).code == 200  # the replies are still in step

    with serving(serve, listener):
        run(scenario())
    assert not (tmp_path / "file.bin").exists()


def serve_active_retrieval(
    listener: socket.socket, retrieve: Callable[[socket.socket, tuple[str, int]], None]
) -> None:
    """One scripted session: RETR after EPRT goes to ``retrieve`` with the address the
    client named; SIZE is not offered, anything else gets its plain success reply."""
    control, _ = listener.accept()
    control.settimeout(20)
    target: tuple[str, int] | None = None
    replies = {"USER": b"331 p\r\n", "PASS": b"230 in\r\n", "SIZE": b"502 no SIZE here\r\n"}
    with control:
        control.sendall(b"220 scripted\r\n")
        for line in command_lines(control):
            verb, _, argument = line.partition(" ")
            if verb == "EPRT":
                _, _, host, port, _ = argument.split("|")
                target = (host, int(port))
            if verb == "RETR" and target is not None:
                retrieve(control, target)
            elif verb == "QUIT":
                control.sendall(b"221 bye\r\n")
                return
            else:
                control.sendall(replies.get(verb, b"200 ok\r\n"))


def test_a_server_that_says_150_before_connecting_back_still_delivers(tmp_path: Path) -> None:
    # The client reads on after the 150 (a 425 may follow); once the connection comes,
    # that read must be over before the final reply is read, or the two reads collide.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def retrieve(control: socket.socket, target: tuple[str, int]) -> None:
        control.sendall(b"150 connecting to you\r\n")
        time.sleep(0.3)  # the client is reading the control connection now
        with socket.create_connection(target, timeout=10) as data:
            data.sendall(b"the file\n")
        time.sleep(0.5)  # the client has its connection, and reads replies again
        control.sendall(b"226 done\r\n")

    def serve() -> None:
        serve_active_retrieval(listener, retrieve)

    async def scenario() -> bytes:
        async with active_client(listener) as ftp:
            await ftp.prepare_binary()
            opened = await ftp.connector.open("RETR file.txt")
            assert opened.reply.code == 150
            # At once, with no await between: the read begun after the 150 must be over.
            final = await ftp.control.read_reply()
            buffer = bytearray(100)
            count = await opened.stream.recv_into(memoryview(buffer))
            await opened.stream.close()
            assert final.code == 226
            assert (await ftp.command("NOOP")).code == 200
            return bytes(buffer[:count])

    with serving(serve, listener):
        assert run(scenario()) == b"the file\n"


def test_a_226_that_comes_before_the_connection_is_accepted_still_delivers_the_data(
    tmp_path: Path,
) -> None:
    # A server that says 150 before connecting back may finish (connect, send, close,
    # 226) before a loaded client accepts. After a 1xx, the 2xx is the final reply
    # (RFC 959 §4.2): the data must be read whole, not dropped as "no data".
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    payload = b"all of the file\n" * 1000
    client_loop: list[asyncio.AbstractEventLoop] = []
    stopped, resume = threading.Event(), threading.Event()

    def stop_client() -> None:  # blocks the client's event loop, as a SIGSTOP would
        stopped.set()
        resume.wait(10)

    def retrieve(control: socket.socket, target: tuple[str, int]) -> None:
        control.sendall(b"150 connecting to you\r\n")
        time.sleep(0.3)  # the client has the 150 and watches for a 425 now
        client_loop[0].call_soon_threadsafe(stop_client)
        assert stopped.wait(10)
        with socket.create_connection(target, timeout=10) as data:
            data.sendall(payload)
        control.sendall(b"226 done\r\n")
        resume.set()

    def serve() -> None:
        serve_active_retrieval(listener, retrieve)

    async def scenario() -> None:
        client_loop.append(asyncio.get_running_loop())
        async with active_client(listener) as ftp:
            result = await ftp.download("file.bin", tmp_path / "file.bin")
            assert result.bytes == len(payload)
            assert (await ftp.command("NOOP")).code == 200  # the 226 was read once

    with serving(serve, listener):
        run(scenario())
    assert (tmp_path / "file.bin").read_bytes() == payload


def test_when_both_modes_are_blocked_the_hint_blames_the_firewalls(tmp_path: Path) -> None:
    # Auto mode: nothing accepts the passive connection, and the server's connection
    # back is refused too. Both failures are network ones, and the hint says so.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    closed = socket.socket()  # bound, never listening: connecting to it is refused
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]

    def serve() -> None:
        replies = {
            "EPSV": f"229 passive (|||{closed_port}|)\r\n".encode(),
            "RETR": b"425 could not connect to 127.0.0.1 (Connection refused)\r\n",
            "SIZE": b"502 no SIZE here\r\n",
        }
        serve_canned_replies(listener, replies, otherwise=b"200 ok\r\n")

    async def scenario() -> None:
        port = listener.getsockname()[1]
        async with Client("127.0.0.1", port, user="u", password="p", timeout=10) as ftp:
            with pytest.raises(DataConnectionFailed) as failed:
                await ftp.download("file.bin", tmp_path / "file.bin")
            hint = failed.value.hint
            assert hint.count("firewall") == 2, failed.value
            assert "try again later" not in hint and "active_source_port" not in hint, hint

    with closed, serving(serve, listener):
        run(scenario())


def ipv6_loopback_listener() -> socket.socket:
    """A listener on ::1, or a skip where this host has no IPv6 loopback."""
    try:
        return socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as error:
        pytest.skip(f"cannot listen on ::1 here: {error}")


def test_ipv6_addresses_in_connection_errors_are_bracketed(tmp_path: Path) -> None:
    # "::1:21" reads as another IPv6 address; "[::1]:21" is the host and its port.
    closed = socket.socket(socket.AF_INET6)  # bound, never listening: refused
    closed.bind(("::1", 0))
    closed_port = closed.getsockname()[1]
    listener = ipv6_loopback_listener()
    listener.settimeout(10)

    def serve() -> None:
        epsv = f"229 passive (|||{closed_port}|)\r\n".encode()
        serve_canned_replies(listener, {"EPSV": epsv}, otherwise=b"200 ok\r\n")

    async def scenario() -> None:
        with pytest.raises(FtpError) as refused:
            await Client("::1", closed_port, timeout=10).connect()
        assert f"cannot connect to [::1]:{closed_port}:" in str(refused.value), refused.value
        port = listener.getsockname()[1]
        async with Client("::1", port, user="u", password="p", mode="passive") as ftp:
            assert repr(ftp) == f"<Client u@[::1]:{port} connected>"
            with pytest.raises(DataConnectionFailed) as failed:
                await ftp.download("file.bin", tmp_path / "file.bin")
        assert repr(ftp) == f"<Client u@[::1]:{port} closed>"
        assert f"passive data connection to [::1]:{closed_port} failed" in str(failed.value)
        assert failed.value.address == f"[::1]:{closed_port}"

    with closed, serving(serve, listener):
        run(scenario())


@pytest.mark.parametrize(
    ("server_host", "given", "said"),
    [
        ("127.0.0.1", "fe80::1%lo", "has a zone id, which EPRT cannot send"),
        ("127.0.0.1", "ftp.local", "not an IP address"),
        # The server can only refuse these (522 to EPRT and to PORT), which read as "this
        # server has no active mode"; over IPv6 the client listened on ::1 meanwhile.
        ("127.0.0.1", "::1", "is an IPv6 address, but the connection to 127.0.0.1 uses IPv4"),
        ("::1", "127.0.0.1", "is an IPv4 address, but the connection to ::1 uses IPv6"),
    ],
)
def test_an_active_address_eprt_cannot_carry_is_a_usage_error_not_a_crash(
    tmp_path: Path, server_host: str, given: str, said: str
) -> None:
    # The ValueError of formatting EPRT used to escape as an internal error.
    if ":" in server_host:
        listener = ipv6_loopback_listener()
    else:
        listener = socket.create_server((server_host, 0))
    listener.settimeout(10)
    sent: list[str] = []

    def serve() -> None:
        serve_canned_replies(listener, {}, otherwise=b"200 ok\r\n", heard=sent)

    async def scenario() -> None:
        port = listener.getsockname()[1]
        client = Client(
            server_host, port, user="u", password="p", mode="active", active_address=given
        )
        async with client as ftp:
            with pytest.raises(InvalidArgument) as refused:
                await ftp.download("file.bin", tmp_path / "file.bin")
        assert said in str(refused.value), refused.value

    with serving(serve, listener):
        run(scenario())
    assert not [line for line in sent if line.startswith(("EPRT", "PORT", "RETR"))], sent
