"""RETR, STOR, STOU, APPE, LIST, NLST, REST, ALLO, ABOR: commands that use the data connection."""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
import time
from typing import NamedTuple

from ketch.protocol.listing import FileFacts, format_listing, format_name_list, list_payload
from ketch.server.auth import Permission
from ketch.server.command_table import Argument, command
from ketch.server.data_channel import DataChannel
from ketch.server.filesystem import Filesystem, FilesystemError, RestartOffsetError
from ketch.server.jail import names_home
from ketch.server.listing_threads import make_listing
from ketch.server.listing_workers import LIST, ListingOptions
from ketch.server.session import Session
from ketch.server.transfer_task import abort_transfer, refused_without_offer, start_transfer
from ketch.server.transfers import TransferRefused, send_file
from ketch.server.uploads import open_unique_upload, open_upload


def mode_name(session: Session) -> str:
    return "ASCII" if session.state.transfer_type == "A" else "BINARY"


@command(
    "RETR",
    argument=Argument.FILE,
    permission=Permission.READ,
    help="RETR <path>: download a file",
)
async def retrieve(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    offset = session.state.transfer_offset
    if offset and await _refused_ascii_restart(session):
        return
    # Open first and ask the descriptor: one path resolution instead of two, and the
    # size is that of the file actually sent. Not a regular file: 550 with the reason.
    file = session.filesystem.open_read(path)
    file_size = os.fstat(file.fileno()).st_size
    if offset > file_size:
        file.close()
        await _reply_offset_beyond_end(session, path, offset, file_size)
        return
    ascii = session.state.transfer_type == "A"
    # The byte count is only true on the wire in binary mode (ftplib reads it as the size).
    size = "" if ascii else f" ({file_size} bytes)"
    account = session.account
    throttle = session.context.rates.throttle(account, "download") if account else None

    async def send(channel: DataChannel) -> None:
        sent = await send_file(channel, file, offset, ascii=ascii, throttle=throttle)
        _check_whole(path, offset + sent, file_size)

    await start_transfer(
        session,
        "RETR",
        path,
        send,
        opening=f"Opening {mode_name(session)} mode data connection for {path}{size}.",
        cleanup=file.close,
        size=file_size,
    )


def _check_whole(path: str, end: int, size: int) -> None:
    """451 rather than 226 when the file was cut while being sent: the copy is short."""
    if end < size:
        raise TransferRefused(
            451,
            f"Transfer aborted: {path} shrank while being sent (it ended at byte {end} of "
            f"{size}), so the copy received is incomplete; download it again once it has "
            "stopped changing.",
            result="changed",
        )


async def _refused_ascii_restart(session: Session) -> bool:
    """554 for REST in TYPE A, as vsftpd and pyftpdlib do: the offset would count bytes
    on the wire, where line ends differ from the file's, so a resumed copy would come
    out shifted (RFC 3659 §5 defines REST for stream mode by what was sent)."""
    if session.state.transfer_type != "A":
        return False
    await session.reply(
        554,
        "Cannot resume in ASCII mode (TYPE A): the offset would not match the file. "
        "Send TYPE I, then REST and the command again, or transfer the whole file.",
    )
    return True


async def _reply_offset_beyond_end(session: Session, path: str, offset: int, size: int) -> None:
    await session.reply(
        554,
        f"Restart offset {offset} is beyond the end of {path} ({size} bytes); "
        f"send REST {size} or less.",
    )


@command(
    "STOR",
    argument=Argument.FILE,
    permission=Permission.WRITE,
    help="STOR <path>: upload a file (replaces it; after REST, from that offset)",
)
async def store(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    offset = session.state.transfer_offset
    if offset and await _refused_ascii_restart(session):
        return
    await _receive(session, "STOR", path, offset=offset, append=False)


@command(
    "APPE",
    argument=Argument.FILE,
    permission=Permission.APPEND,
    help="APPE <path>: upload, appending to the file if it exists",
)
async def append(session: Session, argument: str) -> None:
    await _receive(session, "APPE", session.resolve(argument), offset=0, append=True)


async def _receive(session: Session, verb: str, path: str, *, offset: int, append: bool) -> None:
    # No data connection prepared: 425 before the file is opened (or created, or cut).
    if await refused_without_offer(session, verb):
        return
    if session.filesystem.is_dir(path):
        await session.reply(550, f"{path}: is a directory.")
        return
    try:
        upload = await open_upload(session, path, offset=offset, append=append)
    except RestartOffsetError as error:  # raised after the path's checks: a bad path gets 550
        await _reply_offset_beyond_end(session, path, offset, error.size)
        return
    except TransferRefused as refusal:  # over quota before a byte was sent
        await session.reply(refusal.code, refusal.text)
        return
    await start_transfer(
        session,
        verb,
        path,
        upload.run,
        opening=f"Opening {mode_name(session)} mode data connection to receive {path}.",
        cleanup=upload.close,
    )


@command(
    "STOU",
    permission=Permission.WRITE,
    help="STOU [name]: upload under a new unique name the server chooses",
)
async def store_unique(session: Session, argument: str) -> None:
    written_directory, stem = posixpath.split(argument.strip())
    directory = session.resolve(written_directory)
    if await refused_without_offer(session, "STOU"):
        return
    if await _refused_upload_directory(session, directory):
        return
    try:
        upload = await open_unique_upload(session, directory, stem or "upload")
    except TransferRefused as refusal:
        await session.reply(refusal.code, refusal.text)
        return
    # Named as the client named the directory, so that RETR finds it as it is.
    name = _reachable(_name_prefix(_lexical(written_directory)) + posixpath.basename(upload.path))
    await start_transfer(
        session,
        "STOU",
        upload.path,
        upload.run,
        opening=f"FILE: {name}",  # RFC 1123 §4.1.2.9 form, which clients parse
        done=f"Transfer complete; stored as {name}.",
        cleanup=upload.close,
    )


async def _refused_upload_directory(session: Session, directory: str) -> bool:
    """550 when ``directory`` is missing or no directory; outside the home, the jail's 550."""
    try:
        is_directory = session.filesystem.stat(directory).kind == "dir"
    except FilesystemError as error:
        if not isinstance(error.__cause__, FileNotFoundError):
            raise
        is_directory = False
    if not is_directory:
        await session.reply(
            550,
            f"{directory}: no such directory to store into; create it with MKD "
            "or name a directory that exists.",
        )
    return not is_directory


# -- listings ---------------------------------------------------------------


def split_list_argument(argument: str) -> str:
    """Drop the ``ls`` options clients send (``LIST -la``, ``LIST -a dir``) and keep the path.

    Each option ends at one space, as in vsftpd; the path after it is kept as it is,
    spaces and all, as RETR and STOR keep theirs (a name may start or end with one).
    As with ``ls``, ``--`` ends the options: ``LIST -- -notes`` lists a name with a dash.
    """
    rest = argument
    while rest.startswith("-"):
        option, _, rest = rest.partition(" ")
        if option == "--":
            break
    return rest if rest.strip(" ") else ""  # "LIST  ", "LIST -la  ": no path, not " "


_GLOB_CHARACTERS = frozenset("*?[")


class _Scope(NamedTuple):
    """What LIST/NLST/STAT show (see _listing_scope)."""

    path: str
    directory: str | None  # whose entries are listed; None: ``path`` itself, a file
    pattern: str | None  # the wildcard the entries must match, if any
    directory_size: int  # the listed directory's st_size (0 for a file): is it big?
    name_prefix: str  # what NLST puts before each name (see _name_prefix)


def _listing_scope(session: Session, argument: str) -> _Scope:
    fs = session.filesystem
    # Normalized as resolve() does it (lexically), but relative where the client was.
    written = _lexical(split_list_argument(argument))
    path = session.resolve(written)
    parent, pattern = posixpath.split(path)
    if _GLOB_CHARACTERS.intersection(pattern) and not fs.is_file(path) and not fs.is_dir(path):
        # Classic clients' `mget *.txt` sends NLST *.txt; like vsftpd, only the last
        # path component may hold wildcards.
        prefix = _name_prefix(posixpath.dirname(written))
        return _Scope(path, parent, pattern, fs.stat(parent).size, prefix)
    facts = fs.stat(path)
    if facts.kind == "dir":
        return _Scope(path, path, None, facts.size, _name_prefix(written))
    return _Scope(path, None, None, 0, _name_prefix(posixpath.dirname(written)))


def _lexical(written: str) -> str:
    """``posixpath.normpath``, except that "./~" stays so and does not become "~" (the home)."""
    normal = posixpath.normpath(written)
    return f"./{normal}" if names_home(normal) and not names_home(written) else normal


def _name_prefix(directory: str) -> str:
    """NLST's names start with the directory the client named, as in vsftpd and proftpd,
    so that ``mget`` can RETR each name as given; the working directory's stay bare."""
    if directory in ("", "."):
        return ""
    return directory if directory.endswith("/") else directory + "/"


def listing_entries(session: Session, argument: str) -> tuple[str, list[FileFacts], bool]:
    """The entries LIST/NLST/STAT show: a directory's, one file, or a wildcard's matches.

    Also whether they are a directory's (all of them, or a wildcard's matches) rather
    than one file's: STAT answers 212 for the one, 213 for the other.
    """
    scope = _listing_scope(session, argument)
    return scope.path, _entries_in_scope(session.filesystem, scope), scope.directory is not None


def _entries_in_scope(fs: Filesystem, scope: _Scope) -> list[FileFacts]:
    if scope.directory is None:
        return [fs.lstat(scope.path)]
    entries = fs.list_dir(scope.directory)
    if scope.pattern is not None:
        pattern = scope.pattern
        entries = [entry for entry in entries if fnmatch.fnmatchcase(entry.name, pattern)]
    return entries


def _list_payload(fs: Filesystem, scope: _Scope) -> bytes:
    """LIST's data: a whole directory's lines are made as its entries are read."""
    if scope.directory is not None and scope.pattern is None:
        return list_payload(fs.list_lines(scope.directory, time.time()))
    return format_listing(_entries_in_scope(fs, scope), time.time())


def _name_list_payload(fs: Filesystem, scope: _Scope) -> bytes:
    """NLST's data: ``_list_payload`` without a stat per entry, names behind their prefix."""
    prefix = scope.name_prefix
    if scope.directory is None:
        return format_name_list([_reachable(prefix + fs.lstat(scope.path).name)])
    names = fs.list_names(scope.directory)
    if scope.pattern is not None:
        pattern = scope.pattern
        names = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    if prefix:
        names = [prefix + name for name in names]
    elif "~" in names:  # a scan in C: the rare name is looked for, not each name checked
        names = [_reachable(name) for name in names]
    return format_name_list(names)


def _reachable(name: str) -> str:
    """A bare name "~" as "./~": RETR ~ would name the home (see jail.names_home)."""
    return "./~" if name == "~" else name


@command("LIST", permission=Permission.LIST, help="LIST [path]: detailed listing (ls -l format)")
async def list_directory(session: Session, argument: str) -> None:
    await _send_listing(session, "LIST", argument, names_only=False)


@command("NLST", permission=Permission.LIST, help="NLST [path]: names only")
async def name_list(session: Session, argument: str) -> None:
    await _send_listing(session, "NLST", argument, names_only=True)


async def _send_listing(session: Session, verb: str, argument: str, *, names_only: bool) -> None:
    if await refused_without_offer(session, verb):
        return
    # The whole listing is made in one pass and sent with one sendall. A big
    # directory's LIST is made by the listing workers, its NLST (no stat per
    # name) or a wildcard's matches in a thread: see listing_workers.
    scope = _listing_scope(session, argument)
    make = _name_list_payload if names_only else _list_payload
    make_here = functools.partial(make, session.filesystem, scope)
    if names_only or scope.directory is None or scope.pattern is not None:
        data = await make_listing(make_here, scope.directory_size)
    else:
        data, _ = await session.context.listing_workers.make(
            session.filesystem, scope.directory, LIST, ListingOptions, make_here,
            scope.directory_size,
        )  # fmt: skip
    await start_transfer(
        session,
        verb,
        scope.path,
        lambda channel: channel.send_all(data),
        opening=f"Here comes the listing of {scope.path}.",
    )


# -- transfer parameters and control ------------------------------------------


@command(
    "REST",
    argument=Argument.REQUIRED,
    feature="REST STREAM",
    help="REST <offset>: start the next RETR or STOR at this byte offset",
)
async def restart(session: Session, argument: str) -> None:
    # isdigit() alone accepts "²" and other digits that int() reads differently or not at all.
    # Past 20 digits no file is that big (2**64 has 20), and int() refuses past 4300.
    if not (argument.isascii() and argument.isdigit() and len(argument.lstrip("0")) <= 20):
        # A refused REST replaces an earlier one too (as vsftpd's): the client, told its
        # offset was bad, must not have the one before it cut the next RETR or STOR.
        session.state.restart_offset = 0
        await session.reply(
            501,
            "REST needs a byte offset: a whole number of 0 or more, at most 20 digits; "
            "no offset is pending now.",
        )
        return
    offset = int(argument)
    session.state.restart_offset = offset
    await session.reply(350, f"Restarting at {offset}: send RETR or STOR to start the transfer.")


# RFC 959: ALLO <decimal integer> [<SP> R <SP> <decimal integer>]
_ALLO_ARGUMENT = re.compile(r"[0-9]{1,20}( R [0-9]{1,20})?", re.IGNORECASE)


@command("ALLO", help="ALLO <bytes> [R <record size>]: not needed on this server")
async def allocate(session: Session, argument: str) -> None:
    if not _ALLO_ARGUMENT.fullmatch(argument.strip()):
        await session.reply(501, "Usage: ALLO <bytes> [R <record size>], in decimal.")
        return
    await session.reply(202, "ALLO is not needed on this server; go ahead.")


@command("ABOR", argument=Argument.NONE, help="ABOR: abort the running transfer or HASH")
async def abort(session: Session, _: str) -> None:
    running = session.transfer_status
    if await abort_transfer(session):
        await session.reply(226, f"ABOR successful: {running} stopped.")
    else:
        # RFC 959 §4.1.3, case 1: nothing running; close any prepared connection and say 226.
        session.replace_offer(None)
        await session.reply(226, "No transfer was running; nothing to abort.")
