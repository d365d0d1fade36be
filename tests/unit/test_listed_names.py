"""ListedNames: which directories' names big listings may reuse, and how many are kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ketch.config import ServerConfig
from ketch.server import listed_names
from ketch.server.context import ServerContext
from ketch.server.listed_names import MAX_DIRECTORIES, MAX_NAME_BYTES, ListedNames


def stat_of(ino: int, ctime_ns: int = 1, mtime_ns: int = 1, size: int = 4096) -> os.stat_result:
    """An fstat of directory ``ino`` (device 1) as the kernel would give it."""
    fields = [0o40755, ino, 1, 2, 0, 0, size, 0, 0, 0]  # mode ino dev nlink uid gid size times
    return os.stat_result((*fields, 0.0, 0.0, 0.0, 0, mtime_ns, ctime_ns))


def test_names_are_reused_only_for_the_same_version_and_parts() -> None:
    kept = ListedNames()
    kept.keep(stat_of(7), [b"a\0b", b"c"])
    assert kept.kept_parts(stat_of(7), 2) == [b"a\0b", b"c"]
    assert kept.kept_parts(stat_of(8), 2) is None  # another directory
    assert kept.kept_parts(stat_of(7), 3) is None  # cut for another worker count: dropped
    assert kept.kept_parts(stat_of(7), 2) is None
    for changed in (stat_of(7, ctime_ns=2), stat_of(7, mtime_ns=2), stat_of(7, size=8192)):
        kept.keep(stat_of(7), [b"a", b"b"])
        assert kept.kept_parts(changed, 2) is None
        assert kept.kept_parts(stat_of(7), 2) is None  # a changed directory is dropped
    assert kept._bytes == 0


def test_only_directories_unchanged_for_a_while_may_be_kept(tmp_path: Path) -> None:
    assert listed_names.SETTLED_NS == 2_000_000_000
    now = time.time_ns()
    kept = ListedNames(clock=lambda: now)
    assert kept.may_keep(stat_of(1, ctime_ns=now - 2_000_000_001))
    assert not kept.may_keep(stat_of(1, ctime_ns=now - 2_000_000_000))
    assert ListedNames().may_keep(stat_of(1, ctime_ns=now - 60_000_000_000))  # the real clock
    assert not ListedNames().may_keep(os.stat(tmp_path))  # just made


def test_the_least_lately_listed_go_first() -> None:
    kept = ListedNames()
    for ino in range(MAX_DIRECTORIES):
        kept.keep(stat_of(ino), [b"x"])
    assert kept.kept_parts(stat_of(0), 1) == [b"x"]  # now the most lately used
    kept.keep(stat_of(1000), [b"y"])  # one too many: 1 goes
    assert kept.kept_parts(stat_of(1), 1) is None
    assert kept.kept_parts(stat_of(0), 1) == [b"x"]
    assert kept.kept_parts(stat_of(1000), 1) == [b"y"]
    assert len(kept._kept) == MAX_DIRECTORIES


def test_names_are_kept_up_to_a_total_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listed_names, "MAX_NAME_BYTES", 100)
    kept = ListedNames()
    kept.keep(stat_of(1), [b"a" * 40])
    kept.keep(stat_of(2), [b"b" * 40])
    kept.keep(stat_of(3), [b"c" * 101])  # more than all: not kept, nothing dropped for it
    assert kept.kept_parts(stat_of(3), 1) is None
    assert kept._bytes == 80
    kept.keep(stat_of(2), [b"c" * 101])  # too big now: the old names go too
    assert kept.kept_parts(stat_of(2), 1) is None
    assert kept._bytes == 40
    kept.keep(stat_of(2), [b"b" * 40])
    kept.keep(stat_of(3), [b"c" * 30, b"d" * 20])  # 50: the oldest goes to make room
    assert kept.kept_parts(stat_of(1), 1) is None
    assert kept.kept_parts(stat_of(2), 1) == [b"b" * 40]
    assert kept.kept_parts(stat_of(3), 2) == [b"c" * 30, b"d" * 20]
    kept.keep(stat_of(2), [b"e" * 10])  # again: replaces, counted once
    assert kept._bytes == 60
    assert MAX_NAME_BYTES == 32 * 1024 * 1024


def test_listing_cache_reaches_the_listing_workers_and_follows_reloads(tmp_path: Path) -> None:
    config = ServerConfig(root=tmp_path)
    context = ServerContext.from_config(config)
    assert context.listing_workers.keep_names
    off = config.model_copy(update={"listing_cache": False})
    context.reconfigure(off, context.authenticator, context.masquerade)
    assert not context.listing_workers.keep_names
    assert not ServerContext.from_config(off).listing_workers.keep_names


def test_turned_off_the_kept_names_go_at_once(tmp_path: Path) -> None:
    workers = ServerContext.from_config(ServerConfig(root=tmp_path)).listing_workers
    workers._names.keep(stat_of(1), [b"a" * 40])
    workers.keep_names = True  # on again while on: nothing changes
    assert workers._names._bytes == 40
    workers.keep_names = False
    assert workers._names._bytes == 0
    workers.keep_names = True
    assert workers._names.kept_parts(stat_of(1), 1) is None
