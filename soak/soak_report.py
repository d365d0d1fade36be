"""The soak run's verdict: memory trend, counts, and the summary people read."""

from __future__ import annotations

import statistics
from typing import Any

from soak_common import Stats

MIB = 1024 * 1024
GIB = 1024 * MIB


def memory_verdict(
    samples: list[dict[str, Any]], warmup: float, interval: float, allowed_growth: float
) -> dict[str, Any]:
    """Is the server's RSS flat under steady load?

    The baseline is the mean of the first three samples after the warm-up,
    the final figure the mean of the last three samples under load (single
    samples are noisy), and "flat" means final <= baseline * (1 + allowed).
    The slope of a least-squares line through the post-warm-up samples is
    reported alongside, per minute.
    """
    load = [s for s in samples if s["phase"] == "load"]
    warm = [s for s in load if s["t"] >= warmup]
    result: dict[str, Any] = {
        "warmup_seconds": warmup,
        "allowed_growth": allowed_growth,
        "start_mib": load[0]["rss_mib"] if load else None,
        "samples_after_warmup": len(warm),
    }
    if len(warm) < 2:
        result.update(flat=False, reason="too short to judge: under 2 samples after the warm-up")
        return result
    rss = [s["rss_mib"] for s in warm]
    baseline = statistics.fmean(rss[:3])
    final = statistics.fmean(rss[-3:])
    times = [s["t"] / 60 for s in warm]
    slope = statistics.linear_regression(times, rss).slope if len(set(times)) > 1 else 0.0
    growth = final / baseline - 1 if baseline else 0.0
    flat = growth <= allowed_growth
    result.update(
        baseline_mib=round(baseline, 1),
        min_mib=round(min(rss), 1),
        max_mib=round(max(rss), 1),
        final_mib=round(final, 1),
        last_sample_mib=rss[-1],
        growth=round(growth, 4),
        slope_mib_per_min=round(slope, 3),
        flat=flat,
        reason=(
            f"final {final:.1f} MiB is {growth:+.1%} from the post-warm-up {baseline:.1f} MiB "
            f"(allowed {allowed_growth:+.0%})"
        ),
    )
    return result


def latency_table(stats: Stats) -> dict[str, dict[str, float]]:
    table = {}
    for kind in sorted(stats.latency_count):
        samples = sorted(stats.latency_samples.get(kind, [])) or [0.0]

        def at(fraction: float, samples: list[float] = samples) -> float:
            return round(samples[min(len(samples) - 1, int(fraction * len(samples)))], 3)

        table[kind] = {
            "count": stats.latency_count[kind],
            "mean": round(stats.latency_total[kind] / stats.latency_count[kind], 3),
            "p50": at(0.50),
            "p95": at(0.95),
            "p99": at(0.99),
            "max": round(stats.latency_max[kind], 3),
        }
    return table


def build_summary(
    *,
    stats: Stats,
    run: dict[str, Any],
    samples: list[dict[str, Any]],
    memory: dict[str, Any],
    fds: dict[str, Any],
    server_exit: dict[str, Any],
    server_log: dict[str, Any],
    disk: dict[str, Any],
    crashes: list[str],
) -> dict[str, Any]:
    failures = sum(stats.op_failures.values())
    load = [s for s in samples if s["phase"] == "load" and s["t"] > 0]
    seconds = run["elapsed_load_seconds"] or 1.0
    moved = stats.bytes_up + stats.bytes_down
    reasons = []
    if failures:
        reasons.append(f"{failures} failures among well-behaved sessions")
    if stats.corrupted_bytes or stats.corrupted_files:
        reasons.append(f"{stats.corrupted_bytes} corrupted bytes in {stats.corrupted_files} files")
    if not memory.get("flat"):
        reasons.append(f"memory not flat: {memory.get('reason')}")
    if crashes:
        reasons.append(f"{len(crashes)} load-generator worker(s) crashed")
    misbehaviour = {kind: dict(outcomes) for kind, outcomes in sorted(stats.misbehaviour.items())}
    # Worth a look, but not what the exit status is about.
    warnings = []
    if fds["end"] > fds["start"]:
        warnings.append(f"{fds['end'] - fds['start']} more server fds at the end than at the start")
    if server_exit.get("status") != 0:
        warnings.append(f"server exit status {server_exit.get('status')}")
    if server_log["tracebacks"] or server_log["levels"].get("ERROR"):
        warnings.append(
            f"server log has {server_log['levels'].get('ERROR', 0)} errors, "
            f"{server_log['tracebacks']} tracebacks"
        )
    if disk["leftover_partials"]:
        warnings.append(f"{disk['leftover_partials']} temporary upload files left in the homes")
    unexpected = sum(outcomes.get("unexpected", 0) for outcomes in misbehaviour.values())
    if unexpected:
        warnings.append(f"{unexpected} misbehaviour episodes with unexpected server behaviour")
    return {
        "passed": not reasons,
        "reasons": reasons,
        "warnings": warnings,
        "run": run,
        "operations": dict(sorted(stats.ops.items())),
        "operations_total": sum(stats.ops.values()),
        "logins": stats.logins,
        "transfers_by_mode": dict(sorted(stats.modes.items())),
        "failures": failures,
        "failures_by_operation": dict(sorted(stats.op_failures.items())),
        "first_failures": stats.failures[:10],
        "corrupted_bytes": stats.corrupted_bytes,
        "corrupted_files": stats.corrupted_files,
        "first_corruptions": stats.corruption[:10],
        "verified_uploads": stats.verified_uploads,
        "verified_downloads": stats.verified_downloads,
        "bytes_uploaded": stats.bytes_up,
        "bytes_downloaded": stats.bytes_down,
        "mib_per_second": round(moved / MIB / seconds, 1),
        "latency_seconds": latency_table(stats),
        "misbehaviour": misbehaviour,
        "misbehaviour_unexpected_notes": stats.misbehaviour_notes[:15],
        "memory": memory,
        "fds": fds,
        "cpu": {
            "server_mean_pct": _mean(load, "server_cpu_pct"),
            "load_generator_mean_pct": _mean(load, "load_cpu_pct"),
            "busiest_worker_mean_pct": _mean(load, "busiest_worker_pct"),
        },
        "server_exit": server_exit,
        "server_log": server_log,
        "disk": disk,
        "worker_crashes": crashes,
    }


def _mean(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return round(statistics.fmean(values), 1) if values else None


def format_summary(summary: dict[str, Any]) -> str:
    run = summary["run"]
    memory = summary["memory"]
    fds = summary["fds"]
    cpu = summary["cpu"]
    lines = [
        "",
        f"== ketch soak summary: {run['sessions']} sessions ({run['well_behaved']} well-behaved, "
        f"{run['misbehaving']} misbehaving), {run['duration']:g} s, "
        f"{run['workers']} worker processes on {run['cpus']} CPUs ==",
        f"source       ketch {run['source']}",
        f"server       pid {run['server_pid']}, 127.0.0.1:{run['port']}, passive "
        f"{run['passive_ports']}, data_stall_timeout {run['stall_timeout']:g} s, "
        f"idle_timeout {run['idle_timeout']:g} s",
        f"operations   {summary['operations_total']} ok, {summary['logins']} logins: "
        + ", ".join(f"{kind} {count}" for kind, count in summary["operations"].items()),
        "data modes   "
        + ", ".join(f"{mode} {count}" for mode, count in summary["transfers_by_mode"].items()),
        f"moved        up {summary['bytes_uploaded'] / GIB:.2f} GiB, down "
        f"{summary['bytes_downloaded'] / GIB:.2f} GiB, {summary['mib_per_second']} MiB/s "
        f"over {run['elapsed_load_seconds']:.0f} s",
        f"verified     {summary['verified_uploads']} uploads (read back from disk), "
        f"{summary['verified_downloads']} downloads (byte by byte and sha256)",
        f"failures     {summary['failures']} among well-behaved sessions"
        + (f" {summary['failures_by_operation']}" if summary["failures"] else ""),
    ]
    lines += [f"    {message}" for message in summary["first_failures"][:5]]
    lines.append(
        f"corruption   {summary['corrupted_bytes']} bytes in {summary['corrupted_files']} files"
    )
    lines += [f"    {message}" for message in summary["first_corruptions"][:5]]
    lines.append("latency      p50 / p95 / p99 / max seconds:")
    for kind, row in summary["latency_seconds"].items():
        lines.append(
            f"    {kind:<14} {row['count']:>7}  {row['p50']:.3f} / {row['p95']:.3f} / "
            f"{row['p99']:.3f} / {row['max']:.3f}"
        )
    lines.append("misbehaving  episodes: expected / unexpected (counted apart from failures)")
    for kind, outcomes in summary["misbehaviour"].items():
        lines.append(
            f"    {kind:<20} {outcomes.get('expected', 0):>5} / {outcomes.get('unexpected', 0)}"
        )
    lines += [f"    ! {note}" for note in summary["misbehaviour_unexpected_notes"][:8]]
    if "baseline_mib" in memory:
        lines.append(
            f"memory       RSS start {memory['start_mib']} MiB; after warm-up "
            f"({memory['warmup_seconds']:g} s) {memory['baseline_mib']} MiB; min "
            f"{memory['min_mib']}, max {memory['max_mib']}, final {memory['final_mib']} MiB; "
            f"slope {memory['slope_mib_per_min']:+.2f} MiB/min; after drain "
            f"{fds.get('rss_after_drain_mib')} MiB"
        )
    lines.append(f"             {'FLAT' if memory['flat'] else 'NOT FLAT'}: {memory['reason']}")
    lines.append(
        f"fds          start {fds['start']}, peak {fds['peak']}, end {fds['end']} "
        f"(after all sessions closed) -> "
        + ("no leak" if fds["end"] <= fds["start"] else f"{fds['end'] - fds['start']} more")
    )
    server_exit = summary["server_exit"]
    lines.append(
        f"server exit  status {server_exit.get('status')} ({server_exit.get('note')}"
        + (f", {server_exit['seconds']} s" if "seconds" in server_exit else "")
        + ")"
    )
    log = summary["server_log"]
    lines.append(f"server log   lines by level {log['levels']}, tracebacks {log['tracebacks']}")
    lines.append(
        "             transfers: "
        + ", ".join(f"{kind} {count}" for kind, count in log["transfers"].items())
    )
    for problem in log["problems"][:12]:
        lines.append(f"    {problem['count']:>6} x {problem['kind']}")
    disk = summary["disk"]
    lines.append(
        f"disk         {disk['files']} files, {disk['bytes'] / MIB:.0f} MiB left in the home; "
        f"{disk['leftover_partials']} temporary upload files left over"
    )
    lines += [f"    {path}" for path in disk["partial_examples"][:5]]
    lines.append(
        f"cpu          server {cpu['server_mean_pct']}% (of one CPU), load generator "
        f"{cpu['load_generator_mean_pct']}% in all, "
        f"busiest worker {cpu['busiest_worker_mean_pct']}%"
    )
    for crash in summary["worker_crashes"]:
        lines.append(f"worker crash {crash.splitlines()[0]}")
    lines.append(
        "verdict      "
        + ("PASS" if summary["passed"] else "FAIL: " + "; ".join(summary["reasons"]))
    )
    if summary["warnings"]:
        lines.append("warnings     " + "; ".join(summary["warnings"]))
    return "\n".join(lines)
