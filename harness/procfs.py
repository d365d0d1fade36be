"""What /proc says about a process tree: its members, CPU time, memory, open files."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = [
    "CLOCK_TICKS",
    "cpu_ticks",
    "fd_count",
    "kernel_ticks",
    "listen_drops",
    "process_tree",
    "pss",
    "rss",
    "signal_all",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, found by parent pid.

    Not the process group: vsftpd's and pure-ftpd's session processes start
    sessions of their own and leave it.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(_stat_fields(entry)[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    """Send ``sig`` to each process that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def cpu_ticks(pid: int, own: bool = True) -> int:
    """utime + stime + cutime + cstime: the process and the children it has reaped
    (only the latter two when ``own`` is false); 0 once the process is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0
    return sum(int(value) for value in fields[11 if own else 13 : 15])


def kernel_ticks(pid: int, own: bool = True) -> int:
    """The part of ``cpu_ticks`` spent in the kernel: stime + cstime (only cstime
    when ``own`` is false); 0 once the process is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0
    return int(fields[14]) + (int(fields[12]) if own else 0)


def rss(pid: int) -> int:
    """Resident bytes of one process; 0 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def pss(pid: int) -> int:
    """Proportional set size: shared pages split between the processes sharing them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def fd_count(pid: int) -> int:
    """Open file descriptors of one process; 0 once it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def listen_drops() -> int:
    """TcpExt ListenDrops, machine-wide: connections dropped at a full listen queue."""
    try:
        header, values = (
            line.split()
            for line in Path("/proc/net/netstat").read_text().splitlines()
            if line.startswith("TcpExt:")
        )
        return int(values[header.index("ListenDrops")])
    except (OSError, ValueError):
        return 0
