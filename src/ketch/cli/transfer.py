"""``ketch ls|get|put|rm|mkdir|mv``: one command, one session, like curl.

URLs name paths relative to the login directory (``ftp://host/dir/file``);
an absolute path takes a second slash (``ftp://host//etc/motd``).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import click

from ketch.cli.common import (
    EXIT_INCOMPLETE,
    EXIT_USAGE,
    ClientOptions,
    CommandFailed,
    Target,
    client_options,
    display_for,
    exit_code_for,
    parse_url,
    run,
    target_for,
)
from ketch.cli.output import describe_transfer, safe_text, write_out
from ketch.client import (
    Client,
    LocalFileError,
    RemoteEntry,
    RemoteHash,
    RemoteListing,
    ReplyError,
    VerifyFailed,
)
from ketch.client.mirror_trees import make_remote_dirs
from ketch.client.verify import hash_method

__all__ = ["get", "ls", "mkdir", "mv", "put", "rm"]

_KIND_CHARACTERS = {"file": "-", "dir": "d", "link": "l"}
_STDIN_CHUNK = 256 * 1024
_VERIFY_HELP = (
    "Afterwards, compare the server's hash of the file (HASH, else XSHA256/XSHA1/XMD5/XCRC) "
    "with the local file's; exit code 10 when they differ."
)
_TIME_FORMATS = {"second": "%Y-%m-%d %H:%M:%S", "minute": "%Y-%m-%d %H:%M", "day": "%Y-%m-%d"}


# -- ls --------------------------------------------------------------------------------


@click.command()
@click.argument("url")
@click.option("--names", is_flag=True, help="Print names only, one a line.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON lines: name, type, size, mtime (and name_hex for a name that is not UTF-8).",
)
@client_options
def ls(url: str, names: bool, as_json: bool, options: ClientOptions) -> None:
    """List a remote directory: ketch ls ftp://host/dir/

    \b
    Each line: type (d directory, - file, l link, ? other or not given), size, modification
    time (UTC, as precise as the server tells it) and name. Exit code 9 when some lines of
    the server's listing were in a format ketch cannot read: each is named on stderr, and
    its entry is missing from the output.
    """
    if names and as_json:
        raise click.UsageError("--names and --json contradict each other; pick one")
    target = target_for(url, options)

    async def work() -> int:
        async with target.client() as ftp:
            entries = await _entries_at(ftp, target.path, directory=target.url.is_directory)
        show = _name_shower()
        if as_json:
            for entry in entries:
                write_out(json.dumps(_as_json(entry)))
        elif names:
            for entry in entries:
                write_out(show(entry.name))
        else:
            for line in format_entries(entries, show):
                write_out(line)
        sys.stdout.flush()
        _warn_unreadable(entries.unreadable)
        return EXIT_INCOMPLETE if entries.unreadable else 0

    run(options, work)


async def _entries_at(ftp: Client, path: str, *, directory: bool) -> RemoteListing:
    """A directory's entries, or (as ls does) the one entry of a file named without "/"."""
    if not directory and path.strip("/"):
        entry = await ftp.stat(path)
        if entry.kind != "dir":
            return RemoteListing([entry])
    return await ftp.list(path)


def _warn_unreadable(lines: tuple[str, ...]) -> None:
    """Name each listing line ls could not read: its entry is missing from the output."""
    for line in lines:
        click.echo(
            safe_text(
                "ketch: warning: a line of the listing is in a format ketch cannot read, so its "
                f"entry is not shown (ketch get still fetches it by name): {line!r}"
            ),
            err=True,
        )


def _name_shower() -> Callable[[str], str]:
    """How names are shown: control characters as "?" on a terminal (as ls does), else as-is."""
    return safe_text if sys.stdout.isatty() else str


def format_entries(entries: list[RemoteEntry], render: Callable[[str], str] = str) -> list[str]:
    """``ls -l``-like lines: kind, size right-aligned, time (as precise as known), name."""
    sizes = ["-" if entry.size is None else str(entry.size) for entry in entries]
    times = [_format_time(entry.mtime, entry.mtime_precision) for entry in entries]
    size_width = max(map(len, sizes), default=1)
    time_width = max(map(len, times), default=1)
    lines = []
    for entry, size, moment in zip(entries, sizes, times, strict=True):
        name = render(entry.name)
        if entry.kind == "link" and entry.link_target:
            name += " -> " + render(entry.link_target)
        kind = _KIND_CHARACTERS.get(entry.kind, "?")
        lines.append(f"{kind} {size:>{size_width}} {moment:<{time_width}} {name}")
    return lines


def _format_time(moment: datetime | None, precision: str | None) -> str:
    if moment is None:
        return "-"
    return _strftime(moment, _TIME_FORMATS.get(precision or "second", _TIME_FORMATS["second"]))


def _strftime(moment: datetime, form: str) -> str:
    """strftime with a four-digit year, as RFC 3339 wants: glibc's %Y gives year 1 as "1"."""
    return moment.strftime(form.replace("%Y", f"{moment.year:04d}"))


def _as_json(entry: RemoteEntry) -> dict[str, object]:
    mtime = None
    if entry.mtime is not None:
        mtime = _strftime(entry.mtime, "%Y-%m-%dT%H:%M:%SZ")
    record: dict[str, object] = {}
    _put_name(record, "name", entry.name)
    record.update(
        type=entry.kind, size=entry.size, mtime=mtime, mtime_precision=entry.mtime_precision
    )
    if entry.kind == "link":
        _put_name(record, "target", entry.link_target)
    return record


def _put_name(record: dict[str, object], key: str, text: str | None) -> None:
    """``text`` under ``key``; a name that is not UTF-8 also gets ``<key>_hex``, its bytes.

    JSON has no place for undecodable bytes: written as lone surrogates, strict
    readers (jq) turn them into U+FFFD and the name is lost.
    """
    if text is None:  # a link whose target the listing did not give
        record[key] = None
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        record[key] = raw.decode("utf-8", "replace")
        record[f"{key}_hex"] = raw.hex()
    else:
        record[key] = text


# -- get -------------------------------------------------------------------------------


@click.command()
@click.argument("url")
@click.argument("dest", required=False)
@click.option("-c", "--continue", "resume", is_flag=True, help="Resume a partial local file.")
@click.option("--verify", is_flag=True, help=_VERIFY_HELP)
@client_options
def get(url: str, dest: str | None, resume: bool, verify: bool, options: ClientOptions) -> None:
    """Download a file: ketch get ftp://host/dir/file [DEST]

    DEST defaults to the file's name in the current directory; an existing
    directory receives the file under its own name; "-" writes to stdout.
    """
    target = target_for(url, options)
    name = posixpath.basename(target.path.rstrip("/"))
    if target.url.is_directory or not name:
        raise CommandFailed(
            f"{target.url.display()} names a directory: give a file's URL "
            "(ketch ls lists it, ketch mirror copies it)",
            EXIT_USAGE,
        )
    to_stdout = dest == "-"
    if to_stdout and resume:
        raise CommandFailed("-c cannot resume a download to stdout; name a file", EXIT_USAGE)
    if to_stdout and verify:
        raise CommandFailed(
            "--verify hashes the local file afterwards; name a file, not -", EXIT_USAGE
        )
    local = None if to_stdout else _download_destination(dest, name)
    if local is not None:
        _check_writable(local)
    # A file shown on the terminal and a bar redrawn on it would garble each other.
    display = display_for(options, bars=not (to_stdout and sys.stdout.isatty()))

    async def work() -> None:
        async with target.client() as ftp:
            if verify:
                hash_method(ftp)  # a server that cannot hash fails before the transfer
            with display, display.bar(f"get {name}") as progress:
                if local is None:
                    result = await ftp.download(target.path, sys.stdout.buffer, progress=progress)
                    sys.stdout.flush()
                else:  # opened once the server agrees to send: a refusal leaves it alone
                    result = await ftp.download(
                        target.path, local, resume=resume, progress=progress
                    )
            display.line(describe_transfer("get", name, result, verbose=options.verbose))
            if verify and local is not None:
                with _resumed_copy_advice("download", resume):
                    display.line(_verified(name, await ftp.verify(target.path, local)))

    run(options, work)


def _download_destination(dest: str | None, name: str) -> Path:
    if dest is None:
        return Path(name)
    path = Path(dest)
    if path.is_dir():
        return path / name
    if dest.endswith("/"):  # as cp: a directory, never a file called so
        raise LocalFileError(
            f"cannot write {dest}: not a directory", "create it first or drop the '/'"
        )
    return path


def _check_writable(path: Path) -> None:
    """Fail before connecting when the download could not be written anyway."""
    parent = path.parent
    if path.is_dir():
        raise LocalFileError(f"cannot write {path}: it is a directory", "name a file")
    if not parent.is_dir():
        raise LocalFileError(
            f"cannot write {path}: {parent} is not a directory",
            "create the directory first, or name another destination",
        )
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(parent, os.W_OK):
        raise LocalFileError(
            f"cannot write {path}: permission denied", "check the local file's permissions"
        )


# -- put -------------------------------------------------------------------------------


def _check_readable(path: Path, *, verify: bool) -> None:
    """Refuse what put cannot send: a missing file, a directory; a pipe (``<(cmd)``, a
    FIFO) or a device streams like stdin, so only --verify, which reads it twice, is out."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise LocalFileError(
            f"cannot read {path}: no such file", "name an existing local file"
        ) from None
    except OSError as error:
        raise LocalFileError(
            f"cannot read {path}: {error.strerror}", "check the path and its permissions"
        ) from None
    if stat.S_ISDIR(mode):
        raise LocalFileError(
            f"cannot read {path}: it is a directory",
            "name a file (ketch mirror --reverse uploads a tree)",
        )
    if verify and not stat.S_ISREG(mode):
        raise CommandFailed(
            f"--verify hashes the local file afterwards, and {path} is not a regular file "
            "(a pipe cannot be read twice); upload without --verify",
            EXIT_USAGE,
        )


@click.command()
@click.argument("file")
@click.argument("url")
@click.option(
    "-c", "--continue", "resume", is_flag=True, help="Resume a partial upload (SIZE, then APPE)."
)
@click.option("--verify", is_flag=True, help=_VERIFY_HELP)
@client_options
def put(file: str, url: str, resume: bool, verify: bool, options: ClientOptions) -> None:
    """Upload a file: ketch put FILE ftp://host/dir/[name]

    A URL ending in "/" receives the file under its own name; FILE "-" reads
    stdin.
    """
    target = target_for(url, options)
    from_stdin = file == "-"
    remote = target.path
    if target.url.is_directory:
        if from_stdin:
            raise CommandFailed("uploading stdin needs a file name at the end of the URL", 2)
        remote = posixpath.join(remote, Path(file).name) if remote else Path(file).name
    if from_stdin and resume:
        raise CommandFailed("-c cannot resume an upload from stdin; name a file", EXIT_USAGE)
    if from_stdin and verify:
        raise CommandFailed(
            "--verify hashes the local file afterwards; name a file, not -", EXIT_USAGE
        )
    if not from_stdin:
        _check_readable(Path(file), verify=verify)
    display = display_for(options)
    shown = posixpath.basename(remote)

    async def work() -> None:
        async with target.client() as ftp:
            if verify:
                hash_method(ftp)  # a server that cannot hash fails before the transfer
            with display, display.bar(f"put {shown}") as progress:
                if from_stdin:  # chunks, not the file: a pipe's size is unknown, not 0
                    chunks = iter(lambda: sys.stdin.buffer.read(_STDIN_CHUNK), b"")
                    result = await ftp.upload(chunks, remote, progress=progress)
                else:
                    result = await ftp.upload(file, remote, resume=resume, progress=progress)
            display.line(describe_transfer("put", remote, result, verbose=options.verbose))
            if verify:
                with _resumed_copy_advice("upload", resume):
                    display.line(_verified(remote, await ftp.verify(remote, file)))

    run(options, work)


@contextlib.contextmanager
def _resumed_copy_advice(verb: str, resume: bool) -> Iterator[None]:
    """After a resume (-c), a mismatch is the kept part's: "transfer it again" with -c
    would keep it again, find the copy complete and fail alike."""
    try:
        yield
    except VerifyFailed as error:
        if resume:
            error.hint = (
                f"the part kept by -c is not of this file: {verb} it again without -c, "
                "which transfers the whole file"
            )
        raise


def _verified(name: str, checked: RemoteHash) -> str:
    return f"verified {name}: {checked.algorithm} {checked.digest} on both sides"


# -- rm, mkdir, mv ---------------------------------------------------------------------


@click.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@client_options
def rm(urls: tuple[str, ...], options: ClientOptions) -> None:
    """Delete remote files: ketch rm ftp://host/a ftp://host/b

    A URL ending in "/" names an empty directory, which is removed (RMD).
    A file the server refuses to delete is reported and the rest go on.
    """
    targets = [target_for(url, options) for url in urls]
    for target in targets:
        if not target.path.strip("/"):
            raise CommandFailed(f"{target.url.display()}: name a file to delete", EXIT_USAGE)
    display = display_for(options)

    async def work() -> int:
        code = 0
        ftp: Client | None = None
        current: Target | None = None
        try:
            for target in targets:
                if ftp is None or current is None or not current.same_session(target):
                    if ftp is not None:
                        await ftp.quit()
                    ftp, current = await target.client().__aenter__(), target
                path = target.path
                try:
                    if target.url.is_directory:
                        await ftp.rmdir(path.rstrip("/"))
                    else:
                        await ftp.delete(path)
                except ReplyError as error:
                    display.error_line(f"ketch: {error}")
                    code = code or exit_code_for(error)
                    continue
                display.line(f"removed {path}")
        finally:
            if ftp is not None:
                await ftp.quit()
        return code

    run(options, work)


@click.command()
@click.argument("url")
@click.option(
    "-p", "--parents", is_flag=True, help="Create missing parents; no error if it exists."
)
@client_options
def mkdir(url: str, parents: bool, options: ClientOptions) -> None:
    """Create a remote directory: ketch mkdir [-p] ftp://host/dir/sub"""
    target = target_for(url, options)
    path = target.path.rstrip("/")
    if not path:
        raise CommandFailed(f"{target.url.display()}: name a directory to create", EXIT_USAGE)
    display = display_for(options)

    async def work() -> None:
        async with target.client() as ftp:
            if parents:
                created = await make_remote_dirs(ftp, path)
            else:
                created = [await ftp.mkdir(path)]
        for name in created:
            display.line(f"created {name}")

    run(options, work)


@click.command()
@click.argument("url")
@click.argument("new_path", metavar="NEWPATH")
@client_options
def mv(url: str, new_path: str, options: ClientOptions) -> None:
    """Rename or move a remote file: ketch mv ftp://host/old NEWPATH

    NEWPATH is a path on the same server, relative to the login directory
    unless it starts with "/" (an ftp:// URL of the same server works too);
    one ending in "/" keeps the old name inside that directory.
    """
    target = target_for(url, options)
    source = target.path.rstrip("/")
    if not source:
        raise CommandFailed(f"{target.url.display()}: name a file to move", EXIT_USAGE)
    destination = _same_server_path(target, new_path)
    if not destination or destination.endswith("/"):
        destination += posixpath.basename(source)
    display = display_for(options)

    async def work() -> None:
        async with target.client() as ftp:
            await ftp.rename(source, destination)
        display.line(f"renamed {source} to {destination}")

    run(options, work)


def _same_server_path(target: Target, new_path: str) -> str:
    if "://" not in new_path:
        return new_path
    other = parse_url(new_path)
    if (other.host.lower(), other.port) != (target.url.host.lower(), target.url.port):
        raise CommandFailed(
            f"{other.display()} is on another server: FTP renames only within one", EXIT_USAGE
        )
    return other.path
