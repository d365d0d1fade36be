"""Big directory listings made by worker processes, in parts, on several cores at once.

Listing a directory is Python work per entry (an ``lstat``, a line): some
4 µs each, nearly all of it holding the GIL. A listing thread (see
listing_threads) keeps the event loop turning but still takes the GIL from
it, 5 ms at a time, and uses one core. Each server process therefore starts
a few listing workers (see listing_worker) the first time it meets a big
directory. They start lazily, so they run as ``run_as`` when root was
dropped: they are started after that, and from the same process. For a big
LIST or MLSD the server opens the directory through the jail and hands the
descriptor to the first worker, which reads and sorts the names and sends
back those of the other parts; the server hands each its part (and the
descriptor), every worker formats its part, and the server joins the parts
in order. A 10,000-entry LIST on two cores takes about two thirds as long
as in one thread, and the event loop is not held at all. The names of a
directory that has not changed since it was last listed are kept (see
listed_names) and sent to every worker at once: then nobody waits for a read.

Whatever goes wrong with the workers costs nothing but speed: the listing is
made in a thread as before. Workers that cannot start, die, or do not answer
for ``ANSWER_TIMEOUT`` are stopped and started again on a later big listing,
no sooner than ``RETRY_AFTER`` seconds; a listing cancelled halfway (its
session ended) stops them too, as their answers would come out of step, and
the next big listing starts them again. While the workers make one listing,
another big one goes to a thread rather than wait its turn.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import logging
import os
import pickle
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ketch.server.filesystem_api import Filesystem, OpenDirectory
from ketch.server.helper_python import helper_command
from ketch.server.jail import FilesystemError
from ketch.server.listed_names import ListedNames
from ketch.server.listing_threads import BIG_DIRECTORY, make_listing
from ketch.server.listing_worker import (
    ERROR,
    LIST,
    MLSD,
    NAMES,
    PAYLOAD,
    PROTOCOL,
    READ_DIRECTORY,
    READY,
    REPLY,
    REQUEST,
    SEND_OWN_NAMES,
    ListingKind,
    ListingOptions,
)
from ketch.server.os_errors import listing_error_text

__all__ = ["LIST", "MLSD", "ListingKind", "ListingOptions", "ListingWorkers"]

log = logging.getLogger("ketch.server")

#: Seconds a starting worker may take to say it is ready (an interpreter start: ~0.1 s).
START_TIMEOUT = 10.0
#: Seconds a worker may go without answering during a listing (10,000 entries: ~0.02 s).
ANSWER_TIMEOUT = 60.0
#: Seconds after a failure before workers are started again.
RETRY_AFTER = 60.0
#: Seconds a stopping worker gets to leave before it is killed.
STOP_TIMEOUT = 2.0
# A worker's answers can be megabytes: fewer, bigger reads.
_SOCKET_BUFFER = 1024 * 1024


def _worker_count() -> int:
    """One worker per core this process may run on, up to four; at least one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


class _WorkerFailed(Exception):
    """A worker could not be started, died, or broke the protocol: stop them all."""


class _DirectoryError(Exception):
    """A worker could not read the directory or look at its entries (an errno): a 550."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
        self.reason = listing_error_text(code)

    @classmethod
    def sent_by(cls, worker: _Worker, body: bytes | bytearray) -> _DirectoryError:
        if len(body) != _ERRNO.size:
            raise _WorkerFailed(f"listing worker {worker.process.pid} sent a malformed error")
        return cls(_ERRNO.unpack(body)[0])


_ERRNO = struct.Struct("=i")
#: Errors of the worker's own resources, not the directory's: the listing is made here instead.
_WORKER_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclass
class _Worker:
    process: asyncio.subprocess.Process
    sock: socket.socket

    async def send(self, header: bytes, fd: int, body: bytes) -> None:
        """A request: ``header`` with ``fd`` attached, then ``body`` (names can be megabytes)."""
        try:
            # Nothing is ever queued on this socket between requests, so the small
            # header always fits at once; only the body may have to wait.
            sent = self.sock.sendmsg(
                [header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            )
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await asyncio.get_running_loop().sock_sendall(self.sock, header[sent:] + body)
        except TimeoutError:
            raise _WorkerFailed(
                f"listing worker {self.process.pid} took no request for {ANSWER_TIMEOUT:.0f} s"
            ) from None
        except OSError as error:
            raise _WorkerFailed(f"sending to listing worker {self.process.pid}: {error}") from error

    async def receive(self, within: float | None = None) -> tuple[int, bytearray]:
        """The next message: its type and body (within ``ANSWER_TIMEOUT`` unless told)."""
        within = ANSWER_TIMEOUT if within is None else within
        try:
            async with asyncio.timeout(within):
                kind, length = REPLY.unpack(await self._exactly(REPLY.size))
                if kind not in (READY, NAMES, PAYLOAD, ERROR):
                    raise _WorkerFailed(f"listing worker {self.process.pid} sent type {kind}")
                return kind, await self._exactly(length)
        except TimeoutError:
            raise _WorkerFailed(
                f"listing worker {self.process.pid} did not answer within {within:.0f} s"
            ) from None

    async def _exactly(self, count: int) -> bytearray:
        loop = asyncio.get_running_loop()
        buffer = bytearray(count)
        view, got = memoryview(buffer), 0
        try:
            while got < count:
                received = await loop.sock_recv_into(self.sock, view[got:])
                if not received:
                    raise _WorkerFailed(f"listing worker {self.process.pid} has gone")
                got += received
        except OSError as error:
            raise _WorkerFailed(f"reading listing worker {self.process.pid}: {error}") from error
        return buffer


async def _start_worker() -> _Worker:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        command = helper_command("ketch.server.listing_worker", str(theirs.fileno()))
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
        except OSError as error:
            raise _WorkerFailed(f"cannot run {command[0]}: {error.strerror or error}") from error
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return _Worker(process, ours)


class ListingWorkers:
    """The listing workers of one server process, started on first need."""

    def __init__(
        self,
        count: int | None = None,
        counters: Counter[str] | None = None,
        keep_names: bool = True,
    ) -> None:
        self._count = count or _worker_count()
        self._keep_names = keep_names
        #: Where "listing_by_workers" is counted (the server's counters, for STAT and tests).
        self._counters: Counter[str] = Counter() if counters is None else counters
        self._workers: list[_Worker] = []
        self._names = ListedNames()
        self._starting: asyncio.Task[None] | None = None
        self._next_start = 0.0  # monotonic time: no start before this
        self._closed = False
        # One listing at a time goes through the workers: each uses all of them.
        self._turn = asyncio.Lock()

    @property
    def keep_names(self) -> bool:
        """Whether names of unchanged directories are reused (``listing_cache``)."""
        return self._keep_names

    @keep_names.setter
    def keep_names(self, keep: bool) -> None:
        # Turned off, the kept names go at once: their memory, and names a file system
        # that keeps no honest ctime (the reason to turn it off) could show when back on.
        self._keep_names = keep
        if not keep:
            self._names.clear()

    @property
    def running(self) -> int:
        """How many workers are ready for listings."""
        return len(self._workers)

    async def make(
        self,
        fs: Filesystem,
        path: str,
        kind: ListingKind,
        options: Callable[[str], ListingOptions],
        make_here: Callable[[], bytes],
        directory_size: int,
    ) -> tuple[bytes, bool]:
        """The payload of a LIST or MLSD of the directory ``path``, and whether workers made it.

        Small directories are listed right here by ``make_here()``; big ones
        too (in a thread, see listing_threads) while the workers are not
        running or are busy. ``options(home)`` gives the formatting options.
        """
        data = None
        if directory_size > BIG_DIRECTORY and self._ready() and not self._turn.locked():
            directory = fs.open_directory(path)
            if directory is not None:
                data = await self._listing_of(directory, path, kind, options)
        if data is None:
            return await make_listing(make_here, directory_size), False
        self._counters["listing_by_workers"] += 1
        return data, True

    async def _listing_of(
        self,
        directory: OpenDirectory,
        path: str,
        kind: ListingKind,
        options: Callable[[str], ListingOptions],
    ) -> bytes | None:
        """``_listing`` of an opened directory, which it closes; its errors as FilesystemError."""
        try:
            try:
                seen = os.fstat(directory.fd)
            except OSError:
                return None  # made in a thread, which says what is wrong
            return await self._listing(
                directory.fd, seen, kind, time.time(), options(directory.home)
            )
        except _DirectoryError as error:
            if error.code in _WORKER_SHORTAGES:
                return None
            raise FilesystemError(f"{path}: {error.reason}", error.code, path) from None
        finally:
            os.close(directory.fd)

    def _ready(self) -> bool:
        """Whether workers are running; if not, start them in the background when it is time."""
        if self._workers:
            return True
        if self._closed or self._starting is not None or time.monotonic() < self._next_start:
            return False
        self._starting = asyncio.get_running_loop().create_task(self._start())
        return False

    async def start(self) -> None:
        """Start the workers now and wait until they are ready (or have failed)."""
        if not self._workers and not self._closed:
            if self._starting is None:
                self._starting = asyncio.get_running_loop().create_task(self._start())
            await asyncio.shield(self._starting)

    async def _start(self) -> None:
        workers: list[_Worker] = []
        try:
            for _ in range(self._count):
                workers.append(await _start_worker())
            for worker in workers:
                kind, hello = await worker.receive(START_TIMEOUT)
                if kind != READY:
                    raise _WorkerFailed(f"listing worker {worker.process.pid} did not start")
                protocol, _, code = bytes(hello).partition(b"\0")
                if protocol != PROTOCOL.encode():
                    # Its messages may not mean ours: it would leave listings waiting.
                    raise _WorkerFailed(
                        f"listing worker {worker.process.pid} speaks "
                        f"{protocol.decode(errors='replace')!r}, not {PROTOCOL!r} "
                        f"({os.fsdecode(code)}): was ketch upgraded since the server started? "
                        "Restart the server"
                    )
        except (OSError, _WorkerFailed) as error:
            log.warning(
                "listing workers could not start (%s): big listings are made in a thread "
                "instead, and starting them is tried again in %.0f s",
                str(error) or type(error).__name__,
                RETRY_AFTER,
            )
            self._next_start = time.monotonic() + RETRY_AFTER
            await _stop(workers)
        except BaseException:
            await asyncio.shield(_stop(workers))
            raise
        else:
            if self._closed:
                await _stop(workers)
            else:
                self._workers = workers
        finally:
            self._starting = None

    async def _listing(
        self, fd: int, seen: os.stat_result, kind: ListingKind, now: float, options: ListingOptions
    ) -> bytes | None:
        """The joined parts, or None when the workers failed (they are stopped then).

        ``seen`` is the directory's fstat, made before its names are read.
        """
        async with self._turn:
            workers = self._workers
            if not workers:
                return None
            known = self._names.kept_parts(seen, len(workers)) if self.keep_names else None
            keep = known is None and self.keep_names and self._names.may_keep(seen)
            try:
                data, names = await _exchange(
                    workers, fd, kind, now, pickle.dumps(options), known, keep
                )
            except _DirectoryError:
                raise  # every worker asked has answered (see _exchange): still in step
            except _WorkerFailed as error:
                log.warning(
                    "listing workers stopped (%s): this listing is made in a thread, and "
                    "workers are started again in %.0f s",
                    error,
                    RETRY_AFTER,
                )
                self._next_start = time.monotonic() + RETRY_AFTER
                self._workers = []
                await _stop(workers)
                return None
            except BaseException:
                # Cancelled halfway: the workers' answers would come out of step.
                self._workers = []
                await asyncio.shield(_stop(workers))
                raise
            if names is not None and self.keep_names:  # not if turned off meanwhile
                self._names.keep(seen, names)
            if known is not None:
                self._counters["listing_names_reused"] += 1
            return data

    async def close(self) -> None:
        """Stop the workers (and any start under way); later listings use a thread.

        A listing the workers are making is given ``STOP_TIMEOUT`` to finish;
        then the workers are killed under it, and it is made in a thread.
        """
        self._closed = True
        if self._starting is not None:
            await asyncio.wait([self._starting], timeout=START_TIMEOUT)
        try:
            await asyncio.wait_for(self._turn.acquire(), STOP_TIMEOUT)
        except TimeoutError:
            for worker in self._workers:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
            await self._turn.acquire()  # the listing sees them gone, stops them, lets go
        try:
            workers, self._workers = self._workers, []
            await _stop(workers)
        finally:
            self._turn.release()


async def _exchange(
    workers: list[_Worker],
    fd: int,
    kind: ListingKind,
    now: float,
    options: bytes,
    known: list[bytes] | None,
    keep: bool,
) -> tuple[bytes, list[bytes] | None]:
    """One listing through every worker (see listing_worker for the messages).

    With ``known`` names (one run per worker) nobody reads the directory;
    else the first worker does, and with ``keep`` the names of every part
    come back too.
    """
    first, parts = workers[0], len(workers)
    if known is not None:
        for part, worker in enumerate(workers):
            header = REQUEST.pack(kind, 0, part, parts, now, len(options), len(known[part]))
            await worker.send(header, fd, options + known[part])
        names = None
    else:
        flags = READ_DIRECTORY | (SEND_OWN_NAMES if keep else 0)
        await first.send(REQUEST.pack(kind, flags, 0, parts, now, len(options), 0), fd, options)
        names = [b""] * parts
        for part, worker in enumerate(workers[1:], 1):
            names[part] = await _names_from(first)
            header = REQUEST.pack(kind, 0, part, parts, now, len(options), len(names[part]))
            await worker.send(header, fd, options + names[part])
        if keep:
            names[0] = await _names_from(first)
    # Every worker ends its part with a PAYLOAD or an ERROR (see listing_worker): the
    # error is raised once all have answered, so the next listing finds them in step.
    payloads, errors = [], []
    for worker in workers:
        message, body = await worker.receive()
        if message == ERROR:
            errors.append(_DirectoryError.sent_by(worker, body))
        elif message == PAYLOAD:
            payloads.append(body)
        else:
            raise _WorkerFailed(f"listing worker {worker.process.pid} sent {message}, not a part")
    if errors:
        raise errors[0]
    return b"".join(payloads), names if keep else None


async def _names_from(first: _Worker) -> bytes:
    """The next part's names from the reading worker (or the error it met reading)."""
    message, names = await first.receive()
    if message == ERROR:  # the directory could not be read: nothing else is on its way
        raise _DirectoryError.sent_by(first, names)
    if message != NAMES:
        raise _WorkerFailed(f"listing worker {first.process.pid} sent {message}, not names")
    return bytes(names)


async def _stop(workers: list[_Worker]) -> None:
    """Close the workers' sockets (they leave at the end of theirs) and reap them."""
    for worker in workers:
        worker.sock.close()
    for worker in workers:
        try:
            await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
