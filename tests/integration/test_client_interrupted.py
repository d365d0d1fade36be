"""Cancelling a client transfer (Ctrl-C, a caller's timeout) against a server gone silent.

The server is a scripted thread on loopback (real sockets): it starts a
download, sends a few bytes, then answers nothing, not even ABOR or QUIT. The
client's clean-up must then give up within moments, not wait out its timeout.
Against ketch itself, which answers ABOR at once, the interrupt must go on as
soon as that clean-up is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ketch.client import Client, FtpError, SyncClient
from ketch.client.control import INTERRUPTED_WAIT
from ketch.client.sync import _CLEAN_UP_WAIT

from conftest import PASSWORD, USER, RunningServer, alice_with
from ftp_helpers import command_lines

CLIENT_TIMEOUT = 30.0


def silent_after_five_bytes(listener: socket.socket, done: threading.Event) -> None:
    control, _ = listener.accept()
    control.settimeout(60)
    data_listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    with control, data_listener:
        control.sendall(b"220 scripted\r\n")
        replies = {"USER": b"331 password\r\n", "PASS": b"230 in\r\n", "TYPE": b"200 ok\r\n"}
        for line in command_lines(control):
            verb = line.partition(" ")[0].upper()
            if verb in replies:
                control.sendall(replies[verb])
            elif verb == "EPSV":
                port = data_listener.getsockname()[1]
                control.sendall(f"229 passive (|||{port}|)\r\n".encode())
            elif verb == "RETR":
                data, _ = data_listener.accept()
                held.append(data)
                control.sendall(b"150 here it comes\r\n")
                data.sendall(b"12345")  # and then nothing more, on either connection
            elif verb in ("SIZE", "FEAT"):
                control.sendall(b"502 not here\r\n")
            # ABOR, NOOP, QUIT and the rest: silence
            if done.is_set():
                break
    for data in held:
        data.close()


def test_cancelling_a_download_from_a_silent_server_ends_within_moments() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    server = threading.Thread(target=silent_after_five_bytes, args=(listener, done), daemon=True)
    server.start()
    port = listener.getsockname()[1]

    async def main() -> float:
        started = asyncio.Event()

        async def download() -> None:
            async with Client(
                "127.0.0.1", port, user="u", password="p", mode="passive", timeout=CLIENT_TIMEOUT
            ) as ftp:
                await ftp.download("f", io.BytesIO(), progress=lambda *_: started.set())

        task = asyncio.create_task(download())
        await asyncio.wait_for(started.wait(), 20)
        cancelled_at = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, CLIENT_TIMEOUT * 3)
        return time.monotonic() - cancelled_at

    try:
        took = asyncio.run(main())
    finally:
        done.set()
        listener.close()
    # Bounded by the clean-up waits (resync, then QUIT), not by the 30 s timeout.
    assert took < 3 * INTERRUPTED_WAIT + 1, took
    server.join(5)
    assert not server.is_alive()  # it saw the control connection closed


def test_ctrl_c_in_a_sync_download_stops_it_cleanly_and_the_session_says_it_ended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    server = threading.Thread(target=silent_after_five_bytes, args=(listener, done), daemon=True)
    server.start()
    interrupted: list[threading.Timer] = []

    def press_ctrl_c(*_: object) -> None:  # on the client's loop thread: SIGINT to main
        if not interrupted:
            interrupted.append(threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)))
            interrupted[0].start()

    port = listener.getsockname()[1]
    ftp = SyncClient("127.0.0.1", port, user="u", password="p", mode="passive", timeout=30)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"), ftp:
            with pytest.raises(KeyboardInterrupt):
                ftp.download("f", io.BytesIO(), progress=press_ctrl_c)
            took = time.monotonic() - started
            # The download stopped with the Ctrl-C, not at the end of the with block: a
            # caller that catches KeyboardInterrupt has no transfer going on behind it.
            assert not [task for task in asyncio.all_tasks(ftp._loop) if not task.done()]
    finally:
        done.set()
        listener.close()
    assert took < 6 * INTERRUPTED_WAIT, took  # not the 30 s timeout
    gc.collect()  # asyncio logs a pending task when it is collected, not before
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    with pytest.raises(FtpError, match="has ended"):
        ftp.pwd()
    server.join(5)
    assert not server.is_alive()  # it saw the control connection closed


def test_ctrl_c_in_a_sync_download_from_a_server_that_answers_returns_once_cleaned_up(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    # ketch answers ABOR and QUIT at once: the KeyboardInterrupt must go on as soon as
    # that clean-up is done, not after the whole wait allowed for a silent server.
    home = served_tree[1]
    (home / "slow.bin").write_bytes(bytes(1 << 20))
    server = make_server(**alice_with(home, download_rate=64 * 1024))
    pressed_at: list[float] = []

    def ctrl_c() -> None:
        pressed_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    def press_ctrl_c_soon(*_: object) -> None:  # on the client's loop thread
        if not pressed_at and not interrupted:
            interrupted.append(threading.Timer(0.2, ctrl_c))
            interrupted[0].start()

    interrupted: list[threading.Timer] = []
    with SyncClient(server.host, server.port, user=USER, password=PASSWORD, timeout=30) as ftp:
        with pytest.raises(KeyboardInterrupt):
            ftp.download("slow.bin", io.BytesIO(), progress=press_ctrl_c_soon)
        took = time.monotonic() - pressed_at[0]
    assert took < _CLEAN_UP_WAIT / 2, took
