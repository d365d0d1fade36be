"""What `make run` does, end to end: `ketch serve` as a subprocess, then curl lists its files.

The server is started on a free port (not `make run`'s 2121) so the test
cannot clash with a server a developer already has running.
"""

from __future__ import annotations

import ftplib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from conftest import require_program

KETCH = Path(sys.executable).with_name("ketch")
STARTUP_TIMEOUT = 15
STOP_TIMEOUT = 10
PASSIVE_RANGE = "43000-43099"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Copy a pipe's lines into a queue (None at EOF), so reads can be bounded in time."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def wait_for_line(
    lines: queue.Queue[str | None], seen: list[str], marker: str, timeout: float
) -> str | None:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            return None
        if line is None:
            return None
        seen.append(line)
        if marker in line:
            return line
    return None


REPOSITORY = Path(__file__).resolve().parents[2]


def test_make_run_passes_a_root_with_spaces_and_quotes_as_one_argument(tmp_path: Path) -> None:
    # `make run ROOT="/tmp/x y"` ran `ketch serve --root /tmp/x y`: an extra-argument error.
    make = require_program("make")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "ketch").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (fake_bin / "ketch").chmod(0o755)
    root = str(tmp_path / "it's a dir")
    # -o: the venv stamp counts as made, so only the run recipe's command runs.
    make_run = [make, "-s", "-C", str(REPOSITORY), "-o", ".venv/.installed", "run"]
    result = subprocess.run(
        [*make_run, f"BIN={fake_bin}", f"ROOT={root}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["serve", "--root", root]


@pytest.mark.peer
def test_ketch_serve_as_make_run_starts_serves_curl_and_stops_on_sigterm(tmp_path: Path) -> None:
    curl = require_program("curl")
    assert KETCH.exists(), f"{KETCH} is missing: install the project (make test does)"
    root = tmp_path / "served"
    root.mkdir()
    (root / "served-file.txt").write_bytes(b"served by make run\n")
    (root / "served-dir").mkdir()
    port = free_port()

    process = subprocess.Popen(
        [
            str(KETCH),
            "serve",
            "--root",
            str(root),
            "--port",
            str(port),
            "--passive-ports",
            PASSIVE_RANGE,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        cwd=tmp_path,
        # stdout is a pipe, as under `make run | tee log`: ketch itself must flush the summary.
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    stdout_lines: queue.Queue[str | None] = queue.Queue()
    stderr_lines: queue.Queue[str | None] = queue.Queue()
    threads = [
        threading.Thread(target=pump, args=(process.stdout, stdout_lines), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, stderr_lines), daemon=True),
    ]
    for thread in threads:
        thread.start()
    startup: list[str] = []
    try:
        try_line = wait_for_line(stdout_lines, startup, "try", STARTUP_TIMEOUT)
        assert try_line is not None, (
            f"no 'try' line within {STARTUP_TIMEOUT} s; stdout so far: {startup!r}; "
            f"exit code {process.poll()}; stderr: {drain(stderr_lines)!r}"
        )
        banner = "".join(startup)

        # The start-up summary names the passive range and a ready-to-paste command.
        assert PASSIVE_RANGE in banner, banner
        assert f"curl ftp://127.0.0.1:{port}/" in try_line, try_line
        command = try_line.split("try", 1)[1].split()
        assert command == ["curl", f"ftp://127.0.0.1:{port}/"], try_line

        listed = subprocess.run(
            [curl, "-sS", "--max-time", "30", f"ftp://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert listed.returncode == 0, listed.stderr
        names = {line.split(None, 8)[8]: line[0] for line in listed.stdout.splitlines()}
        assert names == {"served-file.txt": "-", "served-dir": "d"}, listed.stdout

        fetched = subprocess.run(
            [curl, "-sS", "--max-time", "30", f"ftp://127.0.0.1:{port}/served-file.txt"],
            capture_output=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout == b"served by make run\n"

        # Stopping must not wait for a client that is still logged in (as after Ctrl-C).
        client = ftplib.FTP(timeout=10)
        client.connect("127.0.0.1", port)
        assert client.login().startswith("230")
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ketch serve did not exit within {STOP_TIMEOUT} s of SIGTERM")
        # The logged-in client is told why the connection ends (RFC 959 421).
        assert client.getline().startswith("421 Server shutting down")
        client.close()
        assert code == 0, f"exit code {code}; stderr: {drain(stderr_lines)!r}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        for thread in threads:
            thread.join(timeout=5)


def drain(lines: queue.Queue[str | None]) -> str:
    text = []
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if line is not None:
            text.append(line)
    return "".join(text)
