"""Moving bytes for a Client: downloads, uploads, listings and streams.

Each transfer is: REST if resuming, the data connection and transfer command
(data_modes.py), the bytes, then the final reply. Whatever goes wrong in the
middle (a broken connection, a progress callback that raises, cancellation)
the data connection is reset and the control connection resynchronised, so
the session stays usable for the next command.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from ketch.client.data_stream import DataStream
from ketch.client.errors import (
    DataConnectionFailed,
    FtpError,
    InvalidArgument,
    LocalFileError,
    ReplyError,
    reply_error,
)
from ketch.client.part_files import open_part_file

if TYPE_CHECKING:
    from ketch.client.client import Client
    from ketch.client.data_modes import OpenedData

__all__ = ["Progress", "TransferResult", "download", "open_download", "receive", "upload"]

Progress = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, total_or_None)``; bytes_done counts any resumed part."""

_BUFFER_SIZE = 256 * 1024
_READ_CHUNK = 256 * 1024
_UPLOAD_REPLY_WAIT = 2.0  # after a broken upload, how long to wait for the server's reason


@dataclass(frozen=True)
class TransferResult:
    """What a transfer did: bytes moved now, where it started, how, and how long."""

    remote_path: str
    bytes: int
    offset: int
    seconds: float
    mode: str  # EPSV, PASV, EPRT, PORT, or "" when nothing had to move

    @property
    def skipped(self) -> bool:
        """True when a resume found nothing left to transfer."""
        return self.mode == ""


async def receive(
    client: Client,
    command_line: str,
    write: Callable[[memoryview], Any],
    *,
    progress: Progress | None,
    done_before: int = 0,
    total: int | None = None,
) -> tuple[int, str]:
    """Run a RETR/LIST-like command, passing received bytes to ``write``.

    Returns (bytes received, data-connection command used).
    """
    opened = await client.connector.open(command_line)
    moved = await _receive_all(client, opened, write, progress, done_before, total)
    await _final_reply(client, command_line, opened)
    return moved, opened.stream.mode


async def _receive_all(
    client: Client,
    opened: OpenedData,
    write: Callable[[memoryview], Any],
    progress: Progress | None,
    done_before: int,
    total: int | None,
) -> int:
    stream = opened.stream
    moved = 0
    if opened.reply.code >= 200:  # the server finished without sending anything
        await stream.close()
        return 0
    view = memoryview(bytearray(_BUFFER_SIZE))
    try:
        while count := await stream.recv_into(view):
            write(view[:count])
            moved += count
            if progress is not None:
                progress(done_before + moved, total)
    except BaseException:
        await _abandon(client, stream)
        raise
    await stream.close()
    return moved


async def _final_reply(client: Client, command_line: str, opened: OpenedData) -> None:
    """Read the transfer's final reply, unless the server gave it instead of a 150."""
    if opened.reply.code >= 200:
        return
    reply = await client.control.read_reply()
    if reply.code not in (226, 250, 200):
        raise reply_error(command_line.split(" ", 1)[0], reply)


async def _abandon(client: Client, stream: DataStream) -> None:
    stream.abort()
    await client.control.resync()


async def _restart_at(client: Client, offset: int) -> None:
    reply = await client.control.command(f"REST {offset}")
    if reply.code != 350:
        raise reply_error(
            "REST", reply, "the server cannot resume transfers; transfer the whole file instead"
        )


async def _remote_size_for_resume(
    client: Client, remote: str
) -> tuple[int, Literal["size", "missing", "unknown"]]:
    """The remote file's size (0 when it is missing or the server cannot tell), and which."""
    try:
        return await client.size(remote), "size"
    except ReplyError as error:  # 550: no such file (yet); 500/502: no SIZE here
        return 0, "missing" if error.code == 550 else "unknown"


async def _remote_size(client: Client, remote: str) -> int | None:
    """SIZE, or None when the server cannot tell (no SIZE, or no such file)."""
    size, found = await _remote_size_for_resume(client, remote)
    return size if found == "size" else None


# -- downloads -------------------------------------------------------------------


async def download(
    client: Client,
    remote: str,
    destination: str | os.PathLike[str] | IO[bytes],
    *,
    resume: bool,
    offset: int,
    progress: Progress | None,
    size: int | None = None,
) -> TransferResult:
    await client.prepare_binary()
    total = size if size is not None else await _remote_size(client, remote)
    if not isinstance(destination, (str, os.PathLike)):
        file = destination
        return await _download_into(client, remote, lambda: file, offset, total, progress)
    path = Path(destination)
    if resume:
        have = _local_size(path)
        offset = have or 0
        # An empty remote file is "complete" only once the local one exists too.
        if total is not None and have is not None and offset >= total:
            if offset > total:
                raise LocalFileError(
                    f"cannot resume {path}: it has {offset} bytes, more than the "
                    f"{total} of {remote}",
                    "remove the local file, or download without -c",
                )
            return TransferResult(remote, 0, offset, 0.0, "")
    # Over a whole file (no resume): a hidden part file, renamed over it once complete,
    # so a broken download leaves the old one whole. A new file is written in place, so
    # what arrived before a failure stays there for -c.
    replaced = None if resume or offset else _file_to_replace(path)
    opened: list[IO[bytes]] = []
    parts: list[Path] = []

    def open_file() -> IO[bytes]:
        # Opened only once the server has agreed to send, so a missing remote
        # file does not leave an empty (or truncated) local one behind.
        if replaced is not None:
            part, file = _open_part(replaced, path)
            parts.append(part)
        else:
            file = _open_local(path, "r+b" if offset else "wb")
        opened.append(file)
        file.seek(offset)
        return file

    try:
        result = await _download_into(client, remote, open_file, offset, total, progress)
        for file in opened:
            try:
                file.close()
            except OSError as error:
                raise _write_error(file, error) from None
        if replaced is not None:
            _replace(parts[0], replaced, path)
        return result
    except BaseException as error:
        if parts:
            _drop_part(opened, parts[0])
            _say_kept(error, path)
        elif opened and not isinstance(error, LocalFileError):
            with contextlib.suppress(OSError):  # a full disk: the error at hand says more
                opened[0].flush()
            _say_incomplete(error, path, total)
        raise
    finally:
        for file in opened:
            with contextlib.suppress(OSError):  # closed above, unless something failed first
                file.close()


def _file_to_replace(path: Path) -> Path | None:
    """The regular file (a link's target) a download to ``path`` would overwrite, or None."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # /dev/null, a FIFO: written as they are
            return None
    except OSError:
        return None
    return Path(os.path.realpath(path))


def _open_part(target: Path, path: Path) -> tuple[Path, IO[bytes]]:
    try:
        return open_part_file(target)
    except OSError as error:
        raise LocalFileError(
            f"cannot write {path}: {error.strerror}",
            f"{_local_hint(error)}; the part file goes beside it, so its directory must be "
            "writable too",
        ) from None


def _replace(part: Path, target: Path, path: Path) -> None:
    try:
        os.replace(part, target)
    except OSError as error:
        raise LocalFileError(f"cannot write {path}: {error.strerror}", _local_hint(error)) from None


def _drop_part(opened: list[IO[bytes]], part: Path) -> None:
    for file in opened:
        with contextlib.suppress(OSError):
            file.close()
    with contextlib.suppress(OSError):
        part.unlink()


def _say_incomplete(error: BaseException, path: Path, total: int | None) -> None:
    """Make ``error``'s advice say what the local file holds now, and how to finish it;
    anything else (cancellation, Ctrl-C, a progress callback's error) gets it as a note."""
    have = _local_size(path) or 0
    if not isinstance(error, FtpError):
        of = f" of {total}" if total is not None else ""
        error.add_note(
            f"{path} is incomplete ({have}{of} bytes); download again with -c (resume=True)"
        )
    elif total is not None and have >= total:
        error.hint = (
            f"all {total} bytes reached {path}, but the transfer did not end cleanly; "
            "check it with --verify, or download it again"
        )
    elif isinstance(error, ReplyError) and error.code == 451:
        # The server's own trouble (such as a file changing as it was sent): resuming
        # could join two versions, so its advice stands.
        error.hint = f"{path} is incomplete ({have} bytes); {error.hint}"
    else:
        of = f" of {total}" if total is not None else ""
        advice = error.hint if error.advises_resume else "download again with -c (resume=True)"
        error.hint = f"{path} is incomplete ({have}{of} bytes); {advice}"


def _say_kept(error: BaseException, path: Path) -> None:
    """Make ``error``'s advice say the old local file is untouched (no -c: it is whole)."""
    kept = f"{path} was left as it was"
    if not isinstance(error, FtpError):
        error.add_note(f"{kept}; download it again")
    elif error.advises_resume or not error.hint:
        error.hint = f"{kept}; download it again"
    else:
        error.hint = f"{kept}; {error.hint}"


async def _download_into(
    client: Client,
    remote: str,
    open_file: Callable[[], IO[bytes]],
    offset: int,
    total: int | None,
    progress: Progress | None,
) -> TransferResult:
    started = time.monotonic()
    if offset:
        await _restart_at(client, offset)
    opened = await client.connector.open(f"RETR {remote}")
    try:
        file = open_file()
    except BaseException:
        await _abandon(client, opened.stream)
        raise

    def write(chunk: memoryview) -> None:
        try:
            file.write(chunk)
        except BrokenPipeError:
            raise  # the reader of a pipe went away (ketch get URL - | head): not a disk problem
        except OSError as error:
            raise _write_error(file, error) from None

    moved = await _receive_all(client, opened, write, progress, offset, total)
    await _final_reply(client, "RETR", opened)
    try:  # what the file object still buffers may not fit either (a full disk)
        file.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise _write_error(file, error) from None
    mode = opened.stream.mode
    if total is not None and offset + moved < total:
        raise DataConnectionFailed(
            f"download of {remote} ended after {offset + moved} of {total} bytes",
            "try again with -c to resume",
            mode=mode,
            advises_resume=True,
        )
    return TransferResult(remote, moved, offset, time.monotonic() - started, mode)


def _write_error(file: IO[bytes], error: OSError) -> LocalFileError:
    where = getattr(file, "name", None)  # a path, "<stdout>", or none (BytesIO)
    named = f" {where}" if isinstance(where, str) else ""
    return LocalFileError(f"cannot write{named}: {error.strerror}", _local_hint(error))


def open_download(
    client: Client, remote: str, *, offset: int
) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[AsyncIterator[bytes]]:
        await client.prepare_binary()
        if offset:
            await _restart_at(client, offset)
        opened = await client.connector.open(f"RETR {remote}")
        stream = opened.stream
        finished = opened.reply.code >= 200

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal finished
            view = memoryview(bytearray(_BUFFER_SIZE))
            while not finished:
                count = await stream.recv_into(view)
                if not count:
                    finished = True
                    break
                yield bytes(view[:count])

        try:
            yield chunks()
        except BaseException:
            await _abandon(client, stream)
            raise
        if not finished:  # the caller stopped early: abort, as ftplib users wish it did
            await _abandon(client, stream)
            return
        await stream.close()
        await _final_reply(client, "RETR", opened)

    return session()


def _open_local(path: Path, mode: str) -> IO[bytes]:
    """Open a local file, turning OSError into a LocalFileError that says what to do."""
    try:
        return path.open(mode)
    except OSError as error:
        verb = "read" if mode == "rb" else "write"
        raise LocalFileError(
            f"cannot {verb} {path}: {error.strerror}", _local_hint(error)
        ) from None


def _local_size(path: Path) -> int | None:
    """The local file's size; None when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LocalFileError(f"cannot read {path}: {error.strerror}", _local_hint(error)) from None


def _local_hint(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "check the local file's permissions"
    if isinstance(error, IsADirectoryError):
        return "name a file, not a directory"
    if error.errno == errno.EBADF:  # closed under us (the CLI words a closed stdout itself)
        return ""
    return "check the local path and free disk space"


# -- uploads ---------------------------------------------------------------------

Source = str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes] | Iterable[bytes]


async def upload(
    client: Client,
    source: Source,
    remote: str,
    *,
    resume: bool,
    append: bool,
    progress: Progress | None,
) -> TransferResult:
    await client.prepare_binary()
    if isinstance(source, (str, os.PathLike)):
        with _open_local(Path(source), "rb") as file:
            return await _upload_file(client, file, remote, resume, append, progress)
    if hasattr(source, "read"):
        return await _upload_file(client, source, remote, resume, append, progress)  # type: ignore[arg-type]
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise InvalidArgument(
            "upload takes a path, a file object or chunks of bytes, not bytes",
            "pass [data] or io.BytesIO(data)",
        )
    if resume:
        raise InvalidArgument(
            "cannot resume an upload from chunks: it cannot skip what was sent",
            "upload from a file, or without resume",
        )
    return await _send(
        client, f"{'APPE' if append else 'STOR'} {remote}", _chunks_of(source), 0, None, progress
    )


async def _upload_file(
    client: Client,
    file: IO[bytes],
    remote: str,
    resume: bool,
    append: bool,
    progress: Progress | None,
) -> TransferResult:
    total = _file_size(file)
    offset = 0
    if resume:
        if total is None:
            raise LocalFileError(
                "cannot resume an upload from a pipe or stream: it cannot skip what was sent",
                "upload from a regular file, or upload without resuming",
            )
        offset, found = await _remote_size_for_resume(client, remote)
        if offset > total:
            raise LocalFileError(
                f"cannot resume the upload to {remote}: it already has {offset} bytes, "
                f"more than the local {total}",
                "upload without resuming to replace it",
            )
        if offset == total and found == "size":
            return TransferResult(remote, 0, offset, 0.0, "")
        file.seek(offset)
        start = offset
        # APPE from byte 0 too when the size is known (or the file is missing): a server
        # writes an APPE to the file itself, so what arrives before a failure stays for the
        # next -c, where a STOR may be discarded (ketch's atomic_uploads). An unknown size
        # takes STOR: an APPE could add the whole file after content already there.
        append = append or found != "unknown"
    else:  # a file object uploads from where it stands, as with ftplib and BytesIO
        start = _position(file)
        if total is not None:
            total = max(0, total - start)
    verb = "APPE" if append or offset else "STOR"
    body = _sendfile_body(file, start) if _sendfile_ok(file) else _reader_chunks(file)
    return await _send(client, f"{verb} {remote}", body, offset, total, progress)


def _position(file: IO[bytes]) -> int:
    try:
        return file.tell()
    except (OSError, AttributeError, ValueError):  # a pipe: it reads from where it is anyway
        return 0


async def _send(
    client: Client,
    command_line: str,
    body: _Body,
    offset: int,
    total: int | None,
    progress: Progress | None,
) -> TransferResult:
    started = time.monotonic()
    opened = await client.connector.open(command_line)
    stream = opened.stream
    moved = 0
    try:
        async for count in body(stream):
            moved += count
            if progress is not None:
                progress(offset + moved, total)
    except DataConnectionFailed as error:
        await _explain_broken_upload(client, stream, command_line)
        _say_upload_incomplete(error, command_line.split(" ", 1)[1])
        raise
    except BaseException:
        await _abandon(client, stream)
        raise
    await stream.close()
    await _final_reply(client, command_line, opened)
    remote = command_line.split(" ", 1)[1]
    return TransferResult(remote, moved, offset, time.monotonic() - started, stream.mode)


def _say_upload_incomplete(error: DataConnectionFailed, remote: str) -> None:
    """Replace a download's resume advice (-c) with the upload's."""
    if error.advises_resume:
        error.hint = (
            f"{remote} on the server may be incomplete (a server storing uploads atomically, "
            "as ketch's does, keeps none of it); ketch put -c FILE URL (resume=True) resumes it"
        )


async def _explain_broken_upload(client: Client, stream: DataStream, command_line: str) -> None:
    """A server that refuses mid-upload (disk full, quota) closes the data connection
    and says why on the control connection: report that, not "broken pipe"."""
    stream.abort()
    try:
        reply = await client.control.read_reply(timeout=_UPLOAD_REPLY_WAIT)
    except FtpError:
        await client.control.resync()
        return
    if reply.code >= 400:
        await client.control.resync()
        raise reply_error(command_line.split(" ", 1)[0], reply)
    await client.control.resync()


# A body sends itself through the stream and yields byte counts as it goes.
_Body = Callable[[DataStream], AsyncIterator[int]]


def _sendfile_ok(file: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (OSError, AttributeError, ValueError):
        return False


def _file_size(file: IO[bytes]) -> int | None:
    """The size of a regular file or of a seekable object without a descriptor (BytesIO);
    None for pipes and sockets, whose st_size means nothing."""
    try:
        info = os.fstat(file.fileno())
    except (OSError, AttributeError, ValueError):
        return _seekable_size(file)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _seekable_size(file: IO[bytes]) -> int | None:
    try:
        if not file.seekable():
            return None
        here = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(here)
    except (OSError, AttributeError, ValueError):
        return None
    return end


def _sendfile_body(file: IO[bytes], offset: int) -> _Body:
    async def body(stream: DataStream) -> AsyncIterator[int]:
        position = offset
        while sent := await stream.send_file_chunk(file, position):
            position += sent
            yield sent

    return body


def _reader_chunks(file: IO[bytes]) -> _Body:
    async def body(stream: DataStream) -> AsyncIterator[int]:
        while chunk := file.read(_READ_CHUNK):
            await stream.send_all(chunk)
            yield len(chunk)

    return body


def _chunks_of(source: AsyncIterable[bytes] | Iterable[bytes]) -> _Body:
    async def body(stream: DataStream) -> AsyncIterator[int]:
        if isinstance(source, AsyncIterable):
            async for chunk in source:
                await stream.send_all(chunk)
                yield len(chunk)
        else:
            for chunk in source:
                await stream.send_all(chunk)
                yield len(chunk)

    return body
