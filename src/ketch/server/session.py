"""One control connection: read command lines, dispatch them from the table, reply.

The session owns what is I/O-bound: the control stream, the prepared data
offer and the running transfer task. Protocol facts (login stage, pending
RNFR/REST) live in :class:`~ketch.protocol.session_state.SessionState`.

Transfers run as a separate task so that the control connection keeps
reading: ABOR, STAT and NOOP are served while bytes flow (RFC 959 §4.1.3);
any other command waits for the transfer to end, which keeps replies in
order for clients that pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ketch.protocol.addresses import plain_ip
from ketch.protocol.commands import Command, CommandLineReader, LineTooLong, decode_argument
from ketch.protocol.extension_state import ExtensionState
from ketch.protocol.replies import format_reply
from ketch.protocol.security import TlsState, command_refusal
from ketch.protocol.session_state import URGENT_COMMANDS, SessionState
from ketch.server.auth import Account, Permission
from ketch.server.command_table import COMMANDS, Argument, CommandSpec
from ketch.server.data_channel import DataChannel, DataConnectionError, DataOffer
from ketch.server.filesystem import (
    Filesystem,
    FilesystemError,
    LocalFilesystem,
    PathEscapeError,
)
from ketch.server.jail import resolve_virtual
from ketch.server.line_timer import LineTimer
from ketch.server.rate_limit import CommandThrottle
from ketch.server.tls import secure_control_stream
from ketch.server.tls_data import TlsOffer
from ketch.server.transfers import StallWatchdog, TransferRefused

if TYPE_CHECKING:
    from ketch.server.context import ServerContext

__all__ = ["Session"]

log = logging.getLogger("ketch.server")

_READ_SIZE = 8192
#: The control stream's buffer limit, as the listener's start_server uses.
_STREAM_LIMIT = 1 << 16
TransferWork = Callable[[DataChannel], Awaitable[None]]


class Session:
    def __init__(
        self,
        context: ServerContext,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.context = context
        self.config = context.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.peer_ip = plain_ip(peer[0])
        self.local_ip = plain_ip(local[0])
        self.local_port: int = local[1]
        # Facts of the connection that PASV/EPSV/PORT consult; fixed for the session.
        peer_address = ipaddress.ip_address(self.peer_ip)
        self.peer_is_loopback = peer_address.is_loopback
        #: RFC 2428 network protocol number of the control connection: 1 IPv4, 2 IPv6.
        self.peer_family = 1 if peer_address.version == 4 else 2
        self.state = SessionState()
        #: OPTS MLST/OPTS HASH selections, RANG, HOST and CLNT (see commands/extensions.py).
        self.extensions = ExtensionState()
        self.account: Account | None = None
        self.fs: Filesystem | None = None
        self.cwd = "/"
        self.data_offer: DataOffer | None = None
        self.transfer: asyncio.Task[None] | None = None
        self.transfer_status = ""
        self.aborting = False
        self.closing = False
        self._lines = CommandLineReader(self.config.max_line_length)
        self._last_activity = time.monotonic()
        self._line_timer = LineTimer(self.config.line_timeout)
        self._throttle = CommandThrottle(
            self.config.command_rate, self.config.command_burst, self.config.command_flood_timeout
        )
        #: The account key counted in context.user_sessions while logged in.
        self.user_slot: str | None = None
        #: True once the control connection runs over TLS (AUTH TLS, or implicit FTPS).
        self.control_is_tls = writer.get_extra_info("ssl_object") is not None
        #: AUTH/PBSZ/PROT facts (RFC 4217); implicit FTPS starts secured, with PROT P.
        self.tls = TlsState.implicit() if self.control_is_tls else TlsState()
        #: Set when AUTH TLS replaced the control stream: input read before is dropped.
        self._input_replaced = False
        #: The line of the command being run, as received (SITE NATINFO shows PORT/EPRT's).
        self.command_line = ""
        #: SITE NATINFO facts: the last PASV/EPSV reply sent, the last PORT/EPRT received.
        self.last_passive_reply: str | None = None
        self.last_active_command: str | None = None

    # -- the control loop ---------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until QUIT, disconnect or idle timeout."""
        try:
            await self.reply(220, self.config.banner)
            while not self.closing:
                data = await self._read_or_idle()
                if not data:
                    break
                events = self._lines.feed(data)
                self._line_timer.received(data, events)
                for event in events:
                    if not await self._pace():
                        break
                    if isinstance(event, LineTooLong):
                        await self.reply(500, f"Command line too long (limit {event.limit} bytes).")
                    else:
                        await self._handle(event)
                    if self.closing:
                        break
                    if self._input_replaced:
                        # Lines sent in the clear after AUTH TLS must not run as if they came
                        # over TLS (plaintext command injection, as CVE-2011-0411).
                        self._input_replaced = False
                        break
        except (ConnectionError, TimeoutError):
            pass
        finally:
            await self._end()

    async def _read_or_idle(self) -> bytes:
        """Read control input; after ``idle_timeout`` without a command or transfer, say 421.

        A line already started must end within ``line_timeout`` (slowloris).
        """
        self._line_timer.start_waiting()
        while True:
            idle_for = time.monotonic() - self._last_activity
            remaining = self.config.idle_timeout - idle_for
            if self.transfer is not None:
                remaining = self.config.idle_timeout
            if remaining <= 0:
                log.info("idle timeout client=%s user=%s", self.peer_ip, self.state.user_name)
                await self.reply(
                    421, f"Idle for {self.config.idle_timeout:g} s: closing the control connection."
                )
                return b""
            line_left = self._line_timer.remaining()
            if line_left is not None:
                if line_left <= 0:
                    log.info("line timeout client=%s user=%s", self.peer_ip, self.state.user_name)
                    await self.reply(
                        421,
                        f"Command line not completed within {self.config.line_timeout:g} s: "
                        "closing the control connection.",
                    )
                    return b""
                remaining = min(remaining, line_left)
            try:
                async with asyncio.timeout(remaining):
                    data = await self.reader.read(_READ_SIZE)
            except TimeoutError:
                continue
            self._last_activity = time.monotonic()
            return data

    async def _pace(self) -> bool:
        """Wait as the command rate limit asks; False (after a 421) when the client floods."""
        delay = self._throttle.delay()
        if delay is None:
            log.warning(
                "command flood client=%s user=%s: faster than %g commands/s for %g s",
                self.peer_ip,
                self.state.user_name,
                self.config.command_rate,
                self.config.command_flood_timeout,
            )
            await self.reply(
                421,
                f"Too many commands: more than {self.config.command_rate:g} per second "
                f"for {self.config.command_flood_timeout:g} s; closing the control connection.",
            )
            self.closing = True
            return False
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    async def _handle(self, command: Command) -> None:
        if self.transfer is not None and command.verb not in URGENT_COMMANDS:
            # Keep replies in order: this command's answer follows the transfer's 226.
            await asyncio.wait([self.transfer])
        await self.dispatch(command)
        self._last_activity = time.monotonic()

    async def dispatch(self, command: Command) -> None:
        spec = COMMANDS.get(command.verb)
        if spec is None:
            verb = command.verb[:20] or "(empty line)"
            await self.reply(500, f"Unknown command {verb!r}; HELP lists the commands.")
            return
        if not self.state.may_run(spec.verb, needs_login=spec.needs_login):
            await self.reply(530, "Please log in with USER and PASS first.")
            return
        self.state.before_command(spec.verb)
        if tls_refusal := command_refusal(self.config.tls_required, self.tls, spec.verb):
            await self.reply(*tls_refusal)
            return
        if refusal := self._argument_refusal(spec, command.argument):
            await self.reply(501, refusal)
            return
        if spec.permission and not self.permits(spec.permission):
            log.info(
                "refused %s user=%s client=%s: no %s permission",
                spec.verb,
                self.state.user_name,
                self.peer_ip,
                spec.permission.name,
            )
            await self.reply(550, self.permission_refusal(spec))
            return
        self.command_line = decode_argument(command.raw)
        try:
            await spec.handler(self, command.argument)
        except PathEscapeError as error:
            log.warning(
                "refused %s user=%s client=%s: path outside the home directory (%r)",
                spec.verb,
                self.state.user_name,
                self.peer_ip,
                command.argument,
            )
            await self.reply(550, str(error))
        except FilesystemError as error:
            await self.reply(550, str(error))
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            # A bug of ours must cost one reply, not the session.
            log.exception("internal error in %s (client=%s)", spec.verb, self.peer_ip)
            await self.reply(
                451, f"Internal error while running {spec.verb}; the server log has details."
            )

    @staticmethod
    def _argument_refusal(spec: CommandSpec, argument: str) -> str | None:
        if spec.argument is Argument.REQUIRED and not argument:
            return f"{spec.verb} needs an argument: {spec.help}"
        if spec.argument is Argument.NONE and argument:
            return f"{spec.verb} takes no argument: {spec.help}"
        return None

    # -- helpers for handlers -------------------------------------------------

    async def reply(self, code: int, text: str | list[str]) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(format_reply(code, text))
        await self.writer.drain()

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """TLS on the control connection, after the 234 reply to AUTH (raises if it fails).

        Input that came in the clear after the AUTH line is dropped with the old stream.
        """
        self.reader, self.writer = await secure_control_stream(self.writer, context, _STREAM_LIMIT)
        self._lines = CommandLineReader(self.config.max_line_length)
        self._input_replaced = True
        self.control_is_tls = True

    def say_goodbye(self, code: int, text: str) -> None:
        """A last reply written without waiting (server shutdown), if the peer still listens."""
        if not self.writer.is_closing():
            self.writer.write(format_reply(code, text))

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
        self.fs = LocalFilesystem(account.home)
        self.cwd = "/"
        self.state.login_succeeded()

    def log_out(self) -> None:
        self.release_user_slot()
        self.account = None
        self.fs = None
        self.cwd = "/"
        self.replace_offer(None)

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

    async def start_transfer(
        self,
        verb: str,
        path: str,
        work: TransferWork,
        *,
        opening: str,
        done: str = "Transfer complete.",
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        """Reply 150, then run ``work`` on the data channel in a task that replies 226/4xx."""
        offer, self.data_offer = self.data_offer, None
        if offer is None:
            if cleanup:
                cleanup()
            await self.reply(
                425, f"No data connection prepared: send PASV or EPSV (or PORT/EPRT) before {verb}."
            )
            return
        if self.tls.protection == "P" and self.context.tls is not None:
            offer = TlsOffer(
                offer,
                self.context.tls.context,
                require_reuse=self.config.tls_require_session_reuse,
                timeout=self.config.data_connect_timeout,
            )
        await self.reply(150, opening)
        self.aborting = False
        self.transfer_status = f"{verb} {path}"
        self.transfer = asyncio.get_running_loop().create_task(
            self._run_transfer(offer, verb, path, work, done, cleanup)
        )
        self.transfer.add_done_callback(self._transfer_finished)

    def _transfer_finished(self, task: asyncio.Task[None]) -> None:
        """Collect a transfer task's error, which no one awaits: the control loop only waits."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        if isinstance(error, ConnectionError):
            # The control connection died while the final reply was being sent.
            log.debug("final transfer reply not delivered to %s: %s", self.peer_ip, error)
        else:
            log.error("transfer task failed (client=%s)", self.peer_ip, exc_info=error)

    async def _run_transfer(
        self,
        offer: DataOffer,
        verb: str,
        path: str,
        work: TransferWork,
        done: str,
        cleanup: Callable[[], None] | None,
    ) -> None:
        started = time.monotonic()
        channel: DataChannel | None = None
        watchdog: StallWatchdog | None = None
        outcome = "failed"
        task = asyncio.current_task()
        assert task is not None
        try:
            channel = await offer.connect()
            watchdog = StallWatchdog(channel, task, self.config.data_stall_timeout)
            await work(channel)
            await channel.finish()  # TLS close_notify
            channel.close()  # flush and close before 226, so the client sees EOF first
            outcome = "ok"
            await self.reply(226, done)
        except DataConnectionError as error:
            await self.reply(error.code, f"Cannot open data connection: {error}")
        except asyncio.CancelledError:
            if watchdog is not None and watchdog.stalled:
                outcome = "stalled"
                await self.reply(
                    426,
                    f"Transfer aborted: no data moved for {self.config.data_stall_timeout:g} s.",
                )
            elif self.aborting:
                outcome = "aborted"
                await self.reply(426, "Transfer aborted by ABOR; data connection closed.")
            else:
                raise  # the session is ending
        except TransferRefused as refusal:  # a limit (upload size, quota) stopped it
            outcome = "refused"
            await self.reply(refusal.code, refusal.text)
        except ConnectionError:
            outcome = "interrupted"
            await self.reply(426, "Data connection closed by the other side; transfer aborted.")
        except OSError as error:
            await self._reply_local_error(error)
        finally:
            if watchdog is not None:
                watchdog.stop()
            if channel is not None:
                channel.close()
            offer.close()
            if cleanup:
                cleanup()
            moved = channel.bytes_moved if channel else 0
            self._log_transfer(verb, path, offer.mode, moved, time.monotonic() - started, outcome)
            self.transfer = None
            self.transfer_status = ""
            self._last_activity = time.monotonic()

    async def _reply_local_error(self, error: OSError) -> None:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            await self.reply(
                552, "Transfer aborted: the server's disk is full; ask the admin to free space."
            )
        else:
            await self.reply(451, f"Transfer aborted: local error ({error.strerror or error}).")

    def _log_transfer(
        self, verb: str, path: str, mode: str, moved: int, seconds: float, outcome: str
    ) -> None:
        self.context.counters[f"transfer_{outcome}"] += 1
        log.info(
            "transfer %s user=%s client=%s mode=%s path=%s bytes=%d seconds=%.3f result=%s",
            verb,
            self.state.user_name,
            self.peer_ip,
            mode,
            path,
            moved,
            seconds,
            outcome,
        )

    async def abort_transfer(self) -> bool:
        """Cancel the running transfer (it replies 426); False when none runs."""
        task = self.transfer
        if task is None or task.done():
            return False
        self.aborting = True
        task.cancel()
        await asyncio.wait([task])
        return True

    # -- the end ------------------------------------------------------------

    async def _end(self) -> None:
        if self.transfer is not None:
            self.transfer.cancel()
            await asyncio.wait([self.transfer])
        self.replace_offer(None)
        self.release_user_slot()
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)
