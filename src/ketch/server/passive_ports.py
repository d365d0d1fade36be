"""The pool of passive-mode ports, shared by every session of one server.

Admins open exactly ``passive_ports`` in their firewall, so a listener is
only ever bound inside that range: when every port is busy the session gets
425 and the admin a log line, never a port the firewall would drop.

A port stays *reserved* from PASV until its data connection closes, not just
while it listens, so the range size is the number of simultaneous passive
transfers; ``ketch serve`` prints that figure at start-up.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from collections.abc import Mapping

from ketch.config import PortRange

__all__ = ["PassiveListenerFailed", "PassivePortPool", "PassivePortsExhausted"]


class PassivePortsExhausted(Exception):
    """Every port of the range (or of this worker's slice of it) is in use.

    Ports the server listens on for control connections are not counted:
    they are never passive ports (see :meth:`PassivePortPool.exclude`).
    """

    def __init__(
        self, ports: PortRange, configured: PortRange, excluded: Mapping[int, str] | None = None
    ) -> None:
        share = "" if ports == configured else f" (this process's share of {configured})"
        excluded = excluded or {}
        own = " and ".join(f"{name} {port}" for port, name in sorted(excluded.items()))
        usable = ports.size - len(excluded)
        if usable <= 0:
            text = (
                f"passive_ports {ports}{share} holds only the server's {own}, so no passive "
                "connection can be made; ask the admin to move passive_ports off it"
            )
        else:
            less = f", less the {own}" if own else ""
            text = (
                f"all {usable} passive ports ({ports}{less}){share} are busy; try again "
                "shortly, or ask the admin to widen passive_ports"
            )
        super().__init__(text)
        self.ports = ports


class PassiveListenerFailed(Exception):
    """A listener could not be made for a reason other than a busy port (out of
    descriptors, say): the whole server's trouble, not this client's."""

    def __init__(self, error: OSError) -> None:
        super().__init__(
            f"the server could not open a listening socket ({os.strerror(error.errno or 0)}); "
            "try again shortly, and tell the server's admin if it lasts"
        )


class PassivePortPool:
    """Hands out listening sockets bound to ports inside one range."""

    def __init__(self, ports: PortRange, configured: PortRange | None = None) -> None:
        self.ports = ports
        #: passive_ports as configured: ``ports`` is a worker's slice of it (workers > 1).
        self.configured = configured or ports
        self._reserved: set[int] = set()
        #: Ports of the range the server listens on itself, by what they are (see exclude).
        self._excluded: dict[int, str] = {}
        # Start at a random place and go round, so a port just released (and
        # possibly still reachable by a late packet) is the last to be reused.
        self._cursor = random.randint(ports.low, ports.high)

    @property
    def size(self) -> int:
        return self.ports.high - self.ports.low + 1

    def open_listener(self, bind_ip: str) -> socket.socket:
        """A non-blocking socket listening on ``bind_ip`` at a free port of the range.

        Ports another process holds (EADDRINUSE) are skipped like our own busy ones.
        """
        family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
        for _ in range(self.size):
            port = self._cursor
            self._cursor = self.ports.low if port >= self.ports.high else port + 1
            if port in self._reserved:
                continue
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as error:  # out of descriptors or memory: every port alike
                raise PassiveListenerFailed(error) from error
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((bind_ip, port))
                sock.listen(8)
                sock.setblocking(False)
            except OSError as error:
                sock.close()
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise PassiveListenerFailed(error) from error
            self._reserved.add(port)
            return sock
        raise PassivePortsExhausted(self.ports, self.configured, self._excluded)

    def release(self, port: int) -> None:
        self._reserved.discard(port)  # never an excluded port: no listener was bound there

    def exclude(self, port: int, name: str) -> None:
        """Never hand out ``port``, the server's ``name`` ("control port"), if in the range.

        A listener could never be bound there anyway; kept reserved, it is skipped like
        a busy port, and the 425 for a full range does not count it.
        """
        if port in self.ports:
            self._excluded[port] = name
            self._reserved.add(port)
