"""A worker process: its share of the sessions on its own event loop.

Well-behaved sessions use ketch's own ``Client``. Each connection pins a
data mode drawn at random (EPSV, PASV, EPRT or PORT), runs a random number
of operations and quits, so every session goes through every mode and
through connect/login many times. Every operation's result is checked:
uploads against the file on disk, downloads byte by byte against what was
uploaded, listings and SIZE against what the session knows it stored.

The worker reports its counters to the main process every second and once
more, complete, when its sessions are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue
from typing import Any

from soak_common import (
    MAX_FILE_SIZE,
    POOL_SIZE,
    FileRef,
    Settings,
    Stats,
    differences_from_pool,
    make_pool,
)
from soak_common import file_ref as make_ref
from soak_misbehave import misbehaving_session

from ketch.client import Client
from ketch.client.errors import FtpError, ReplyError

_FILES_PER_SESSION = 6  # the oldest own file is deleted beyond this, to bound disk use
_CHUNK = 256 * 1024
_GRACE = 150.0  # after the deadline, how long running operations may take to finish
_MODES = (
    ("passive", "EPSV"),
    ("passive", "PASV"),
    ("active", "EPRT"),
    ("active", "PORT"),
)
# Relative weights of the operations of a well-behaved session.
_WEIGHTS = {
    "upload": 30,
    "download": 34,
    "list": 8,
    "nlst": 8,
    "size": 6,
    "navigate": 4,
    "rename": 4,
    "delete": 6,
}


def worker_main(settings: Settings, index: int, queue: Queue[Any]) -> None:
    """Entry point of a worker process."""
    try:
        stats = asyncio.run(_run_worker(settings, index, queue))
        queue.put(("done", index, stats))
    except BaseException as error:  # the main process must hear of it, whatever it is
        queue.put(("crashed", index, f"{error!r}\n{traceback.format_exc()}"))
        raise


async def _run_worker(settings: Settings, index: int, queue: Queue[Any]) -> Stats:
    stats = Stats()
    pool = make_pool(settings.seed)
    mine = [sid for sid in range(settings.sessions) if sid % settings.workers == index]
    await asyncio.sleep(max(0.0, settings.start - time.time()))
    reporter = asyncio.create_task(_report(stats, index, queue))
    normal = [
        asyncio.create_task(WellBehaved(sid, settings, pool, stats).run())
        for sid in mine
        if sid not in settings.misbehaving
    ]
    odd = [
        asyncio.create_task(misbehaving_session(sid, settings, pool, stats))
        for sid in mine
        if sid in settings.misbehaving
    ]
    await asyncio.sleep(max(0.0, settings.deadline - time.time()))
    # Misbehaviour episodes can last a minute (idle timeouts); the run does not wait for them.
    for task in odd:
        task.cancel()
    if normal:
        _, late = await asyncio.wait(normal, timeout=_GRACE)
        for task in late:
            task.cancel()
            stats.fail("shutdown", "a well-behaved session did not finish within the grace time")
        if late:
            await asyncio.wait(late)
    await asyncio.gather(*odd, return_exceptions=True)
    reporter.cancel()
    return stats


async def _report(stats: Stats, index: int, queue: Queue[Any]) -> None:
    while True:
        queue.put(("progress", index, stats.progress()))
        await asyncio.sleep(1.0)


class _ListingMismatch(Exception):
    pass


class _Sink:
    """A download's destination: compares each chunk with the expected bytes as it comes.

    The expected bytes are ``length`` bytes of the pool from ``start``; bytes
    beyond them count as corrupted, as do (once the download ends) missing ones.
    """

    def __init__(self, pool: bytes, start: int, length: int) -> None:
        self.pool = pool
        self.start = start
        self.length = length
        self.position = 0
        self.bad = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: memoryview) -> int:
        count = len(chunk)
        at = self.start + self.position
        fits = min(count, max(0, self.length - self.position))
        self.bad += differences_from_pool(chunk, self.pool, at, fits)
        self.digest.update(chunk)
        self.position += count
        return count

    @property
    def corrupted(self) -> int:
        return self.bad + max(0, self.length - self.position)


def _read_back(path: str, pool: bytes, offset: int, size: int) -> int | str:
    """The uploaded file as stored on disk: bytes differing from the pool, or why unreadable."""
    try:
        with open(path, "rb") as file:
            stored = file.read(MAX_FILE_SIZE + 1)
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    return differences_from_pool(stored, pool, offset, size)


class WellBehaved:
    """One session that follows the protocol and checks every answer it gets."""

    def __init__(self, sid: int, settings: Settings, pool: bytes, stats: Stats) -> None:
        self.sid = sid
        self.settings = settings
        self.pool = pool
        self.view = memoryview(pool)
        self.stats = stats
        self.rng = random.Random(settings.seed * 1_000_003 + sid)
        self.directory = f"/w{sid}"
        self.files: dict[str, FileRef] = {}  # name in self.directory -> content
        self.uncertain: set[str] = set()  # names an interrupted upload may have left
        self.made_directory = False
        self.counter = 0
        self.mode = ""
        self.doing = "connect"  # what the session was doing when an error came

    async def run(self) -> None:
        settings = self.settings
        ramp = min(10.0, settings.duration / 6)
        await asyncio.sleep(self.rng.uniform(0, ramp))
        while time.time() < settings.deadline:
            try:
                await self._connection()
            except Exception as error:  # counted, then a new connection
                self.stats.fail(self.doing, self._message(self.doing, error))
                await asyncio.sleep(1.0)

    async def _connection(self) -> None:
        mode, command = self.rng.choice(_MODES)
        self.mode = command
        self.doing = "connect"
        client = Client(
            self.settings.host,
            self.settings.port,
            user=self.settings.user,
            password=self.settings.password,
            mode="passive" if mode == "passive" else "active",
            passive_command="EPSV" if command == "EPSV" else "PASV",
            active_command="EPRT" if command == "EPRT" else "PORT",
            connect_timeout=30.0,
            data_connect_timeout=30.0,
            timeout=60.0,
        )
        started = time.monotonic()
        async with client as ftp:
            self.stats.timed("login", time.monotonic() - started, self.rng)
            self.stats.logins += 1
            self.stats.connected += 1
            try:
                await self._operations(ftp)
            finally:
                self.stats.connected -= 1

    async def _operations(self, ftp: Client) -> None:
        if not self.made_directory:
            self.doing = "mkdir"
            await ftp.mkdir(self.directory)
            self.made_directory = True
        kinds = list(_WEIGHTS)
        weights = list(_WEIGHTS.values())
        for _ in range(self.rng.randint(5, 30)):
            if time.time() >= self.settings.deadline:
                return
            kind = self.rng.choices(kinds, weights)[0]
            self.doing = kind
            operation: Callable[[Client], Awaitable[str | None]] = getattr(self, f"_{kind}")
            started = time.monotonic()
            try:
                label = await operation(ftp)
            except (FtpError, OSError, TimeoutError, _ListingMismatch) as error:
                self.stats.fail(kind, self._message(kind, error))
                self.doing = "quit"
                return  # the connection may be out of step: start a new one
            self.stats.timed(label or kind, time.monotonic() - started, self.rng)
            await asyncio.sleep(self.rng.uniform(0, self.settings.think))

    def _message(self, kind: str, error: BaseException) -> str:
        elapsed = time.time() - self.settings.start
        return f"t={elapsed:.0f}s session={self.sid} mode={self.mode} op={kind}: {error!r}"

    def _path(self, name: str) -> str:
        return f"{self.directory}/{name}"

    def _new_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}.bin"

    def _random_size(self) -> int:
        roll = self.rng.random()
        if roll < 0.05:
            return 0
        if roll < 0.35:
            return self.rng.randint(1, 64 * 1024)
        if roll < 0.65:
            return self.rng.randint(64 * 1024, 512 * 1024)
        return self.rng.randint(512 * 1024, MAX_FILE_SIZE)

    # -- operations: each returns the name to count it under (None: its own) -------

    async def _upload(self, ftp: Client) -> str:
        while len(self.files) >= _FILES_PER_SESSION:
            await self._delete(ftp, oldest=True)
        size = self._random_size()
        offset = self.rng.randrange(0, POOL_SIZE - size + 1)
        ref = make_ref(self.view, offset, size)
        data = self.view[offset : offset + size]
        name = self._new_name("f")
        remote = self._path(name)
        self.uncertain.add(name)
        label = "upload"
        if size > 1 and self.rng.random() < 0.15:  # STOR the start, APPE the rest
            cut = self.rng.randrange(1, size)
            await ftp.upload(_chunks(data[:cut]), remote)
            await ftp.upload(_chunks(data[cut:]), remote, append=True)
            label = "upload_append"
        else:
            await ftp.upload(_chunks(data), remote)
        self.stats.bytes_up += size
        self.stats.modes[self.mode] += 1
        on_disk = os.path.join(self.settings.home, remote.lstrip("/"))
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(None, _read_back, on_disk, self.pool, offset, size)
        if isinstance(outcome, str):
            raise OSError(outcome)
        if outcome:
            self.stats.corrupt(
                outcome,
                f"upload {remote} ({size} bytes, {self.mode}): {outcome} bytes differ on disk",
            )
        else:
            self.stats.verified_uploads += 1
        self.uncertain.discard(name)
        self.files[name] = ref
        return label

    async def _download(self, ftp: Client) -> str:
        if self.files and self.rng.random() < 0.6:
            name = self.rng.choice(list(self.files))
            remote, ref = self._path(name), self.files[name]
        else:
            remote = self.rng.choice(list(self.settings.shared))
            ref = self.settings.shared[remote]
        offset = 0
        label = "download"
        if ref.size > 1 and self.rng.random() < 0.1:  # REST then RETR
            offset = self.rng.randrange(1, ref.size)
            label = "download_rest"
        sink = _Sink(self.pool, ref.offset + offset, ref.size - offset)
        await ftp.download(remote, sink, offset=offset)  # type: ignore[arg-type]
        self.stats.bytes_down += sink.position
        self.stats.modes[self.mode] += 1
        bad = sink.corrupted
        sha_ok = offset > 0 or sink.digest.hexdigest() == ref.sha256
        if bad or not sha_ok:
            self.stats.corrupt(
                max(bad, 1),
                f"download {remote} from {offset} ({self.mode}): got {sink.position} of "
                f"{sink.length} bytes, {bad} differ, sha256 {'ok' if sha_ok else 'MISMATCH'}",
            )
        else:
            self.stats.verified_downloads += 1
        return label

    async def _list(self, ftp: Client) -> str:
        if self.rng.random() < 0.2:
            entries = await ftp.list("/shared")
            got = {entry.name: entry.size for entry in entries}
            shared = self.settings.shared.items()
            want = {posixpath.basename(path): ref.size for path, ref in shared}
            if got != want:
                raise _ListingMismatch(f"LIST /shared: {sorted(got.items())}")
            return "list"
        entries = await ftp.list(self.directory)
        self._check_names({entry.name: entry.size for entry in entries}, "LIST")
        self.stats.modes[self.mode] += 1
        return "list"

    async def _nlst(self, ftp: Client) -> str:
        names = await ftp.nlst(self.directory)
        self._check_names({posixpath.basename(name): None for name in names}, "NLST")
        self.stats.modes[self.mode] += 1
        return "nlst"

    def _check_names(self, listed: dict[str, int | None], verb: str) -> None:
        """The listing must hold exactly the session's files, with their sizes."""
        known = {name: ref.size for name, ref in self.files.items()}
        extra = set(listed) - set(known) - self.uncertain
        missing = set(known) - set(listed)
        wrong = {
            name: (listed[name], size)
            for name, size in known.items()
            if name in listed and listed[name] is not None and listed[name] != size
        }
        if extra or missing or wrong:
            raise _ListingMismatch(
                f"{verb} {self.directory}: extra {sorted(extra)}, missing {sorted(missing)}, "
                f"wrong sizes (listed, expected) {wrong}"
            )

    async def _size_check(self, ftp: Client, remote: str, ref: FileRef) -> None:
        size = await ftp.size(remote)
        if size != ref.size:
            raise _ListingMismatch(f"SIZE {remote} = {size}, expected {ref.size}")

    async def _size(self, ftp: Client) -> str:
        if self.files:
            name = self.rng.choice(list(self.files))
            await self._size_check(ftp, self._path(name), self.files[name])
        else:
            remote = self.rng.choice(list(self.settings.shared))
            await self._size_check(ftp, remote, self.settings.shared[remote])
        return "size"

    async def _navigate(self, ftp: Client) -> str:
        await ftp.cwd(self.directory)
        where = await ftp.pwd()
        if where != self.directory:
            raise _ListingMismatch(f"PWD after CWD {self.directory} says {where}")
        await ftp.cwd("/")
        return "navigate"

    async def _rename(self, ftp: Client) -> str:
        if not self.files:
            return await self._upload(ftp)
        old = self.rng.choice(list(self.files))
        new = self._new_name("r")
        await ftp.rename(self._path(old), self._path(new))
        self.files[new] = self.files.pop(old)
        return "rename"

    async def _delete(self, ftp: Client, *, oldest: bool = False) -> str:
        if self.uncertain and not oldest:
            name = self.uncertain.pop()
            with contextlib.suppress(ReplyError):  # it may not exist at all
                await ftp.delete(self._path(name))
            return "delete"
        if not self.files:
            return await self._upload(ftp)
        name = next(iter(self.files)) if oldest else self.rng.choice(list(self.files))
        await ftp.delete(self._path(name))
        del self.files[name]
        if oldest:
            self.stats.ops["delete"] += 1
        return "delete"


def _chunks(data: memoryview) -> list[memoryview]:
    return [data[start : start + _CHUNK] for start in range(0, len(data), _CHUNK)]
