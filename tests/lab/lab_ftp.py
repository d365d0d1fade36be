"""ketch servers and clients inside lab hosts: start, run, read what they said.

Servers are `ketch serve --config` processes whose log goes to a file; clients
are `ketch` commands run to completion inside a host's namespace. Timeouts are
short (the server gives up on a data connection after 2 s, the client after
3 s) so every failure shows up in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.processes import stop_group
from topology import Host

CONTROL_PORT = 21
PASSIVE_PORTS = "50000-50009"
SERVER_DATA_TIMEOUT = 2.0  # the server's data_connect_timeout
CLIENT_DATA_TIMEOUT = "3"  # longer than the server's: its listener expires (and logs) first
LISTING = ["one.txt", "two.txt"]
LOG_WAIT = 10.0
STARTUP_WAIT = 15.0


@dataclass
class FtpServer:
    """A `ketch serve --config` process in a lab host, and its log."""

    host: Host
    ip: str
    port: int
    config_file: Path
    log_file: Path
    process: subprocess.Popen[str]

    def url(self) -> str:
        return f"ftp://{self.ip}:{self.port}/"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_for_log(self, marker: str, timeout: float = LOG_WAIT) -> str:
        """The first log line containing ``marker``; fails with the whole log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if marker in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no server log line with {marker!r}:\n{self.log()}")
            time.sleep(0.1)

    def wait_started(self) -> None:
        """Wait for the start-up summary, which `ketch serve` prints once it listens."""
        deadline = time.monotonic() + STARTUP_WAIT
        while "\n  try " not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_group(self.process, 10)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, settings: Mapping[str, object]) -> Path:
    """A TOML file: plain keys first, then one table per dict value."""
    lines = [f"{key} = {toml_value(value)}" for key, value in settings.items()
             if not isinstance(value, dict)]  # fmt: skip
    for key, value in settings.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{json.dumps(name)} = {toml_value(item)}" for name, item in value.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def server_settings(root: Path, **settings: object) -> dict[str, object]:
    return {
        "listen_address": "0.0.0.0",
        "port": CONTROL_PORT,
        "root": str(root),
        "passive_ports": PASSIVE_PORTS,
        "data_connect_timeout": SERVER_DATA_TIMEOUT,
        "log_level": "info",
        **settings,
    }


def served_root(directory: Path) -> Path:
    root = directory / "served"
    if not root.exists():
        root.mkdir()
        for name in LISTING:
            (root / name).write_text(f"{name}\n")
    return root


def start_servers(
    host: Host, ip: str, directory: Path, *configs: dict[str, object]
) -> list[FtpServer]:
    """Start one `ketch serve` per settings dict in ``host``, in parallel; wait for all."""
    servers = []
    for settings in configs:
        port = settings.get("port", CONTROL_PORT)
        assert isinstance(port, int)
        config_file = write_config(directory / f"server-{ip}-{port}.toml", settings)
        log_file = directory / f"server-{ip}-{port}.log"
        process = host.ns.start(
            [sys.executable, "-m", "ketch", "serve", "--config", str(config_file)], log_file
        )
        servers.append(FtpServer(host, ip, port, config_file, log_file, process))
    for server in servers:
        server.wait_started()
    return servers


@dataclass(frozen=True)
class Run:
    """What a `ketch` command printed and its exit code."""

    code: int
    out: str
    err: str

    def lines_sent(self) -> list[str]:
        """The commands of the -v transcript."""
        return [line[2:] for line in self.err.splitlines() if line.startswith("> ")]

    def replies(self) -> list[str]:
        return [line[2:] for line in self.err.splitlines() if line.startswith("< ")]


def ketch(host: Host, *args: str) -> Run:
    result = host.ns.run([sys.executable, "-m", "ketch", *args], timeout=60)
    return Run(result.returncode, result.stdout, result.stderr)


def ls(host: Host, url: str, *options: str) -> Run:
    return ketch(
        host, "ls", "--names", "-v", "--data-timeout", CLIENT_DATA_TIMEOUT,
        "--connect-timeout", "5", "--timeout", "15", *options, url,
    )  # fmt: skip


def doctor(host: Host, url: str) -> dict[str, Any]:
    run = ketch(host, "doctor", "--timeout", CLIENT_DATA_TIMEOUT, "--json", url)
    try:
        report = json.loads(run.out)
    except json.JSONDecodeError:
        raise AssertionError(
            f"doctor printed no JSON (exit {run.code}):\n{run.out}\n{run.err}"
        ) from None
    assert isinstance(report, dict)
    report["exit_code"] = run.code
    return report


NATINFO_SCRIPT = """
import ftplib, sys
ftp = ftplib.FTP()
ftp.connect(sys.argv[1], int(sys.argv[2]), timeout=10)
ftp.login()
print(ftp.sendcmd("SITE NATINFO"))
ftp.quit()
"""


def natinfo(host: Host, server: FtpServer) -> dict[str, str]:
    """What `SITE NATINFO` (C2) tells a client in ``host``, as a dict."""
    result = host.ns.run([sys.executable, "-c", NATINFO_SCRIPT, server.ip, str(server.port)])
    assert result.returncode == 0, result.stderr
    facts = {}
    for line in result.stdout.splitlines():
        if line.startswith(" ") and ": " in line:
            key, value = line[1:].split(": ", 1)
            facts[key] = value
    return facts


def firewall_rules(config_file: Path, *options: str) -> str:
    """What `ketch firewall` prints for this configuration (C5)."""
    result = subprocess.run(
        [sys.executable, "-m", "ketch", "firewall", "--config", str(config_file), *options],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_lists(run: Run) -> None:
    assert run.code == 0, run.err
    assert run.out.split() == LISTING, run.err


def data_commands(run: Run) -> list[str]:
    verbs = ("EPSV", "PASV", "EPRT", "PORT")
    return [line.split(" ")[0] for line in run.lines_sent() if line.startswith(verbs)]


def reply_with(run: Run, code: str) -> str:
    """The (last) reply line of the -v transcript that starts with ``code``."""
    found = [reply for reply in run.replies() if reply.startswith(code)]
    assert found, run.err
    return found[-1]


def error_line(run: Run) -> str:
    """The one-line failure the command printed last."""
    lines = [line for line in run.err.splitlines() if line.startswith("ketch: ")]
    assert lines, run.err
    return lines[-1]
