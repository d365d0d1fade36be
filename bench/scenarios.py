"""The scenarios: each runs against every server in rounds and returns tables of medians.

Rounds are interleaved (round 1 on every server, then round 2, ...) so that
whatever drifts on the machine during a run falls on every server alike.
Server CPU is the CPU time of the server's whole process tree, read from
/proc before and after; client CPU is this process's own (getrusage).
"""

from __future__ import annotations

import functools
import math
import resource
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load import (
    Control,
    FtpError,
    close_all,
    download,
    open_idle,
    run_sessions,
    short_session,
    transfer_timeout,
    upload,
)
from report import Column, Medians, Table
from servers import HOST, WORKERS, Server

from harness.procfs import listen_drops

GIB = 1 << 30
KIB = 1 << 10
MIB = 1 << 20
READ_SIZES = (64 * KIB, MIB)
WRITE_BLOCK = MIB
SESSION_CONCURRENCY = (50, 200)
SESSION_TIMEOUT = 60.0
# Idle sessions are opened this many at a time: below vsftpd's listen backlog (32), so that
# the memory scenario measures memory, not a full accept queue.
IDLE_OPENERS = 25
MODE_LABEL = {"passive": "pasv", "active": "actv"}
FAILED = (OSError, FtpError, TimeoutError, EOFError, subprocess.SubprocessError)


class TransferMedians:
    """The medians of a transfer table: MB/s, and server and client CPU per GiB."""

    def __init__(self) -> None:
        self.by_metric = {metric: Medians() for metric in ("mbps", "server_cpu", "client_cpu")}

    def __getitem__(self, metric: str) -> Medians:
        return self.by_metric[metric]

    def add(self, server: str, column: str, sample: dict[str, float]) -> None:
        for metric, medians in self.by_metric.items():
            medians.add(server, column, sample[metric])

    def failed(self, server: str, column: str, error: BaseException) -> str:
        """Note the failure in every metric's cell; its short text."""
        text = short_error(error)
        for medians in self.by_metric.values():
            medians.add(server, column, text)
        return text


def meter_sample(b: Bench, meter: Meter) -> dict[str, float]:
    """A metered transfer of the big file as MB/s and CPU seconds per GiB."""
    return {"mbps": b.size / meter.wall / 1e6,
            "server_cpu": meter.server_cpu / (b.size / GIB),
            "client_cpu": meter.client_cpu / (b.size / GIB)}  # fmt: skip


@dataclass
class Bench:
    servers: list[Server]
    rounds: int
    size: int  # bytes of the big file
    big: Path  # the big file on disk (what STOR sends with curl)
    net: Callable[[Coroutine[Any, Any, Any]], Any]  # runs a coroutine on the one event loop
    record: Callable[[dict[str, Any]], None]  # appends a JSON line
    sessions: int = 1000
    idle: int = 1000
    entries: int = 10000
    block: bytes = field(default=b"", repr=False)

    @property
    def names(self) -> list[str]:
        return [server.name for server in self.servers]

    def in_turn(self, round_: int) -> list[Server]:
        """The servers, each round starting one further along: none is always first.

        Going first is not neutral here: the first upload after a pause runs
        on memory the VM handed back to its host, which costs 2-5x the CPU.
        """
        start = (round_ - 1) % len(self.servers)
        return self.servers[start:] + self.servers[:start]


class Meter:
    """Wall time, server-tree CPU and this process's CPU across a ``with`` block."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wall = self.server_cpu = self.client_cpu = self.children_cpu = 0.0
        self.server_kernel_cpu = 0.0
        self.listen_drops = 0

    @staticmethod
    def _own(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    def __enter__(self) -> Meter:
        self._start = (
            time.perf_counter(), self.server.cpu_seconds(), self.server.kernel_seconds(),
            self._own(resource.RUSAGE_SELF), self._own(resource.RUSAGE_CHILDREN), listen_drops(),
        )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        wall, server, server_kernel, client, children, drops = self._start
        self.wall = time.perf_counter() - wall
        self.server_cpu = self.server.cpu_seconds() - server
        self.server_kernel_cpu = self.server.kernel_seconds() - server_kernel
        self.client_cpu = self._own(resource.RUSAGE_SELF) - client
        self.children_cpu = self._own(resource.RUSAGE_CHILDREN) - children
        self.listen_drops = listen_drops() - drops


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:100]}"


def _logged_in(b: Bench, server: Server) -> Control:
    async def run() -> Control:
        control = await Control.open(HOST, server.port)
        try:
            await control.login(server.user, server.password)
        except BaseException:
            control.close()
            raise
        return control

    return b.net(run())


def _quit(b: Bench, control: Control) -> None:
    try:
        b.net(control.quit())
    except FAILED:
        control.close()


def prime_for_upload(b: Bench, server: Server) -> None:
    """Write and delete as much as the next upload will store, before it is timed.

    An upload right after a file was deleted reuses freshly freed page-cache
    memory; one after a pause gets pages the VM returned to its host, several
    times dearer to touch. Priming gives every server's upload the same start.
    """
    path = server.disk_dir / "prime.bin"
    with path.open("wb", buffering=0) as file:
        for _ in range(b.size // len(b.block)):
            file.write(b.block)
    path.unlink()


def warm_cache(path: Path) -> None:
    buffer = bytearray(8 * MIB)
    with path.open("rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


# -- single streams: RETR and STOR -------------------------------------------------


def curl_transfer(
    b: Bench, server: Server, mode: str, direction: str, options: Sequence[str] = ()
) -> dict[str, Any]:
    """One curl transfer of the big file; its own speed, server and curl CPU."""
    name = "big.bin" if direction == "retr" else "up-curl.bin"
    credentials = f"{server.user}:{urllib.parse.quote(server.password, safe='')}"
    url = f"ftp://{credentials}@{HOST}:{server.port}/{server.remote(name)}"
    command = ["curl", "-sS", "--fail", "-w", "%{size_download} %{speed_download} "
               "%{size_upload} %{speed_upload}", url]  # fmt: skip
    command += ["-o", "/dev/null"] if direction == "retr" else ["-T", str(b.big)]
    if mode == "active":
        command += ["--ftp-port", HOST]
    command += options
    processes = len(server.tree())
    if direction == "stor":
        prime_for_upload(b, server)
    with Meter(server) as meter:
        done = subprocess.run(
            command, capture_output=True, timeout=transfer_timeout(b.size), check=False
        )
        # curl's session ends with curl: wait until a forking server has reaped its
        # session processes, or their CPU time slips between two reads of /proc.
        server.settle(processes)
    if direction == "stor":
        (server.disk_dir / name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise FtpError(f"curl exit {done.returncode}: {done.stderr.decode(errors='replace')[:100]}")
    down, down_speed, up, up_speed = (float(value) for value in done.stdout.split())
    moved, speed = (down, down_speed) if direction == "retr" else (up, up_speed)
    if moved != b.size:
        raise FtpError(f"curl moved {moved:.0f} of {b.size} bytes")
    return {"mbps": speed / 1e6, "server_cpu": meter.server_cpu / (b.size / GIB),
            "client_cpu": meter.children_cpu / (b.size / GIB), "seconds": meter.wall}  # fmt: skip


def _single_stream(b: Bench, direction: str) -> list[Table]:
    verb = direction.upper()
    if direction == "retr":
        warm_cache(b.big)
        variants = [(mode, size) for mode in ("passive", "active") for size in READ_SIZES]
    else:
        variants = [("passive", WRITE_BLOCK), ("active", WRITE_BLOCK)]
    label = "read" if direction == "retr" else "write"

    def key(mode: str, size: int) -> str:
        amount = f"{size // KIB}K" if size < MIB else f"{size // MIB}M"
        return f"{MODE_LABEL[mode]} {amount}"

    keys = [key(mode, size) for mode, size in variants]
    medians = TransferMedians()
    buffers = {size: bytearray(size) for _, size in variants}  # allocated once
    for round_ in range(1, b.rounds + 1):
        for server in b.in_turn(round_):
            for (mode, size), column in zip(variants, keys, strict=True):
                path = server.remote("big.bin" if direction == "retr" else "up.bin")
                try:
                    if direction == "stor":
                        prime_for_upload(b, server)
                    control = _logged_in(b, server)
                    try:
                        with Meter(server) as meter:
                            if direction == "retr":
                                got, _ = b.net(download(
                                    control, f"RETR {path}", mode, buffers[size],
                                    within=transfer_timeout(b.size)))  # fmt: skip
                                if got != b.size:
                                    raise FtpError(f"received {got} of {b.size} bytes")
                            else:
                                b.net(upload(control, path, mode, b.size, b.block))
                    finally:
                        _quit(b, control)
                        if direction == "stor":
                            (server.disk_dir / "up.bin").unlink(missing_ok=True)
                except FAILED as error:
                    b.record({"scenario": direction, "server": server.name, "round": round_,
                              "variant": column,
                              "error": medians.failed(server.name, column, error)})  # fmt: skip
                    continue
                sample = meter_sample(b, meter)
                medians.add(server.name, column, sample)
                b.record({"scenario": direction, "server": server.name, "round": round_,
                          "variant": column, "mode": mode, f"{label}_size": size,
                          "seconds": meter.wall, **sample})  # fmt: skip
            # The same transfer by another client, in each round: one curl run alone
            # swung 2x between runs on this kind of machine.
            for mode in ("passive", "active"):
                _curl_round(b, server, mode, direction, round_, medians)
    curl_keys = ["curl pasv", "curl actv"]
    size_note = f"{b.size / MIB:.0f} MiB file, median of {b.rounds} rounds (curl's too)"
    tables = []
    for metric, title, better in (
        ("mbps", f"{verb} throughput, MB/s (10^6 B/s)", "higher"),
        ("server_cpu", f"{verb} server CPU, s/GiB (whole process tree)", "lower"),
        ("client_cpu", f"{verb} client CPU, s/GiB (load client; curl columns: curl)", "lower"),
    ):
        columns = [Column(k, k, better) for k in keys + curl_keys]
        notes = [size_note, f"columns: mode and client {label} size"]
        notes += medians[metric].error_notes() if metric == "mbps" else []
        tables.append(Table(title, columns, medians[metric].rows(b.names, columns), notes))
    return tables


def _curl_round(
    b: Bench, server: Server, mode: str, direction: str, round_: int, medians: TransferMedians
) -> None:
    column = f"curl {MODE_LABEL[mode]}"
    try:
        sample = curl_transfer(b, server, mode, direction)
    except FAILED as error:
        b.record({"scenario": direction, "server": server.name, "round": round_,
                  "client": "curl", "variant": column,
                  "error": medians.failed(server.name, column, error)})  # fmt: skip
        return
    medians.add(server.name, column, sample)
    b.record({"scenario": direction, "server": server.name, "round": round_, "client": "curl",
              "variant": column, "mode": mode, **sample})  # fmt: skip


def retr(b: Bench) -> list[Table]:
    return _single_stream(b, "retr")


def stor(b: Bench) -> list[Table]:
    return _single_stream(b, "stor")


# -- many short sessions -------------------------------------------------------------


def sessions(b: Bench) -> list[Table]:
    return [_sessions_table(b, b.servers, concurrency, f"Sessions at concurrency {concurrency}")
            for concurrency in SESSION_CONCURRENCY]  # fmt: skip


def workers(b: Bench) -> list[Table]:
    """The sessions workload on the servers' multi-process variants (ketch --workers 2,
    pyftpdlib's pre-fork mode): what matters most here is failed sessions."""
    chosen = [server for server in b.servers if "workers" in server.variants]
    if not chosen:
        return []
    try:
        for server in chosen:
            server.use_variant("workers")
        tables = [_sessions_table(b, chosen, concurrency, f"{WORKERS} worker processes, "
                                  f"sessions at concurrency {concurrency}", scenario="workers")
                  for concurrency in SESSION_CONCURRENCY]  # fmt: skip
        for table in tables:
            table.notes += [f"{server.name}: {server.variant_notes['workers']}"
                            for server in chosen]  # fmt: skip
        return tables
    finally:
        for server in chosen:
            server.use_variant("")


def _sessions_table(
    b: Bench, servers: list[Server], concurrency: int, title: str, scenario: str = "sessions"
) -> Table:
    """Rounds of b.sessions short sessions (login, 1 MiB RETR, QUIT) on each server."""
    medians = Medians()
    for round_ in range(1, b.rounds + 1):
        for server in [server for server in b.in_turn(round_) if server in servers]:
            work = functools.partial(
                short_session, HOST, server.port, server.user, server.password,
                f"RETR {server.remote('small.bin')}", MIB,
            )  # fmt: skip
            processes = len(server.tree())
            with Meter(server) as meter:
                results = b.net(run_sessions(work, b.sessions, concurrency, 64 * KIB,
                                             SESSION_TIMEOUT))  # fmt: skip
                left = server.settle(processes)  # forked sessions reaped: CPU in cutime
            latencies = sorted(results.latencies)
            sample: dict[str, Any] = {
                "sessions_per_s": len(latencies) / results.seconds,
                "failures": sum(results.failures.values()),
                "p50_ms": _percentile(latencies, 50) * 1000,
                "p99_ms": _percentile(latencies, 99) * 1000,
                "cpu_ms": meter.server_cpu * 1000 / b.sessions,
                "kernel_ms": meter.server_kernel_cpu * 1000 / b.sessions,
                "client_cpu_ms": meter.client_cpu * 1000 / b.sessions,
                "listen_drops": meter.listen_drops,
            }
            for metric, value in sample.items():
                medians.add(server.name, metric, value)
            b.record({"scenario": scenario, "server": server.name, "round": round_,
                      "concurrency": concurrency, "sessions": b.sessions,
                      "seconds": results.seconds, "failure_reasons": dict(results.failures),
                      "processes_left": left, **sample})  # fmt: skip
            if results.failures:
                reasons = ", ".join(f"{k} x{v}" for k, v in results.failures.most_common(3))
                medians.errors[server.name, f"round {round_}"] = reasons
    columns = [
        Column("sessions_per_s", "sessions/s", "higher"),
        Column("failures", "failures", None),
        Column("p50_ms", "p50 ms", "lower"),
        Column("p99_ms", "p99 ms", "lower"),
        Column("cpu_ms", "server CPU ms/session", "lower"),
        Column("kernel_ms", "of which kernel", "lower"),
        Column("client_cpu_ms", "load client CPU ms/session", "lower"),
        Column("listen_drops", "listen drops", None),
    ]
    notes = [
        f"{b.sessions} sessions of login + 1 MiB RETR (passive) + QUIT, "
        f"median of {b.rounds} rounds",
        "listen drops: TcpExt ListenDrops (machine-wide) during the round: connections "
        "dropped at a full accept queue (the client's kernel retries after 1 s+)",
        "of which kernel: the server's system time (TCP, file and socket calls); load client "
        "CPU: the one process running all the sessions, which on loopback also sends what a "
        "server queued ahead of its ACKs: the sum of the two is the session's cost to the "
        "machine",
    ]
    notes += [f"failed sessions, {note}" for note in medians.error_notes()]
    names = [name for name in b.names if any(server.name == name for server in servers)]
    return Table(title, columns, medians.rows(names, columns), notes)


def _percentile(ordered: list[float], percent: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(percent / 100 * len(ordered)) - 1))
    return ordered[index]


# -- idle sessions: memory -----------------------------------------------------------


def idle(b: Bench) -> list[Table]:
    medians = Medians()
    for round_ in range(1, b.rounds + 1):
        for server in b.in_turn(round_):
            server.restart()  # a fresh process: nothing left over from earlier scenarios
            processes = len(server.tree())
            _quit(b, _logged_in(b, server))  # one session first: lazy imports, first buffers
            server.settle(processes)
            time.sleep(0.5)
            rss, pss = server.rss_bytes(), server.pss_bytes()
            controls, failures = b.net(
                open_idle(HOST, server.port, server.user, server.password, b.idle, IDLE_OPENERS)
            )
            time.sleep(1.0)
            rss_after, pss_after, tree = server.rss_bytes(), server.pss_bytes(), server.tree()
            b.net(close_all(controls))
            opened = len(controls)
            sample = {
                "rss_kib": (rss_after - rss) / max(opened, 1) / KIB,
                "pss_kib": (pss_after - pss) / max(opened, 1) / KIB,
                "rss_total_mib": rss_after / MIB,
                "failures": b.idle - opened,
            }
            for metric, value in sample.items():
                medians.add(server.name, metric, value)
            if failures:
                reasons = ", ".join(f"{k} x{v}" for k, v in failures.most_common(3))
                medians.errors[server.name, f"round {round_}"] = reasons
            b.record({"scenario": "idle", "server": server.name, "round": round_,
                      "opened": opened, "processes": len(tree), "rss_before": rss,
                      "rss_after": rss_after, "pss_before": pss, "pss_after": pss_after,
                      "failure_reasons": dict(failures), **sample})  # fmt: skip
    columns = [
        Column("rss_kib", "RSS KiB/session", "lower"),
        Column("pss_kib", "PSS KiB/session", "lower"),
        Column("rss_total_mib", "RSS total MiB", "lower"),
        Column("failures", "failures", None),
    ]
    notes = [f"{b.idle} idle logged-in sessions ({IDLE_OPENERS} logging in at a time) on a freshly "
             f"started server, after one warm-up session; whole process tree; median of "
             f"{b.rounds} rounds",
             "RSS counts shared pages once per process; PSS splits them"]  # fmt: skip
    notes += [f"failed logins, {note}" for note in medians.error_notes()]
    return [Table("Idle sessions: memory", columns, medians.rows(b.names, columns), notes)]


# -- listings ------------------------------------------------------------------------


#: Listing rounds per --rounds (see listing).
LISTING_ROUND_FACTOR = 3


def _warm_up_listing(b: Bench, buffer: bytearray) -> None:
    """One untimed LIST per server: the directory in the page cache, ketch's listing workers
    started (by its first big listing; until they run, big listings are made in a thread)."""
    for server in b.servers:
        control = _logged_in(b, server)
        try:
            b.net(download(control, f"LIST {server.remote('list10k')}", "passive", buffer))
        except FAILED:
            pass  # a failing server shows its error in the timed rounds
        finally:
            _quit(b, control)
    time.sleep(1)  # an interpreter start per worker, on a machine that may be busy


def _change(directory: Path) -> None:
    """Change ``directory`` (its ctime) and leave its entries as they were."""
    added = directory / ".bench-change"
    added.touch()
    added.unlink()


def _timed_listing(
    b: Bench, server: Server, control: Control, verb: str, changed: bool, buffer: bytearray
) -> tuple[float | str, int]:
    """Milliseconds ``verb`` of list10k took and its lines, or why it failed."""
    if changed:
        _change(server.disk_dir / "list10k")
    started = time.perf_counter()
    try:
        _, lines = b.net(download(control, f"{verb} {server.remote('list10k')}", "passive",
                                  buffer, count_lines=True))  # fmt: skip
    except FAILED as error:
        return short_error(error), 0
    return (time.perf_counter() - started) * 1000, lines


def listing(b: Bench) -> list[Table]:
    medians = Medians()
    supported: dict[str, bool] = {}
    buffer = bytearray(64 * KIB)
    _warm_up_listing(b, buffer)
    # A round takes well under a second, and one 40 ms listing is easily hit by a
    # neighbour's burst on a shared machine: three times the rounds, for steadier medians.
    rounds = LISTING_ROUND_FACTOR * b.rounds
    # The rounds after a change come last: a change makes ketch read the directory
    # again for the next 2 s, which would leak into the unchanged rounds.
    for changed in (False, True):
        for round_ in range(1, rounds + 1):
            for server in b.in_turn(round_):
                control = _logged_in(b, server)
                try:
                    if server.name not in supported:
                        supported[server.name] = "MLST" in b.net(control.features())
                    for verb in ("LIST", "MLSD"):
                        if verb == "MLSD" and not supported[server.name]:
                            continue
                        name = f"{verb} changed" if changed else verb
                        ms, lines = _timed_listing(b, server, control, verb, changed, buffer)
                        medians.add(server.name, name, ms)
                        if not isinstance(ms, str):
                            # One lines column per verb: a change leaves the entries as they were.
                            medians.add(server.name, f"{verb} lines", lines)
                            b.record({"scenario": "list", "server": server.name,
                                      "round": round_, "command": verb, "changed": changed,
                                      "ms": ms, "lines": lines})  # fmt: skip
                finally:
                    _quit(b, control)
    columns = [Column("LIST", "LIST ms", "lower"), Column("MLSD", "MLSD ms", "lower"),
               Column("LIST changed", "LIST after a change ms", "lower"),
               Column("MLSD changed", "MLSD after a change ms", "lower"),
               Column("LIST lines", "LIST lines", None),
               Column("MLSD lines", "MLSD lines", None)]  # fmt: skip
    rows = medians.rows(b.names, columns)
    for server in b.servers:
        if not supported.get(server.name, True):
            for column in ("MLSD", "MLSD changed", "MLSD lines"):
                rows[server.name][column] = "n/a"
    notes = [f"a directory of {b.entries} empty files, passive, one session per round, "
             f"median of {rounds} rounds after one untimed LIST per server; "
             "n/a: no MLST in FEAT",
             "after a change: a file was just created in the directory and removed again, "
             "so ketch cannot reuse the names it read before (it does while a directory "
             "stays unchanged for 2 s and more)"]  # fmt: skip
    notes += medians.error_notes()
    return [Table("Directory listing", columns, rows, notes)]


def ftps(b: Bench) -> list[Table]:
    # bench/ftps_scenario.py builds on this module, so it is imported when the scenario runs.
    from ftps_scenario import ftps_tables

    return ftps_tables(b)


SCENARIOS: dict[str, Callable[[Bench], list[Table]]] = {
    "retr": retr,
    "stor": stor,
    "sessions": sessions,
    "idle": idle,
    "list": listing,
    "ftps": ftps,
    "workers": workers,
}
