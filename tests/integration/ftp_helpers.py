"""Small helpers for driving the server with Python's ftplib in tests."""

from __future__ import annotations

import ftplib
import socket
import time
from collections.abc import Callable

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
