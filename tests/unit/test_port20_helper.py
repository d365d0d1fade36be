"""The port-20 helper's rules (one port, the server's own addresses) and its protocol.

High ports stand in for port 20 so that these run without root.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import time

import pytest

from ketch.server.port20_helper import LowPortHelper, answer, low_source_ports

LOOPBACK = frozenset({ipaddress.ip_address("127.0.0.1")})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("setting", "control_port", "expected"),
    [
        ("auto", 21, {20}),
        ("auto", 2121, set()),  # 2120 needs no privilege
        ("auto", 1, set()),
        ("ephemeral", 21, set()),
        (20, 2121, {20}),
        (5000, 21, set()),
    ],
)
def test_low_source_ports(setting: str | int, control_port: int, expected: set[int]) -> None:
    assert low_source_ports(setting, control_port) == expected


def test_answer_binds_the_allowed_port_on_an_allowed_address() -> None:
    port = free_port()
    reply, sock = answer(f"BIND 7 4 127.0.0.1 {port}".encode(), frozenset({port}), LOOPBACK)
    assert reply == b"OK 7"
    assert sock is not None
    with sock:
        assert sock.getsockname() == ("127.0.0.1", port)
        assert sock.type == socket.SOCK_STREAM


@pytest.mark.parametrize(
    ("request_text", "code"),
    [
        ("BIND 1 4 127.0.0.1 {other}", errno.EACCES),  # not the allowed port
        ("BIND 1 4 127.0.0.2 {port}", errno.EACCES),  # not the listening address
        ("BIND 1 6 127.0.0.1 {port}", errno.EINVAL),  # family and address disagree
        ("BIND 1 4 224.0.0.1 {port}", errno.EINVAL),  # multicast
        ("BIND 1 4 example.org {port}", errno.EINVAL),
        ("BIND 1 5 127.0.0.1 {port}", errno.EAFNOSUPPORT),
    ],
)
def test_answer_refuses_anything_else(request_text: str, code: int) -> None:
    port = free_port()
    request = request_text.format(port=port, other=port + 1).encode()
    reply, sock = answer(request, frozenset({port}), LOOPBACK)
    assert sock is None
    assert reply.startswith(f"ERR 1 {code} ".encode()), reply


@pytest.mark.parametrize("request_bytes", [b"", b"BIND", b"LISTEN 1 4 127.0.0.1 20", b"\xff"])
def test_answer_refuses_malformed_requests(request_bytes: bytes) -> None:
    reply, sock = answer(request_bytes, frozenset({20}), None)
    assert sock is None
    assert reply.startswith(f"ERR - {errno.EINVAL} ".encode())


def test_any_local_address_when_the_server_listens_on_all() -> None:
    port = free_port()
    reply, sock = answer(f"BIND 2 4 127.0.0.1 {port}".encode(), frozenset({port}), None)
    assert reply == b"OK 2" and sock is not None
    sock.close()
    # Not an address of this host: the kernel refuses it (192.0.2.0/24 is for documentation).
    reply, sock = answer(f"BIND 3 4 192.0.2.1 {port}".encode(), frozenset({port}), None)
    assert sock is None and reply.startswith(f"ERR 3 {errno.EADDRNOTAVAIL} ".encode())


def test_helper_process_passes_bound_sockets_and_exits_on_close() -> None:
    port = free_port()
    helper = LowPortHelper.start([port], ["127.0.0.1"])

    async def scenario() -> None:
        sock = await helper.bound_socket(socket.AF_INET, "127.0.0.1", port)
        with sock:
            assert sock.getsockname() == ("127.0.0.1", port)
        with pytest.raises(OSError) as refused:
            await helper.bound_socket(socket.AF_INET, "127.0.0.1", port + 1)
        assert refused.value.errno == errno.EACCES

    try:
        asyncio.run(scenario())
        assert helper.serves(port) and not helper.serves(port + 1)
    finally:
        started = time.monotonic()
        helper.close()
    assert helper._process.returncode == 0
    assert time.monotonic() - started < 5
