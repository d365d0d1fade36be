"""Network namespaces for lab tests: hosts the test builds itself and tears down.

A namespace starts with nothing but its own loopback, so a test can add
addresses from 198.18.0.0/15 and nftables rules (drop, NAT) without touching
the machine's real network. Every process started in it is killed and the
namespace deleted when the test ends, also on failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness.processes import stop_group

_counter = itertools.count()
COMMAND_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def unavailable_reason() -> str | None:
    """Why lab tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root: lab tests create network namespaces and nftables rules"
    for program in ("ip", "nft"):
        if shutil.which(program) is None:
            return f"{program} is not installed; `make test` installs it (iproute2, nftables)"
    return None


class NetNamespace:
    """One network namespace; use as a context manager."""

    def __init__(self, label: str) -> None:
        self.name = f"ketch-{label}-{os.getpid()}-{next(_counter)}"
        self._processes: list[subprocess.Popen[str]] = []

    def __enter__(self) -> NetNamespace:
        _check(["ip", "netns", "add", self.name])
        try:
            self.run_checked(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    def command(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, args: Sequence[str], *, timeout: float = COMMAND_TIMEOUT, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and capture its output."""
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            self.command(args), capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def run_checked(self, args: Sequence[str]) -> str:
        result = self.run(args)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed in {self.name}: {result.stderr.strip()}")
        return result.stdout

    def start(self, args: Sequence[str], log_path: Path) -> subprocess.Popen[str]:
        """Start a long-running process in the namespace, its output going to ``log_path``."""
        log = log_path.open("w")
        process = subprocess.Popen(
            self.command(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        log.close()
        self._processes.append(process)
        return process

    def add_address(self, address: str, device: str = "lo") -> None:
        self.run_checked(["ip", "addr", "add", address, "dev", device])

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset into this namespace only."""
        result = self.run(["nft", "-f", "-"], input=ruleset)
        if result.returncode != 0:
            raise RuntimeError(f"nft refused the ruleset: {result.stderr.strip()}\n{ruleset}")

    def wait_for_port(self, host: str, port: int, timeout: float = 15.0) -> None:
        """Wait until something accepts TCP connections on host:port inside the namespace."""
        probe = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
            "s.settimeout(1)\n"
            "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))\n"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run([sys.executable, "-c", probe, host, str(port)]).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"nothing listened on {host}:{port} in {self.name} within {timeout} s")

    def destroy(self) -> None:
        try:
            for process in self._processes:
                stop_group(process, STOP_TIMEOUT)
            self._processes.clear()
        finally:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


def _check(args: Sequence[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
