#!/usr/bin/env python3
"""Soak test of the ketch FTP server: many sessions for minutes, watching for decay.

    python soak/run_soak.py --sessions 500 --duration 300      (what `make soak` runs)

Starts ``python -m ketch serve`` with a generated configuration in a
temporary directory, then runs the sessions in worker processes, each on its
own event loop (one process would saturate before the server does). Most
sessions are well-behaved and verify everything they move; a few misbehave
on purpose (see soak_misbehave.py). Every few seconds the server's memory,
open descriptors and CPU and the throughput so far are printed. At the end
the server gets SIGTERM, a summary is printed and written with every sample
to soak/results/<timestamp>.json.

Exit status 0 only with no failure among well-behaved sessions, no corrupted
byte, and flat memory (the final RSS within --rss-growth of the RSS after the
warm-up); 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soak_common import FileRef, Settings, Stats, file_ref, make_pool
from soak_load import worker_main
from soak_report import MIB, build_summary, format_summary, memory_verdict
from soak_server import ServerProcess, cpu_seconds, scan_log, write_config

HERE = Path(__file__).resolve().parent
_SHARED_SIZES = (0, 1, 1000, 4096, 65536, 262_151, 1024 * 1024, 2 * 1024 * 1024 - 1, 2 * MIB)
_BIG_FILE_SIZE = 48 * MIB  # larger than any socket buffers, so a stalled reader stalls the server


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sessions", type=int, default=500, help="concurrent sessions (default 500)")
    add("--duration", type=float, default=300, help="seconds of load (default 300)")
    add("--workers", type=int, default=0, help="load-generator processes (default: CPUs, 2-4)")
    add("--misbehaving", type=float, default=0.05, help="fraction of misbehaving sessions")
    add("--seed", type=int, default=None, help="random seed (default: random, printed)")
    add("--interval", type=float, default=5.0, help="seconds between samples")
    add("--warmup", type=float, default=30.0, help="seconds before memory is judged")
    add("--rss-growth", type=float, default=0.15, help="allowed RSS growth after warm-up")
    add("--stall-timeout", type=float, default=10.0, help="server data_stall_timeout")
    add("--idle-timeout", type=float, default=30.0, help="server idle_timeout")
    add("--data-connect-timeout", type=float, default=15.0, help="server data_connect_timeout")
    add("--think", type=float, default=0.2, help="longest pause between two operations")
    add("--results", type=Path, default=HERE / "results", help="directory for the JSON")
    add("--keep", action="store_true", help="keep the temporary directory (files, server log)")
    args = parser.parse_args()
    if args.sessions < 1 or args.duration <= 0:
        parser.error("--sessions and --duration must be positive")
    return args


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; the server and workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_files(
    home: Path, pool: memoryview, rng: random.Random, misbehaving: set[int]
) -> tuple[dict[str, FileRef], str]:
    """The shared files every session may download, and one big file for misbehaviour."""
    shared: dict[str, FileRef] = {}
    (home / "shared").mkdir()
    for index, size in enumerate(_SHARED_SIZES):
        offset = rng.randrange(0, len(pool) - size + 1)
        ref = file_ref(pool, offset, size)
        (home / "shared" / f"s{index}.bin").write_bytes(pool[offset : offset + size])
        shared[f"/shared/s{index}.bin"] = ref
    (home / "big").mkdir()
    with (home / "big" / "big.bin").open("wb") as big:
        for _ in range(_BIG_FILE_SIZE // len(pool) + 1):
            big.write(pool)
        big.truncate(_BIG_FILE_SIZE)
    for sid in misbehaving:
        (home / f"m{sid}").mkdir()
    return shared, "/big/big.bin"


class Sampler:
    """Every ``interval``: the server's RSS, descriptors and CPU, and the load so far."""

    def __init__(self, server: ServerProcess, workers: list[Any], start: float) -> None:
        self.server = server
        self.workers = workers
        self.start = start
        self.samples: list[dict[str, Any]] = []
        self.progress: dict[int, dict[str, int]] = {}
        self._last = (time.time(), server.cpu(), self._worker_cpu(), 0)

    def _worker_cpu(self) -> list[float]:
        return [cpu_seconds(worker.pid) if worker.pid else 0.0 for worker in self.workers]

    def take(self, phase: str) -> dict[str, Any]:
        now = time.time()
        server_cpu = self.server.cpu()
        worker_cpu = self._worker_cpu()
        total = {key: sum(p.get(key, 0) for p in self.progress.values()) for key in _PROGRESS}
        then, last_server, last_workers, last_bytes = self._last
        elapsed = max(now - then, 1e-6)
        per_worker = [
            (used - before) / elapsed * 100
            for used, before in zip(worker_cpu, last_workers, strict=True)
        ]
        sample = {
            "t": round(now - self.start, 1),
            "phase": phase,
            "rss_mib": round(self.server.rss() / MIB, 1),
            "fds": self.server.fds(),
            "server_cpu_pct": round((server_cpu - last_server) / elapsed * 100, 1),
            "load_cpu_pct": round(sum(per_worker), 1),
            "busiest_worker_pct": round(max(per_worker, default=0.0), 1),
            **total,
            "mib_per_s": round((total["bytes"] - last_bytes) / MIB / elapsed, 1),
        }
        self._last = (now, server_cpu, worker_cpu, total["bytes"])
        self.samples.append(sample)
        print(
            f"[{sample['t']:>6.0f}s {phase:<5}] rss {sample['rss_mib']:7.1f} MiB  "
            f"fds {sample['fds']:>5}  cpu server {sample['server_cpu_pct']:5.1f}% "
            f"load {sample['load_cpu_pct']:5.1f}%  sessions {sample['connected']:>4}  "
            f"ops {sample['ops']:>7}  moved {sample['bytes'] / MIB / 1024:6.2f} GiB "
            f"{sample['mib_per_s']:6.1f} MiB/s  fail {sample['failures']}  "
            f"corrupt {sample['corrupted_bytes']}  episodes {sample['episodes']}",
            flush=True,
        )
        return sample


_PROGRESS = ("ops", "failures", "bytes", "corrupted_bytes", "connected", "episodes")


def run_load(
    settings: Settings, server: ServerProcess, interval: float
) -> tuple[Sampler, Stats, list[str]]:
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    workers = [
        context.Process(target=worker_main, args=(settings, index, results), name=f"soak-{index}")
        for index in range(settings.workers)
    ]
    for worker in workers:
        worker.start()
    sampler = Sampler(server, workers, settings.start)
    finals: dict[int, Stats] = {}
    crashes: list[str] = []
    hard_stop = settings.deadline + 240
    next_sample = settings.start
    while len(finals) + len(crashes) < len(workers):
        try:
            kind, index, payload = results.get(timeout=max(0.05, next_sample - time.time()))
        except queue.Empty:
            pass
        else:
            if kind == "progress":
                sampler.progress[index] = payload
            elif kind == "done":
                finals[index] = payload
            else:
                crashes.append(f"worker {index}: {payload}")
                print(f"worker {index} crashed: {payload}", file=sys.stderr)
        now = time.time()
        if now >= next_sample:
            sampler.take("load" if now <= settings.deadline + 1 else "end")
            next_sample += interval
            if server.process is not None and server.process.poll() is not None:
                crashes.append(f"the server exited during the run: {server.process.returncode}")
                break
        if now > hard_stop:
            crashes.append("workers still running 240 s after the deadline; terminated")
            break
    for worker in workers:
        worker.join(5)
        if worker.is_alive():
            worker.terminate()
            worker.join(5)
    return sampler, Stats.merge(list(finals.values())), crashes


def source_version() -> str:
    """The commit the server runs from, and whether src/ differs from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{' with uncommitted changes in src/' if changed else ''}"


def survey_home(home: Path) -> dict[str, Any]:
    """What the run left on disk, and any temporary upload file the server forgot."""
    files = 0
    size = 0
    partials = []
    for path in home.rglob("*"):
        if path.is_file():
            files += 1
            size += path.stat().st_size
            if path.name.startswith(".ketch-upload-"):
                partials.append(str(path.relative_to(home)))
    return {
        "files": files,
        "bytes": size,
        "leftover_partials": len(partials),
        "partial_examples": partials[:10],
    }


def drain(server: ServerProcess, sampler: Sampler, fd_start: int, interval: float) -> int:
    """Wait (bounded) for the server to close what the ended sessions left open."""
    deadline = time.time() + 30
    next_sample = time.time()
    while time.time() < deadline:
        if server.fds() <= fd_start:
            break
        if time.time() >= next_sample:
            sampler.take("drain")
            next_sample += interval
        time.sleep(0.5)
    return server.fds()


def main() -> int:
    args = parse_args()
    old_limit, fd_limit = raise_fd_limit()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    cpus = os.cpu_count() or 1
    workers = args.workers or max(2, min(4, cpus))
    misbehaving = set(rng.sample(range(args.sessions), round(args.sessions * args.misbehaving)))
    warmup = min(args.warmup, args.duration / 3)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    temp = Path(tempfile.mkdtemp(prefix="ketch-soak-"))
    version = source_version()
    print(
        f"ketch soak: {args.sessions} sessions ({len(misbehaving)} misbehaving) for "
        f"{args.duration:g} s, {workers} worker processes, seed {seed}, "
        f"RLIMIT_NOFILE {old_limit} -> {fd_limit}, files in {temp}; ketch {version}",
        flush=True,
    )
    server: ServerProcess | None = None
    try:
        setup = write_config(
            temp,
            sessions=args.sessions,
            stall_timeout=args.stall_timeout,
            idle_timeout=args.idle_timeout,
            data_connect_timeout=args.data_connect_timeout,
        )
        pool = memoryview(make_pool(seed))
        shared, big_file = make_files(setup.home, pool, rng, misbehaving)
        server = ServerProcess(setup, temp / "server.log")
        server.start()
        time.sleep(0.5)  # let the start-up probe's connection close
        fd_start, rss_start = server.fds(), server.rss()
        print(
            f"server pid {server.pid} on 127.0.0.1:{setup.port}, passive "
            f"{setup.passive[0]}-{setup.passive[1]}: rss {rss_start / MIB:.1f} MiB, "
            f"{fd_start} fds",
            flush=True,
        )
        settings = Settings(
            host="127.0.0.1",
            port=setup.port,
            user=setup.user,
            password=setup.password,
            home=str(setup.home),
            seed=seed,
            start=time.time() + 3.0,  # the workers need a moment to start
            duration=args.duration,
            sessions=args.sessions,
            misbehaving=frozenset(misbehaving),
            shared=shared,
            big_file=big_file,
            dead_port=setup.dead_port,
            stall_timeout=args.stall_timeout,
            idle_timeout=args.idle_timeout,
            data_connect_timeout=args.data_connect_timeout,
            think=args.think,
            workers=workers,
        )
        sampler, stats, crashes = run_load(settings, server, args.interval)
        load_end = time.time()
        fd_end = drain(server, sampler, fd_start, args.interval)
        rss_drained = server.rss()
        fds = {
            "start": fd_start,
            "peak": max([s["fds"] for s in sampler.samples] + [fd_start]),
            "end": fd_end,
            "rss_after_drain_mib": round(rss_drained / MIB, 1),
        }
        server_exit = server.stop()
        run = {
            "started": stamp,
            "source": version,
            "seed": seed,
            "sessions": args.sessions,
            "well_behaved": args.sessions - len(misbehaving),
            "misbehaving": len(misbehaving),
            "duration": args.duration,
            "elapsed_load_seconds": round(min(load_end, settings.deadline) - settings.start, 1),
            "workers": workers,
            "cpus": cpus,
            "fd_limit": fd_limit,
            "server_pid": server.pid,
            "port": setup.port,
            "passive_ports": f"{setup.passive[0]}-{setup.passive[1]}",
            "stall_timeout": args.stall_timeout,
            "idle_timeout": args.idle_timeout,
            "data_connect_timeout": args.data_connect_timeout,
            "think": args.think,
            "rss_start_mib": round(rss_start / MIB, 1),
        }
        memory = memory_verdict(sampler.samples, warmup, args.interval, args.rss_growth)
        summary = build_summary(
            stats=stats,
            run=run,
            samples=sampler.samples,
            memory=memory,
            fds=fds,
            server_exit=server_exit,
            server_log=scan_log(server.log_path),
            disk=survey_home(setup.home),
            crashes=crashes,
        )
        print(format_summary(summary))
        args.results.mkdir(parents=True, exist_ok=True)
        output = args.results / f"{stamp}.json"
        document = {
            "args": {key: str(value) for key, value in vars(args).items()},
            "server_config": setup.config_path.read_text(),
            "shared_files": {path: asdict(ref) for path, ref in shared.items()},
            "summary": summary,
            "samples": sampler.samples,
        }
        output.write_text(json.dumps(document, indent=1) + "\n")
        print(f"results      {output}")
        return 0 if summary["passed"] else 1
    finally:
        if server is not None and server.process is not None and server.process.poll() is None:
            server.stop(10)
        if args.keep:
            print(f"kept         {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
