"""Moving bytes between a file and a data channel.

TYPE I downloads go through ``os.sendfile`` (no copy through Python); TYPE A
converts line endings on the wire with the streaming codecs of
:mod:`ketch.protocol.ascii`. Uploads read into one preallocated buffer.

A transfer that moves no byte for ``data_stall_timeout`` seconds is
cancelled by :class:`StallWatchdog`, which polls the channel's byte counter
rather than wrapping every chunk in a timeout (a timer per chunk would
cost more than the chunk at loopback speeds).
"""

from __future__ import annotations

import asyncio
import io
from typing import BinaryIO

from ketch.protocol.ascii import AsciiDecoder, AsciiEncoder
from ketch.server.data_channel import DataChannel

__all__ = ["StallWatchdog", "receive_file", "send_file"]

_READ_SIZE = 256 * 1024
_RECEIVE_BUFFER = 256 * 1024


async def send_file(channel: DataChannel, file: BinaryIO, offset: int, *, ascii: bool) -> None:
    """Send ``file`` from ``offset``; in ASCII mode LF becomes CRLF on the wire."""
    if not ascii:
        try:
            fd = file.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = -1
        if fd >= 0:
            await channel.send_file(fd, offset)
            return
    file.seek(offset)
    encoder = AsciiEncoder() if ascii else None
    while chunk := file.read(_READ_SIZE):
        await channel.send_all(encoder.convert(chunk) if encoder else chunk)


async def receive_file(channel: DataChannel, file: BinaryIO, *, ascii: bool) -> None:
    """Write everything the client sends to ``file``; in ASCII mode CRLF becomes LF."""
    buffer = bytearray(_RECEIVE_BUFFER)
    view = memoryview(buffer)
    decoder = AsciiDecoder() if ascii else None
    while count := await channel.receive_into(buffer):
        if decoder:
            file.write(decoder.convert(bytes(view[:count])))
        else:
            file.write(view[:count])
    if decoder:
        file.write(decoder.flush())


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
        if self._channel.bytes_moved != self._last_count:
            self._last_count = self._channel.bytes_moved
            self._last_progress = now
        elif now - self._last_progress >= self._timeout:
            self.stalled = True
            self._task.cancel()
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def stop(self) -> None:
        self._handle.cancel()
