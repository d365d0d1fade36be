"""``SyncClient``: the asyncio Client behind a blocking interface.

Not a second implementation: every method hands the Client's coroutine to an
event loop on a private thread and waits for it. A private thread (rather
than ``asyncio.run`` per call) keeps one loop alive for the session's
sockets, and works even when the caller itself runs inside an event loop.
Progress callbacks run on that thread.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from datetime import datetime
from os import PathLike
from types import TracebackType
from typing import IO, Any, TypeVar

from ketch.client.client import Client
from ketch.client.control import INTERRUPTED_WAIT
from ketch.client.errors import ProtocolError
from ketch.client.transfers import Progress, TransferResult
from ketch.client.verify import RemoteHash
from ketch.protocol import Reply
from ketch.protocol.remote_listing import RemoteEntry, RemoteListing

__all__ = ["SyncClient"]

T = TypeVar("T")

# The longest an interrupted call waits for its coroutine's clean-up: a resync and a
# socket close, each bounded by INTERRUPTED_WAIT.
_CLEAN_UP_WAIT = 3 * INTERRUPTED_WAIT


class SyncClient:
    """A blocking FTP session: ``with SyncClient("host", user=..., password=...) as ftp:``.

    Takes the same arguments as :class:`Client`.
    """

    def __init__(self, host: str, port: int | None = None, **settings: Any) -> None:
        # The Client first: a setting it refuses leaves no loop thread running.
        self.client = Client(host, port, **settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"ketch-client-{host}", daemon=True
        )
        self._thread.start()
        self._ended = False

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` as a task on the private loop and wait for it.

        Interrupted (Ctrl-C) while waiting, the task is cancelled and given its
        bounded clean-up (see ketch.client.control.INTERRUPTED_WAIT) before the
        KeyboardInterrupt goes on, so nothing is left running on the loop.
        """
        if self._ended:
            coroutine.close()
            raise ProtocolError(
                f"the session with {self.client.host} has ended (quit() was called)",
                "open a new SyncClient",
            )
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        tasks: list[asyncio.Task[T]] = []

        def settle(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                outcome.cancel()
            elif (error := task.exception()) is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(task.result())

        def start() -> None:
            task = self._loop.create_task(coroutine)
            task.add_done_callback(settle)
            tasks.append(task)

        self._loop.call_soon_threadsafe(start)
        try:
            return outcome.result()
        except KeyboardInterrupt:
            # Runs after start() (the loop keeps their order), even if start() has not run yet.
            self._loop.call_soon_threadsafe(lambda: tasks[0].cancel())
            # Not concurrent.futures.wait(): Future.cancel() does not wake it, so every
            # Ctrl-C sat out the whole wait. exception() is woken by cancel() too.
            with contextlib.suppress(concurrent.futures.CancelledError, TimeoutError):
                outcome.exception(_CLEAN_UP_WAIT)
            raise

    def __enter__(self) -> SyncClient:
        try:
            self._run(self.client.__aenter__())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # After Ctrl-C, a server that has gone silent gets only a moment for its goodbye.
        self.quit(wait=INTERRUPTED_WAIT if exc_type is KeyboardInterrupt else None)

    def connect(self) -> Reply:
        return self._run(self.client.connect())

    def login(self, user: str | None = None, password: str | None = None) -> None:
        self._run(self.client.login(user, password))

    def quit(self, *, wait: float | None = None) -> None:
        """End the session and stop the private loop; safe to call twice (``wait``: as
        Client.quit's)."""
        if self._ended:
            return
        try:
            self._run(self.client.quit(wait=wait))
        finally:
            self._stop_loop()

    close = quit

    def _stop_loop(self) -> None:
        self._ended = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def features(self) -> dict[str, str]:
        return self.client.features

    def command(self, line: str) -> Reply:
        return self._run(self.client.command(line))

    def pwd(self) -> str:
        return self._run(self.client.pwd())

    def cwd(self, path: str) -> None:
        self._run(self.client.cwd(path))

    def mkdir(self, path: str) -> str:
        return self._run(self.client.mkdir(path))

    def rmdir(self, path: str) -> None:
        self._run(self.client.rmdir(path))

    def delete(self, path: str) -> None:
        self._run(self.client.delete(path))

    def rename(self, source: str, target: str) -> None:
        self._run(self.client.rename(source, target))

    def size(self, path: str) -> int:
        return self._run(self.client.size(path))

    def mdtm(self, path: str) -> datetime:
        return self._run(self.client.mdtm(path))

    def hash(self, path: str, algorithm: str | None = None) -> RemoteHash:
        return self._run(self.client.hash(path, algorithm))

    def verify(
        self, remote: str, local: str | PathLike[str], algorithm: str | None = None
    ) -> RemoteHash:
        return self._run(self.client.verify(remote, local, algorithm))

    def list(self, path: str = "") -> RemoteListing:
        return self._run(self.client.list(path))

    def nlst(self, path: str = "") -> builtins.list[str]:
        return self._run(self.client.nlst(path))

    def stat(self, path: str) -> RemoteEntry:
        return self._run(self.client.stat(path))

    def download(
        self,
        remote: str,
        destination: str | PathLike[str] | IO[bytes],
        *,
        resume: bool = False,
        offset: int = 0,
        progress: Progress | None = None,
        size: int | None = None,
    ) -> TransferResult:
        return self._run(
            self.client.download(
                remote, destination, resume=resume, offset=offset, progress=progress, size=size
            )
        )

    def iter_download(self, remote: str, *, offset: int = 0) -> Iterator[bytes]:
        """Chunks of ``remote`` as they arrive; stopping early aborts the transfer."""
        manager = self.client.open_download(remote, offset=offset)
        chunks = self._run(manager.__aenter__())
        failed: BaseException | None = None
        try:
            while True:
                try:
                    yield self._run(_next_chunk(chunks))
                except StopAsyncIteration:
                    break
        except GeneratorExit:
            pass  # the caller stopped early: a clean exit, which aborts the transfer
        except BaseException as error:
            failed = error
            raise
        finally:
            kind = type(failed) if failed is not None else None
            self._run(manager.__aexit__(kind, failed, None))

    def upload(
        self,
        source: str | PathLike[str] | IO[bytes] | Iterable[bytes],
        remote: str,
        *,
        resume: bool = False,
        append: bool = False,
        progress: Progress | None = None,
    ) -> TransferResult:
        return self._run(
            self.client.upload(source, remote, resume=resume, append=append, progress=progress)
        )


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    return await anext(chunks)
