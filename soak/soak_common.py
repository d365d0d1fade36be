"""What the soak harness's processes share: settings, test data, counters.

Every byte a session uploads or expects to download is a slice of one
pseudo-random *pool* that each process rebuilds from the run's seed, so a
file is described by (offset, size, sha256) and never has to cross a process
boundary. A download is compared byte by byte against its slice, which gives
an exact count of corrupted bytes, and its sha256 against the recorded one.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

POOL_SIZE = 12 * 1024 * 1024
MAX_FILE_SIZE = 2 * 1024 * 1024
LATENCY_RESERVOIR = 4000
MESSAGE_LIMIT = 40


def make_pool(seed: int) -> bytes:
    """The run's random bytes; the same seed gives the same pool in every process."""
    return random.Random(seed).randbytes(POOL_SIZE)


@dataclass(frozen=True)
class FileRef:
    """A file's content, as a slice of the pool."""

    offset: int
    size: int
    sha256: str


def file_ref(pool: memoryview, offset: int, size: int) -> FileRef:
    return FileRef(offset, size, hashlib.sha256(pool[offset : offset + size]).hexdigest())


def count_differences(got: bytes | memoryview, want: bytes | memoryview) -> int:
    """Bytes that differ between two buffers, a missing or extra byte counting as one."""
    common = min(len(got), len(want))
    differing = abs(len(got) - len(want))
    # bytes objects compare with memcmp; memoryviews compare element by element (slow).
    mine, theirs = bytes(got[:common]), bytes(want[:common])
    if mine != theirs:
        mixed = int.from_bytes(mine, "big") ^ int.from_bytes(theirs, "big")
        differing += common - mixed.to_bytes(common, "big").count(0)
    return differing


def differences_from_pool(got: bytes | memoryview, pool: bytes, offset: int, size: int) -> int:
    """Bytes of ``got`` that differ from the pool's slice; 0 fast when all match.

    ``bytes.startswith`` compares a buffer against the pool in place, without
    copying either side.
    """
    if len(got) == size and pool.startswith(got, offset):
        return 0
    return count_differences(got, memoryview(pool)[offset : offset + size])


@dataclass(frozen=True)
class Settings:
    """Everything a worker process needs to generate its share of the load."""

    host: str
    port: int
    user: str
    password: str
    home: str  # the user's home directory on disk (uploads are verified there)
    seed: int
    start: float  # time.time() when the load starts
    duration: float
    sessions: int
    misbehaving: frozenset[int]
    shared: dict[str, FileRef]  # virtual path -> content, pre-made in the home
    big_file: str  # virtual path of a large file for misbehaving downloads
    dead_port: int  # where nothing listens, outside the ephemeral range
    stall_timeout: float
    idle_timeout: float
    data_connect_timeout: float
    think: float  # longest pause between two operations of a session
    workers: int

    @property
    def deadline(self) -> float:
        return self.start + self.duration


@dataclass
class Stats:
    """One worker's counters; ``merge`` adds several workers' up in the main process."""

    ops: Counter[str] = field(default_factory=Counter)
    op_failures: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    modes: Counter[str] = field(default_factory=Counter)
    logins: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    corrupted_bytes: int = 0
    corrupted_files: int = 0
    corruption: list[str] = field(default_factory=list)
    verified_uploads: int = 0
    verified_downloads: int = 0
    connected: int = 0
    latency_count: Counter[str] = field(default_factory=Counter)
    latency_total: dict[str, float] = field(default_factory=dict)
    latency_max: dict[str, float] = field(default_factory=dict)
    latency_samples: dict[str, list[float]] = field(default_factory=dict)
    misbehaviour: dict[str, Counter[str]] = field(default_factory=dict)
    misbehaviour_notes: list[str] = field(default_factory=list)

    def fail(self, kind: str, message: str) -> None:
        self.op_failures[kind] += 1
        if len(self.failures) < MESSAGE_LIMIT:
            self.failures.append(message)

    def corrupt(self, bad_bytes: int, message: str) -> None:
        self.corrupted_bytes += bad_bytes
        self.corrupted_files += 1
        if len(self.corruption) < MESSAGE_LIMIT:
            self.corruption.append(message)

    def timed(self, kind: str, seconds: float, rng: random.Random) -> None:
        self.ops[kind] += 1
        self.latency_count[kind] += 1
        self.latency_total[kind] = self.latency_total.get(kind, 0.0) + seconds
        self.latency_max[kind] = max(self.latency_max.get(kind, 0.0), seconds)
        samples = self.latency_samples.setdefault(kind, [])
        if len(samples) < LATENCY_RESERVOIR:
            samples.append(seconds)
        else:  # reservoir sampling keeps a uniform sample of every latency seen
            slot = rng.randrange(self.latency_count[kind])
            if slot < LATENCY_RESERVOIR:
                samples[slot] = seconds

    def episode(self, kind: str, outcome: str, note: str = "") -> None:
        self.misbehaviour.setdefault(kind, Counter())[outcome] += 1
        if note and len(self.misbehaviour_notes) < MESSAGE_LIMIT:
            self.misbehaviour_notes.append(f"{kind}: {note}")

    def progress(self) -> dict[str, Any]:
        """The few numbers the sampler prints every interval."""
        return {
            "ops": sum(self.ops.values()),
            "failures": sum(self.op_failures.values()),
            "bytes": self.bytes_up + self.bytes_down,
            "corrupted_bytes": self.corrupted_bytes,
            "connected": self.connected,
            "episodes": sum(sum(c.values()) for c in self.misbehaviour.values()),
        }

    @classmethod
    def merge(cls, parts: list[Stats]) -> Stats:
        total = cls()
        for part in parts:
            total.ops.update(part.ops)
            total.op_failures.update(part.op_failures)
            total.failures.extend(part.failures)
            total.modes.update(part.modes)
            total.logins += part.logins
            total.bytes_up += part.bytes_up
            total.bytes_down += part.bytes_down
            total.corrupted_bytes += part.corrupted_bytes
            total.corrupted_files += part.corrupted_files
            total.corruption.extend(part.corruption)
            total.verified_uploads += part.verified_uploads
            total.verified_downloads += part.verified_downloads
            total.connected += part.connected
            total.latency_count.update(part.latency_count)
            for kind, seconds in part.latency_total.items():
                total.latency_total[kind] = total.latency_total.get(kind, 0.0) + seconds
            for kind, seconds in part.latency_max.items():
                total.latency_max[kind] = max(total.latency_max.get(kind, 0.0), seconds)
            for kind, samples in part.latency_samples.items():
                total.latency_samples.setdefault(kind, []).extend(samples)
            for kind, outcomes in part.misbehaviour.items():
                total.misbehaviour.setdefault(kind, Counter()).update(outcomes)
            total.misbehaviour_notes.extend(part.misbehaviour_notes)
        return total
