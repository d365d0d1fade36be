"""The control-connection listener: accept, apply connection limits, run a session each."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter

from ketch.config import ServerConfig
from ketch.protocol.replies import format_reply
from ketch.server import commands  # noqa: F401  (fills the command table)
from ketch.server.context import ServerContext
from ketch.server.session import Session

__all__ = ["ConnectionLimits", "FtpServer"]

log = logging.getLogger("ketch.server")


class ConnectionLimits:
    """Counts open control connections, in total and per client IP."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self._per_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> str | None:
        """Take a slot for ``ip``, or say why not (the text of a 421 reply)."""
        if self.total >= self.max_total:
            return f"Too many connections ({self.max_total}) to this server; try again later."
        if self._per_ip[ip] >= self.max_per_ip:
            return (
                f"Too many connections ({self.max_per_ip}) from your address {ip}; "
                "close some and try again."
            )
        self.total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


class FtpServer:
    """An FTP server on one listening socket (dual-stack when listening on ``::``)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.context = ServerContext.from_config(config)
        self.limits = ConnectionLimits(config.max_connections, config.max_connections_per_ip)
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], Session] = {}

    async def start(self) -> None:
        sock = _listening_socket(self.config.resolved_listen_address(), self.config.port)
        self._server = await asyncio.start_server(self._on_connection, sock=sock, limit=1 << 16)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on (port 0 in the config picks a free one)."""
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task, session in list(self._sessions.items()):
            session.say_goodbye(421, "Server shutting down; try again later.")
            task.cancel()
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=10)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        session = Session(self.context, reader, writer)
        ip = session.peer_ip
        refusal = self.limits.admit(ip)
        if refusal is not None:
            self.context.counters["connection_refused"] += 1
            log.warning("connection refused client=%s: %s", ip, refusal)
            writer.write(format_reply(421, refusal))
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        # Keep Telnet "urgent" bytes in the stream: clients send ABOR (or IAC DM before it)
        # with MSG_OOB, and the kernel would otherwise take that byte out of the command line.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = session
        log.info("connect client=%s", ip)
        try:
            await session.run()
        except asyncio.CancelledError:
            # Server shutdown. End normally: asyncio's stream callback (3.11) logs
            # a cancelled connection task as an error.
            pass
        except Exception:
            log.exception("session with %s ended by an internal error", ip)
        finally:
            self._sessions.pop(task, None)
            self.limits.release(ip)
            log.info("disconnect client=%s", ip)


def _listening_socket(host: str, port: int) -> socket.socket:
    if host == "::" and socket.has_dualstack_ipv6():
        return socket.create_server(
            (host, port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=256
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=256)
