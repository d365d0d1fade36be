"""Moving bytes between a file and a data channel.

TYPE I downloads go through ``os.sendfile`` (no copy through Python); TYPE A
converts line endings on the wire with the streaming codecs of
:mod:`ketch.protocol.ascii`. Unthrottled TYPE I uploads take the fast loop of
:mod:`ketch.server.receive_loop` (no future per piece); the others read into
one preallocated buffer here.

A transfer that moves no byte for ``data_stall_timeout`` seconds is
cancelled by :class:`StallWatchdog`, which polls the channel's byte counter
rather than wrapping every chunk in a timeout (a timer per chunk would
cost more than the chunk at loopback speeds). Time spent waiting for a
bandwidth limit (:mod:`ketch.server.throttle`) is not a stall.

Without a throttle or a meter the loops are exactly the unlimited ones:
limits cost nothing per chunk unless they are configured.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from ketch.protocol.ascii import AsciiDecoder, AsciiEncoder
from ketch.server.data_channel import DataChannel
from ketch.server.receive_loop import receive_to_fd

if TYPE_CHECKING:
    from ketch.server.throttle import Throttle

__all__ = ["StallWatchdog", "TransferRefused", "receive_file", "send_file"]

_READ_SIZE = 256 * 1024
_RECEIVE_BUFFER = 256 * 1024


class TransferRefused(Exception):
    """A limit (or the file itself) stopped the transfer; the session replies ``code`` with
    ``text``.

    ``result`` is the transfer log's: "refused" for a limit, "changed" when the file
    changed under the transfer (nothing was refused, but the copy is not whole).
    """

    def __init__(self, code: int, text: str, *, result: str = "refused") -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.result = result


async def send_file(
    channel: DataChannel,
    file: BinaryIO,
    offset: int,
    *,
    ascii: bool,
    throttle: Throttle | None = None,
) -> int:
    """Send ``file`` from ``offset``; in ASCII mode LF becomes CRLF on the wire.

    Returns how many bytes of the file went out (before any CRLF was added).
    With a ``throttle``, bytes go out in pieces of its chunk size, each
    followed by the wait the shared bucket asks for.
    """
    if not ascii:
        fd = _fileno(file)
        if fd >= 0:
            if throttle is None:
                return await channel.send_file(fd, offset)
            start = offset
            while sent := await channel.send_file(fd, offset, throttle.chunk_size):
                offset += sent
                await throttle.pace(channel, sent)
            return offset - start
    file.seek(offset)
    encoder = AsciiEncoder() if ascii else None
    read_size = throttle.chunk_size if throttle else _READ_SIZE
    taken = 0
    while chunk := file.read(read_size):
        taken += len(chunk)
        data = encoder.convert(chunk) if encoder else chunk
        await channel.send_all(data)
        if throttle:
            await throttle.pace(channel, len(data))
    return taken


async def receive_file(
    channel: DataChannel,
    file: BinaryIO,
    *,
    ascii: bool,
    meter: Callable[[int], None] | None = None,
    throttle: Throttle | None = None,
) -> None:
    """Write everything the client sends to ``file``; in ASCII mode CRLF becomes LF.

    ``meter`` is told the size of every piece before it is written and may
    raise (:class:`TransferRefused`) to stop the upload with nothing of that
    piece stored. A ``throttle`` paces the reading. A binary upload to an
    unbuffered file without a throttle takes the fast loop
    (:func:`~ketch.server.receive_loop.receive_to_fd`).
    """
    channel.receiving = True
    if not ascii and throttle is None and channel.zero_copy:
        # Only an unbuffered file: writing to its descriptor must not overtake a buffer.
        fd = _fileno(file) if isinstance(file, io.FileIO) else -1
        if fd >= 0:
            await receive_to_fd(channel, fd, meter)
            return
    buffer = bytearray(throttle.chunk_size if throttle else _RECEIVE_BUFFER)
    view = memoryview(buffer)
    decoder = AsciiDecoder() if ascii else None
    while count := await channel.receive_into(buffer):
        data = decoder.convert(bytes(view[:count])) if decoder else view[:count]
        if meter:
            meter(len(data))
        file.write(data)
        if throttle:
            await throttle.pace(channel, count)
    if decoder:
        tail = decoder.flush()
        if meter:
            meter(len(tail))
        file.write(tail)


def _fileno(file: BinaryIO) -> int:
    """The file's descriptor, or -1 for a file object without one."""
    try:
        return file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return -1


class StallWatchdog:
    """Cancels ``task`` when ``channel`` has moved no byte for ``timeout`` seconds."""

    def __init__(self, channel: DataChannel, task: asyncio.Task[None], timeout: float) -> None:
        self.stalled = False
        self._channel = channel
        self._task = task
        self._timeout = timeout
        self._interval = min(max(timeout / 4, 0.05), 5.0)
        self._loop = asyncio.get_running_loop()
        self._last_count = -1
        self._last_progress = self._loop.time()
        self._handle = self._loop.call_later(self._interval, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        # An upload's bytes waiting unread count: its loop may sleep past a short timeout.
        # A download's count falls as the client acknowledges what waits in the send
        # buffer, which a slow client may take longer than the timeout to drain.
        channel = self._channel
        if channel.receiving:
            count = channel.bytes_moved + channel.unread_bytes()
        else:
            count = channel.bytes_moved - channel.unacknowledged_bytes()
        if count != self._last_count or self._channel.paused:
            self._last_count = count
            self._last_progress = now
        elif now - self._last_progress >= self._timeout:
            self.stalled = True
            self._task.cancel()
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        self._handle.cancel()
