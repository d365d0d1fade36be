"""A/B: server CPU per session of two ketch source trees, in alternating rounds.

`make bench` compares ketch with its peers; this compares ketch with itself,
which is what a change to the session path needs: two servers (one per source
tree, each imported through PYTHONPATH) run side by side, and rounds of the
sessions workload (login + 1 MiB passive RETR + QUIT) alternate between them,
so that whatever drifts on a shared machine falls on both alike. It prints the
median server CPU, load-client CPU and sessions/s of each, and B/A ratios.

    make bench-ab BENCH_A=/tmp/old/src              # B defaults to this tree's src/
    PYTHONPATH=. .venv/bin/python bench/ab_sessions.py --a /tmp/old/src --b src --rounds 8

A difference under about 3 % between two runs of the same tree is noise here.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
from pathlib import Path

import uvloop
from load import run_sessions, short_session
from run_bench import DATA, _raise_fd_limit, _random_file
from scenarios import KIB, MIB, SESSION_TIMEOUT, Meter
from servers import HOST, control_ports, make_ketch, passive_range

from ketch.tools.certificates import write_certificate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (holds ketch/)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (holds ketch/)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=50)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    for tree in (args.a, args.b):
        if not (tree / "ketch" / "__init__.py").is_file():
            raise SystemExit(f"ab_sessions: {tree} holds no ketch package: give a src/ folder")
    _raise_fd_limit()
    base = DATA / "ab"
    base.mkdir(parents=True, exist_ok=True)
    small = DATA / "small-1M.bin"
    _random_file(small, MIB)
    tls = write_certificate(base / "tls", ["localhost"], days=1, stem="ab", overwrite=True)
    ports = control_ports(2)
    servers = []
    for index, (label, tree) in enumerate((("A", args.a), ("B", args.b))):
        (base / label).mkdir(exist_ok=True)
        server = make_ketch(base / label, ports[index], passive_range(index), tree.resolve(), tls)
        server.disk_dir.mkdir(parents=True, exist_ok=True)
        (server.disk_dir / "small.bin").unlink(missing_ok=True)
        os.link(small, server.disk_dir / "small.bin")
        server.name = label
        server.log_path.write_bytes(b"")
        servers.append(server)
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}
    try:
        for server in servers:
            server.start()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for round_ in range(args.rounds):
                order = servers if round_ % 2 == 0 else servers[::-1]
                for server in order:
                    work = functools.partial(short_session, HOST, server.port, server.user,
                                             server.password, "RETR small.bin", MIB)  # fmt: skip
                    with Meter(server) as meter:
                        results = runner.run(run_sessions(work, args.sessions, args.concurrency,
                                                          64 * KIB, SESSION_TIMEOUT))  # fmt: skip
                    failures = sum(results.failures.values())
                    got = samples[server.name]
                    for key, value in (
                        ("server_ms", meter.server_cpu * 1000 / args.sessions),
                        ("client_ms", meter.client_cpu * 1000 / args.sessions),
                        ("per_s", len(results.latencies) / results.seconds),
                        ("failures", float(failures)),
                    ):
                        got.setdefault(key, []).append(value)
                    print(f"round {round_ + 1} {server.name}: server "
                          f"{got['server_ms'][-1]:.3f} ms, client {got['client_ms'][-1]:.3f} ms,"
                          f" {got['per_s'][-1]:.0f}/s, {failures} failed", flush=True)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    medians = {name: {k: statistics.median(v) for k, v in got.items()}
               for name, got in samples.items()}  # fmt: skip
    a, b = medians["A"], medians["B"]
    print(f"\nmedians of {args.rounds} rounds, {args.sessions} sessions at c{args.concurrency}")
    for key in ("server_ms", "client_ms", "per_s", "failures"):
        ratio = b[key] / a[key] if a[key] else float("nan")
        print(f"  {key:10} A {a[key]:9.3f}   B {b[key]:9.3f}   B/A {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
