"""Small helpers for tests: driving the server with Python's ftplib, running ``ketch``,
and scripted servers that answer the client as no packaged server does on demand."""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ketch.client import Client

from conftest import PASSWORD, USER, RunningServer


def connect(
    server: RunningServer,
    *,
    login: bool = True,
    user: str = USER,
    password: str = PASSWORD,
    source: str | None = None,
) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(server.host, server.port, source_address=(source, 0) if source else None)
    if login:
        ftp.login(user, password)
    return ftp


def reply_to(ftp: ftplib.FTP, line: str) -> str:
    """Send one command and return the whole reply text, whatever its code."""
    ftp.putcmd(line)
    return ftp.getmultiline()


def download_under_way(server: RunningServer) -> tuple[ftplib.FTP, socket.socket]:
    """alice in TYPE I with RETR of big.bin (made by the caller) running, its first
    piece read."""
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd("RETR big.bin")
    assert len(data.recv(65536)) > 0
    return ftp, data


def log_messages(
    caplog: pytest.LogCaptureFixture,
    prefix: str | tuple[str, ...] = "",
    *,
    level: int | None = None,
) -> list[str]:
    """The messages logged so far that start with ``prefix`` (at ``level``, if given)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.getMessage().startswith(prefix) and level in (None, record.levelno)
    ]


def transfer_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The transfer log lines (one per transfer, written after its final reply) so far."""
    return [m for m in log_messages(caplog, "transfer ") if " result=" in m]


def one_transfer_line(caplog: pytest.LogCaptureFixture) -> str:
    """The one transfer log line, once the server has written it (after the reply)."""
    assert wait_for(lambda: len(transfer_lines(caplog)) >= 1), caplog.text
    lines = transfer_lines(caplog)
    assert len(lines) == 1, lines
    return lines[0]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- the ketch command ------------------------------------------------------------

KETCH = [sys.executable, "-m", "ketch"]
KETCH_TIMEOUT = 60  # seconds for one command, however it fails


def run_ketch(
    cwd: Path, *args: str, home: Path | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """``ketch ARGS`` in ``cwd``, with HOME at ``home`` (default ``cwd``): no ~/.netrc of
    the user's, and the system's CAs only (which do not know a test's CA)."""
    env = {**os.environ, "HOME": str(home or cwd)}
    env.pop("NETRC", None)
    env.pop("SSL_CERT_FILE", None)
    return subprocess.run(
        [*KETCH, *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=KETCH_TIMEOUT,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    """stderr of a command that must have succeeded."""
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    return stderr


def one_error_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The single stderr line of a command that must have failed with ``code``."""
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ketch: ")
    assert "Traceback" not in stderr
    return lines[0]


def command_lines(control: socket.socket) -> Iterator[str]:
    """What a scripted server reads: each line the client sends, until it closes."""
    buffered = b""
    while True:
        while b"\n" not in buffered:
            more = control.recv(4096)
            if not more:
                return
            buffered += more
        line, buffered = buffered.split(b"\n", 1)
        yield line.decode("utf-8", "surrogateescape").strip()


# -- scripted servers ---------------------------------------------------------------

Handler = Callable[[str, socket.socket, socket.socket], bytes | None]
"""Answers one RETR/MLSD/LIST/NLST/STOR/APPE line: (line, control, data listener) -> final reply."""

MLSD_FEATURES = b"211-Features:\r\n MLST type*;size*;modify*;\r\n EPSV\r\n211 End\r\n"
LIST_ONLY_FEATURES = b"211-Features:\r\n EPSV\r\n211 End\r\n"  # vsftpd's kind: no MLSD


def serve_once(
    listener: socket.socket,
    transfer: Handler,
    *,
    features: bytes = MLSD_FEATURES,
    other: Callable[[str], bytes] | None = None,
    heard: list[str] | None = None,
) -> None:
    """Log anyone in, offer ``features`` and EPSV; ``transfer`` answers RETR/MLSD/LIST lines,
    ``other`` any other command (default: 502); ``heard`` collects every command line."""
    control, _ = listener.accept()
    control.settimeout(20)
    data_listener = socket.create_server(("127.0.0.1", 0))
    data_listener.settimeout(20)
    with control, data_listener:
        control.sendall(b"220 scripted\r\n")
        replies = {
            "USER": b"331 password\r\n",
            "PASS": b"230 in\r\n",
            "TYPE": b"200 ok\r\n",
            "FEAT": features,
            "QUIT": b"221 bye\r\n",
            "NOOP": b"200 ok\r\n",
        }
        for line in command_lines(control):
            if heard is not None:
                heard.append(line)
            verb = line.partition(" ")[0].upper()
            if verb in replies:
                control.sendall(replies[verb])
                if verb == "QUIT":
                    return
            elif verb == "EPSV":
                port = data_listener.getsockname()[1]
                control.sendall(f"229 passive (|||{port}|)\r\n".encode())
            elif verb in ("RETR", "MLSD", "LIST", "NLST", "STOR", "APPE"):
                answer = transfer(line, control, data_listener)
                if answer is not None:
                    control.sendall(answer)
            else:
                control.sendall(other(line) if other is not None else b"502 not here\r\n")


@contextlib.contextmanager
def scripted_server(
    transfer: Handler,
    *,
    features: bytes = MLSD_FEATURES,
    other: Callable[[str], bytes] | None = None,
    heard: list[str] | None = None,
) -> Iterator[int]:
    """A ``serve_once`` server for one session on loopback; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    thread = threading.Thread(
        target=serve_once,
        args=(listener, transfer),
        kwargs={"features": features, "other": other, "heard": heard},
        daemon=True,
    )
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)
    # A script stuck mid-conversation means the client did not do what it expected.
    assert not thread.is_alive(), "the scripted server did not finish its session"


def with_server(
    transfer: Handler,
    work: Callable[[Client], object],
    *,
    features: bytes = MLSD_FEATURES,
    other: Callable[[str], bytes] | None = None,
    heard: list[str] | None = None,
) -> object:
    """``work`` on a Client session with a ``serve_once`` server (its options as there)."""
    with scripted_server(transfer, features=features, other=other, heard=heard) as port:

        async def main() -> object:
            async with Client("127.0.0.1", port, user="u", password="p", timeout=10) as ftp:
                return await work(ftp)  # type: ignore[misc]

        return asyncio.run(asyncio.wait_for(main(), 30))


def ketch_with_server(
    transfer: Handler,
    cwd: Path,
    command: str,
    *rest: str,
    features: bytes = MLSD_FEATURES,
    other: Callable[[str], bytes] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``ketch COMMAND URL REST...`` (in ``cwd``) against a scripted server: ``transfer``
    answers its transfers, FEAT is answered ``features`` and other commands ``other``."""
    with scripted_server(transfer, features=features, other=other) as port:
        return run_ketch(cwd, command, f"ftp://u:p@127.0.0.1:{port}/", *rest)


def send_data(payload: bytes) -> Handler:
    def transfer(_: str, control: socket.socket, data_listener: socket.socket) -> bytes:
        data, _ = data_listener.accept()
        with data:
            control.sendall(b"150 here\r\n")
            data.sendall(payload)
        return b"226 done\r\n"

    return transfer


def refuse(reply: bytes) -> Handler:
    """Answer the command with ``reply``; the data connection it opened is closed unused."""

    def transfer(_: str, __: socket.socket, data_listener: socket.socket) -> bytes:
        data, _ = data_listener.accept()
        data.close()
        return reply

    return transfer


def send_by_path(payload_for: Callable[[str, str], bytes | None]) -> Handler:
    """Data for each (verb, path) from ``payload_for``; None: 550, as for a missing path.

    The data connection is taken in either case: the client makes it before
    it sends the command, and one left waiting would be the next command's.
    """

    def transfer(line: str, control: socket.socket, data_listener: socket.socket) -> bytes:
        verb, _, path = line.partition(" ")
        payload = payload_for(verb.upper(), path)
        data, _ = data_listener.accept()
        with data:
            if payload is None:
                return b"550 no such file or directory\r\n"
            control.sendall(b"150 here\r\n")
            data.sendall(payload)
        return b"226 done\r\n"

    return transfer
