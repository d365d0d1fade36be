"""make bench: ketch's server next to pyftpdlib, vsftpd and pure-ftpd on this machine.

Every scenario runs against every selected server in the same run; the
tables show medians over the rounds and ketch/peer ratios. Samples and
tables go to bench/results/<timestamp>.jsonl as they come, the tables to
bench/results/latest.md at the end. Servers are stopped however the run
ends (Ctrl-C and SIGTERM included).

    .venv/bin/python bench/run_bench.py [--rounds 3] [--size-mib 1024]
        [--only retr,stor,sessions,idle,list,ftps,workers] [--servers ketch,vsftpd]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import Column, Record, Table, render, write_markdown
from scenarios import MIB, SCENARIOS, Bench
from servers import (
    BENCH,
    EXTRA_NAMES,
    FLOOR_SCENARIOS,
    NAMES,
    Server,
    make_servers,
    missing_peers,
)

REPO = BENCH.parent
DATA = BENCH / ".data"
RESULTS = BENCH / "results"
# The issue numbers its scenarios 1-6 (workers, the pre-fork comparison, is 7);
# either the number or the name selects one.
ORDER = ["retr", "stor", "sessions", "idle", "list", "ftps", "workers"]


def _choose(text: str, known: list[str], what: str, default: list[str] | None = None) -> list[str]:
    if not text.strip():
        return list(known if default is None else default)
    chosen = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item.isdigit() and 1 <= int(item) <= len(known) and what == "scenario":
            item = known[int(item) - 1]
        if item not in known:
            raise SystemExit(f"bench: unknown {what} {item!r}; choose from {', '.join(known)}")
        chosen.append(item)
    return [name for name in known if name in chosen]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (median)")
    parser.add_argument("--size-mib", type=int, default=1024, help="RETR/STOR file size")
    parser.add_argument("--only", default="", help="comma list of scenarios (names or 1-7)")
    parser.add_argument("--servers", default="", help="comma list of servers")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per round")
    parser.add_argument("--idle", type=int, default=1000, help="idle sessions held open")
    parser.add_argument("--entries", type=int, default=10000, help="entries in the listed dir")
    parser.add_argument("--no-uvloop", action="store_true", help="the load client on asyncio")
    args = parser.parse_args()
    if args.rounds < 1 or args.size_mib < 1:
        parser.error("--rounds and --size-mib must be at least 1")
    return args


# -- what was measured ---------------------------------------------------------------


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else ""


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "src" / "ketch").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def snapshot_source() -> tuple[Path, str]:
    """A copy of src/ketch that every ketch server of this run imports (PYTHONPATH)."""
    digest = source_hash()
    target = DATA / f"src-{digest}"
    for old in DATA.glob("src-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    if not (target / "ketch").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(REPO / "src" / "ketch", target / "ketch",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return target, digest


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# -- files the servers serve ------------------------------------------------------------


def _random_file(path: Path, size: int) -> None:
    """``size`` bytes of real random data, written once (not sparse)."""
    if path.exists() and path.stat().st_size == size and path.stat().st_blocks * 512 >= size:
        return
    print(f"bench: writing {size / MIB:.0f} MiB of random data to {path.name}", flush=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as file:
        for offset in range(0, size, 4 * MIB):
            file.write(os.urandom(min(4 * MIB, size - offset)))
    partial.chmod(0o644)
    partial.rename(path)


def prepare_files(servers: list[Server], size: int, entries: int) -> Path:
    big = DATA / f"big-{size // MIB}M.bin"
    for stale in DATA.glob("big-*.bin"):
        if stale != big:
            stale.unlink()
    _random_file(big, size)
    small = DATA / "small-1M.bin"
    _random_file(small, MIB)
    for server in servers:
        for name, source in (("big.bin", big), ("small.bin", small)):
            (server.disk_dir / name).unlink(missing_ok=True)
            os.link(source, server.disk_dir / name)  # hard links: one copy in the page cache
        (server.disk_dir / "up.bin").unlink(missing_ok=True)
        listed = server.disk_dir / "list10k"
        if not listed.is_dir() or len(os.listdir(listed)) != entries:
            shutil.rmtree(listed, ignore_errors=True)
            listed.mkdir()
            for number in range(entries):
                (listed / f"entry-{number:05d}.dat").touch()
    return big


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _loop_factory(no_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            return None, "asyncio (uvloop not installed)"
        return uvloop.new_event_loop, f"uvloop {uvloop.__version__}"
    return None, "asyncio"


# -- the run ------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    started_wall, started = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.perf_counter()
    names = _choose(args.servers, list(NAMES + EXTRA_NAMES), "server", default=list(NAMES))
    chosen = _choose(args.only, ORDER, "scenario")
    if set(EXTRA_NAMES) & set(names) and set(chosen) - set(FLOOR_SCENARIOS):
        only = ",".join(FLOOR_SCENARIOS)
        raise SystemExit(f"bench: the floor serves only {only}: add --only {only} "
                         "(make bench-floor does)")  # fmt: skip
    missing = missing_peers(names)
    if missing:
        raise SystemExit(f"bench: {', '.join(missing)} not under bench/.peers/root: "
                         "run scripts/fetch-peer-servers bench/.peers (as root)")  # fmt: skip
    if {"retr", "stor"} & set(chosen) and shutil.which("curl") is None:
        raise SystemExit("bench: curl is needed for the RETR/STOR cross-check")
    _raise_fd_limit()
    DATA.mkdir(exist_ok=True)
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "src"))
    src, digest = snapshot_source()
    servers = make_servers(names, DATA / "servers", src)
    size = args.size_mib * MIB
    big = prepare_files(servers, size, args.entries)
    factory, loop_name = _loop_factory(args.no_uvloop)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = Record(RESULTS / f"{stamp}.jsonl")
    run_info: dict[str, Any] = {
        "type": "run", "started": started_wall, "commit": commit, "dirty": dirty,
        "src_sha256": digest, "rounds": args.rounds, "size_mib": args.size_mib,
        "scenarios": chosen, "servers": {s.name: {"version": s.version, "notes": s.notes,
        "port": s.port, "passive": s.passive} for s in servers},
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()}, "client_loop": loop_name,
        "sessions": args.sessions, "idle": args.idle, "entries": args.entries,
    }  # fmt: skip
    record(run_info)
    print(f"bench: commit {commit}{' dirty' if dirty else ''} (src {digest}), "
          f"{args.rounds} rounds, {args.size_mib} MiB, servers {', '.join(names)}, "
          f"scenarios {', '.join(chosen)}; client on {loop_name}", flush=True)  # fmt: skip
    tables: list[Table] = []
    status = "complete"
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            bench = Bench(
                servers, args.rounds, size, big, runner.run,
                lambda entry: record({"type": "sample", **entry}),
                sessions=args.sessions, idle=args.idle, entries=args.entries,
                block=os.urandom(MIB),
            )  # fmt: skip
            for server in servers:
                server.start()
            record({"type": "started", "listen_backlog": {s.name: s.backlog for s in servers},
                    "runtime": {s.name: s.runtime for s in servers if s.runtime}})  # fmt: skip
            for name in chosen:
                began = time.perf_counter()
                print(f"\n== {name} ==", flush=True)
                try:
                    made = SCENARIOS[name](bench)
                except Exception as error:
                    traceback.print_exc()
                    status = "a scenario failed"
                    note = f"{type(error).__name__}: {error}"
                    made = [Table(f"{name}: failed", [Column("x", "-", None)], {}, [note])]
                took = time.perf_counter() - began
                for table in made:
                    table.notes.append(f"scenario time {took:.0f} s")
                    print(render(table), flush=True)
                    record(table.as_json())
                tables += made
                _check_alive(servers, name)
    except KeyboardInterrupt:
        status = "interrupted"
        print("\nbench: interrupted; stopping the servers", flush=True)
    finally:
        for server in servers:
            server.stop()
        elapsed = time.perf_counter() - started
        changed = source_hash() != digest
        record({"type": "end", "status": status, "seconds": round(elapsed, 1),
                "src_changed_during_run": changed})  # fmt: skip
        record.close()
        header = _header(run_info, status, elapsed, changed, servers)
        written = [record.path]
        if tables:
            written.append(record.path.with_suffix(".md"))
            write_markdown(written[-1], header, tables)
        # latest.md is the summary to commit: only a run of everything on every server.
        if tables and status == "complete" and chosen == ORDER and names == list(NAMES):
            written.append(RESULTS / "latest.md")
            write_markdown(written[-1], header, tables)
        print(
            f"bench: {status} in {elapsed:.0f} s ({elapsed / 60:.1f} min); wrote "
            f"{', '.join(str(path.relative_to(REPO)) for path in written)}",
            flush=True,
        )
        if changed:
            print("bench: note: src/ketch changed during the run; ketch ran the snapshot "
                  f"{digest} taken at the start")  # fmt: skip
    return 0 if status == "complete" else 1


def _check_alive(servers: list[Server], scenario: str) -> None:
    for server in servers:
        if server.process is not None and server.process.poll() is not None:
            print(f"bench: {server.name} exited during {scenario} (status "
                  f"{server.process.returncode}); log tail:\n{server.log_tail()}")  # fmt: skip
            server.restart()


def _header(
    info: dict[str, Any], status: str, elapsed: float, changed: bool, servers: list[Server]
) -> list[str]:
    machine = info["machine"]
    lines = [
        "# make bench: ketch next to pyftpdlib, vsftpd and pure-ftpd",
        "",
        f"- run {info['started']}, {status}, {elapsed / 60:.1f} min; commit {info['commit']}"
        f"{' (src dirty)' if info['dirty'] else ''}, src sha256 {info['src_sha256']}"
        f"{' (src changed during the run; ketch ran the snapshot)' if changed else ''}",
        f"- {machine['cores']} cores ({machine['cpu']}) shared by client and servers; "
        f"Linux {machine['kernel']}, Python {machine['python']}; load client on "
        f"{info['client_loop']}",
        f"- {info['rounds']} rounds, RETR/STOR of {info['size_mib']} MiB; ratios are "
        "ketch ÷ peer (↑: higher is better, ↓: lower is better)",
    ]
    for server in servers:
        version = f" {server.version}" if server.version else ""
        runtime = f" ({server.runtime})" if server.runtime else ""
        backlog = f"; listen backlog {server.backlog}" if server.backlog else ""
        lines.append(f"- {server.name}{version}: {server.notes}{runtime}{backlog}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
