"""Mirror a directory tree between an FTP server and the local disk, either way.

``mirror_download`` makes a local directory hold what a remote one holds;
``mirror_upload`` does the reverse. Both walk the remote tree with one
session, create the missing directories (parents first), then transfer the
files that differ from a work queue served by ``parallel`` sessions. Nothing
is ever deleted.

The trees, the directory creation and the rule for when a file is up to date
(and skipped) are ketch.client.mirror_trees'; this module runs the mirror:
the plan, the work queue and its sessions.

A file that fails is reported and the rest go on; the result lists every
failure. A session whose connection breaks is replaced; when no session can
be had the remaining files count as failed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ketch.client.client import Client
from ketch.client.errors import FtpError, LocalFileError, VerifyFailed
from ketch.client.mirror_trees import (
    create_local_dirs,
    create_remote_dirs,
    download_is_current,
    local_error_hint,
    local_time,
    lstat,
    make_local_dir,
    make_remote_dirs,
    parent_blocked,
    remote_path,
    upload_is_current,
    walk_local,
    walk_remote,
)
from ketch.client.part_files import open_part_file
from ketch.client.transfers import Progress, TransferResult
from ketch.client.verify import hash_method
from ketch.protocol import format_mdtm

__all__ = [
    "MirrorEvents",
    "MirrorResult",
    "mirror_download",
    "mirror_upload",
]

log = logging.getLogger("ketch.client.mirror")

ClientFactory = Callable[[], Client]
"""Makes a new, unconnected Client; mirror enters it with ``async with``.

Give every client one ModeMemory, so that what one session learns about
passive and active mode the others use at once.
"""


@dataclass
class MirrorResult:
    """What a mirror run did. Paths are relative to the mirrored roots, "/"-separated."""

    transferred: int = 0
    bytes: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)  # "path: what went wrong", one per failure
    seconds: float = 0.0
    # created (dry run: to be created); "." is the target directory itself
    directories: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)  # dry run: the files to transfer
    ignored: list[str] = field(default_factory=list)  # "path: why": links, devices, ...


class MirrorEvents:
    """Hooks a caller overrides to show progress; each does nothing here."""

    def ignored(self, path: str, reason: str) -> None:
        """``path`` is neither a file nor a directory (a link, a device) and is left out."""

    def directory_created(self, path: str) -> None:
        """A directory was created (or, in a dry run, would be)."""

    def planned(self, files: int, total_bytes: int) -> None:
        """The transfers are about to start: how many, and how many bytes in all."""

    def started(self, path: str, size: int | None) -> Progress | None:
        """A transfer starts; may return a progress callback for it."""
        return None

    def finished(self, path: str, result: TransferResult) -> None:
        """A transfer finished."""

    def failed(self, path: str, message: str) -> None:
        """Something failed for ``path``; the mirror goes on with the rest."""


@dataclass(frozen=True)
class _Job:
    relative: str
    remote: str
    local: Path
    size: int | None
    mtime: datetime | None  # download: the remote time to give the local file


class _Run:
    """Bookkeeping shared by the walk, the plan and the workers of one mirror run.

    It is the ``mirror_trees.Reporter`` the walks and the directory creation tell.
    """

    def __init__(self, events: MirrorEvents | None) -> None:
        self.events = events or MirrorEvents()
        self.result = MirrorResult()
        self.started = time.monotonic()

    def fail(self, path: str, message: str) -> None:
        self.result.failed.append(f"{path}: {message}")
        self.events.failed(path, message)

    def ignore(self, path: str, reason: str) -> None:
        self.result.ignored.append(f"{path}: {reason}")
        self.events.ignored(path, reason)

    def directory(self, path: str) -> None:
        self.result.directories.append(path)
        self.events.directory_created(path)

    def finish(self) -> MirrorResult:
        self.result.seconds = time.monotonic() - self.started
        return self.result


# -- download ----------------------------------------------------------------------------


async def mirror_download(
    connect: ClientFactory,
    remote_dir: str,
    local_dir: str | os.PathLike[str],
    *,
    parallel: int = 1,
    dry_run: bool = False,
    events: MirrorEvents | None = None,
    verify: bool = False,
) -> MirrorResult:
    """Make ``local_dir`` hold what ``remote_dir`` holds (the skip rule: mirror_trees).

    ``remote_dir`` is as Client methods take paths ("" is the login directory).
    ``dry_run`` plans without creating or transferring anything. ``verify``
    compares the server's hash of each transferred file with the local copy's
    (a difference fails that file).
    Raises FtpError when the session or the remote directory cannot be had,
    LocalFileError when ``local_dir`` cannot be created, HashUnsupported when
    ``verify`` is asked of a server that cannot hash.
    """
    run = _Run(events)
    local_root = Path(local_dir)
    async with connect() as first:
        if verify:
            hash_method(first)  # before anything moves
        tree = await walk_remote(first, remote_dir, run, missing_ok=False)
        for path, why in tree.unclear:  # only a download: an upload sends its files anyway
            run.fail(path, why)
        if not dry_run:
            make_local_dir(local_root, parents=True)
        blocked = create_local_dirs(tree.dirs, local_root, run, dry_run=dry_run)
        jobs = []
        for relative, entry in tree.files.items():
            if parent_blocked(relative, blocked, run):
                continue
            local = local_root.joinpath(*relative.split("/"))
            if download_is_current(lstat(local), entry):
                run.result.skipped += 1
                continue
            jobs.append(
                _Job(relative, remote_path(remote_dir, relative), local, entry.size, entry.mtime)
            )
        transfer = _verified_download if verify else _download_one
        await _transfer_all(first, connect, jobs, transfer, run, parallel, dry_run)
    return run.finish()


async def _verified_download(
    client: Client, job: _Job, progress: Progress | None
) -> TransferResult:
    return await _download_one(client, job, progress, verify=True)


async def _download_one(
    client: Client, job: _Job, progress: Progress | None, *, verify: bool = False
) -> TransferResult:
    """Download into a hidden file beside the local path, then rename it over the path.

    A refused or broken download so leaves the old local file whole (and no
    half file where a whole one was), and a symbolic link at the path is
    replaced, never followed. ``verify`` compares hashes before the rename: a
    copy that fails never replaces the old file.
    """
    try:
        temp, part = open_part_file(job.local)
    except OSError as error:
        raise LocalFileError(
            f"cannot write {job.local}: {error.strerror}",
            local_error_hint(error, "check the local directory"),
        ) from None
    try:
        with part as file:
            # The listing gave the size: no SIZE command per file.
            result = await client.download(job.remote, file, progress=progress, size=job.size)
        if verify:
            try:
                await client.verify(job.remote, temp)
            except VerifyFailed as error:  # named by the file it was meant to become
                raise VerifyFailed(
                    error.what.replace(str(temp), str(job.local)),
                    error.hint,
                    remote_digest=error.remote_digest,
                    local_digest=error.local_digest,
                ) from None
        if job.mtime is not None:  # not through a link, were one put in its place meanwhile
            os.utime(temp, (time.time(), job.mtime.timestamp()), follow_symlinks=False)
        try:
            os.replace(temp, job.local)
        except OSError as error:
            raise LocalFileError(
                f"cannot write {job.local}: {error.strerror}",
                "remove the directory in the way"
                if isinstance(error, IsADirectoryError)
                else local_error_hint(error, "check the local directory"),
            ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return result


# -- upload ------------------------------------------------------------------------------


async def mirror_upload(
    connect: ClientFactory,
    local_dir: str | os.PathLike[str],
    remote_dir: str,
    *,
    parallel: int = 1,
    dry_run: bool = False,
    events: MirrorEvents | None = None,
    verify: bool = False,
) -> MirrorResult:
    """Make ``remote_dir`` hold what ``local_dir`` holds (the skip rule: mirror_trees).

    ``remote_dir`` and its missing parents are created. ``verify`` as for
    mirror_download. Raises LocalFileError when ``local_dir`` cannot be read,
    FtpError when the session cannot be had or ``remote_dir`` cannot be
    created.
    """
    run = _Run(events)
    local = walk_local(Path(local_dir), run)
    async with connect() as first:
        if verify:
            hash_method(first)  # before anything moves
        tree = await walk_remote(first, remote_dir, run, missing_ok=True)
        if remote_dir.strip("/") and not tree.kinds:  # missing, or empty: make sure it exists
            if dry_run:
                if tree.missing:
                    run.directory(".")
            elif await make_remote_dirs(first, remote_dir):
                run.directory(".")
        blocked = await create_remote_dirs(first, local.dirs, tree, remote_dir, run, dry_run)
        mfmt = "MFMT" in first.features
        jobs = []
        for relative, (path, info) in local.files.items():
            if parent_blocked(relative, blocked, run):
                continue
            if upload_is_current(info, tree.files.get(relative), mfmt=mfmt):
                run.result.skipped += 1
                continue
            jobs.append(
                _Job(
                    relative,
                    remote_path(remote_dir, relative),
                    path,
                    info.st_size,
                    local_time(info),
                )
            )
        transfer = _verified(_upload_one) if verify else _upload_one
        await _transfer_all(first, connect, jobs, transfer, run, parallel, dry_run)
    return run.finish()


async def _upload_one(client: Client, job: _Job, progress: Progress | None) -> TransferResult:
    """Upload, then (when the server has MFMT) give the remote file the local time."""
    result = await client.upload(job.local, job.remote, progress=progress)
    if job.mtime is not None and "MFMT" in client.features:
        stamp = format_mdtm(job.mtime.timestamp())  # strftime's %Y has no leading zeros
        reply = await client.command(f"MFMT {stamp} {job.remote}")
        if reply.code != 213:
            log.info("MFMT %s refused (%s): the next run may upload it again", job.remote, reply)
    return result


# -- the work queue ----------------------------------------------------------------------

_Transfer = Callable[[Client, _Job, Progress | None], Awaitable[TransferResult]]


def _verified(transfer: _Transfer) -> _Transfer:
    """``transfer``, then the server's hash compared with the local file's."""

    async def transfer_and_verify(
        client: Client, job: _Job, progress: Progress | None
    ) -> TransferResult:
        result = await transfer(client, job, progress)
        await client.verify(job.remote, job.local)
        return result

    return transfer_and_verify


async def _transfer_all(
    first: Client,
    connect: ClientFactory,
    jobs: list[_Job],
    transfer: _Transfer,
    run: _Run,
    parallel: int,
    dry_run: bool,
) -> None:
    """Transfer ``jobs`` (largest first) with up to ``parallel`` sessions, ``first`` among them."""
    jobs.sort(key=lambda job: job.size or 0, reverse=True)
    if dry_run:
        run.result.planned = sorted(job.relative for job in jobs)
        return
    run.events.planned(len(jobs), sum(job.size or 0 for job in jobs))
    queue = collections.deque(jobs)
    sessions = max(1, min(parallel, len(jobs)))
    async with asyncio.TaskGroup() as group:
        for index in range(sessions):
            group.create_task(_worker(index, first, connect, queue, transfer, run))
    for job in queue:  # left over when every session was lost
        run.fail(job.relative, "not transferred: no session to the server is left")


async def _worker(
    index: int,
    first: Client,
    connect: ClientFactory,
    queue: collections.deque[_Job],
    transfer: _Transfer,
    run: _Run,
) -> None:
    """Take jobs from ``queue`` until it is empty or this session cannot be had."""
    async with contextlib.AsyncExitStack() as stack:
        client: Client | None = first if index == 0 else None
        while queue:
            if client is None or not _alive(client):
                try:
                    client = await stack.enter_async_context(connect())
                except FtpError as error:
                    log.info("session %d: %s; going on with the other sessions", index + 1, error)
                    return
                if not queue:  # the other sessions took the rest while this one logged in
                    return
            job = queue.popleft()
            progress = run.events.started(job.relative, job.size)
            try:
                result = await transfer(client, job, progress)
            except FtpError as error:
                run.fail(job.relative, _in_a_mirror(error))
                continue
            except OSError as error:
                run.fail(job.relative, f"local file error: {error.strerror or error}")
                continue
            run.result.transferred += 1
            run.result.bytes += result.bytes
            run.events.finished(job.relative, result)


def _in_a_mirror(error: FtpError) -> str:
    """The failure's message, with advice a mirror can follow.

    A cut-off transfer advises ketch get's -c; a mirror has no -c, and a
    download's partial copy is gone already: the next run fetches the file.
    """
    if error.advises_resume:
        return f"{error.what} — run the mirror again: it transfers what failed"
    return str(error)


def _alive(client: Client) -> bool:
    try:
        return not client.control.closed
    except FtpError:
        return False
