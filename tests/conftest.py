"""Shared fixtures: a real ketch server on loopback, running in a thread of its own.

The server runs its own event loop in a background thread so that tests can
drive it with blocking clients (ftplib) and external programs (curl, lftp)
exactly as users do.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import pytest

from ketch.config import load_config
from ketch.server import FtpServer
from ketch.server.event_loop import loop_factory

from payloads import BIG, MIB, Payload

# Cheap argon2 parameters: the tests measure the server, not the hash.
_CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
USER, PASSWORD = "alice", "s3cret"
READER, READER_PASSWORD = "reader", "r3ad"


@dataclass
class RunningServer:
    server: FtpServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    root: Path  # anonymous root
    home: Path  # alice's home

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.server.context.counters)

    def url(self, path: str = "/", user: str | None = USER, password: str = PASSWORD) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"ftp://{auth}{self.host}:{self.port}{path}"

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.close(), self.loop)
        future.result(timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=15)


def start_server(
    config_overrides: dict[str, Any],
) -> tuple[FtpServer, asyncio.AbstractEventLoop, threading.Thread]:
    config = load_config(None, config_overrides)
    # KETCH_EVENT_LOOP=uvloop runs the in-process servers on uvloop too (default: asyncio).
    loop = (loop_factory("asyncio") or asyncio.new_event_loop)()
    server = FtpServer(config)
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as error:  # report start-up failures to the test
            failure.append(error)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run, name="ketch-server", daemon=True)
    thread.start()
    if not ready.wait(timeout=15):
        raise RuntimeError("server did not start within 15 s")
    if failure:
        raise failure[0]
    return server, loop, thread


def control_port_with_free_neighbour(attempts: int = 50) -> int:
    """A free port P whose neighbour P-1 is free too, as active mode's default source.

    With port 0 the server could land next to a port held by one of the many
    connections a test run leaves in TIME_WAIT, and its active connections
    would then come from an ephemeral port instead of P-1 (correctly, but not
    what the tests that check P-1 expect).
    """
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            with socket.socket() as neighbour:
                neighbour.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    neighbour.bind(("127.0.0.1", port - 1))
                except OSError:
                    continue
        return port
    raise RuntimeError(f"no free pair of neighbouring ports found in {attempts} tries")


def alice_with(home: Path, **limits: Any) -> dict[str, Any]:
    """make_server overrides for alice alone (all permissions) with per-user ``limits``."""
    user = {
        "name": USER,
        "password_hash": _CHEAP_HASHER.hash(PASSWORD),
        "home": str(home),
        "permissions": ["all"],
    }
    return {"users": [{**user, **limits}]}


@pytest.fixture
def served_tree(tmp_path: Path) -> tuple[Path, Path]:
    """An anonymous root with a few files, and alice's writable home."""
    root = tmp_path / "pub"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "docs").mkdir()
    (root / "docs" / "readme.md").write_bytes(b"# docs\n")
    home = tmp_path / "alice"
    home.mkdir()
    reader_home = tmp_path / "reader"
    reader_home.mkdir()
    (reader_home / "secret.txt").write_bytes(b"for readers\n")
    return root, home


@pytest.fixture
def make_server(served_tree: tuple[Path, Path]) -> Iterator[Callable[..., RunningServer]]:
    """Start a server with test-friendly defaults; any setting can be overridden."""
    root, home = served_tree
    started: list[RunningServer] = []

    def factory(**overrides: Any) -> RunningServer:
        settings: dict[str, Any] = {
            "listen_address": "127.0.0.1",
            "port": control_port_with_free_neighbour(),
            "root": str(root),
            "passive_ports": "21000-21999",  # below the ephemeral range: no clash with client ports
            "login_failure_delay": 0.05,
            "data_connect_timeout": 5,
            "users": [
                {
                    "name": USER,
                    "password_hash": _CHEAP_HASHER.hash(PASSWORD),
                    "home": str(home),
                    "permissions": ["all"],
                },
                {
                    "name": READER,
                    "password_hash": _CHEAP_HASHER.hash(READER_PASSWORD),
                    "home": str(home.parent / "reader"),
                    "permissions": ["list", "read"],
                },
            ],
        }
        # Anonymous as well as the accounts, as a file must ask for explicitly.
        anonymous = {"enabled": True, **overrides.pop("anonymous", {})}
        settings.update(overrides, anonymous=anonymous)
        server, loop, thread = start_server(settings)
        running = RunningServer(server, loop, thread, root, home)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


def require_program(name: str) -> str:
    """The path of an external peer; skip (or fail in CI, where make test installs it) if absent."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; `make test` installs it (apt-get install {name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# -- payloads for transfer tests ------------------------------------------------


@pytest.fixture(scope="session")
def big_payload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Payload]:
    """50 MiB of random bytes, made once for the whole run."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(BIG // MIB):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            file.write(chunk)
    yield Payload(path, digest.hexdigest())
    path.unlink()


@pytest.fixture(autouse=True)
def _drop_big_files(tmp_path: Path) -> Iterator[None]:
    """Delete the test's copies of big files afterwards: pytest keeps three runs of tmp dirs."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size >= MIB:
            path.unlink()
