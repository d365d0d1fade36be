"""Fixtures for the integration tests: real vsftpd and pure-ftpd servers on loopback.

The servers themselves are started by ``peer_servers`` (tests/peer_servers.py);
these fixtures skip when they cannot run here and stop them afterwards. On
a failing test, the server's log shows under "Captured stdout teardown".
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peer_servers import (
    PURE_FTPD,
    PURE_PW,
    VSFTPD,
    PeerServer,
    start_pure_ftpd,
    start_vsftpd,
)

LOG_LINES_SHOWN = 200
TOP_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def pytest_configure(config: pytest.Config) -> None:
    """Give the module name ``conftest`` back to tests/conftest.py.

    tests/ is no package, so every conftest.py there imports as module
    ``conftest``, and pytest lets the one loaded last (this one) take the
    name. The test modules of this folder mean tests/conftest.py when they
    write ``from conftest import RunningServer``. pytest calls this hook
    as soon as it registers this file, before it imports those test modules.
    """
    for plugin in config.pluginmanager.get_plugins():
        module_file = getattr(plugin, "__file__", None)
        if module_file and Path(module_file).resolve() == TOP_CONFTEST:
            sys.modules["conftest"] = plugin
            return
    raise RuntimeError(f"{TOP_CONFTEST} is not loaded as a pytest plugin")


def require_peer_binaries(*binaries: Path) -> None:
    """Skip unless root and the unpacked binaries exist; in CI, missing binaries fail."""
    if os.geteuid() != 0:
        pytest.skip("needs root: vsftpd and pure-ftpd drop privileges to an unprivileged user")
    missing = [str(path) for path in binaries if not os.access(path, os.X_OK)]
    if missing:
        message = (
            f"{', '.join(missing)} not found: "
            "run `scripts/fetch-peer-servers .peers` (make test does it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _show_log(server: PeerServer) -> None:
    lines = server.log().splitlines()[-LOG_LINES_SHOWN:]
    print(f"--- {server.name} log ({server.log_path}), last {len(lines)} lines ---")
    print("\n".join(lines))


@contextlib.contextmanager
def _started_peers(
    tmp_path: Path, name: str, start: Callable[..., PeerServer]
) -> Iterator[Callable[..., PeerServer]]:
    """A factory that starts peer servers with ``start`` and stops them all afterwards."""
    started: list[PeerServer] = []

    def factory(**options: Any) -> PeerServer:
        server = start(tmp_path / f"{name}-{len(started)}", **options)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()
            _show_log(server)


@pytest.fixture
def make_vsftpd(tmp_path: Path) -> Iterator[Callable[..., PeerServer]]:
    """Start vsftpd servers, e.g. ``make_vsftpd(extra_config={"cmds_denied": "EPSV"})``."""
    require_peer_binaries(VSFTPD)
    with _started_peers(tmp_path, "vsftpd", start_vsftpd) as factory:
        yield factory


@pytest.fixture
def make_pure_ftpd(tmp_path: Path) -> Iterator[Callable[..., PeerServer]]:
    """Start pure-ftpd servers, e.g. ``make_pure_ftpd(extra_args=["-G"])`` (no renames)."""
    require_peer_binaries(PURE_FTPD, PURE_PW)
    with _started_peers(tmp_path, "pure-ftpd", start_pure_ftpd) as factory:
        yield factory


@pytest.fixture
def vsftpd_server(make_vsftpd: Callable[..., PeerServer]) -> PeerServer:
    """vsftpd with anonymous logins (user ``anonymous``), writable in ``pub``."""
    return make_vsftpd()


@pytest.fixture
def pure_ftpd_server(make_pure_ftpd: Callable[..., PeerServer]) -> PeerServer:
    """pure-ftpd with the virtual user alice/s3cret, writable in the login directory."""
    return make_pure_ftpd()


@pytest.fixture(scope="module")
def vsftpd_server_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerServer]:
    """One vsftpd for a whole test module: tests must clean up what they leave in ``pub``."""
    require_peer_binaries(VSFTPD)
    server = start_vsftpd(tmp_path_factory.mktemp("vsftpd-shared"))
    yield server
    server.stop()
