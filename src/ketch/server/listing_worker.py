"""A listing worker: a process that reads and formats parts of big directory listings.

Run as ``main([FD])`` in a fresh interpreter (see helper_python) by
:class:`~ketch.server.listing_workers.ListingWorkers`, with ``FD`` its end of
a Unix socket pair. A 10,000-entry LIST costs some 40 ms of Python, most of
it holding the GIL: in a thread it would still stall every other session of
the server, and on one core it cannot go faster. Workers are processes, so
a big listing leaves the event loop alone, and its parts are made on as many
cores as there are workers at once.

The wire format is private to this module and ``listing_workers``: both
always come from the same installation. A request is a fixed header
(carrying the directory's descriptor as SCM_RIGHTS) followed by its options,
pickled: they come from the server that started this process, never from a
client. Each worker of a listing is asked for one part of it (see
``_serve_one``): a BOUNDS message from part 0's worker, passed on by the
server, says where each part begins, and every part ends in a PAYLOAD (its
bytes, ready for the data connection) or an ERROR (an errno). Nothing in a
request is resolved as a path: every ``lstat`` and ``readlink`` is relative
to the received descriptor.
"""

from __future__ import annotations

import bisect
import enum
import os
import pickle
import signal
import socket
import struct
from dataclasses import dataclass

from ketch.protocol.listing import list_payload
from ketch.protocol.mlsx import Access, MlsxEntry, format_mlsd
from ketch.server.mlsx_scan import (
    LIST_FLAGS,
    directory_names,
    list_lines_of,
    mlsx_entries_of,
    scan_names,
    shown_link_target,
)

__all__ = [
    "BOUNDS",
    "ERROR",
    "LIST",
    "MLSD",
    "PAYLOAD",
    "READY",
    "REPLY",
    "REQUEST",
    "ListingKind",
    "ListingOptions",
    "bounds_of",
    "decode_bounds",
    "encode_bounds",
    "main",
    "part_of",
]

#: kind, this worker's part, parts in all, the listing's "now", options length.
REQUEST = struct.Struct("=BHHdQ")
#: message type and body length.
REPLY = struct.Struct("=BQ")
READY, BOUNDS, PAYLOAD, ERROR = 1, 2, 3, 4


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


def bounds_of(names: list[str], parts: int) -> list[str | None]:
    """Where parts 1.. of the sorted ``names`` begin: ``parts - 1`` names; None past the end.

    Parts are runs of (nearly) equal length in order, part ``k`` being the
    names from bound ``k - 1`` (the first name for part 0) up to bound ``k``.
    """
    count = len(names)
    bounds: list[str | None] = []
    for part in range(1, parts):
        start = part * count // parts
        bounds.append(names[start] if start < count else None)
    return bounds


def encode_bounds(bounds: list[str | None]) -> bytes:
    """Bounds as sent: each is "/" and its name's bytes (None: nothing), then a NUL.

    No name holds "/" or NUL, so neither can be mistaken for part of one.
    """
    return b"".join(
        b"\0" if bound is None else b"/" + os.fsencode(bound) + b"\0" for bound in bounds
    )


def decode_bounds(data: bytes) -> list[str | None]:
    """``encode_bounds`` undone."""
    return [os.fsdecode(item[1:]) if item else None for item in data.split(b"\0")[:-1]]


def part_of(names: list[str], bounds: list[str | None], part: int) -> list[str]:
    """The sorted ``names`` of ``part``, between its bounds (see bounds_of)."""
    edges = [None, *bounds, None]
    low, high = edges[part], edges[part + 1]
    start = 0 if low is None else bisect.bisect_left(names, low)
    end = len(names) if high is None else bisect.bisect_left(names, high)
    if part and low is None:  # every part before this one reaches the end
        start = len(names)
    return names[start:end]


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
    home = options.home

    def link_target(name: str, dir_fd: int) -> str | None:
        return shown_link_target(name, dir_fd, home)

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


def _own_names(directory: int) -> list[str]:
    """``directory_names``, read through a descriptor of this worker's own.

    The received descriptor shares its file position with the server's and
    the other workers' copies: reading the directory through it at the same
    time as they do would interleave the reads, losing and repeating names.
    Opening "." relative to it gives the same directory a position of its own.
    """
    own = os.open(".", LIST_FLAGS, dir_fd=directory)
    try:
        return directory_names(own)
    finally:
        os.close(own)


def _serve_one(sock: socket.socket) -> bool:
    """Answer one request; False at the end of the server's socket.

    Every worker of a listing reads and sorts the directory at the same time
    (a big directory is read in many ``getdents`` calls anyway, so one read
    is no more a snapshot than several). Part 0's worker says where the
    other parts begin (BOUNDS); the server passes that on to the others. A
    worker that cannot read the directory still takes part in these steps, so
    the messages stay in step and the server hears the error once per worker.
    """
    header, fds, _, _ = socket.recv_fds(sock, REQUEST.size, 1)
    if not header:
        return False
    try:
        if len(header) < REQUEST.size:
            header += _receive_exactly(sock, REQUEST.size - len(header))
        kind, part, parts, now, options_length = REQUEST.unpack(header)
        options: ListingOptions = pickle.loads(_receive_exactly(sock, options_length))
        if not fds:
            raise EOFError  # a request always carries its directory
        directory = fds[0]
        failure: OSError | None = None
        try:
            names = _own_names(directory)
        except OSError as error:
            names, failure = [], error
        bounds: list[str | None]
        if part == 0:
            bounds = bounds_of(names, parts) if failure is None else [None] * (parts - 1)
            if parts > 1:
                _send(sock, BOUNDS, encode_bounds(bounds))
        else:
            kind_sent, length = REPLY.unpack(_receive_exactly(sock, REPLY.size))
            if kind_sent != BOUNDS:
                raise EOFError  # out of step with the server: start afresh
            bounds = decode_bounds(_receive_exactly(sock, length))
        if failure is None:
            mine = part_of(names, bounds, part)
            _send(sock, PAYLOAD, _format(kind, directory, mine, now, options, part == 0))
        else:
            _send(sock, ERROR, struct.pack("=i", failure.errno or 0))
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
        _send(sock, READY)
        while _serve_one(sock):
            pass
    except (EOFError, OSError):
        pass  # the server went away, or its end broke: nobody is waiting for an answer
    finally:
        sock.close()
    return 0
