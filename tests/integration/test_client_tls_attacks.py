"""The client against a hostile FTPS server: what an attacker on the path could do.

Each test runs a small scripted server on loopback (real sockets, real TLS
with a trustme certificate) that misbehaves the way a man in the middle
would, and checks that ketch's client refuses rather than trusting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ketch.client import Client
from ketch.client.errors import DataConnectionFailed
from ketch.client.tls import TlsFailed

from peer_servers import TlsFiles, make_tls_files

HOST = "127.0.0.1"
WAIT = 10.0  # every socket operation of the scripted server is bounded by this


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.server_file))
    return context


class ScriptedServer:
    """One connection served by ``script(control_socket)`` on a thread."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(WAIT)
        self.port: int = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self._script = script
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(WAIT)
            with conn:
                self._script(conn)
        except BaseException as error:  # reported by stop(), not lost on the thread
            self.error = error

    def stop(self) -> None:
        self.listener.close()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the scripted server did not finish"


@contextlib.contextmanager
def scripted(script: Callable[[socket.socket], None]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script)
    try:
        yield server
    finally:
        server.stop()


def read_line(conn: socket.socket | ssl.SSLSocket) -> str:
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("the client closed the control connection")
        line += byte
    return line.decode().strip()


def test_a_reply_injected_in_the_clear_after_auth_tls_is_refused(tls_files: TlsFiles) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"220 hello\r\n")
        assert read_line(conn) == "AUTH TLS"
        # The attacker appends a reply to the 234: the client must not read it as TLS-protected.
        conn.sendall(b"234 go ahead\r\n230 INJECTED in the clear\r\n")
        with contextlib.suppress(OSError):
            server_context(tls_files).wrap_socket(conn, server_side=True).close()

    async def attempt(port: int) -> None:
        client = Client(HOST, port, tls="explicit", cafile=str(tls_files.ca_file), timeout=WAIT)
        try:
            await client.connect()
        finally:
            await client.close()

    with scripted(script) as server, pytest.raises(TlsFailed) as refusal:
        asyncio.run(attempt(server.port))
    assert "in the clear" in str(refusal.value)


def test_a_tls_download_cut_short_without_close_notify_is_an_error(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    context = server_context(tls_files)
    data = b"x" * 100_000

    def script(conn: socket.socket) -> None:
        conn.sendall(b"220 hello\r\n")
        assert read_line(conn) == "AUTH TLS"
        conn.sendall(b"234 go ahead\r\n")
        control = context.wrap_socket(conn, server_side=True)
        listener = socket.create_server((HOST, 0))
        listener.settimeout(WAIT)
        with listener:
            while True:
                line = read_line(control)
                verb = line.split(" ", 1)[0].upper()
                if verb == "USER":
                    control.sendall(b"230 logged in\r\n")
                elif verb in ("PBSZ", "PROT", "TYPE", "NOOP"):
                    control.sendall(b"200 ok\r\n")
                elif verb == "EPSV":
                    port = listener.getsockname()[1]
                    control.sendall(f"229 passive (|||{port}|)\r\n".encode())
                elif verb == "RETR":
                    data_conn, _ = listener.accept()
                    control.sendall(b"150 here it comes\r\n")
                    secured = context.wrap_socket(data_conn, server_side=True)
                    secured.sendall(data[: len(data) // 2])
                    # Cut short: TCP FIN without TLS close_notify, then a cheerful 226.
                    secured.shutdown(socket.SHUT_RDWR)
                    secured.close()
                    control.sendall(b"226 done\r\n")
                elif verb == "ABOR":
                    control.sendall(b"225 no transfer to abort\r\n")
                elif verb == "QUIT":
                    control.sendall(b"221 bye\r\n")
                    return
                else:  # FEAT, SIZE, OPTS...: not offered, which leaves close_notify the only check
                    control.sendall(b"502 not implemented\r\n")

    async def attempt(port: int) -> None:
        client = Client(HOST, port, tls="explicit", cafile=str(tls_files.ca_file), timeout=WAIT)
        try:
            await client.connect()
            await client.login("alice", "secret")
            await client.download("file.bin", tmp_path / "file.bin")
        finally:
            await client.close()

    with scripted(script) as server, pytest.raises(DataConnectionFailed) as failure:
        asyncio.run(attempt(server.port))
    assert "close_notify" in str(failure.value)
    # What did arrive was authenticated by TLS: it is kept, for -c to go on from.
    kept = (tmp_path / "file.bin").read_bytes()
    assert len(kept) == len(data) // 2 and data.startswith(kept)
    assert f"is incomplete ({len(kept)} bytes)" in str(failure.value)
