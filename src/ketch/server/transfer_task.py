"""A transfer as a task beside its control connection: the data channel's work, then 226/4xx.

:func:`start_transfer` takes the session's prepared data offer and starts
:func:`run_transfer` as a task, which replies 150, so the control loop
keeps reading (ABOR, STAT, NOOP) while bytes flow. The task owns the data
channel: it connects it, runs the command's work on it under a stall
watchdog, and answers the final reply whatever happens.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ketch.protocol.security import transfer_refusal
from ketch.protocol.session_state import URGENT_BEFORE_FIRST_REPLY, URGENT_COMMANDS
from ketch.server.client_text import log_field
from ketch.server.data_channel import DataChannel, DataConnectionError
from ketch.server.data_offers import DataOffer
from ketch.server.tls import control_context
from ketch.server.tls_data import TlsOffer
from ketch.server.transfers import StallWatchdog, TransferRefused

if TYPE_CHECKING:
    from ketch.server.session import Session

__all__ = [
    "TransferRecord",
    "TransferWork",
    "abort_transfer",
    "cancel_after_first_step",
    "collect_transfer_error",
    "refused_without_offer",
    "run_beside_control",
    "run_transfer",
    "start_transfer",
    "stop_transfer_task",
]

log = logging.getLogger("ketch.server")

TransferWork = Callable[[DataChannel], Awaitable[None]]


class TransferRecord:
    """One data transfer's facts: STAT shows them while it runs, the log line at its end."""

    __slots__ = ("ascii", "channel", "offset", "path", "reason", "result", "size", "verb")

    def __init__(self, verb: str, path: str, *, offset: int, size: int | None, ascii: bool) -> None:
        self.verb = verb
        self.path = path
        self.offset = offset  # the REST offset it started at
        self.size = size  # the file's size, when known (RETR)
        self.ascii = ascii
        #: Set once the data connection is made: its byte counter is the progress.
        self.channel: DataChannel | None = None
        #: How it ended (see README for the values) and why, in the client's reply's
        #: words or an errno's. "failed" until a way out says otherwise.
        self.result = "failed"
        self.reason = "the transfer ended without saying why"

    def end(self, result: str, reason: str = "") -> None:
        self.result = result
        self.reason = reason

    @property
    def moved(self) -> int:
        """Bytes on the data connection so far (in TYPE A, CRLF line ends included)."""
        return self.channel.bytes_moved if self.channel else 0

    def progress(self) -> str:
        """STAT's text, e.g. "RETR /a.iso: 65536 bytes moved so far, of a 734003200-byte file"."""
        parts = [f"{self.verb} {self.path}: {self.moved} bytes moved so far"]
        if self.offset:
            parts.append(f"after restarting at byte {self.offset}")
        if self.size is not None:
            parts.append(f"of a {self.size}-byte file")
        if self.ascii:
            parts.append("counted on the wire (TYPE A converts line ends)")
        return ", ".join(parts)


async def refused_without_offer(session: Session, verb: str) -> bool:
    """Reply 425 and say True when no data connection is prepared for ``verb``.

    Listings and uploads ask first, before reading a directory they could not send or
    touching a file (a 4xx must leave things as they were).
    """
    if session.data_offer is not None:
        return False
    await session.reply(
        425, f"No data connection prepared: send PASV or EPSV (or PORT/EPRT) before {verb}."
    )
    return True


async def start_transfer(
    session: Session,
    verb: str,
    path: str,
    work: TransferWork,
    *,
    opening: str,
    done: str = "Transfer complete.",
    cleanup: Callable[[], None] | None = None,
    size: int | None = None,
) -> None:
    """Run ``work`` on the session's data offer in a task that replies 150, then 226/4xx.

    ``size`` is the size of the file sent, for STAT, when known.
    """
    if await refused_without_offer(session, verb):
        if cleanup:
            cleanup()
        return
    offer, session.data_offer = session.data_offer, None
    assert offer is not None
    config = session.config
    # dispatch refuses transfer commands first (before STOR creates a file); this is
    # the one place every data connection passes, so no command can slip past it.
    if config.tls_required == "all" and (refusal := transfer_refusal("all", session.tls)):
        session.data_offer = offer
        if cleanup:
            cleanup()
        # A policy refusal is the admin's business too: it may be a client left on PROT C.
        log.info(
            "refused %s user=%s client=%s: clear data connection (PROT C) under "
            'tls_required = "all"',
            verb,
            session.log_user,
            session.peer_ip,
        )
        await session.reply(521, refusal)
        return
    if session.tls.protection == "P" and (context := control_context(session.stream)):
        offer = TlsOffer(
            offer,
            context,
            require_reuse=config.tls_require_session_reuse,
            timeout=config.data_connect_timeout,
            who=f"user={session.log_user} client={session.peer_ip}",
        )
    record = TransferRecord(
        verb,
        path,
        offset=session.state.transfer_offset,
        size=size,
        ascii=session.state.transfer_type == "A",
    )
    # The task replies 150 itself: in active mode only once it has connected.
    run_beside_control(
        session,
        run_transfer(session, offer, record, work, opening, done, cleanup),
        f"{verb} {path}",
        URGENT_BEFORE_FIRST_REPLY,  # STAT and NOOP too once the 150 is out
    )
    session.transfer_progress = record.progress


def run_beside_control(
    session: Session,
    work: Coroutine[Any, Any, None],
    status: str,
    urgent: frozenset[str] = URGENT_COMMANDS,
) -> asyncio.Task[None]:
    """Run ``work`` as the session's running task (``session.transfer``); ABOR cancels it.

    The control loop reads on meanwhile: commands in ``urgent`` are answered at
    once, any other waits for the task to end, so replies stay in order.
    ``work`` must end with ``session.transfer_ended()``.
    """
    session.aborting = False
    session.transfer_status = status
    session.urgent_commands = urgent
    task = asyncio.get_running_loop().create_task(work)
    task.add_done_callback(functools.partial(collect_transfer_error, session.peer_ip))
    session.transfer = task
    return task


async def abort_transfer(session: Session) -> bool:
    """Cancel the running transfer (it replies 426); False when none runs (or it just ended)."""
    task = session.transfer
    if task is None or task.done():
        return False
    session.aborting = True
    return await stop_transfer_task(task)


def cancel_after_first_step(task: asyncio.Task[None]) -> None:
    """Cancel a transfer task, after its first step if it has not taken it yet.

    A task cancelled before its first step never runs its coroutine, ``finally``
    included: the transfer would say nothing, keep its passive port for good and
    leave a STOR's temporary file. That happens to a RETR and an ABOR (or a lost
    connection, or the shutdown deadline) in one loop iteration: a client
    pipelining "PASV, RETR, ABOR" would empty the passive port range. The
    task's first step was queued when it was created; a cancel queued now
    comes after it.
    """
    asyncio.get_running_loop().call_soon(task.cancel)


async def stop_transfer_task(task: asyncio.Task[None]) -> bool:
    """Cancel a transfer task (see cancel_after_first_step) and wait for its end.

    The cancel is queued before the wait, so the transfer stops even if this
    wait is cancelled. False if the task ended by itself first.
    """
    cancel_after_first_step(task)
    await asyncio.wait([task])
    return task.cancelling() > 0  # cancel() counts a request only on a task not yet done


def collect_transfer_error(peer_ip: str, task: asyncio.Task[None]) -> None:
    """Collect a transfer task's error, which no one awaits: the control loop only waits."""
    if task.cancelled() or (error := task.exception()) is None:
        return
    if isinstance(error, ConnectionError):
        # The control connection died while the final reply was being sent.
        log.debug("final transfer reply not delivered to %s: %s", peer_ip, error)
    else:
        log.error("transfer task failed (client=%s)", peer_ip, exc_info=error)


async def run_transfer(
    session: Session,
    offer: DataOffer,
    record: TransferRecord,
    work: TransferWork,
    opening: str,
    done: str,
    cleanup: Callable[[], None] | None,
) -> None:
    """Reply 150, connect ``offer``, run ``work`` on it and reply 226, or what fits.

    ``cleanup`` may run twice (it must not mind): before a 425, and at the end.

    An active offer connects before the 150 (see ActiveOffer), so a failure
    there is a 425 with no 150 before it. Every way out sets ``record``'s
    result (see README's list of them) for the log line.
    """
    started = time.monotonic()
    channel: DataChannel | None = None
    watchdog: StallWatchdog | None = None
    task = asyncio.current_task()
    assert task is not None
    config = session.config
    try:
        await offer.prepare()
        await session.reply(150, opening)
        session.urgent_commands = URGENT_COMMANDS
        channel = record.channel = await offer.connect()
        watchdog = StallWatchdog(channel, task, config.data_stall_timeout)
        await work(channel)
        await channel.finish()  # TLS close_notify
        channel.close()  # flush and close before 226, so the client sees EOF first
        record.end("ok")
        await session.reply(226, done)
    except DataConnectionError as error:
        if cleanup:  # before the reply: work never ran, and the client may look at once
            cleanup()
        await _reply_end(
            session, record, "failed", error.code, f"Cannot open data connection: {error}"
        )
    except asyncio.CancelledError:
        if watchdog is not None and watchdog.stalled:
            text = f"Transfer aborted: no data moved for {config.data_stall_timeout:g} s."
            await _reply_end(session, record, "stalled", 426, text)
        elif session.aborting:
            text = "Transfer aborted by ABOR; data connection closed."
            await _reply_end(session, record, "aborted", 426, text)
        else:
            record.end(*_why_session_ended(session))
            raise  # the session is ending
    except TransferRefused as refusal:  # a limit (upload size, quota), or the file changed
        await _reply_end(session, record, refusal.result, refusal.code, refusal.text)
    except (ConnectionError, ssl.SSLEOFError) as error:  # the latter: closed without TLS's end
        text = "Data connection closed by the other side; transfer aborted."
        reason = None if isinstance(error, ssl.SSLError) else error.strerror
        await _reply_end(session, record, "interrupted", 426, text, reason)
    except ssl.SSLError as error:  # an OSError too, but the server's disk is not to blame
        text = (
            f"TLS error on the data connection ({error.reason or error}); transfer aborted. "
            "Try again; if it keeps happening, something on the path alters the data."
        )
        await _reply_end(session, record, "interrupted", 426, text)
    except OSError as error:
        _log_local_error(session, record.verb, record.path, error)
        record.end("error", error.strerror or str(error))
        await _reply_local_error(session, error)
    except Exception as error:
        # A bug of ours must cost this transfer, not the session: without a final
        # reply the client waits until it times out, and later replies are out of step.
        log.exception("internal error in transfer %s (client=%s)", record.verb, session.peer_ip)
        record.end("error", f"internal error ({type(error).__name__}: {error})")
        await session.reply(
            451, f"Internal error while running {record.verb}; the server log has details."
        )
    finally:
        if watchdog is not None:
            watchdog.stop()
        if channel is not None:
            channel.close()
        offer.close()
        if cleanup:
            cleanup()
        _log_transfer(session, record, offer.mode, time.monotonic() - started)
        session.transfer_ended()


async def _reply_end(
    session: Session,
    record: TransferRecord,
    result: str,
    code: int,
    text: str,
    reason: str | None = None,
) -> None:
    """Reply ``code`` ``text`` to end the transfer; the log's reason is ``text`` unless
    given (an errno's text)."""
    record.end(result, reason or text)
    await session.reply(code, text)


def _why_session_ended(session: Session) -> tuple[str, str]:
    """The result and reason of a transfer cancelled because its session is ending."""
    if session.hung_up:
        return "interrupted", "the client closed the control connection"
    if session.context.stopping:
        return "cut_off", "the server is shutting down"  # its deadline passed, or told twice
    return "cut_off", "the session was closed by the server"


def _log_local_error(session: Session, verb: str, path: str, error: OSError) -> None:
    """A warning for the admin: a full disk or a failing one is theirs to fix, and the
    client's 552/451 is all anyone else hears of it."""
    code = errno.errorcode.get(error.errno, str(error.errno)) if error.errno else "none"
    log.warning(
        "transfer %s stopped by a local I/O error user=%s client=%s path=%s errno=%s reason=%s",
        verb,
        session.log_user,
        session.peer_ip,
        log_field(path),
        code,
        log_field(error.strerror or str(error)),
    )


async def _reply_local_error(session: Session, error: OSError) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        await session.reply(
            552, "Transfer aborted: the server's disk is full; ask the admin to free space."
        )
    else:
        await session.reply(451, f"Transfer aborted: local error ({error.strerror or error}).")


def _log_transfer(session: Session, record: TransferRecord, mode: str, seconds: float) -> None:
    session.context.counters[f"transfer_{record.result}"] += 1
    if not log.isEnabledFor(logging.INFO):  # every transfer passes here: skip the quoting
        return
    # The reason last, and only when something went wrong: it is the longest field.
    reason = f" reason={log_field(record.reason)}" if record.result != "ok" else ""
    # offset= always, 0 too: every line has the same fields, and a resumed transfer's
    # bytes (from offset on) cannot be taken for a whole file's. bytes= counts the data
    # connection's bytes: in TYPE A, line ends as sent (CRLF), hence type=.
    log.info(
        "transfer %s user=%s client=%s mode=%s type=%s path=%s offset=%d bytes=%d "
        "seconds=%.3f result=%s%s",
        record.verb,
        session.log_user,
        session.peer_ip,
        mode,
        "A" if record.ascii else "I",
        log_field(record.path),
        record.offset,
        record.moved,
        seconds,
        record.result,
        reason,
    )
