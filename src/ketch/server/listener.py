"""The control-connection listener: accept, apply connection limits, run a session each."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
import time
from collections import Counter
from typing import Any

from ketch.config import PortRange, ServerConfig
from ketch.protocol.addresses import format_host_port, plain_ip
from ketch.protocol.replies import format_reply
from ketch.server import commands  # noqa: F401  (fills the command table)
from ketch.server.auth import Authenticator
from ketch.server.context import ServerContext
from ketch.server.control_stream import ControlStream
from ketch.server.implicit_tls import ImplicitTlsListener
from ketch.server.log_format import SESSION, next_session_number
from ketch.server.login_guard import ban_reply_text
from ketch.server.masquerade import MasqueradePolicy
from ketch.server.session import SHUTDOWN_TEXT, Session
from ketch.server.tls import HANDSHAKE_TIMEOUT, ServerTls, reload_tls

__all__ = ["ConnectionLimits", "FtpServer", "listening_socket"]

log = logging.getLogger("ketch.server")


#: Unread bytes a control stream holds before it stops reading from the socket.
_STREAM_LIMIT = 1 << 16


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
    """An FTP server on one listening socket (dual-stack when listening on ``::``).

    A worker process (see :mod:`ketch.server.workers`) passes the listening
    ``sock`` its parent bound, the slice of the passive range that is its
    own, and its ``worker`` label.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        sock: socket.socket | None = None,
        passive_ports: PortRange | None = None,
        worker: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.config = config
        self.context = ServerContext.from_config(config, passive_ports)
        self.context.worker = worker
        # Loaded now, before root is dropped: the key is often readable by root only.
        self.context.tls = tls if tls is not None else ServerTls.from_config(config)
        self._implicit_socket: socket.socket | None = None
        self._implicit_listener: ImplicitTlsListener | None = None
        #: Implicit FTPS connections still in their handshake (no session yet).
        self._handshakes: set[asyncio.Task[None]] = set()
        self.limits = ConnectionLimits(config.max_connections, config.max_connections_per_ip)
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[None], Session] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._socket: socket.socket | None = sock
        self._address: tuple[str, int] | None = None
        if sock is not None:
            host, port = sock.getsockname()[:2]
            self._address = (host, port)

    def bind(self) -> tuple[str, int]:
        """Make the listening socket without accepting yet, so root can be dropped in between."""
        if self._socket is None:
            self._socket = listening_socket(self.config.resolved_listen_address(), self.config.port)
            host, port = self._socket.getsockname()[:2]
            self._address = (host, port)
        if self.config.implicit_tls_port is not None and self._implicit_socket is None:
            self._implicit_socket = listening_socket(
                self.config.resolved_listen_address(),
                self.config.implicit_tls_port,
                setting="implicit_tls_port (--implicit-tls-port)",
            )
        assert self._address is not None
        return self._address

    async def start(self) -> None:
        """Bind (unless done already) and start accepting connections."""
        self.bind()
        assert self._socket is not None
        self._exclude_own_ports()
        for listener in (self._socket, self._implicit_socket):
            if listener is not None:
                # Keep Telnet "urgent" bytes in the stream: clients send ABOR (or IAC DM
                # before it) with MSG_OOB, and the kernel would otherwise take that byte out
                # of the command line. Accepted sockets inherit it (Linux, the BSDs).
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        loop = asyncio.get_running_loop()
        # create_server listens again with its own backlog (100 by default),
        # which would undo LISTEN_BACKLOG: a burst of connects would be dropped.
        self._server = await loop.create_server(
            self._control_protocol, sock=self._socket, backlog=LISTEN_BACKLOG
        )
        self._sweep_handle = loop.call_later(sweep_period(self.config), self._sweep)
        if self._implicit_socket is not None and self.context.tls is not None:
            # Implicit FTPS: admitted in the clear, then TLS from the first byte, before
            # the session (and its 220) starts (see implicit_tls).
            self._implicit_listener = ImplicitTlsListener(self._implicit_socket, self._on_implicit)
            self._implicit_listener.start()

    def _exclude_own_ports(self) -> None:
        """Keep the ports listened on here out of the passive pool (a start-up warning
        says when passive_ports holds one): they are no passive ports."""
        pool = self.context.passive_ports
        pool.exclude(self.address[1], "control port")
        if (implicit := self.implicit_tls_address) is not None:
            pool.exclude(implicit[1], "implicit FTPS port")

    def _control_protocol(self) -> ControlStream:
        return ControlStream(self._start_session, _STREAM_LIMIT)

    def _start_session(self, stream: ControlStream) -> None:
        asyncio.get_running_loop().create_task(self._on_connection(stream))

    def _on_implicit(self, sock: socket.socket, peer: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._on_implicit_connection(sock, peer))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on (port 0 in the config picks a free one)."""
        assert self._address is not None, "start() first"
        return self._address

    @property
    def implicit_tls_address(self) -> tuple[str, int] | None:
        """The (host, port) of the implicit FTPS listener, if there is one."""
        if self._implicit_socket is None:
            return None
        host, port = self._implicit_socket.getsockname()[:2]
        return (host, port)

    def log_serving(self) -> None:
        """One line in the log that the server serves, and how (README's start line): a
        summary goes to stdout only, which a daemon's log (stderr) does not hold. A
        worker's line names its pid and its own slice of the passive range."""
        from ketch import __version__
        from ketch.server import event_loop

        config, (host, port) = self.config, self.address
        implicit = self.implicit_tls_address
        log.info(
            "ketch %s serving address=%s port=%d pid=%d passive_ports=%s tls=%s "
            "tls_required=%s implicit_tls_port=%s event_loop=%s",
            __version__,
            host,
            port,
            os.getpid(),
            self.context.passive_ports.ports,
            "off" if config.tls_certificate is None else "on",
            config.tls_required,
            implicit[1] if implicit else "-",
            event_loop.current(),
        )

    @property
    def sessions(self) -> dict[asyncio.Task[None], Session]:
        """The sessions running now, by the task that runs each (a copy)."""
        return dict(self._sessions)

    def stop_accepting(self) -> None:
        """Close the listening socket: new connections are refused, sessions go on."""
        if self._server is not None:
            self._server.close()
        elif self._socket is not None:
            self._socket.close()
        if self._implicit_listener is not None:
            self._implicit_listener.close()
        elif self._implicit_socket is not None:
            self._implicit_socket.close()

    def reconfigure(
        self, config: ServerConfig, authenticator: Authenticator, masquerade: MasqueradePolicy
    ) -> None:
        """Use a reloaded configuration from now on, in every session (no await: atomic)."""
        self.config = config
        self.context.reconfigure(config, authenticator, masquerade)
        self.limits.max_total = config.max_connections
        self.limits.max_per_ip = config.max_connections_per_ip
        self.context.tls = reload_tls(self.context.tls, config)
        for session in self._sessions.values():
            session.reconfigure(config)

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        async with self._server:
            await self._server.serve_forever()

    def _sweep(self) -> None:
        """Wake the sessions whose idle or line timeout has passed (see Session.wake_if_due)."""
        now = time.monotonic()
        for task, session in self._sessions.items():
            if session.wake_if_due(now):
                task.cancel()
        self._sweep_handle = asyncio.get_running_loop().call_later(
            sweep_period(self.config), self._sweep
        )

    async def close(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        if self._server is not None:
            self._server.close()
        if self._implicit_listener is not None:
            self._implicit_listener.close()
        handshakes = list(self._handshakes)
        for handshake in handshakes:
            handshake.cancel()  # the transport closes the socket; the limits are released
        for task, session in list(self._sessions.items()):
            session.say_goodbye(421, SHUTDOWN_TEXT)
            task.cancel()
        try:
            if self._sessions or handshakes:
                await asyncio.wait([*self._sessions, *handshakes], timeout=10)
            if self._server is not None:
                await self._server.wait_closed()
        finally:
            await self.context.listing_workers.close()

    def _refusal(self, ip: str) -> str | None:
        """Why a new connection from ``ip`` is turned away (ban, limits), or None to admit it.

        Admitting counts the connection in ``limits``: release it when it ends.
        """
        banned = self.context.login_guard.ban_remaining(ip)
        if banned is not None:
            self.context.counters["connection_banned"] += 1
            log.info("connection refused client=%s: banned for %.0f s more", ip, banned)
            return ban_reply_text(ip, banned)
        refusal = self.limits.admit(ip)
        if refusal is not None:
            self.context.counters["connection_refused"] += 1
            log.warning("connection refused client=%s: %s", ip, refusal)
        return refusal

    async def _on_connection(self, stream: ControlStream) -> None:
        peer = stream.get_extra_info("peername")
        if peer is None:  # reset before it was served (a port scan, a health check): uvloop
            stream.close()
            return
        ip = plain_ip(peer[0])
        refusal = self._refusal(ip)
        if refusal is not None:
            stream.write(format_reply(421, refusal))
            stream.close()
            return
        await self._serve(stream, ip)

    async def _on_implicit_connection(self, sock: socket.socket, peer: Any) -> None:
        ip = plain_ip(peer[0])
        if self._refusal(ip) is not None:
            sock.close()  # no reply: a client expecting TLS would take one in the clear for garbage
            return
        try:
            stream = await self._secure(ip, sock)
        except BaseException:
            self.limits.release(ip)
            raise
        if stream is None:
            self.limits.release(ip)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handshakes.discard(task)  # a session now: close() says goodbye to those
        await self._serve(stream, ip)

    async def _serve(self, stream: ControlStream, ip: str) -> None:
        """Run the session of an admitted connection; release its place in ``limits`` after."""
        try:
            session = Session(self.context, stream)
        except Exception:
            # A bug of ours before the session runs: log it and let the connection go.
            log.exception("setting up the session with %s failed", ip)
            stream.close()
            self.limits.release(ip)
            return
        # SO_OOBINLINE came from the listening socket (see start); TCP_NODELAY is set
        # by asyncio's and uvloop's transports both. No socket options per connection.
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = session
        # This task's context: every line the session logs from here on names it.
        SESSION.set(next_session_number())
        started = time.monotonic()
        log.info("connect client=%s port=%s", ip, _peer_port(stream))
        try:
            await session.run()
        except asyncio.CancelledError:
            pass  # server shutdown: end normally
        except Exception:
            log.exception("session with %s ended by an internal error", ip)
        finally:
            self._sessions.pop(task, None)
            self.limits.release(ip)
            log.info(
                "disconnect client=%s user=%s seconds=%.1f",
                ip,
                session.log_user if session.state.logged_in else "-",
                time.monotonic() - started,
            )

    async def _secure(self, ip: str, sock: socket.socket) -> ControlStream | None:
        """The TLS handshake of an implicit FTPS connection: its stream, or None if it failed.

        Once given to ``connect_accepted_socket`` the socket is the transport's, which
        closes it however the handshake ends.
        """
        tls = self.context.tls
        stream = ControlStream(None, _STREAM_LIMIT)
        try:
            if tls is None:  # TLS was configured away by a reload; implicit needs a restart
                sock.close()
                raise ssl.SSLError("TLS is no longer configured")
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: stream, sock, ssl=tls.context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        except (ssl.SSLError, OSError, TimeoutError) as error:
            self.context.counters["tls_handshake_failed"] += 1
            log.info("implicit FTPS: TLS handshake failed client=%s: %s", ip, error)
            return None
        return stream


def _peer_port(stream: ControlStream) -> int | str:
    """The client's port, which tells a connection from others of the same address
    in the client's own logs and in a packet capture."""
    peer = stream.get_extra_info("peername")
    return peer[1] if peer else "-"


# Connections the kernel queues before ketch accepts them (capped by somaxconn).
LISTEN_BACKLOG = 1024


def sweep_period(config: ServerConfig) -> float:
    """How often sessions are checked for timeouts: a timeout fires up to this much late.

    An eighth of the shortest timeout, between 50 ms and 1 s: a 300 s idle
    timeout ends within 301 s, a 0.4 s one within 0.45 s.
    """
    return min(1.0, max(0.05, min(config.idle_timeout, config.line_timeout) / 8))


class ListenError(OSError):
    """A listening socket could not be made; ``str()`` says which, why, and what to change."""


def listening_socket(
    host: str, port: int, *, reuse_port: bool = False, setting: str = "port (--port)"
) -> socket.socket:
    """A control listener; ``reuse_port`` lets several workers' sockets share the port.

    Raises ListenError naming ``setting`` (the port's key and option) or the address.
    """
    try:
        if host == "::" and socket.has_dualstack_ipv6():
            return socket.create_server(
                (host, port),
                family=socket.AF_INET6,
                dualstack_ipv6=True,
                backlog=LISTEN_BACKLOG,
                reuse_port=reuse_port,
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server(
            (host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=reuse_port
        )
    except OSError as error:
        raise ListenError(error.errno, _listen_problem(error, host, port, setting)) from None


def _listen_problem(error: OSError, host: str, port: int, setting: str) -> str:
    where = format_host_port(host, port)
    if error.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is in use; pick another {setting}"
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine; "
            "fix listen_address (--listen), or use 0.0.0.0 or :: for all addresses"
        )
    if error.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: ports below 1024 need root (then run_as drops it) "
            f"or CAP_NET_BIND_SERVICE; or pick a {setting} of 1024 or more"
        )
    return f"cannot listen on {where}: {error.strerror or error}"
