"""The server under test: its configuration, its process, and what /proc says about it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import argon2

from harness.ports import bindable, ephemeral_ports
from harness.procfs import CLOCK_TICKS, cpu_ticks, fd_count, process_tree, rss

# -- ports ---------------------------------------------------------------------


def choose_ports(size: int) -> tuple[int, tuple[int, int], int]:
    """A control port P (with P-1 free for active mode), a passive range of ``size``,
    and a *dead* port, where nothing listens, for PORT commands meant to fail.

    All stay clear of the ephemeral range, where the clients' own sockets
    would take ports the server means to bind. The dead port must be outside
    it too: a port freed there is soon another client's active-mode listener,
    and a PORT naming it would hand that client a stranger's data connection.
    A candidate passive range is taken when at most 2% of it is busy (the
    pool skips ports in use).
    """
    ephemeral = ephemeral_ports()
    candidates = [30000, 20000, 10000, 40000, 62000 - size]
    for low in candidates:
        high = low + size - 1
        if high > 65535 or (low <= ephemeral.stop - 1 and high >= ephemeral.start):
            continue
        busy = sum(not bindable(port) for port in range(low, high + 1))
        if busy > size // 50:
            continue
        free = (
            port
            for port in range(low - 10, max(low - 2000, 1100), -1)
            if port not in ephemeral and bindable(port) and bindable(port - 1)
        )
        control = next(free, None)
        dead = next((port for port in free if control and port < control - 1), None)
        if control is not None and dead is not None:
            return control, (low, high), dead
    raise SystemExit(f"no free passive port range of {size} ports outside {ephemeral}")


# -- the configuration -----------------------------------------------------------


@dataclass(frozen=True)
class ServerSetup:
    config_path: Path
    port: int
    passive: tuple[int, int]
    home: Path
    dead_port: int
    user: str
    password: str
    stall_timeout: float
    idle_timeout: float
    data_connect_timeout: float


def write_config(
    directory: Path,
    *,
    sessions: int,
    stall_timeout: float,
    idle_timeout: float,
    data_connect_timeout: float,
) -> ServerSetup:
    root = directory / "root"
    home = directory / "home" / "soak"
    root.mkdir(parents=True)
    home.mkdir(parents=True)
    size = max(2000, 3 * sessions)
    port, (low, high), dead_port = choose_ports(size)
    password = "soak-" + os.urandom(6).hex()
    # Cheap parameters: 500 sessions log in again and again, and the cost of
    # a real argon2 hash is not what this test measures.
    password_hash = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)
    limit = max(2000, 2 * sessions + 200)
    settings: dict[str, object] = {
        "listen_address": "127.0.0.1",
        "port": port,
        "root": str(root),
        "banner": "ketch soak test",
        "passive_ports": f"{low}-{high}",
        "active_source_port": "auto",
        "max_connections": limit,
        "max_connections_per_ip": limit,
        "idle_timeout": idle_timeout,
        "data_connect_timeout": data_connect_timeout,
        "data_stall_timeout": stall_timeout,
        "login_failure_delay": 0.5,
        "log_level": "info",
    }
    # Every session logs in as the one user from the one address 127.0.0.1,
    # so limits per user and bans per address must not apply. Settings only
    # some versions of the server know are left out where it does not.
    optional: dict[str, object] = {"max_sessions_per_user": 0, "ban_exempt": ["127.0.0.0/8"]}
    known = _known_settings()
    settings.update({key: value for key, value in optional.items() if key in known})
    user = {
        "name": "soak",
        "password_hash": password_hash,
        "home": str(home),
        "permissions": ["all"],
    }
    lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["", "[anonymous]", "enabled = false", "", "[[users]]"]
    lines += [f"{key} = {_toml(value)}" for key, value in user.items()]
    config_path = directory / "ketch-soak.toml"
    config_path.write_text("\n".join(lines) + "\n")
    return ServerSetup(
        config_path,
        port,
        (low, high),
        home,
        dead_port,
        "soak",
        password,
        stall_timeout,
        idle_timeout,
        data_connect_timeout,
    )


def _known_settings() -> set[str]:
    from ketch.config_models import ServerConfig

    return set(ServerConfig.model_fields)


def _toml(value: object) -> str:
    """A TOML value for the few types a configuration holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


# -- the process -----------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, without the children it reaped."""
    return (cpu_ticks(pid) - cpu_ticks(pid, own=False)) / CLOCK_TICKS


@dataclass
class ServerProcess:
    setup: ServerSetup
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    exit: dict[str, object] = field(default_factory=dict)

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ketch", "serve", "--config", str(self.setup.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"the server exited with status {self.process.returncode} at start-up:\n"
                    + self.log_path.read_text(errors="replace")
                )
            if self._greets():
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("the server did not answer within 30 s:\n" + self.log_path.read_text())

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.setup.port), timeout=2) as sock:
                return sock.recv(100).startswith(b"220")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def rss(self) -> int:
        return sum(rss(pid) for pid in self.tree())

    def fds(self) -> int:
        return sum(fd_count(pid) for pid in self.tree())

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.tree())

    def stop(self, wait: float = 30.0) -> dict[str, object]:
        """SIGTERM, then wait (bounded); SIGKILL if it will not go."""
        if self.process is None:
            return {}
        if self.process.poll() is not None:
            self.exit = {"status": self.process.returncode, "note": "had already exited"}
            return self.exit
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(wait)
            note = "exited after SIGTERM"
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
            note = f"did not exit within {wait:g} s of SIGTERM; killed"
        self.exit = {
            "status": status,
            "seconds": round(time.monotonic() - started, 2),
            "note": note,
        }
        return self.exit


# -- the log ---------------------------------------------------------------------

# ketch.server.log_format's lines: "TIME LEVEL LOGGER: MESSAGE", the logger labelled in a
# worker ("ketch.server[worker 1]", with a space).
_LEVEL = re.compile(r"^\S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.+?): (.*)$")
# result= is followed only by reason= (not for ok; quoted when it has spaces) and by
# whatever the log format appends (session=N): a reason quoting "result=ok" is no match.
_RESULT = re.compile(
    r'^transfer (\w+) .* result=(\w+)(?: reason=(?:"(?:[^"\\]|\\.)*"|[^\s"]+))?(?: \w+=[^\s"]+)*$'
)
_NUMBERS = re.compile(r"\d+(\.\d+)?")


def scan_log(path: Path) -> dict[str, object]:
    """Counts of the server's log lines by level and transfer outcome, and examples."""
    levels: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    tracebacks = 0
    with contextlib.suppress(OSError), path.open(errors="replace") as log:
        for line in log:
            line = line.rstrip("\n")
            if line.startswith("Traceback"):
                tracebacks += 1
            match = _LEVEL.match(line)
            if match is None:
                continue
            level, _, message = match.groups()
            levels[level] += 1
            result = _RESULT.match(message)
            if result:
                outcomes[f"{result[1]} {result[2]}"] += 1
            if level in ("WARNING", "ERROR", "CRITICAL"):
                # Group messages that differ only in numbers (ports, addresses, times).
                kind = f"{level} " + _NUMBERS.sub("N", message)[:90]
                kinds[kind] += 1
                examples.setdefault(kind, line[:400])
    return {
        "levels": dict(levels),
        "tracebacks": tracebacks,
        "transfers": dict(sorted(outcomes.items())),
        "problems": [
            {"count": count, "kind": kind, "example": examples[kind]}
            for kind, count in kinds.most_common(25)
        ],
    }
