"""HASH and RANG (draft-bryan-ftpext-hash-02, draft-bryan-ftp-range) and XCRC, XMD5, XSHA1, XSHA256.

Hashing a big file takes seconds of CPU and disk, so the file is read in a
worker thread, in chunks: other sessions keep being served meanwhile. The
threads are hashing's own, and few: on the default executor a handful of
clients hashing huge files would hold up what else runs there (password
checks at login). The file is opened through the session's filesystem, so
the jail, the refusal of FIFOs and devices and the account's ``read``
permission all apply as for RETR. Like a transfer, a hash runs beside the
control loop, so ABOR can stop it (426, then 226); other commands wait for
its reply.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from ketch.protocol.hashes import (
    RangeRefused,
    XCommandArgument,
    hash_feature,
    hash_reply,
    new_digest,
    parse_rang,
    resolve_range,
    split_x_argument,
    x_range,
)
from ketch.protocol.session_state import URGENT_BEFORE_FIRST_REPLY
from ketch.server.auth import Permission
from ketch.server.command_table import Argument, command
from ketch.server.session import Session
from ketch.server.transfer_task import run_beside_control

log = logging.getLogger("ketch.server")

_CHUNK = 1024 * 1024
#: Files hashed at once, per process; more requests wait their turn.
_HASH_THREADS = 2
#: Requests waiting for a hashing thread beyond which HASH answers "busy".
_MAX_WAITING = 16


class _Hashing:
    """The hashing threads of this process, created on first use."""

    executor: ThreadPoolExecutor | None = None
    in_flight = 0


def digest_file(
    file: BinaryIO,
    algorithm: str,
    offset: int,
    length: int,
    cancelled: threading.Event | None = None,
) -> tuple[str, int]:
    """Hex digest of ``length`` bytes from ``offset``, and how many bytes there were.

    Fewer bytes than asked means the file shrank meanwhile; the caller says so.
    ``cancelled`` stops the work between chunks (ABOR, or the session went away).
    """
    digest = new_digest(algorithm)
    file.seek(offset)
    remaining = length
    while remaining > 0 and not (cancelled is not None and cancelled.is_set()):
        chunk = file.read(min(_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest(), length - remaining


def _digest_and_close(
    file: BinaryIO, algorithm: str, offset: int, length: int, cancelled: threading.Event
) -> tuple[str, int]:
    # The thread closes the file: the coroutine may be gone (cancelled) while it reads.
    with file:
        return digest_file(file, algorithm, offset, length, cancelled)


#: The final reply of a finished digest: (code, text) from the hex digest and the bytes hashed.
ReplyOf = Callable[[str, int], tuple[int, str]]


async def _start_digest(
    session: Session,
    command_line: str,
    path: str,
    algorithm: str,
    offset: int,
    length: int,
    reply_of: ReplyOf,
) -> None:
    """Hash ``length`` bytes from ``offset`` beside the control loop, which ABOR can stop.

    The file is read in a hashing thread; the session's running task waits
    for it and replies (see run_beside_control), so ABOR is heard meanwhile.
    Too many requests waiting already get 450 instead.
    """
    if _Hashing.in_flight >= _HASH_THREADS + _MAX_WAITING:
        await session.reply(
            450, "The server is busy hashing files for other clients; try again in a minute."
        )
        return
    file = session.filesystem.open_read(path)  # FilesystemError: 550 with the reason
    if _Hashing.executor is None:
        _Hashing.executor = ThreadPoolExecutor(_HASH_THREADS, thread_name_prefix="ketch-hash")
    cancelled = threading.Event()
    # Once the job runs, the thread owns the file and closes it; if the job is
    # cancelled while still queued, _hashing_done closes it.
    job = _Hashing.executor.submit(_digest_and_close, file, algorithm, offset, length, cancelled)
    _Hashing.in_flight += 1
    task = run_beside_control(
        session,
        _reply_when_hashed(session, command_line, asyncio.wrap_future(job), reply_of),
        f"{command_line} ({algorithm})",
        URGENT_BEFORE_FIRST_REPLY,  # HASH has one reply
    )
    task.add_done_callback(functools.partial(_hashing_done, cancelled, job, file))


def _hashing_done(
    cancelled: threading.Event, job: Future[tuple[str, int]], file: BinaryIO, _: object
) -> None:
    # Runs however the task ended, even cancelled before its first step.
    cancelled.set()  # no-op when done; stops the thread between chunks otherwise
    if job.cancelled():  # never ran: nobody else will close the file
        file.close()
    _Hashing.in_flight -= 1


async def _reply_when_hashed(
    session: Session,
    command_line: str,
    digest: asyncio.Future[tuple[str, int]],
    reply_of: ReplyOf,
) -> None:
    try:
        try:
            hexdigest, hashed = await digest
        except asyncio.CancelledError:
            if not session.aborting:
                raise  # the session is ending
            await session.reply(426, f"{command_line}: aborted by ABOR; no digest.")
            return
        except OSError as error:
            await session.reply(
                451, f"{command_line}: reading the file failed ({error.strerror or error})."
            )
            return
        except Exception:
            # A bug of ours costs this reply, as in dispatch: the client must not wait for ever.
            log.exception("internal error in %s (client=%s)", command_line, session.peer_ip)
            await session.reply(
                451, f"Internal error in {command_line}; the server log has details."
            )
            return
        await session.reply(*reply_of(hexdigest, hashed))
    finally:
        session.transfer_ended()


async def _regular_size(session: Session, path: str) -> int | None:
    """The size of a regular file, or None after a 550 saying what ``path`` is instead."""
    facts = session.filesystem.stat(path)  # raises for a missing file: 550 with the reason
    if facts.kind != "file":
        what = "a directory" if facts.kind == "dir" else "not a regular file"
        await session.reply(550, f"{path}: {what}; only regular files can be hashed.")
        return None
    return facts.size


@command(
    "HASH",
    argument=Argument.FILE,
    permission=Permission.READ,
    feature=lambda session: hash_feature(session.extensions.hash_algorithm),
    help="HASH <path>: hash of a file (OPTS HASH picks the algorithm, RANG a byte range)",
)
async def hash_command(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    size = await _regular_size(session, path)
    if size is None:
        return
    algorithm = session.extensions.hash_algorithm
    try:
        offset, length = resolve_range(session.extensions.hash_range, size)
    except RangeRefused as refusal:
        await session.reply(554, str(refusal))
        return

    def reply_of(hexdigest: str, hashed: int) -> tuple[int, str]:
        # The reply names the path as the client gave it (draft-bryan-ftpext-hash-02 §3).
        return 213, hash_reply(algorithm, offset, hashed, hexdigest, argument)

    await _start_digest(session, f"HASH {argument}", path, algorithm, offset, length, reply_of)


@command(
    "RANG",
    argument=Argument.REQUIRED,
    help="RANG <start> <end>: byte range for HASH, end included (RANG 1 0 resets)",
)
async def byte_range(session: Session, argument: str) -> None:
    # No "RANG STREAM" in FEAT: the range applies to HASH only, RETR and STOR ignore it.
    try:
        requested = parse_rang(argument)
    except RangeRefused as refusal:
        session.extensions.hash_range = None
        await session.reply(501, str(refusal))
        return
    session.extensions.hash_range = requested
    if requested is None:
        await session.reply(350, "Range reset: HASH covers whole files again.")
    else:
        await session.reply(
            350,
            f"Restarting at {requested.start}. End byte range at {requested.end}; "
            "HASH uses this range until RANG 1 0 (RETR and STOR ignore it).",
        )


async def _x_hash(session: Session, verb: str, argument: str, algorithm: str) -> None:
    """XCRC & co.: ``<path> [<start> <end>]``, end not included; ``250 <hex>``."""
    readings = split_x_argument(argument)
    # The whole argument is tried as a path first: names may hold spaces and digits.
    chosen: XCommandArgument = next(
        (r for r in readings if session.filesystem.is_file(session.resolve(r.path))), readings[0]
    )
    if chosen.refusal is not None:  # a file, and a range it could not mean
        await session.reply(501, chosen.refusal)
        return
    path = session.resolve(chosen.path)
    size = await _regular_size(session, path)
    if size is None:
        return
    try:
        offset, length = x_range(chosen, size)
    except RangeRefused as refusal:
        await session.reply(554, str(refusal))
        return
    await _start_digest(session, f"{verb} {argument}", path, algorithm, offset, length, _x_reply)


def _x_reply(hexdigest: str, _: int) -> tuple[int, str]:
    return 250, hexdigest


_X_HELP = "<path> [<start> <end>]: {} of a file, or of bytes start to end (end not included)"


def _register_x_command(verbs: tuple[str, ...], algorithm: str) -> None:
    """One X command (with its aliases) for one fixed algorithm."""

    async def x_hash(session: Session, argument: str) -> None:
        await _x_hash(session, verbs[0], argument, algorithm)

    command(
        *verbs,
        argument=Argument.REQUIRED,
        permission=Permission.READ,
        feature=verbs[0],
        help=f"{verbs[0]} " + _X_HELP.format(algorithm),
    )(x_hash)


# The X commands of ProFTPD's mod_digest and Serv-U: one verb per algorithm.
for _verbs, _algorithm in (
    (("XCRC",), "CRC32"),
    (("XMD5",), "MD5"),
    (("XSHA1", "XSHA"), "SHA-1"),
    (("XSHA256",), "SHA-256"),
):
    _register_x_command(_verbs, _algorithm)
