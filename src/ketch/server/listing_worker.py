"""A listing worker: a process that reads and formats parts of big directory listings.

Run as ``main([FD])`` in a fresh interpreter (see helper_python) by
:class:`~ketch.server.listing_workers.ListingWorkers`, with ``FD`` its end of
a Unix socket pair. A 10,000-entry LIST costs some 40 ms of Python, most of
it holding the GIL: in a thread it would still stall every other session of
the server, and on one core it cannot go faster. Workers are processes, so
a big listing leaves the event loop alone, and its parts are made on as many
cores as there are workers at once.

The wire format is private to this module and ``listing_workers``. A worker
opens with READY and its ``PROTOCOL``; the server refuses one that speaks
another (say, of a ketch upgraded in place since the server started). A
request is a fixed header (carrying the directory's descriptor as
SCM_RIGHTS) followed by its options, pickled: they come from the server that
started this process, never from a client. A request with READ_DIRECTORY
(part 0's) has its worker read the directory and answer with the names of
each other part (NAMES), which the server sends on in those parts' requests,
and with SEND_OWN_NAMES also with its own part's names, for the server to
keep (see listed_names). Any other request carries its part's names. Every
part ends in a PAYLOAD (its bytes, ready for the data connection), or in an
ERROR (an errno) when the directory cannot be read, or an entry of the part
cannot be looked at (the directory is not searchable).
Nothing in a request is resolved as a path: every ``lstat`` and
``readlink`` is relative to the received descriptor.
"""

from __future__ import annotations

import enum
import os
import pickle
import signal
import socket
import struct
import sys
from dataclasses import dataclass

from ketch.protocol.listing import list_payload
from ketch.protocol.mlsx import Access, MlsxEntry, format_mlsd
from ketch.server.jail import descriptor_path
from ketch.server.mlsx_scan import (
    directory_names,
    list_lines_of,
    mlsx_entries_of,
    scan_names,
    shown_link_target,
)

__all__ = [
    "ERROR",
    "LIST",
    "MLSD",
    "NAMES",
    "PAYLOAD",
    "PROTOCOL",
    "READY",
    "READ_DIRECTORY",
    "REPLY",
    "REQUEST",
    "SEND_OWN_NAMES",
    "ListingKind",
    "ListingOptions",
    "join_names",
    "main",
    "parts_of",
    "split_names",
]

#: kind, flags, this worker's part, parts in all, the listing's "now", options and names length.
REQUEST = struct.Struct("=BBHHdQQ")
#: Request flags: read the directory (and send the other parts' names); send this part's too.
READ_DIRECTORY, SEND_OWN_NAMES = 1, 2
#: message type and body length.
REPLY = struct.Struct("=BQ")
READY, NAMES, PAYLOAD, ERROR = 1, 2, 3, 4
#: What READY says. Bump the number with any change to the messages' meaning.
PROTOCOL = f"ketch listing worker 5 {REQUEST.format} {REPLY.format}"


class ListingKind(enum.IntEnum):
    """Which listing a request asks for."""

    LIST = 1
    MLSD = 2


LIST, MLSD = ListingKind.LIST, ListingKind.MLSD


@dataclass(frozen=True)
class ListingOptions:
    """What formatting a listing needs besides the entries: the same for every part."""

    home: str  # the real home, for link targets
    selected: tuple[str, ...] = ()  # MLSD: the facts OPTS MLST selected
    access: Access | None = None  # MLSD: what the account may do (the perm fact)
    listed: MlsxEntry | None = None  # MLSD: the directory itself, shown first as type=cdir


def parts_of(names: list[str], parts: int) -> list[list[str]]:
    """``names`` cut into ``parts`` runs of (nearly) equal length, in order."""
    cuts = [part * len(names) // parts for part in range(parts + 1)]
    return [names[cuts[part] : cuts[part + 1]] for part in range(parts)]


def join_names(names: list[str]) -> bytes:
    """Names as sent: their bytes (surrogate escapes undone), NUL-separated (no name holds NUL).

    One encoding of the joined names makes the same bytes as ``os.fsencode``
    of each, at a fraction of the cost (5 to 20 times less for 10,000 names).
    """
    return "\0".join(names).encode(_FS_ENCODING, _FS_ERRORS)


def split_names(data: bytes) -> list[str]:
    """``join_names`` undone (NUL is never part of another character's bytes)."""
    return data.decode(_FS_ENCODING, _FS_ERRORS).split("\0") if data else []


_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()


def _receive_exactly(sock: socket.socket, count: int) -> bytes:
    buffer = bytearray(count)
    view, got = memoryview(buffer), 0
    while got < count:
        received = sock.recv_into(view[got:])
        if not received:
            raise EOFError
        got += received
    return bytes(buffer)


def _send(sock: socket.socket, kind: int, body: bytes = b"") -> None:
    sock.sendall(REPLY.pack(kind, len(body)))
    if body:
        sock.sendall(body)


def _format(kind: int, directory: int, names: list[str], now: float, options: ListingOptions,
            first: bool) -> bytes:  # fmt: skip
    home, real = options.home, descriptor_path(directory)

    def link_target(name: str, dir_fd: int) -> str | None:
        return shown_link_target(name, dir_fd, home, real)

    entries = scan_names(directory, names, link_target)
    if kind == LIST:
        return list_payload(list_lines_of(entries, now))
    assert options.access is not None
    return format_mlsd(
        mlsx_entries_of(entries),
        options.selected,
        options.access,
        listed=options.listed if first else None,
    )


def _serve_one(sock: socket.socket) -> bool:
    """Answer one request; False at the end of the server's socket.

    Part 0's worker, unless the server kept the names, reads and
    sorts the directory, sends the names of every other part (NAMES, which
    the server passes on in those parts' requests), then makes its own part.
    The others start formatting as soon as their names arrive, so only one
    reading of the directory is ever waited for.
    """
    header, fds, _, _ = socket.recv_fds(sock, REQUEST.size, 1)
    if not header:
        return False
    try:
        if len(header) < REQUEST.size:
            header += _receive_exactly(sock, REQUEST.size - len(header))
        kind, flags, part, parts, now, options_length, names_length = REQUEST.unpack(header)
        options: ListingOptions = pickle.loads(_receive_exactly(sock, options_length))
        names = split_names(_receive_exactly(sock, names_length))
        if not fds:
            raise EOFError  # a request always carries its directory
        directory = fds[0]
        if flags & READ_DIRECTORY:
            try:
                runs = parts_of(directory_names(directory), parts)
            except OSError as error:
                _send(sock, ERROR, struct.pack("=i", error.errno or 0))
                return True
            names = runs[0]
            for run in runs[1:]:
                _send(sock, NAMES, join_names(run))
            if flags & SEND_OWN_NAMES:
                _send(sock, NAMES, join_names(names))
        try:
            payload = _format(kind, directory, names, now, options, part == 0)
        except OSError as error:
            _send(sock, ERROR, struct.pack("=i", error.errno or 0))
        else:
            _send(sock, PAYLOAD, payload)
    finally:
        for fd in fds:
            os.close(fd)
    return True


def main(arguments: list[str]) -> int:
    """Serve listings on the socket whose descriptor is ``arguments[0]`` until it closes."""
    # Signals meant for the server reach its helpers too: Ctrl-C and a hangup
    # reach the terminal's process group, and systemd stops a whole cgroup.
    # The server shuts down and closes its end, which ends this loop.
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    sock = socket.socket(fileno=int(arguments[0]))
    sock.setblocking(True)
    try:
        # The protocol, and (for the server's log) which code speaks it.
        _send(sock, READY, PROTOCOL.encode() + b"\0" + os.fsencode(os.path.realpath(__file__)))
        while _serve_one(sock):
            pass
    except (EOFError, OSError):
        pass  # the server went away, or its end broke: nobody is waiting for an answer
    finally:
        sock.close()
    return 0
