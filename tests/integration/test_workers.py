"""`ketch serve --workers N`: several processes on one port, each with its own passive ports."""

from __future__ import annotations

import ftplib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from ftp_burst import burst
from serve_process import children, connection_refused, free_port, ketch_serve

from ketch.config import PortRange, ServerConfig, load_config
from ketch.server.workers import Supervisor, split_ports

HOST = "127.0.0.1"
SIZE = 64 * 1024
WORKER = re.compile(r"Served by worker (\d) of (\d) \(pid (\d+)\)")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "pub"
    root.mkdir()
    (root / "small.bin").write_bytes(os.urandom(SIZE))
    return root


def write_config(tmp_path: Path, root: Path, **settings: object) -> Path:
    """A config file: anonymous read access to ``root`` on loopback, plus ``settings``."""
    lines = [f'root = "{root}"', 'listen_address = "127.0.0.1"']
    for key, value in settings.items():
        lines.append(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}")
    path = tmp_path / "ketch.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def worker_pids(server_pid: int) -> list[int]:
    return sorted(pid for pid in children(server_pid) if pid != server_pid)


def served_by(ftp: ftplib.FTP) -> tuple[int, int]:
    """(worker number, pid) from STAT."""
    match = WORKER.search(ftp.sendcmd("STAT"))
    assert match, "STAT names no worker"
    return int(match[1]), int(match[3])


# -- passive slices -------------------------------------------------------------------


def test_passive_ranges_are_split_into_disjoint_contiguous_slices() -> None:
    assert split_ports(PortRange(50000, 50999), 2) == [
        PortRange(50000, 50499),
        PortRange(50500, 50999),
    ]
    assert split_ports(PortRange(10, 20), 3) == [
        PortRange(10, 13),
        PortRange(14, 17),
        PortRange(18, 20),
    ]
    assert split_ports(PortRange(7, 8), 2) == [PortRange(7, 7), PortRange(8, 8)]
    with pytest.raises(ValueError, match="3 workers"):
        split_ports(PortRange(7, 8), 3)


def test_the_supervisor_waits_as_long_as_a_reload_lets_the_workers_wait(
    root: Path,
) -> None:
    # Workers apply a reloaded shutdown_grace; the supervisor must not SIGKILL them at
    # the old one's end. A file it cannot read leaves the longest value seen.
    started = load_config(None, {"root": str(root), "shutdown_grace": 0.0})
    files = iter([started.model_copy(update={"shutdown_grace": 100.0}), ValueError("bad")])

    def build() -> ServerConfig:
        item = next(files)
        if isinstance(item, Exception):
            raise item
        return item

    supervisor = Supervisor(started, None, build, [], None)
    supervisor._on_signal(signal.SIGHUP)
    supervisor._on_signal(signal.SIGHUP)  # the second file is refused: 100 stays
    supervisor._on_signal(signal.SIGTERM)
    assert supervisor._kill_at - time.monotonic() > 100


def test_a_range_smaller_than_the_workers_is_refused(tmp_path: Path, root: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ketch",
            "serve",
            "--root",
            str(root),
            "--port",
            "0",
            "--workers",
            "3",
            "--passive-ports",
            "21000-21001",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "each worker needs passive ports of its own" in result.stderr


# -- many sessions ----------------------------------------------------------------------


def test_a_burst_of_short_sessions_on_two_workers_has_no_failure(
    tmp_path: Path, root: Path
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        root,
        passive_ports="21000-21399",
        max_connections_per_ip=200,
        log_level="warning",
    )
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server:
        assert len(worker_pids(server.pid)) == 2
        result = burst(HOST, port, "/small.bin", SIZE, sessions=300, concurrency=50)
        assert result.failures == [], "\n".join(result.failures[:20]) + server.output()
        print(f"300 sessions in {result.seconds:.2f} s")
        server.stop()
        assert server.process.returncode == 0, server.output()


def test_two_workers_never_advertise_the_same_passive_port(tmp_path: Path, root: Path) -> None:
    """Four passive ports, two workers: two each, and every session holds its port."""
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21400-21403")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path), ExitStack() as sessions:
        by_worker: dict[int, list[ftplib.FTP]] = {1: [], 2: []}
        for _ in range(60):  # the kernel picks the worker of each connection
            if min(len(found) for found in by_worker.values()) >= 3:
                break
            ftp = sessions.enter_context(ftplib.FTP(timeout=10))
            ftp.connect(HOST, port)
            ftp.login()
            by_worker[served_by(ftp)[0]].append(ftp)
        assert min(len(found) for found in by_worker.values()) >= 3, "one worker got nothing"

        advertised: dict[int, list[int]] = {1: [], 2: []}
        for number, found in by_worker.items():
            for ftp in found:  # each holds its port until it quits
                try:
                    reply = ftp.sendcmd("PASV")
                except ftplib.error_temp as error:
                    assert str(error).startswith("425"), error
                    continue
                numbers = [int(part) for part in reply.split("(")[1].split(")")[0].split(",")]
                advertised[number].append(numbers[4] * 256 + numbers[5])
        every = advertised[1] + advertised[2]
        assert len(every) == len(set(every)) == 4, advertised
        # Each worker used its own half of the range, and all of it.
        halves = [set(advertised[1]), set(advertised[2])]
        assert sorted(map(sorted, halves)) == [[21400, 21401], [21402, 21403]], advertised


# -- supervision ----------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_natinfo_names_the_whole_passive_range_not_the_workers_slice(
    tmp_path: Path, root: Path
) -> None:
    # What doctor tells the admin to open: every worker's ports.
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21470-21479")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server, ftplib.FTP(timeout=10) as ftp:
        ftp.connect(HOST, port)
        ftp.login()
        assert " passive-ports: 21470-21479" in ftp.sendcmd("SITE NATINFO").splitlines()
        server.signal(signal.SIGTERM)


def test_a_crashed_worker_is_restarted_and_connections_wait_for_it(
    tmp_path: Path, root: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21410-21419")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server:
        before = worker_pids(server.pid)
        os.kill(before[0], signal.SIGKILL)
        server.wait_for("was killed by SIGKILL")
        wait_until(lambda: len(worker_pids(server.pid)) == 2 and worker_pids(server.pid) != before)
        # Every connection is served, whichever socket the kernel gave it to.
        for _ in range(20):
            with ftplib.FTP(timeout=10) as ftp:
                ftp.connect(HOST, port)
                ftp.login()
                ftp.voidcmd("TYPE I")
                assert ftp.size("/small.bin") == SIZE


def slow_config(tmp_path: Path, root: Path, passive: str, *, size: int, rate: int) -> Path:
    """A config whose anonymous downloads of slow.bin (``size`` bytes) take ``size/rate`` s."""
    (root / "slow.bin").write_bytes(os.urandom(size))
    config = write_config(tmp_path, root, passive_ports=passive)
    config.write_text(config.read_text() + f"[anonymous]\ndownload_rate = {rate}\n")
    return config


@contextmanager
def slow_download(port: int, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """curl downloading slow.bin, once its first bytes have arrived; stopped at the end."""
    fetched = tmp_path / "fetched.bin"
    curl = subprocess.Popen(
        ["curl", "-sS", "-o", str(fetched), f"ftp://{HOST}:{port}/slow.bin"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: fetched.exists() and fetched.stat().st_size > 0)
        yield curl, fetched
    finally:
        if curl.poll() is None:
            curl.kill()
        curl.wait(timeout=10)


def test_sigterm_stops_every_worker_and_then_the_supervisor(tmp_path: Path, root: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21420-21429")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server:
        workers = worker_pids(server.pid)
        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()
        assert connection_refused(HOST, port)
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
        assert server.output().count("exiting; counters:") == 2


def test_one_sigterm_to_the_whole_process_group_lets_running_transfers_finish(
    tmp_path: Path, root: Path
) -> None:
    # systemd's default KillMode and `timeout` signal every process of the group: the
    # workers get that SIGTERM and the supervisor's stop as well, which is one request.
    port = free_port()
    config = slow_config(tmp_path, root, "21450-21459", size=600_000, rate=200_000)
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with (
        ketch_serve(args, tmp_path, new_session=True) as server,
        slow_download(port, tmp_path) as (curl, fetched),
    ):
        os.killpg(server.pid, signal.SIGTERM)
        assert curl.wait(timeout=30) == 0
        assert fetched.read_bytes() == (root / "slow.bin").read_bytes()
        assert server.wait_exit(timeout=30) == 0, server.output()
        assert "cutting off" not in server.output()


def test_a_second_sigterm_to_the_supervisor_cuts_the_workers_transfers_off(
    tmp_path: Path, root: Path
) -> None:
    port = free_port()
    config = slow_config(tmp_path, root, "21460-21469", size=2_000_000, rate=100_000)
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server, slow_download(port, tmp_path) as (curl, _):
        server.signal(signal.SIGTERM)
        server.wait_for("waiting up to 30 s for 1 running transfer")
        server.signal(signal.SIGTERM)
        server.wait_for("the supervisor's second stop signal: cutting off every session now")
        assert curl.wait(timeout=15) != 0  # cut off, 18 s before its end
        assert server.wait_exit(timeout=15) == 0, server.output()


def test_sighup_reaches_every_worker(tmp_path: Path, root: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21430-21439")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server:
        mark = len(server.stderr)
        config.write_text(config.read_text().replace('root = "', 'banner = "reloaded"\nroot = "'))
        server.signal(signal.SIGHUP)
        first = server.wait_for("[worker 1]: reload: configuration from", start=mark)
        server.wait_for("[worker 2]: reload: configuration from", start=mark)
        # Labelled for its worker, a line keeps the UTC time of the log format.
        assert first.split(" ", 1)[0].endswith("Z"), first
        for _ in range(6):
            with socket.create_connection((HOST, port), timeout=10) as sock:
                assert sock.recv(1024).startswith(b"220 reloaded")


def test_each_worker_logs_the_start_line_a_single_process_logs(tmp_path: Path, root: Path) -> None:
    # What an admin (or a script waiting for the server) greps for: README's start line.
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21460-21469")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server:
        lines = [server.wait_for(f"[worker {n}]: ketch ") for n in (1, 2)]
        pids = worker_pids(server.pid)
    slices = []
    for line in lines:
        assert f" serving address=127.0.0.1 port={port} pid=" in line, line
        assert " tls=off tls_required=off implicit_tls_port=- event_loop=" in line, line
        pid = int(line.split(" pid=", 1)[1].split()[0])
        assert pid in pids, (line, pids)
        slices.append(line.split(" passive_ports=", 1)[1].split()[0])
    assert sorted(slices) == ["21460-21464", "21465-21469"], lines


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, root: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21440-21449")
    args = ["--config", str(config), "--port", str(port), "--workers", "2"]
    with ketch_serve(args, tmp_path) as server:
        workers = worker_pids(server.pid)
        server.process.kill()
        server.process.wait(10)
        # The workers still write to the pipe the supervisor's output went to.
        server.wait_for("[worker 1]: the supervisor has gone; stopping")
        server.wait_for("[worker 2]: the supervisor has gone; stopping")

        def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() for pid in workers)

        wait_until(gone)


def test_one_worker_is_the_plain_server(tmp_path: Path, root: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, root, passive_ports="21450-21459")
    with ketch_serve(["--config", str(config), "--port", str(port)], tmp_path) as server:
        assert worker_pids(server.pid) == []
        assert "  workers  1 process on " in server.output()
        with ftplib.FTP(timeout=10) as ftp:
            ftp.connect(HOST, port)
            ftp.login()
            assert "Served by" not in ftp.sendcmd("STAT")
