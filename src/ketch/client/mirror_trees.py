"""The two trees a mirror compares: what each side holds, and when a file is current.

ketch.client.mirror runs a mirror (the plan, the work queue, the sessions); this
module is what it plans from: walking either tree, refusing names that must not
cross, creating missing directories on either side (parents first), and the rule
for a file that needs no transfer. What goes wrong is told to a ``Reporter``.

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
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import posixpath
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from ketch.client.client import Client
from ketch.client.errors import (
    LocalFileError,
    PermanentReplyError,
    ReplyError,
    UnreadableListing,
    reply_error,
)
from ketch.protocol.remote_listing import Precision, RemoteEntry, RemoteListing

__all__ = [
    "LocalTree",
    "RemoteTree",
    "Reporter",
    "create_local_dirs",
    "create_remote_dirs",
    "download_is_current",
    "join",
    "local_error_hint",
    "local_time",
    "lstat",
    "make_local_dir",
    "make_remote_dirs",
    "parent_blocked",
    "remote_path",
    "upload_is_current",
    "walk_local",
    "walk_remote",
]

log = logging.getLogger("ketch.client.mirror")

#: How deep a remote walk goes. A server may list a symbolic link that leads back
#: up as a plain directory, with no MLSD unique fact to tell: the walk would never end.
MAX_DEPTH = 64

_UNKNOWN_KIND = (
    "the server's listing does not say whether it is a file or a directory "
    "(MLSD without the type fact); copy it with ketch get if it is a file"
)


def _unreadable(line: str) -> str:
    return (
        "a line of its listing is in a format ketch cannot read, so that entry is not "
        f"copied (ketch get fetches it by name): {line!r}"
    )


class Reporter(Protocol):
    """Told what the walks and the directory creation find (mirror's run bookkeeping)."""

    def fail(self, path: str, message: str) -> None: ...  # the rest go on
    def ignore(self, path: str, reason: str) -> None: ...  # neither a file nor a directory
    def directory(self, path: str) -> None: ...  # created (dry run: to be created)


@dataclass
class RemoteTree:
    files: dict[str, RemoteEntry] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # every entry seen: "file", "dir", ...
    dirs: list[str] = field(default_factory=list)  # parents before children
    missing: bool = False  # the root could not be listed (and missing_ok was given)
    # (path, why): what the listings leave unclear, which a download cannot copy
    unclear: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LocalTree:
    files: dict[str, tuple[Path, os.stat_result]] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)  # parents before children


# -- paths and times ---------------------------------------------------------------------


def join(root: str, relative: str) -> str:
    """A remote path: ``relative`` under ``root`` ("" is the login directory)."""
    if not relative:
        return root
    if not root:
        return relative
    return root.rstrip("/") + "/" + relative


def remote_path(root: str, relative: str) -> str:
    """The path to send for ``relative`` under ``root``: ``join``, except that a path
    at the login directory starting with a name "~" goes as "./~": ketch, proftpd
    and pure-ftpd read "~" and "~/x" as the home directory."""
    if not root and (relative == "~" or relative.startswith("~/")):
        return "./" + relative
    return join(root, relative)


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


def _refused_remote_name(name: str, path: str, run: Reporter) -> bool:
    """Whether a listed name must be left out (then reported as failed)."""
    problem = _unsafe_name(name)
    if problem is None and (unsendable := _unsendable_name(name)) is not None:
        # Listed, but no command can ask for it: a line break would end the command.
        problem = f"the server lists a name it cannot be asked for: {unsendable}"
    if problem is not None:
        run.fail(path, problem)
    return problem is not None


def _truncate(moment: datetime, precision: Precision) -> datetime:
    """``moment`` with what ``precision`` cannot express set to zero."""
    if precision == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if precision == "minute":
        return moment.replace(second=0, microsecond=0)
    return moment.replace(microsecond=0)


def local_time(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


def download_is_current(info: os.stat_result | None, entry: RemoteEntry) -> bool:
    """Whether a local file (its lstat) already holds the remote ``entry``."""
    if info is None or not stat.S_ISREG(info.st_mode):
        return False
    if entry.size is None or entry.mtime is None or entry.mtime_precision is None:
        return False
    precision = entry.mtime_precision
    return info.st_size == entry.size and _truncate(local_time(info), precision) == _truncate(
        entry.mtime, precision
    )


def upload_is_current(info: os.stat_result, entry: RemoteEntry | None, *, mfmt: bool) -> bool:
    """Whether the remote ``entry`` already holds the local file (see the module's rule)."""
    if entry is None or entry.kind != "file" or entry.size != info.st_size:
        return False
    if entry.mtime is None or entry.mtime_precision is None:
        return False
    local = _truncate(local_time(info), entry.mtime_precision)
    remote = _truncate(entry.mtime, entry.mtime_precision)
    return remote == local if mfmt else remote >= local


def parent_blocked(relative: str, blocked: set[str], run: Reporter, *, report: bool = True) -> bool:
    """Whether a parent of ``relative`` could not be created (then reported as failed).

    The report names the outermost such parent: the one whose own failure was
    reported (those under it were skipped without a word).
    """
    failed = None
    parent = posixpath.dirname(relative)
    while parent:
        if parent in blocked:
            failed = parent
        parent = posixpath.dirname(parent)
    if failed is not None and report:
        run.fail(relative, f"not transferred: the directory {failed}/ failed")
    return failed is not None


# -- the remote side ---------------------------------------------------------------------


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


_Lister = Callable[[str], Awaitable[RemoteListing]]


async def walk_remote(client: Client, root: str, run: Reporter, *, missing_ok: bool) -> RemoteTree:
    """List ``root`` recursively; a subdirectory that cannot be listed is a failure.

    So is one that would repeat a directory above it (the same MLSD unique
    fact), or lie more than MAX_DEPTH levels deep: a link loop on the server.
    Raises when ``root`` itself cannot be listed, unless ``missing_ok`` and the
    server refused it permanently (then the tree is empty). What the listings
    leave unclear (an entry of unknown kind, a LIST line the parser cannot
    read) is in the tree's ``unclear``, for a download to report.

    Without MLSD (not offered, or refused as unknown) each directory is
    entered with CWD and listed with a bare LIST, and the session is back in
    its first directory afterwards (the transfers' paths are relative to it).
    """
    lister = _DirectoryLister(client)
    tree = await _walk(lister.list, root, run, missing_ok=missing_ok)
    await lister.go_home()
    return tree


class _DirectoryLister:
    """walk_remote's listings: MLSD while the server has it, else CWD and LIST."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.home: str | None = None  # the first directory, once a CWD is to come

    async def list(self, path: str) -> RemoteListing:
        if self.client.lists_with_mlsd:
            listing = await self.client.mlsd(path)
            if listing is not None:
                return listing
        if self.home is None:
            self.home = await self.client.pwd()
        return await _enter_and_list(self.client, posixpath.join(self.home, path))

    async def go_home(self) -> None:
        """Back to the first directory, after any CWD."""
        if self.home is not None:
            await self.client.cwd(self.home)


async def _enter_and_list(client: Client, path: str) -> RemoteListing:
    """CWD to ``path``, then LIST: a directory's entries, or the refusal to enter it.

    LIST of a path is no proof it names a listable directory: vsftpd answers
    one it may not enter with a line about that directory itself, and a
    missing path or a file with an empty listing; curl and lftp CWD first too.
    """
    reply = await client.command(f"CWD {path}")
    if reply.code not in (250, 200):
        raise reply_error(
            f"CWD {path}", reply, "check that it is a directory this account may enter"
        )
    return await client.list()


async def _walk(list_dir: _Lister, root: str, run: Reporter, *, missing_ok: bool) -> RemoteTree:
    """walk_remote's walk, listing each directory with ``list_dir``."""
    tree = RemoteTree()
    uniques: dict[str, str] = {}  # directory -> its MLSD unique fact, when given
    pending = collections.deque([""])
    while pending:
        relative = pending.popleft()
        try:
            entries = await list_dir(_listable(remote_path(root, relative)))
        except (ReplyError, UnreadableListing) as error:
            # Either way the session is in step: the next directory can be listed.
            if relative:
                run.fail(relative + "/", f"cannot list it: {error}")
                continue
            if missing_ok and isinstance(error, PermanentReplyError):
                log.debug("%s cannot be listed (%s); taking it to be missing", root, error)
                tree.missing = True
                return tree
            raise
        for line in entries.unreadable:
            tree.unclear.append((relative + "/" if relative else "./", _unreadable(line)))
        for entry in entries:
            path = join(relative, entry.name)
            if _refused_remote_name(entry.name, path + "/" * (entry.kind == "dir"), run):
                continue
            tree.kinds[path] = entry.kind
            if entry.kind == "dir":
                problem = _loop_problem(path, entry.facts.get("unique"), uniques)
                if problem is not None:
                    run.fail(path + "/", problem)
                    continue
                tree.dirs.append(path)
                pending.append(path)
            elif entry.kind == "file":
                tree.files[path] = entry
            elif entry.kind == "unknown":
                tree.unclear.append((path, _UNKNOWN_KIND))
            else:
                run.ignore(path, "a symbolic link" if entry.kind == "link" else "not a file")
    return tree


def _loop_problem(path: str, unique: str | None, uniques: dict[str, str]) -> str | None:
    """Why the remote directory ``path`` must not be walked into, or None; notes its unique."""
    if unique:
        parent = posixpath.dirname(path)
        while parent:
            if uniques.get(parent) == unique:
                return (
                    f"not mirrored: the server lists it as {parent}/ again (the same MLSD "
                    "unique fact), a link loop on the server"
                )
            parent = posixpath.dirname(parent)
        uniques[path] = unique
    if path.count("/") >= MAX_DEPTH:
        return (
            f"not mirrored: more than {MAX_DEPTH} directories deep, probably a link loop on "
            "the server (a symbolic link listed as a directory); if the tree is that deep, "
            "mirror this part on its own"
        )
    return None


async def create_remote_dirs(
    client: Client,
    dirs: list[str],
    tree: RemoteTree,
    remote_root: str,
    run: Reporter,
    dry_run: bool,
) -> set[str]:
    """MKD the directories the server lacks, parents first; returns those that failed."""
    blocked: set[str] = set()
    for relative in dirs:
        if tree.kinds.get(relative) == "dir":
            continue
        if parent_blocked(relative, blocked, run, report=False):
            blocked.add(relative)
            continue
        if dry_run:
            run.directory(relative)
            continue
        try:
            created = await _make_remote_dir(client, remote_path(remote_root, relative))
        except ReplyError as error:
            run.fail(relative + "/", str(error))
            blocked.add(relative)
            continue
        if created:
            run.directory(relative)
    return blocked


# -- the local side ----------------------------------------------------------------------


def walk_local(root: Path, run: Reporter) -> LocalTree:
    """Regular files and directories under ``root``; links and devices are ignored."""
    if not root.is_dir():
        raise LocalFileError(f"{root} is not a directory", "name the local directory to upload")
    tree = LocalTree()
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
            path = join(relative, entry.name)
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


def make_local_dir(path: Path, *, parents: bool = False) -> bool:
    """mkdir; True when created, False when it was there. OSError as LocalFileError.

    A symbolic link at ``path`` is refused, not followed: what the mirror
    writes under it would land wherever it points, outside the target. Only
    the target itself (``parents``) may be a link, one the person named.
    """
    if _is_local_dir(path, follow=parents):
        return False
    try:
        path.mkdir(parents=parents)
    except FileExistsError:  # made meanwhile: the same question again
        if _is_local_dir(path, follow=parents):
            return False
        raise LocalFileError(
            f"cannot create the directory {path}: something else appeared there",
            "run the mirror again",
        ) from None
    except OSError as error:
        raise LocalFileError(
            f"cannot create the directory {path}: {error.strerror}",
            local_error_hint(error, "check the local path and its permissions"),
        ) from None
    return True


def _is_local_dir(path: Path, *, follow: bool) -> bool:
    """True for a directory, False when nothing is there; LocalFileError for anything else.

    ``follow``: a symbolic link to a directory counts as one (else it is in the way).
    """
    try:
        info = path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return False
    except OSError as error:  # a name too long for the file system, a directory not searchable
        raise LocalFileError(
            f"cannot create the directory {path}: {error.strerror}",
            local_error_hint(error, "check the local path and its permissions"),
        ) from None
    if stat.S_ISDIR(info.st_mode):
        return True
    if stat.S_ISLNK(info.st_mode):
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:  # gone meanwhile: a link was there all the same
            target = ""
        raise LocalFileError(
            f"cannot create the directory {path}: it is a symbolic link{target}, "
            "and a mirror never writes through one",
            "replace the link with a directory, or mirror that part into where it points",
        )
    raise LocalFileError(
        f"cannot create the directory {path}: a file is in the way", "move the file away"
    )


def create_local_dirs(dirs: list[str], root: Path, run: Reporter, *, dry_run: bool) -> set[str]:
    """Create the local directories, parents first; returns those that failed.

    A dry run reports what it would create, and what would fail (a file or a
    symbolic link in the way) as failed.
    """
    blocked: set[str] = set()
    for relative in dirs:
        if parent_blocked(relative, blocked, run, report=False):
            blocked.add(relative)
            continue
        path = root.joinpath(*relative.split("/"))
        try:
            if dry_run:
                if not _is_local_dir(path, follow=False):
                    run.directory(relative)
            elif make_local_dir(path):
                run.directory(relative)
        except LocalFileError as error:
            run.fail(relative + "/", str(error))
            blocked.add(relative)
    return blocked


def local_error_hint(error: OSError, otherwise: str) -> str:
    """Advice for a local file or directory the mirror could not make, fitting the cause."""
    if error.errno == errno.ENAMETOOLONG:
        # The name came from the server: nothing local can make it fit.
        return (
            "the name is longer than the local file system allows (usually 255 bytes): "
            "rename it on the server, or fetch it under another name with ketch get"
        )
    if isinstance(error, PermissionError):
        return "check the permissions of the local directory"
    if error.errno == errno.ENOSPC:
        return "free some disk space, then run the mirror again"
    return otherwise


def lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except OSError:
        return None
