"""Which local TCP ports a harness may give a server it starts."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["bindable", "ephemeral_ports"]


def ephemeral_ports() -> range:
    """The kernel's ephemeral range: clients' own sockets take ports from it."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (with SO_REUSEADDR, as servers do)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
