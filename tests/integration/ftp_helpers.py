"""Small helpers for tests: driving the server with Python's ftplib, and running ``ketch``."""

from __future__ import annotations

import ftplib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
