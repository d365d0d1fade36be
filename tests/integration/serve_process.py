"""`python -m ketch serve` as a real subprocess: start, read its output, signal, stop.

Output is read by threads into lists, so every wait is bounded in time and a
failing test can show what the server said.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

KETCH_SERVE = [sys.executable, "-m", "ketch", "serve"]
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class ServeProcess:
    """One `ketch serve` process and the lines it has written so far."""

    def __init__(self, args: list[str], cwd: Path, *, new_session: bool = False) -> None:
        self.process = subprocess.Popen(
            [*KETCH_SERVE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=cwd,
            start_new_session=new_session,  # a process group of its own, to signal whole
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pump(self, stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()

    def wait_for(
        self, marker: str, *, stream: str = "stderr", timeout: float = 10.0, start: int = 0
    ) -> str:
        """The first line (from index ``start``) containing ``marker``; fails after ``timeout``."""
        lines = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in lines[start:]:
                    if marker in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._alive()):
                    raise AssertionError(
                        f"no {stream} line with {marker!r} within {timeout} s "
                        f"(exit code {self.process.poll()})\n{self.output()}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def _alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def wait_started(self) -> None:
        self.wait_for("  try ", stream="stdout", timeout=STARTUP_TIMEOUT)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit; safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        for thread in self._threads:
            thread.join(timeout=5)

    def output(self) -> str:
        return "--- stdout ---\n" + "".join(self.stdout) + "--- stderr ---\n" + "".join(self.stderr)


@contextmanager
def ketch_serve(args: list[str], cwd: Path, *, new_session: bool = False) -> Iterator[ServeProcess]:
    """Start `ketch serve` with ``args``, wait for its summary, stop it afterwards."""
    server = ServeProcess(args, cwd, new_session=new_session)
    try:
        server.wait_started()
        yield server
    finally:
        server.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def connection_refused(host: str, port: int) -> bool:
    """Whether a new control connection fails (refused, or told 421 at once)."""
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except ConnectionRefusedError:
        return True
    with sock:
        try:
            greeting = sock.recv(1024)
        except OSError:
            return True
    return greeting == b"" or greeting.startswith(b"421")


def process_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict; empty when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and process_status(int(entry)).get("PPid") == str(pid):
            found.append(int(entry))
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
