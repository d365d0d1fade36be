"""The port-20 helper: a tiny root process that binds active mode's low source port.

Active-mode data connections traditionally come from port 20 (control port
minus one), and binding a port below 1024 needs root. Once the server has
dropped to ``run_as`` it cannot, so before dropping it starts this helper,
which stays root and does exactly one thing, as vsftpd's privileged parent
does: on request, create a TCP socket bound to one allowed port on one of
the server's addresses and pass the descriptor back. It never connects,
listens, reads files or runs anything; the unprivileged server connects the
socket itself.

Why a helper rather than keeping CAP_NET_BIND_SERVICE in the server: that
capability would let the whole server, and anything that took it over,
bind *every* port below 1024 on every address, for as long as it runs.
The helper grants one port, on the addresses the server listens on.

Protocol, over an ``AF_UNIX``/``SOCK_SEQPACKET`` socket pair (one message
per datagram, so no framing is needed):

* request: ``BIND <seq> <4|6> <address> <port>`` (ASCII);
* reply: ``OK <seq>`` carrying the bound socket's descriptor (SCM_RIGHTS),
  or ``ERR <seq> <errno> <reason>`` without one.

The helper refuses any port it was not started with, any address other
than the one the server listens on (when it listens on one address), and
multicast addresses; when the server listens on every address, the
kernel's own rule applies: only the host's addresses can be bound. The
helper ends when it reads end-of-file, i.e. when the server closes its end
or exits in any way, even killed.

With ``workers`` (see :mod:`ketch.server.workers`) the supervisor starts one
helper per worker before it drops root: a helper answers one process at a
time, and a restarted worker takes over its predecessor's.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence

# Renamed: low_source_ports' parameter carries the setting's own name.
from ketch.protocol.addresses import active_source_port as default_source_port
from ketch.server.helper_python import helper_command
from ketch.server.readiness import Readiness

__all__ = [
    "LowPortHelper",
    "answer",
    "install",
    "installed",
    "low_source_ports",
    "main",
    "start_for",
]

log = logging.getLogger("ketch.server.data")

_MESSAGE_SIZE = 512
_REPLY_TIMEOUT = 5.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def low_source_ports(active_source_port: str | int, control_port: int) -> frozenset[int]:
    """The privileged (< 1024) source ports active mode may use; empty if none."""
    port = default_source_port(active_source_port, control_port)
    return frozenset({port}) if port is not None and 0 < port < 1024 else frozenset()


# -- the server's side ----------------------------------------------------------


class LowPortHelper:
    """The server's handle on a running helper process."""

    def __init__(
        self, process: subprocess.Popen[bytes], channel: socket.socket, ports: frozenset[int]
    ) -> None:
        self.ports = ports
        self._process = process
        self._channel = channel
        self._lock = asyncio.Lock()
        self._sequence = 0
        self._gone = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    def start(cls, ports: Iterable[int], addresses: Iterable[str] | None) -> LowPortHelper:
        """Start the helper (as the current user, i.e. root) allowing ``ports``.

        ``addresses`` None allows any address of this host; otherwise only those.
        """
        allowed = frozenset(ports)
        arguments = [f"--port={port}" for port in sorted(allowed)]
        if addresses is not None:
            arguments += [f"--address={address}" for address in addresses]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            process = subprocess.Popen(
                helper_command(__name__, f"--fd={theirs.fileno()}", *arguments),
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
        ours.setblocking(False)
        log.info(
            "port-20 helper started (pid %d, stays root) for active source port %s",
            process.pid,
            ", ".join(map(str, sorted(allowed))),
        )
        return cls(process, ours, allowed)

    def serves(self, port: int) -> bool:
        return port in self.ports and not self._gone

    def adopt(self) -> None:
        """Use this helper from a worker process forked from the one that started it.

        Requests are numbered afresh from a random point, so an answer that a
        crashed predecessor on the same channel left unread is never taken for
        one of ours.
        """
        self._sequence = secrets.randbits(48)
        self._lock = asyncio.Lock()

    def release(self) -> None:
        """Close this process's copy of the channel, leaving the helper to its starter.

        For a worker process, whose parent started every worker's helper: the
        helpers of the other workers are none of its business.
        """
        self._gone = True
        self._channel.close()

    async def bound_socket(
        self, family: socket.AddressFamily, address: str, port: int
    ) -> socket.socket:
        """A TCP socket bound to (address, port) by the helper; OSError if it refuses."""
        async with self._lock:
            if self._gone:
                raise OSError(errno.EPIPE, "the port-20 helper is not running")
            self._sequence += 1
            sequence = str(self._sequence)
            version = 4 if family == socket.AF_INET else 6
            request = f"BIND {sequence} {version} {address} {port}".encode("ascii")
            try:
                async with asyncio.timeout(_REPLY_TIMEOUT):
                    await asyncio.get_running_loop().sock_sendall(self._channel, request)
                    return await self._reply(sequence)
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "the port-20 helper did not answer") from None
            except (BrokenPipeError, ConnectionError, EOFError):
                self._gone = True
                log.warning("the port-20 helper has gone; active mode uses ephemeral ports")
                raise OSError(errno.EPIPE, "the port-20 helper is not running") from None

    async def _reply(self, sequence: str) -> socket.socket:
        loop = asyncio.get_running_loop()
        # The loop awaits nothing but the channel: one registration for all its waits.
        with Readiness(loop, self._channel.fileno(), write=False) as readable:
            while True:
                await readable.wait()
                try:
                    message, fds, _flags, _address = socket.recv_fds(
                        self._channel, _MESSAGE_SIZE, 1
                    )
                except BlockingIOError:
                    continue
                if not message:
                    raise EOFError
                if (sock := _answer_to(sequence, message, fds)) is not None:
                    return sock

    def close(self) -> None:
        """Close our end: the helper reads end-of-file and exits."""
        self._gone = True
        self._channel.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("the port-20 helper (pid %d) did not exit", self._process.pid)


def _answer_to(sequence: str, message: bytes, fds: list[int]) -> socket.socket | None:
    """The socket in the helper's answer to ``sequence``; None for a late answer to
    another request (its sockets closed); OSError for a refusal."""
    received = [socket.socket(fileno=fd) for fd in fds]
    kind, _, rest = message.decode("ascii", "replace").partition(" ")
    number, _, detail = rest.partition(" ")
    if number == sequence and kind == "OK" and len(received) == 1:
        return received[0]
    for sock in received:
        sock.close()
    if number != sequence:  # the answer to a request that timed out
        return None
    code, _, reason = detail.partition(" ")
    raise OSError(int(code) if code.isdigit() else errno.EPROTO, reason or message)


_installed: LowPortHelper | None = None


def install(helper: LowPortHelper | None) -> None:
    """Make ``helper`` the one active-mode connections use (one per process)."""
    global _installed
    _installed = helper


def installed() -> LowPortHelper | None:
    """The helper this process started, if any."""
    return _installed


def start_for(active_source_port: str | int, host: str, port: int) -> LowPortHelper | None:
    """Start a helper for active mode's source port, if that port is below 1024.

    ``host`` and ``port`` are what the control connection listens on. Raises
    :class:`~ketch.server.privileges.PrivilegeError` when the helper cannot start.
    """
    from ketch.server.privileges import PrivilegeError

    ports = low_source_ports(active_source_port, port)
    if not ports:
        return None
    addresses = None if host in ("::", "0.0.0.0") else [host]
    try:
        return LowPortHelper.start(ports, addresses)
    except OSError as error:
        raise PrivilegeError(
            f"cannot start the port-20 helper for active mode: {error.strerror or error}; "
            'set active_source_port = "ephemeral" to do without it'
        ) from None


# -- the helper's side ----------------------------------------------------------


def answer(
    request: bytes, ports: frozenset[int], addresses: frozenset[IpAddress] | None
) -> tuple[bytes, socket.socket | None]:
    """The reply to one request, and the bound socket to send with it (if any)."""
    try:
        verb, sequence, version, address, port_text = request.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return f"ERR - {errno.EINVAL} malformed request".encode(), None
    if verb != "BIND" or not sequence.isdigit():
        return f"ERR - {errno.EINVAL} malformed request".encode(), None

    def refuse(code: int, reason: str) -> tuple[bytes, None]:
        return f"ERR {sequence} {code} {reason}".encode(), None

    family = {"4": socket.AF_INET, "6": socket.AF_INET6}.get(version)
    if family is None:
        return refuse(errno.EAFNOSUPPORT, f"address family {version!r} not supported")
    if not port_text.isdigit() or int(port_text) not in ports:
        return refuse(errno.EACCES, f"port {port_text} is not the active source port")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return refuse(errno.EINVAL, f"{address!r} is not an IP address")
    if ip.version != int(version) or ip.is_multicast:
        return refuse(errno.EINVAL, f"{address} is not a unicast IPv{version} address")
    if addresses is not None and ip not in addresses:
        return refuse(errno.EACCES, f"{address} is not the address the server listens on")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(ip), int(port_text)))
    except OSError as error:
        sock.close()
        return refuse(error.errno or errno.EINVAL, error.strerror or str(error))
    return f"OK {sequence}".encode(), sock


def serve(
    channel: socket.socket, ports: frozenset[int], addresses: frozenset[IpAddress] | None
) -> None:
    """Answer requests until the server's end of ``channel`` closes."""
    while True:
        try:
            request = channel.recv(_MESSAGE_SIZE)
        except ConnectionError:
            return
        if not request:
            return
        reply, sock = answer(request, ports, addresses)
        try:
            if sock is not None:
                socket.send_fds(channel, [reply], [sock.fileno()])
            else:
                channel.send(reply)
        except (BrokenPipeError, ConnectionError):
            return
        finally:
            if sock is not None:
                sock.close()


def main(argv: Sequence[str]) -> int:
    """``--fd=N --port=P [--port=...] [--address=A ...]``: serve requests on descriptor N."""
    # Ctrl-C and a terminal hang-up reach the whole process group; the helper
    # must outlive the server's graceful shutdown, and it ends with the server.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    fd = -1
    ports: set[int] = set()
    addresses: set[IpAddress] = set()
    for argument in argv:
        name, _, value = argument.partition("=")
        if name == "--fd":
            fd = int(value)
        elif name == "--port":
            ports.add(int(value))
        elif name == "--address":
            addresses.add(ipaddress.ip_address(value))
        else:
            print(f"port20_helper: unknown argument {argument!r}", file=sys.stderr)
            return 2
    if fd < 0 or not ports:
        print("port20_helper: needs --fd and --port", file=sys.stderr)
        return 2
    with socket.socket(fileno=fd) as channel:
        os.set_inheritable(fd, False)
        serve(channel, frozenset(ports), frozenset(addresses) or None)
    return 0
