"""The FTPS load client: explicit FTPS (AUTH TLS, PBSZ 0, PROT P) on blocking ssl sockets.

One stream at a time, so no event loop: a blocking ``ssl.SSLSocket`` lets
OpenSSL read and write the socket itself, with no memory BIO and no copy
through a transport (what asyncio's TLS costs per record). Downloads go
through ``recv_into`` one preallocated buffer; uploads send one preallocated
block again and again.

Every read and write is bounded by a socket timeout (TIMEOUT), and a whole
transfer by a deadline.

Every data connection resumes the control connection's TLS session (taken
when the data connection opens: TLS 1.3 servers send their tickets after the
handshake), as curl and lftp do: vsftpd's require_ssl_reuse and ketch's
tls_require_session_reuse refuse a data connection that does not.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from load import TIMEOUT, FtpError, passive_port, take_reply


@dataclass(frozen=True)
class TlsFacts:
    """What a TLS connection negotiated."""

    version: str
    cipher: str
    resumed: bool

    @classmethod
    def of(cls, sock: ssl.SSLSocket) -> TlsFacts:
        cipher = sock.cipher()
        return cls(sock.version() or "?", cipher[0] if cipher else "?", sock.session_reused)


def client_context(certificate: Path) -> ssl.SSLContext:
    """TLS 1.2 or newer (the server picks; 1.3 where it can), trusting ``certificate`` only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(certificate)
    return context


class TlsControl:
    """One control connection, encrypted after AUTH TLS, with data connections under PROT P."""

    def __init__(self, sock: socket.socket, host: str, context: ssl.SSLContext) -> None:
        self.sock = sock  # an SSLSocket once AUTH TLS has succeeded
        self.host = host
        self.context = context
        self.pending = bytearray()

    @classmethod
    def open(cls, host: str, port: int, context: ssl.SSLContext) -> TlsControl:
        """Connect, read the greeting, AUTH TLS and the handshake."""
        control = cls(socket.create_connection((host, port), timeout=TIMEOUT), host, context)
        try:
            control.expect(220)
            control.command("AUTH TLS", 234)
            control.sock = context.wrap_socket(control.sock, server_hostname=host)
        except BaseException:
            control.sock.close()
            raise
        return control

    @property
    def facts(self) -> TlsFacts:
        assert isinstance(self.sock, ssl.SSLSocket), "AUTH TLS has not succeeded"
        return TlsFacts.of(self.sock)

    def reply(self) -> tuple[int, str]:
        while True:
            taken = take_reply(self.pending)
            if taken is not None:
                return taken
            chunk = self.sock.recv(4096)
            if not chunk:
                raise FtpError("control connection closed")
            self.pending += chunk

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def expect(self, *codes: int) -> tuple[int, str]:
        code, text = self.reply()
        if code not in codes:
            raise FtpError(f"expected {codes}, got {text[:120]!r}")
        return code, text

    def command(self, line: str, *codes: int) -> tuple[int, str]:
        self.send(line)
        return self.expect(*codes)

    def login(self, user: str, password: str) -> None:
        """USER/PASS, TYPE I, then PBSZ 0 and PROT P (curl's order): encrypted data."""
        code, _ = self.command(f"USER {user}", 230, 331)
        if code == 331:
            self.command(f"PASS {password}", 230)
        self.command("TYPE I", 200)
        self.command("PBSZ 0", 200)
        self.command("PROT P", 200)

    def _passive(self) -> socket.socket:
        _, text = self.command("PASV", 227)
        return socket.create_connection((self.host, passive_port(text)), timeout=TIMEOUT)

    def _secure(self, sock: socket.socket) -> ssl.SSLSocket:
        """The data connection's handshake, resuming the control connection's session."""
        assert isinstance(self.sock, ssl.SSLSocket), "AUTH TLS has not succeeded"
        return self.context.wrap_socket(sock, server_hostname=self.host, session=self.sock.session)

    def download(self, command: str, buffer: bytearray, within: float) -> tuple[int, TlsFacts]:
        """RETR: bytes received into ``buffer`` (again and again), and the data TLS facts."""
        deadline = time.monotonic() + within
        sock: socket.socket = self._passive()
        try:
            self.command(command, 125, 150)  # the handshake after 150, as curl does
            sock = data = self._secure(sock)
            facts = TlsFacts.of(data)
            view, total = memoryview(buffer), 0
            while received := data.recv_into(view):
                total += received
                if time.monotonic() > deadline:
                    raise TimeoutError(f"transfer not done within {within:.0f} s")
        finally:
            sock.close()
        self.expect(226, 250)
        return total, facts

    def upload(self, path: str, size: int, block: bytes, within: float) -> TlsFacts:
        """STOR ``size`` bytes, ``block`` after ``block``, ended by close_notify."""
        deadline = time.monotonic() + within
        sock: socket.socket = self._passive()
        try:
            self.command(f"STOR {path}", 125, 150)
            sock = data = self._secure(sock)
            facts = TlsFacts.of(data)
            view, remaining = memoryview(block), size
            while remaining > 0:
                piece = view[: min(len(view), remaining)]
                data.sendall(piece)
                remaining -= len(piece)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"transfer not done within {within:.0f} s")
            # close_notify says the upload is whole (ketch refuses one without it); unwrap
            # also reads what the server sent meanwhile (TLS 1.3 tickets), so that closing
            # does not answer unread data with a reset. A server that closes without its
            # own close_notify makes unwrap fail: the 226 below is what counts.
            with contextlib.suppress(ssl.SSLError, OSError):
                data.unwrap()
        finally:
            sock.close()
        self.expect(226, 250)
        return facts

    def quit(self) -> None:
        try:
            self.sock.settimeout(5.0)
            self.command("QUIT", 221)
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()
