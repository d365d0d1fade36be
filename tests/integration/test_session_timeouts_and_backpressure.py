"""What idle sessions save on: no timer each, shared filesystems, lighter flow control.

Sessions have no timer of their own while they wait for input: one sweep of
the listener wakes those whose time is up. Sessions in one home share its
filesystem object. The control connection is ketch's own small protocol
object (server/control_stream.py), which must keep asyncio's flow control
and half-close behaviour.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PASSWORD, USER, RunningServer
from ftp_helpers import connect, wait_for

MakeServer = Callable[..., RunningServer]


def _largest_send_buffer() -> int:
    """The most a TCP socket's send buffer may grow to here (Linux autotuning)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


def test_only_the_idle_session_times_out(make_server: MakeServer) -> None:
    server = make_server(idle_timeout=0.6)
    idle, busy = connect(server), connect(server)
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        assert busy.voidcmd("NOOP").startswith("200")
        time.sleep(0.2)
    idle.sock.settimeout(5)
    reply = idle.getline()
    assert reply.startswith("421") and "Idle for 0.6 s" in reply
    assert idle.sock.recv(1) == b""
    assert busy.voidcmd("NOOP").startswith("200")
    busy.quit()


def test_a_client_reading_replies_late_gets_every_reply_in_order(make_server: MakeServer) -> None:
    """Enough pipelined HELPs to fill the kernel's buffers: the session must wait, then go on."""
    server = make_server(command_rate=0.0)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    assert sock.recv(1024).startswith(b"220")
    sock.sendall(b"HELP\r\n")
    help_reply = b""
    while not help_reply.endswith(b"\r\n") or b"\r\n214 " not in help_reply:
        help_reply += sock.recv(65536)
    count = (_largest_send_buffer() + (1 << 20)) // len(help_reply) + 1
    sender = threading.Thread(target=sock.sendall, args=(b"HELP\r\n" * count + b"NOOP\r\n",))
    sender.start()
    time.sleep(0.3)  # read nothing: the server's writes back up and it stops reading
    received = bytearray()
    while not received.endswith(b"200 NOOP ok.\r\n") and len(received) < count * 600:
        chunk = sock.recv(1 << 20)
        assert chunk, "the server closed the connection"
        received += chunk
    sender.join(timeout=10)
    assert received.count(help_reply) == count
    assert received == help_reply * count + b"200 NOOP ok.\r\n"
    assert wait_for(lambda: len(server.server.sessions) == 1)
    sock.close()


def test_a_client_that_never_reads_its_replies_is_closed_after_idle_timeout(
    make_server: MakeServer,
) -> None:
    """The session waits for a client behind with its replies, but not for ever."""
    server = make_server(command_rate=0.0, idle_timeout=1.0)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    try:
        # Far more HELP replies than the kernel's buffers hold, and none read.
        count = (_largest_send_buffer() + (4 << 20)) // 1000
        sender = threading.Thread(target=_send_ignoring_errors, args=(sock, b"HELP\r\n" * count))
        sender.start()
        assert wait_for(lambda: len(server.server.sessions) == 1)
        assert wait_for(lambda: len(server.server.sessions) == 0, timeout=20), (
            "the session still waits for a client that reads nothing"
        )
        sender.join(timeout=10)
    finally:
        sock.close()


def _send_ignoring_errors(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed the connection: what the test awaits
        sock.sendall(data)


def test_commands_sent_before_the_client_half_closes_are_all_answered(
    make_server: MakeServer,
) -> None:
    """``printf 'USER ...\\r\\nQUIT\\r\\n' | nc host 21``: EOF after the commands is not the end."""
    # The failed login's delay makes the session wait, so the EOF is read before the
    # commands after it run: they must still be answered.
    server = make_server(command_rate=0.0, login_failure_delay=0.3)
    commands = [f"USER {USER}", "PASS wrong", f"USER {USER}", f"PASS {PASSWORD}", "NOOP", "QUIT"]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall("".join(f"{line}\r\n" for line in commands).encode())
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(4096):  # until the server closes, after its 221
            received += chunk
    codes = [line[:3] for line in bytes(received).decode().splitlines()]
    assert codes == ["220", "331", "530", "331", "230", "200", "221"], received
    assert wait_for(lambda: len(server.server.sessions) == 0)


def test_a_home_removed_while_in_use_refuses_the_next_login(make_server: MakeServer) -> None:
    """Sessions share their home's filesystem, but each login still checks the home exists."""
    server = make_server()
    first = connect(server)
    assert first.nlst() == []
    server.home.rename(server.home.with_name("gone"))
    second = connect(server, login=False)
    with pytest.raises(ftplib.error_perm, match=r"^530 .*home directory is unavailable"):
        second.login(USER, PASSWORD)
    server.home.with_name("gone").rename(server.home)
    second.login(USER, PASSWORD)
    assert second.nlst() == [] and first.nlst() == []
    first.quit()
    second.quit()
