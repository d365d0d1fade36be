"""One control connection: read command lines, dispatch them from the table, reply.

The session owns what is I/O-bound: the control stream, the prepared data
offer and the running transfer task. Protocol facts (login stage, pending
RNFR/REST) live in :class:`~ketch.protocol.session_state.SessionState`.

Transfers run as a separate task (see :mod:`ketch.server.transfer_task`) so
that the control connection keeps reading: ABOR, STAT and NOOP are served
while bytes flow (RFC 959 §4.1.3); any other command waits for the transfer
to end, which keeps replies in order for clients that pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ketch.protocol.addresses import address_facts
from ketch.protocol.commands import Command, CommandLineReader, LineTooLong, decode_argument
from ketch.protocol.extension_state import ExtensionState
from ketch.protocol.replies import format_reply
from ketch.protocol.security import TlsState
from ketch.protocol.session_state import URGENT_COMMANDS, SessionState
from ketch.server.auth import Account, Permission
from ketch.server.client_text import log_field, without_controls
from ketch.server.command_table import CommandSpec
from ketch.server.control_stream import ControlStream
from ketch.server.data_offers import DataOffer
from ketch.server.dispatch import dispatch, well_formed
from ketch.server.filesystem import Filesystem, FilesystemError, shared_filesystem
from ketch.server.jail import resolve_virtual
from ketch.server.line_timer import LineTimer
from ketch.server.rate_limit import CommandThrottle, pace
from ketch.server.tls import secure_control_stream
from ketch.server.transfer_task import stop_transfer_task

if TYPE_CHECKING:
    from ketch.config import ServerConfig
    from ketch.server.context import ServerContext

__all__ = ["SHUTDOWN_TEXT", "Session"]

log = logging.getLogger("ketch.server")

_READ_SIZE = 8192
#: The 421 text of a session closed by a server shutdown.
SHUTDOWN_TEXT = "Server shutting down; try again later."


class Session:
    # Slots: a server holds thousands of idle sessions, and a __dict__ per
    # session cost more memory than all of its attributes.
    __slots__ = (
        "_extensions",
        "_input_replaced",
        "_last_activity",
        "_line_timer",
        "_lines",
        "_queue",
        "_throttle",
        "_tls",
        "_wait_until",
        "_woken",
        "aborting",
        "account",
        "closing",
        "command_raw",
        "config",
        "context",
        "cwd",
        "data_offer",
        "fs",
        "hung_up",
        "last_active_command",
        "last_passive_reply",
        "local_ip",
        "local_port",
        "peer_family",
        "peer_ip",
        "peer_is_loopback",
        "state",
        "stream",
        "transfer",
        "transfer_progress",
        "transfer_status",
        "urgent_commands",
        "user_slot",
    )

    def __init__(self, context: ServerContext, stream: ControlStream) -> None:
        self.context = context
        self.config = context.config
        self.stream = stream
        peer = stream.get_extra_info("peername")
        local = stream.get_extra_info("sockname")
        # Facts of the connection that PASV/EPSV/PORT consult; fixed for the session.
        # peer_family is RFC 2428's network protocol number: 1 IPv4, 2 IPv6.
        self.peer_ip, self.peer_is_loopback, self.peer_family = address_facts(peer[0])
        self.local_ip = address_facts(local[0])[0]
        self.local_port: int = local[1]
        self.state = SessionState()
        self._extensions: ExtensionState | None = None  # see extensions
        self.account: Account | None = None
        self.fs: Filesystem | None = None
        self.cwd = "/"
        self.data_offer: DataOffer | None = None
        self.transfer: asyncio.Task[None] | None = None
        self.transfer_status = ""
        #: STAT's text for a running data transfer, with its bytes so far (see start_transfer).
        self.transfer_progress: Callable[[], str] | None = None
        #: What the control loop answers while ``transfer`` runs (see run_beside_control).
        self.urgent_commands = URGENT_COMMANDS
        self.aborting = False
        self.closing = False
        #: The client closed (or reset) the control connection: a transfer it cuts short
        #: is logged as interrupted, not as cut off by the server.
        self.hung_up = False
        self._lines = CommandLineReader(self.config.max_line_length)
        #: The commands _serve_input is running, while it runs (see _await_transfer).
        self._queue: list[Command | LineTooLong] | None = None
        self._last_activity = time.monotonic()
        #: While waiting for input: when the wait must end (see wake_if_due).
        self._wait_until: float | None = None
        self._woken = False
        self._line_timer = LineTimer(self.config.line_timeout)
        # None when command_rate is 0 (no limit): nothing to keep or to ask per command.
        self._throttle = (
            CommandThrottle(
                self.config.command_rate,
                self.config.command_burst,
                self.config.command_flood_timeout,
            )
            if self.config.command_rate > 0
            else None
        )
        #: The account key counted in context.user_sessions while logged in.
        self.user_slot: str | None = None
        #: AUTH/PBSZ/PROT facts (see tls); implicit FTPS starts secured, with PROT P.
        implicit = stream.get_extra_info("ssl_object") is not None
        self._tls = TlsState.implicit() if implicit else None
        #: Set when AUTH TLS replaced the control stream: input read before is dropped.
        self._input_replaced = False
        #: The line of the command being run, as received (set by dispatch); see command_line.
        self.command_raw = b""
        #: SITE NATINFO facts: the last PASV/EPSV reply sent, the last PORT/EPRT received.
        self.last_passive_reply: str | None = None
        self.last_active_command: str | None = None

    # -- the control loop ---------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until QUIT, disconnect or idle timeout."""
        try:
            await self.reply(220, self.config.banner)
            while not self.closing:
                # Read here, not in a coroutine of its own: one frame less per idle session.
                if timed_out := self._start_waiting():
                    await self.reply(421, timed_out)
                    break
                # Nothing queued: the client waited for our last reply (see rate_limit.pace).
                waited = not self.stream.has_data()
                try:
                    data = await self.stream.read(_READ_SIZE)
                except asyncio.CancelledError:
                    if self._take_wake_up():
                        continue  # the sweep's wake-up: _start_waiting says which timeout
                    raise
                finally:
                    self._wait_until = None
                if not data:
                    self.hung_up = True
                    break
                self._last_activity = time.monotonic()
                await self._serve_input(data, waited)
        except ConnectionError:
            self.hung_up = True
        except TimeoutError:
            pass
        finally:
            await self._end()

    async def _serve_input(self, data: bytes, waited: bool) -> None:
        """Run the commands that ``data`` completes.

        A method of its own so that its commands are not kept alive (in the
        frame of ``run``) while the session waits, idle, for more input.
        """
        events = self._lines.feed(data)
        self._line_timer.received(data, events)
        self._queue = events  # commands read while one waits for a transfer join it
        try:
            for event in events:  # a list: it may grow while being run
                if self._throttle is not None and not await pace(self, self._throttle, waited):
                    return
                waited = False  # the others in this piece came without waiting
                if self.context.stopping:
                    return  # a shutdown began: what is left unread or unrun stays so (421)
                if isinstance(event, LineTooLong):
                    await self.reply(500, f"Command line too long (limit {event.limit} bytes).")
                else:
                    await self._handle(event)
                if self.closing:
                    return
                if self._input_replaced:
                    # Lines sent in the clear after AUTH TLS must not run as if they came
                    # over TLS (plaintext command injection, as CVE-2011-0411).
                    self._input_replaced = False
                    return
        finally:
            self._queue = None

    def _start_waiting(self) -> str | None:
        """Before reading: set when the wait must end, or give the 421 text of a timeout.

        ``idle_timeout`` bounds the time without a command (or a transfer);
        a line already started must end within ``line_timeout`` (slowloris).
        No timer per read: the listener's sweep (see wake_if_due) cancels the
        read once ``_wait_until`` has passed, as asyncio.timeout would.
        """
        if self.context.stopping and self.transfer is None:
            # A shutdown began while a command ran (see lifecycle): it has ended now.
            return SHUTDOWN_TEXT
        self._line_timer.start_waiting()
        now = time.monotonic()
        remaining = self.config.idle_timeout - (now - self._last_activity)
        if self.transfer is not None:
            remaining = self.config.idle_timeout
        if remaining <= 0:
            log.info("idle timeout client=%s user=%s", self.peer_ip, self.log_user)
            return f"Idle for {self.config.idle_timeout:g} s: closing the control connection."
        line_left = self._line_timer.remaining()
        if line_left is not None:
            if line_left <= 0:
                log.info("line timeout client=%s user=%s", self.peer_ip, self.log_user)
                return (
                    f"Command line not completed within {self.config.line_timeout:g} s: "
                    "closing the control connection."
                )
            remaining = min(remaining, line_left)
        self._wait_until = now + remaining
        return None

    def reconfigure(self, config: ServerConfig) -> None:
        """A reload: limits are read from ``config`` at use time; a wait under way ends at
        the next sweep, to be timed again with the new idle and line timeouts."""
        self.config = config
        self._line_timer.timeout = config.line_timeout
        if self._wait_until is not None:
            self._wait_until = 0.0

    @property
    def waiting_for_command(self) -> bool:
        """Whether the session is idle: reading its next command, with no command running."""
        return self._wait_until is not None

    def wake_if_due(self, now: float) -> bool:
        """Whether the wait for input has run out of time; the caller then cancels our task.

        The listener asks every session from one periodic sweep: a timer per
        session, re-armed on every read, would cost more CPU and memory than
        the rest of an idle session's waiting.
        """
        if self._wait_until is None or now < self._wait_until:
            return False
        self._wait_until = None
        self._woken = True
        return True

    def _take_wake_up(self) -> bool:
        """True when the CancelledError being handled is only the sweep's wake-up."""
        if not self._woken:
            return False
        self._woken = False
        task = asyncio.current_task()
        assert task is not None
        # Another cancel besides ours (server shutdown) must still end the session.
        return task.uncancel() == 0

    async def _handle(self, command: Command) -> None:
        # Keep replies in order: this command's answer follows the transfer's 226. So
        # does the 501 of a malformed ABOR: a HASH's client would take it for the 213.
        if (
            self.transfer is not None
            and not (command.verb in self.urgent_commands and well_formed(command))
            and not await self._await_transfer(self.transfer, command)
        ):
            return  # the client hung up meanwhile
        await dispatch(self, command)
        self._last_activity = time.monotonic()

    async def _await_transfer(self, transfer: asyncio.Task[None], waiting: Command) -> bool:
        """Wait for ``transfer``, reading the control connection meanwhile.

        RFC 959 §4.1.3: ABOR must be heard during a transfer, also behind a command
        that waits for it. ABOR read meanwhile runs at once; other commands, STAT and
        NOOP too, join the queue being run, so that replies keep the commands' order.
        False when the client hung up (the transfer is stopped then, and nothing more
        runs); not so when it half-closed after a QUIT, which waits for the transfer.
        """
        queue = self._queue
        assert queue is not None, "only a command run by _serve_input waits here"
        while not transfer.done():
            reading = asyncio.ensure_future(self.stream.read(_READ_SIZE))
            try:
                await asyncio.wait((transfer, reading), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # the session is being stopped: no reader left behind
                reading.cancel()
                raise
            if not reading.done():  # the transfer ended first; nothing was taken
                reading.cancel()
                await asyncio.wait((reading,))
                break
            data = reading.result()
            if not data and _quit_among(waiting, queue) and not self.stream.is_closing():
                # "RETR f", "QUIT", then a half-close (a script's last line): RFC 959
                # has QUIT wait for the transfer, then 226 and 221.
                await asyncio.wait((transfer,))
                break
            if not data:  # hung up (or TLS, which cannot half-close): stop the transfer
                self.closing = self.hung_up = True
                await stop_transfer_task(transfer)
                return False
            events = self._lines.feed(data)
            self._line_timer.received(data, events)
            for event in events:
                # Only ABOR goes ahead (every urgent set has it): a STAT or NOOP answered
                # now would come before the reply of the command waiting here.
                if isinstance(event, Command) and event.verb == "ABOR" and well_formed(event):
                    await dispatch(self, event)
                else:
                    queue.append(event)
        return True

    # -- helpers for handlers -------------------------------------------------

    @property
    def tls(self) -> TlsState:
        """AUTH/PBSZ/PROT facts (RFC 4217); made on first use, as most sessions never ask."""
        if self._tls is None:
            self._tls = TlsState()
        return self._tls

    @property
    def extensions(self) -> ExtensionState:
        """OPTS MLST/OPTS HASH selections, RANG, HOST and CLNT (see commands/extensions.py).

        Made on first use: most sessions never send any of these.
        """
        if self._extensions is None:
            self._extensions = ExtensionState()
        return self._extensions

    @extensions.setter
    def extensions(self, value: ExtensionState) -> None:
        self._extensions = value

    @property
    def log_user(self) -> str:
        """The user name as a log field (quoted and escaped when it must be; see client_text)."""
        return log_field(self.state.user_name)

    @property
    def command_line(self) -> str:
        """The line of the command being run, as received (SITE NATINFO shows PORT/EPRT's).

        Decoded on demand: only PORT and EPRT ask, and every command would pay.
        """
        return decode_argument(self.command_raw)

    async def reply(self, code: int, text: str | list[str]) -> None:
        stream = self.stream
        if stream.is_closing():
            return
        stream.write(format_reply(code, _shown(text)))
        if stream.must_drain:  # no coroutine per reply while the client takes them
            await self._drain(stream)

    async def _drain(self, stream: ControlStream) -> None:
        """Wait for a client that is behind with its replies, as long as it may be idle.

        The sweep wakes only sessions waiting for input: without this bound, a
        client that sends commands and never reads the replies would hold its
        session, and a connection slot, for ever.
        """
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                await stream.drain()
        except TimeoutError:
            log.info(
                "client=%s user=%s read no replies for %g s (idle_timeout): closing",
                self.peer_ip,
                self.log_user,
                self.config.idle_timeout,
            )
            stream.abort()
            raise ConnectionAbortedError("the client stopped reading its replies") from None

    @property
    def control_is_tls(self) -> bool:
        """True once the control connection runs over TLS (AUTH TLS, or implicit FTPS)."""
        return self._tls is not None and self._tls.control

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """TLS on the control connection, after the 234 reply to AUTH (raises if it fails).

        Input that came in the clear after the AUTH line is dropped with the old stream.
        """
        self.stream = await secure_control_stream(self.stream, context)
        self._lines = CommandLineReader(self.config.max_line_length)
        self._input_replaced = True

    def say_goodbye(self, code: int, text: str) -> None:
        """A last reply written without waiting (server shutdown), if the peer still listens."""
        if not self.stream.is_closing():
            self.stream.write(format_reply(code, _shown(text)))

    def permits(self, permission: Permission) -> bool:
        return self.account is not None and permission in self.account.permissions

    def permission_refusal(self, spec: CommandSpec) -> str:
        name = spec.permission.name.lower() if spec.permission.name else "this"
        return f"Permission denied: {spec.verb} needs the {name!r} permission on your account."

    def resolve(self, argument: str) -> str:
        """The virtual path an argument names, relative to the working directory."""
        return resolve_virtual(self.cwd, argument)

    @property
    def filesystem(self) -> Filesystem:
        if self.fs is None:  # handlers behind needs_login never see this
            raise FilesystemError("not logged in")
        return self.fs

    def log_in(self, account: Account) -> None:
        self.account = account
        self.fs = shared_filesystem(account.home)
        self.cwd = "/"
        self.state.login_succeeded()

    def log_out(self) -> None:
        """Forget the account and its files; a prepared PASV/PORT stays (a transfer
        parameter: see SessionState.begin_login), for REIN and AUTH to drop."""
        self.release_user_slot()
        self.account = None
        self.fs = None
        self.cwd = "/"

    def release_user_slot(self) -> None:
        """Stop counting this session against its account's max_sessions."""
        if self.user_slot is not None:
            self.context.user_sessions.release(self.user_slot)
            self.user_slot = None

    def replace_offer(self, offer: DataOffer | None) -> None:
        """A new PASV/PORT replaces the previous, unused one (and frees its port)."""
        if self.data_offer is not None:
            self.data_offer.close()
        self.data_offer = offer

    # -- transfers ----------------------------------------------------------

    def transfer_ended(self) -> None:
        """The transfer task's last step: the control connection is on its own again."""
        self.transfer = None
        self.transfer_status = ""
        self.transfer_progress = None
        self._last_activity = time.monotonic()

    # -- the end ------------------------------------------------------------

    async def _end(self) -> None:
        if self.transfer is not None:
            await stop_transfer_task(self.transfer)
        self.replace_offer(None)
        self.release_user_slot()
        # Bounded when the close may wait on the client: to take unsent replies (it may
        # have stopped reading), or once AUTH was sent (TLS's close_notify; and should a
        # handshake fail in a way the stream did not foresee, its end is never heard).
        slow_close = self._tls is not None or self.stream.write_buffer_size() > 0
        self.stream.close()
        try:
            if slow_close:
                # asyncio.timeout, not wait_for: no task of its own to create per session.
                async with asyncio.timeout(5):
                    await self.stream.wait_closed()
            else:
                await self.stream.wait_closed()
        except OSError:
            pass
        except TimeoutError:
            self.stream.abort()  # the client holds the close up: drop what it did not take


def _quit_among(waiting: Command, queue: list[Command | LineTooLong]) -> bool:
    """Whether QUIT is the command waiting for the transfer, or queued behind it."""
    return waiting.verb == "QUIT" or any(
        isinstance(event, Command) and event.verb == "QUIT" for event in queue
    )


def _shown(text: str | list[str]) -> str | list[str]:
    """A reply's text without control characters: paths and names in it are the
    client's (``RETR /x\\x1b[2J``), and must not reach its terminal as they are."""
    if isinstance(text, str):
        return without_controls(text)
    return [without_controls(line) for line in text]
