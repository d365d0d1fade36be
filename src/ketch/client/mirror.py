"""Mirror a directory tree between an FTP server and the local disk, either way.

``mirror_download`` makes a local directory hold what a remote one holds;
``mirror_upload`` does the reverse. Both walk the remote tree with one
session, create the missing directories (parents first), then transfer the
files that differ from a work queue served by ``parallel`` sessions. Nothing
is ever deleted.

When a file counts as up to date (and is skipped) -- times are compared no
finer than the remote listing gives them (``RemoteEntry.mtime_precision``:
second for MLSD; minute, or day for old files, for LIST):

- download: the local file has the remote size and the remote time. After
  each download the local file's time is set to the remote one, so the next
  run finds them equal.
- upload, when the server offers MFMT: the remote file has the local size
  and time (each upload is followed by MFMT with the local time).
- upload without MFMT: a server stamps an upload with the time it arrived,
  so the file is skipped when the sizes are equal and the remote time is
  not older than the local one. A local change that keeps the size and comes
  within the same minute as the last upload goes unnoticed.

A file whose size or time the listing does not give is always transferred.
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
import posixpath
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ketch.client.client import Client
from ketch.client.errors import FtpError, LocalFileError, PermanentReplyError, ReplyError
from ketch.client.transfers import Progress, TransferResult
from ketch.protocol.remote_listing import Precision, RemoteEntry

__all__ = [
    "MirrorEvents",
    "MirrorResult",
    "make_remote_dirs",
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


@dataclass
class _RemoteTree:
    files: dict[str, RemoteEntry] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # every entry seen: "file", "dir", ...
    dirs: list[str] = field(default_factory=list)  # parents before children
    missing: bool = False  # the root could not be listed (and missing_ok was given)


class _Run:
    """Bookkeeping shared by the walk, the plan and the workers of one mirror run."""

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


# -- paths and times ---------------------------------------------------------------------


def _join(root: str, relative: str) -> str:
    """A remote path: ``relative`` under ``root`` ("" is the login directory)."""
    if not relative:
        return root
    if not root:
        return relative
    return root.rstrip("/") + "/" + relative


def _listable(path: str) -> str:
    """A path LIST cannot take for ``ls`` options ("-x" would be read as one)."""
    return "./" + path if path.startswith("-") else path


def _unsafe_name(name: str) -> str | None:
    """Why a name from a listing must not become a local path, or None if it may."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        return f"refusing the unsafe name {name!r} from the server's listing"
    return None


def _unsendable_name(name: str) -> str | None:
    if "\r" in name or "\n" in name:
        return "FTP cannot send a name containing CR or LF"
    return None


def _truncate(moment: datetime, precision: Precision) -> datetime:
    """``moment`` with what ``precision`` cannot express set to zero."""
    if precision == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if precision == "minute":
        return moment.replace(second=0, microsecond=0)
    return moment.replace(microsecond=0)


def _local_time(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


def download_is_current(info: os.stat_result | None, entry: RemoteEntry) -> bool:
    """Whether a local file (its lstat) already holds the remote ``entry``."""
    if info is None or not stat.S_ISREG(info.st_mode):
        return False
    if entry.size is None or entry.mtime is None or entry.mtime_precision is None:
        return False
    precision = entry.mtime_precision
    return info.st_size == entry.size and _truncate(_local_time(info), precision) == _truncate(
        entry.mtime, precision
    )


def upload_is_current(info: os.stat_result, entry: RemoteEntry | None, *, mfmt: bool) -> bool:
    """Whether the remote ``entry`` already holds the local file (see the module's rule)."""
    if entry is None or entry.kind != "file" or entry.size != info.st_size:
        return False
    if entry.mtime is None or entry.mtime_precision is None:
        return False
    local = _truncate(_local_time(info), entry.mtime_precision)
    remote = _truncate(entry.mtime, entry.mtime_precision)
    return remote == local if mfmt else remote >= local


# -- remote directories ------------------------------------------------------------------


async def make_remote_dirs(client: Client, path: str) -> list[str]:
    """``mkdir -p`` on the server: create ``path`` and any missing parents.

    Returns the directories created; existing ones are fine.
    """
    absolute = path.startswith("/")
    parts = [part for part in path.split("/") if part]
    created = []
    for count in range(1, len(parts) + 1):
        prefix = ("/" if absolute else "") + "/".join(parts[:count])
        if await _make_remote_dir(client, prefix):
            created.append(prefix)
    return created


async def _make_remote_dir(client: Client, path: str) -> bool:
    """MKD; a refusal is fine when the directory turns out to exist. True if created."""
    try:
        await client.mkdir(path)
    except PermanentReplyError:
        if await _remote_dir_exists(client, path):
            return False
        raise
    return True


async def _remote_dir_exists(client: Client, path: str) -> bool:
    parent, name = posixpath.split(path.rstrip("/"))
    if not name:
        return True  # "/" or the login directory
    try:
        entries = await client.list(_listable(parent))
    except ReplyError:
        return False
    return any(entry.name == name and entry.kind in ("dir", "link") for entry in entries)


async def _walk_remote(client: Client, root: str, run: _Run, *, missing_ok: bool) -> _RemoteTree:
    """List ``root`` recursively; a subdirectory that cannot be listed is a failure.

    Raises when ``root`` itself cannot be listed, unless ``missing_ok`` and the
    server refused it permanently (then the tree is empty).
    """
    tree = _RemoteTree()
    pending = collections.deque([""])
    while pending:
        relative = pending.popleft()
        try:
            entries = await client.list(_listable(_join(root, relative)))
        except ReplyError as error:
            if relative:
                run.fail(relative + "/", f"cannot list it: {error}")
                continue
            if missing_ok and isinstance(error, PermanentReplyError):
                log.debug("%s cannot be listed (%s); taking it to be missing", root, error)
                tree.missing = True
                return tree
            raise
        for entry in entries:
            path = _join(relative, entry.name)
            problem = _unsafe_name(entry.name)
            if problem is not None:
                run.fail(path, problem)
                continue
            tree.kinds[path] = entry.kind
            if entry.kind == "dir":
                tree.dirs.append(path)
                pending.append(path)
            elif entry.kind == "file":
                tree.files[path] = entry
            else:
                run.ignore(path, "a symbolic link" if entry.kind == "link" else "not a file")
    return tree


# -- download ----------------------------------------------------------------------------


async def mirror_download(
    connect: ClientFactory,
    remote_dir: str,
    local_dir: str | os.PathLike[str],
    *,
    parallel: int = 1,
    dry_run: bool = False,
    events: MirrorEvents | None = None,
) -> MirrorResult:
    """Make ``local_dir`` hold what ``remote_dir`` holds (see the module docstring).

    ``remote_dir`` is as Client methods take paths ("" is the login directory).
    ``dry_run`` plans without creating or transferring anything.
    Raises FtpError when the session or the remote directory cannot be had,
    LocalFileError when ``local_dir`` cannot be created.
    """
    run = _Run(events)
    local_root = Path(local_dir)
    async with connect() as first:
        tree = await _walk_remote(first, remote_dir, run, missing_ok=False)
        if not dry_run:
            _make_local_dir(local_root, parents=True)
        blocked = _create_local_dirs(tree.dirs, local_root, run, dry_run=dry_run)
        jobs = []
        for relative, entry in tree.files.items():
            if _blocked(relative, blocked, run):
                continue
            local = local_root.joinpath(*relative.split("/"))
            if download_is_current(_lstat(local), entry):
                run.result.skipped += 1
                continue
            jobs.append(_Job(relative, _join(remote_dir, relative), local, entry.size, entry.mtime))
        await _transfer_all(first, connect, jobs, _download_one, run, parallel, dry_run)
    return run.finish()


def _make_local_dir(path: Path, *, parents: bool = False) -> bool:
    """mkdir; True when created, False when it was there. OSError as LocalFileError."""
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=parents)
    except FileExistsError:
        if path.is_dir():
            return False
        raise LocalFileError(
            f"cannot create the directory {path}: a file is in the way", "move the file away"
        ) from None
    except OSError as error:
        raise LocalFileError(
            f"cannot create the directory {path}: {error.strerror}",
            "check the local path and its permissions",
        ) from None
    return True


def _create_local_dirs(dirs: list[str], root: Path, run: _Run, *, dry_run: bool) -> set[str]:
    """Create the local directories, parents first; returns those that failed."""
    blocked: set[str] = set()
    for relative in dirs:
        if _blocked(relative, blocked, run, report=False):
            blocked.add(relative)
            continue
        path = root.joinpath(*relative.split("/"))
        if dry_run:
            if not path.is_dir():
                run.directory(relative)
            continue
        try:
            if _make_local_dir(path):
                run.directory(relative)
        except LocalFileError as error:
            run.fail(relative + "/", str(error))
            blocked.add(relative)
    return blocked


def _blocked(relative: str, blocked: set[str], run: _Run, *, report: bool = True) -> bool:
    """Whether a parent of ``relative`` could not be created (then reported as failed)."""
    parent = posixpath.dirname(relative)
    while parent:
        if parent in blocked:
            if report:
                run.fail(relative, f"not transferred: the directory {parent}/ is missing")
            return True
        parent = posixpath.dirname(parent)
    return False


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None


async def _download_one(client: Client, job: _Job, progress: Progress | None) -> TransferResult:
    """Download into the local path (replacing a symbolic link there, never following it)."""
    info = _lstat(job.local)
    if info is not None and stat.S_ISLNK(info.st_mode):
        job.local.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(job.local, flags, 0o666)
    except OSError as error:
        raise LocalFileError(
            f"cannot write {job.local}: {error.strerror}", "check the local directory"
        ) from None
    with os.fdopen(descriptor, "wb") as file:
        result = await client.download(job.remote, file, progress=progress)
    if job.mtime is not None:
        os.utime(job.local, (time.time(), job.mtime.timestamp()))
    return result


# -- upload ------------------------------------------------------------------------------


@dataclass
class _LocalTree:
    files: dict[str, tuple[Path, os.stat_result]] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)  # parents before children


def _walk_local(root: Path, run: _Run) -> _LocalTree:
    """Regular files and directories under ``root``; links and devices are ignored."""
    if not root.is_dir():
        raise LocalFileError(f"{root} is not a directory", "name the local directory to upload")
    tree = _LocalTree()
    pending = collections.deque([""])
    while pending:
        relative = pending.popleft()
        directory = root.joinpath(*relative.split("/")) if relative else root
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            if not relative:
                raise LocalFileError(
                    f"cannot read the directory {root}: {error.strerror}",
                    "name an existing, readable directory",
                ) from None
            run.fail(relative + "/", f"cannot read it: {error.strerror}")
            continue
        for entry in entries:
            path = _join(relative, entry.name)
            problem = _unsendable_name(entry.name)
            if problem is not None:
                run.fail(path, problem)
            elif entry.is_symlink():
                run.ignore(path, "a symbolic link")
            elif entry.is_dir(follow_symlinks=False):
                tree.dirs.append(path)
                pending.append(path)
            elif entry.is_file(follow_symlinks=False):
                try:
                    tree.files[path] = (Path(entry.path), entry.stat(follow_symlinks=False))
                except OSError as error:
                    run.fail(path, f"cannot read it: {error.strerror}")
            else:
                run.ignore(path, "not a regular file")
    return tree


async def mirror_upload(
    connect: ClientFactory,
    local_dir: str | os.PathLike[str],
    remote_dir: str,
    *,
    parallel: int = 1,
    dry_run: bool = False,
    events: MirrorEvents | None = None,
) -> MirrorResult:
    """Make ``remote_dir`` hold what ``local_dir`` holds (see the module docstring).

    ``remote_dir`` and its missing parents are created. Raises LocalFileError
    when ``local_dir`` cannot be read, FtpError when the session cannot be had
    or ``remote_dir`` cannot be created.
    """
    run = _Run(events)
    local = _walk_local(Path(local_dir), run)
    async with connect() as first:
        tree = await _walk_remote(first, remote_dir, run, missing_ok=True)
        if remote_dir.strip("/") and not tree.kinds:  # missing, or empty: make sure it exists
            if dry_run:
                if tree.missing:
                    run.directory(".")
            elif await make_remote_dirs(first, remote_dir):
                run.directory(".")
        blocked = await _create_remote_dirs(first, local.dirs, tree, remote_dir, run, dry_run)
        mfmt = "MFMT" in first.features
        jobs = []
        for relative, (path, info) in local.files.items():
            if _blocked(relative, blocked, run):
                continue
            if upload_is_current(info, tree.files.get(relative), mfmt=mfmt):
                run.result.skipped += 1
                continue
            jobs.append(
                _Job(relative, _join(remote_dir, relative), path, info.st_size, _local_time(info))
            )
        await _transfer_all(first, connect, jobs, _upload_one, run, parallel, dry_run)
    return run.finish()


async def _create_remote_dirs(
    client: Client,
    dirs: list[str],
    tree: _RemoteTree,
    remote_root: str,
    run: _Run,
    dry_run: bool,
) -> set[str]:
    """MKD the directories the server lacks, parents first; returns those that failed."""
    blocked: set[str] = set()
    for relative in dirs:
        if tree.kinds.get(relative) == "dir":
            continue
        if _blocked(relative, blocked, run, report=False):
            blocked.add(relative)
            continue
        if dry_run:
            run.directory(relative)
            continue
        try:
            created = await _make_remote_dir(client, _join(remote_root, relative))
        except ReplyError as error:
            run.fail(relative + "/", str(error))
            blocked.add(relative)
            continue
        if created:
            run.directory(relative)
    return blocked


async def _upload_one(client: Client, job: _Job, progress: Progress | None) -> TransferResult:
    """Upload, then (when the server has MFMT) give the remote file the local time."""
    result = await client.upload(job.local, job.remote, progress=progress)
    if job.mtime is not None and "MFMT" in client.features:
        stamp = job.mtime.strftime("%Y%m%d%H%M%S")
        reply = await client.command(f"MFMT {stamp} {job.remote}")
        if reply.code != 213:
            log.info("MFMT %s refused (%s): the next run may upload it again", job.remote, reply)
    return result


# -- the work queue ----------------------------------------------------------------------

_Transfer = Callable[[Client, _Job, Progress | None], Awaitable[TransferResult]]


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
                run.fail(job.relative, str(error))
                continue
            except OSError as error:
                run.fail(job.relative, f"local file error: {error.strerror or error}")
                continue
            run.result.transferred += 1
            run.result.bytes += result.bytes
            run.events.finished(job.relative, result)


def _alive(client: Client) -> bool:
    try:
        return not client.control.closed
    except FtpError:
        return False
