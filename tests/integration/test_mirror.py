"""``ketch mirror`` both ways against ketch's own server, as users run it.

A tree of about 200 files (nested several levels deep, some empty, a few KB
each, two of 1 MiB) is mirrored with parallel sessions and compared file by
file by sha256. A second run must transfer nothing, and after one file
changes, a third run must transfer exactly that file: the skip rule at work.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ketch.client import Client, PermanentReplyError
from ketch.client.mirror import MirrorResult, mirror_download

from conftest import USER, RunningServer, alice_with
from ftp_helpers import (
    KETCH,
    LIST_ONLY_FEATURES,
    MLSD_FEATURES,
    Handler,
    ketch_with_server,
    refuse,
    run_ketch,
    scripted_server,
    send_by_path,
)
from peer_servers import PeerServer

TIMEOUT = 90
SUMMARY = re.compile(
    r"^mirror: (?P<transferred>\d+) transferred, .*?, (?P<skipped>\d+) skipped, "
    r"(?P<failed>\d+) failed",
    re.MULTILINE,
)
DIRECTORIES = ("", "a", "a/b", "a/b/c", "a/b/c/d", "e", "e/f", "g", "g/h", "g/h/i", "j k")
FILE_COUNT = 200
BIG_FILES = ("a/b/c/big-1.bin", "g/big-2.bin")


def make_tree(root: Path, seed: int) -> dict[str, str]:
    """Write the test tree under ``root``; returns {relative path: sha256}.

    The files' times lie in the past (hours ago, and years ago for a few, which
    LIST shows to the day only), so that a mirror that failed to carry the
    time over, or compared times the wrong way, would transfer them again.
    """
    rng = random.Random(seed)
    hours_ago = time.time() - 3 * 3600
    years_ago = datetime(2019, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp()
    digests = {}
    for directory in DIRECTORIES:
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "empty-dir" / "nested").mkdir(parents=True)
    for index in range(FILE_COUNT):
        directory = DIRECTORIES[index % len(DIRECTORIES)]
        relative = f"{directory}/file-{index:03d}.dat".lstrip("/")
        size = 0 if index % 25 == 0 else rng.randrange(1, 8192)
        digests[relative] = write(root / relative, rng.randbytes(size))
        moment = years_ago if index % 10 == 0 else hours_ago
        os.utime(root / relative, (moment, moment))
    for relative in BIG_FILES:
        digests[relative] = write(root / relative, rng.randbytes(1 << 20))
        os.utime(root / relative, (hours_ago, hours_ago))
    return digests


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def mirror(home: Path, *args: str) -> tuple[dict[str, int], str]:
    """Run ``ketch mirror``; returns the summary's counts and stderr."""
    result = run_ketch(home, "mirror", *args)
    stderr = result.stderr.decode()
    match = SUMMARY.search(stderr)
    assert match is not None, stderr
    counts = {key: int(value) for key, value in match.groupdict().items()}
    counts["exit"] = result.returncode
    return counts, stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


TOTAL = FILE_COUNT + len(BIG_FILES)


@dataclass
class Site:
    """Where a server keeps the user's writable directory, and its URL."""

    user: str
    disk: Path
    base_url: str  # ends in "/"

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture(
    params=[
        "ketch",
        pytest.param("vsftpd", marks=pytest.mark.peer),
        pytest.param("pure-ftpd", marks=pytest.mark.peer),
    ]
)
def site(request: pytest.FixtureRequest) -> Site:
    """ketch's own server, vsftpd (anonymous, writable pub/) or pure-ftpd."""
    if request.param == "ketch":
        server: RunningServer = request.getfixturevalue("server")
        return Site(USER, server.home, server.url("/"))
    peer: PeerServer = request.getfixturevalue(
        "vsftpd_server" if request.param == "vsftpd" else "pure_ftpd_server"
    )
    return Site(peer.user, peer.writable, peer.url())


def test_mirror_down_in_parallel_then_only_what_changed(
    site: Site, home: Path, tmp_path: Path
) -> None:
    expected = make_tree(site.disk / "tree", seed=1)
    local = tmp_path / "copy"
    url = site.url("tree/")

    counts, stderr = mirror(home, "-j", "4", "-v", url, str(local))
    assert counts == {"transferred": TOTAL, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert stderr.splitlines().count(f"> USER {site.user}") == 4  # four sessions
    # Sizes come from the listings: no SIZE round trip per file.
    assert not any(line.startswith("> SIZE ") for line in stderr.splitlines())
    assert tree_digests(local) == expected
    assert (local / "empty-dir" / "nested").is_dir()

    counts, stderr = mirror(home, "-j", "4", url, str(local))
    assert counts == {"transferred": 0, "skipped": TOTAL, "failed": 0, "exit": 0}, stderr

    changed = "a/b/file-002.dat"
    expected[changed] = write(site.disk / "tree" / changed, b"now a different size")
    counts, stderr = mirror(home, "-j", "4", url, str(local))
    assert counts == {"transferred": 1, "skipped": TOTAL - 1, "failed": 0, "exit": 0}, stderr
    assert f"get {changed}: 20 bytes" in stderr
    assert tree_digests(local) == expected


def test_mirror_up_in_parallel_then_only_what_changed(
    site: Site, home: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    expected = make_tree(local, seed=2)
    remote = site.disk / "up" / "here"  # its parent is missing too: both are created
    url = site.url("up/here/")

    counts, stderr = mirror(home, "--reverse", "-j", "4", str(local), url)
    assert counts == {"transferred": TOTAL, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert tree_digests(remote) == expected
    assert (remote / "empty-dir" / "nested").is_dir()

    counts, stderr = mirror(home, "--reverse", "-j", "4", str(local), url)
    assert counts == {"transferred": 0, "skipped": TOTAL, "failed": 0, "exit": 0}, stderr

    changed = "g/h/i/file-009.dat"
    expected[changed] = write(local / changed, b"grown " * 2000)
    counts, stderr = mirror(home, "--reverse", "-j", "4", str(local), url)
    assert counts == {"transferred": 1, "skipped": TOTAL - 1, "failed": 0, "exit": 0}, stderr
    assert f"put {changed}: 12000 bytes" in stderr
    assert tree_digests(remote) == expected


def test_mirror_in_active_mode(server: RunningServer, home: Path, tmp_path: Path) -> None:
    source = server.home / "small"
    source.mkdir()
    expected = {
        f"d{n % 3}/f{n}.txt": write_in(source / f"d{n % 3}", f"f{n}.txt", n) for n in range(12)
    }
    local = tmp_path / "copy"
    counts, stderr = mirror(home, "--active", "-v", "-j", "2", server.url("/small/"), str(local))
    assert counts == {"transferred": 12, "skipped": 0, "failed": 0, "exit": 0}, stderr
    commands = {line[2:].split(" ")[0] for line in stderr.splitlines() if line.startswith("> ")}
    assert "EPRT" in commands and not {"EPSV", "PASV"} & commands
    assert stderr.count(" via EPRT") == 12
    assert tree_digests(local) == expected


def test_names_starting_with_tilde_at_the_login_directory_are_not_read_as_home(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    # ketch, proftpd and pure-ftpd read "~" and "~/x" as the home: a file or directory
    # called "~" at the top of the mirror must be asked for as "./~".
    (server.home / "~").write_bytes(b"a file named ~")
    (server.home / "~dir" / "~").mkdir(parents=True)
    (server.home / "~dir" / "~" / "inner").write_bytes(b"inner")
    local = tmp_path / "copy"
    counts, stderr = mirror(home, "-v", server.url("/"), str(local))
    assert counts == {"transferred": 2, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert tree_digests(local) == tree_digests(server.home)

    up = tmp_path / "up"
    (up / "~").mkdir(parents=True)
    (up / "~" / "x").write_bytes(b"x")
    (up / "~top").write_bytes(b"top")
    shutil.rmtree(server.home / "~dir")
    (server.home / "~").unlink()
    counts, stderr = mirror(home, "--reverse", "-v", str(up), server.url("/"))
    assert counts == {"transferred": 2, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert tree_digests(server.home) == tree_digests(up)


def write_in(directory: Path, name: str, size: int) -> str:
    directory.mkdir(exist_ok=True)
    return write(directory / name, os.urandom(size * 100))


def test_dry_run_lists_without_transferring(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    tree = server.home / "t"
    (tree / "sub").mkdir(parents=True)
    (tree / "one.txt").write_bytes(b"1")
    (tree / "sub" / "two.txt").write_bytes(b"22")
    local = tmp_path / "copy"
    result = run_ketch(home, "mirror", "--dry-run", server.url("/t/"), str(local))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["mkdir sub", "get one.txt", "get sub/two.txt"]
    assert not local.exists()


def test_per_file_failures_exit_9_and_the_rest_is_transferred(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    tree = server.home / "t"
    tree.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (tree / name).write_bytes(name.encode())
    local = tmp_path / "copy"
    (local / "b.txt").mkdir(parents=True)  # a directory where a file must go
    counts, stderr = mirror(home, server.url("/t/"), str(local))
    assert counts == {"transferred": 2, "skipped": 0, "failed": 1, "exit": 9}, stderr
    failures = [line for line in stderr.splitlines() if line.startswith("ketch: ")]
    assert len(failures) == 1 and failures[0].startswith("ketch: b.txt: ")
    assert (local / "a.txt").read_bytes() == b"a.txt"
    assert (local / "c.txt").read_bytes() == b"c.txt"


def test_a_refused_download_leaves_the_old_local_file_whole(
    make_server: Callable[..., RunningServer], home: Path, tmp_path: Path
) -> None:
    # alice may list but not read: the server refuses RETR (550), and the older
    # local copy the mirror meant to replace must stay as it was.
    remote = tmp_path / "listed-only"
    remote.mkdir()
    (remote / "fenced.txt").write_bytes(b"new remote content")
    server = make_server(**alice_with(remote, permissions=["list"]))
    local = tmp_path / "copy"
    local.mkdir()
    (local / "fenced.txt").write_bytes(b"old local content")
    os.utime(local / "fenced.txt", (0, 0))  # older and another size: due for a download
    counts, stderr = mirror(home, server.url("/"), str(local))
    assert counts == {"transferred": 0, "skipped": 0, "failed": 1, "exit": 9}, stderr
    assert "550" in stderr
    assert (local / "fenced.txt").read_bytes() == b"old local content"
    assert os.listdir(local) == ["fenced.txt"]  # no temporary file left behind


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_mirror_stopped_by_a_signal_leaves_no_partial_files(
    make_server: Callable[..., RunningServer], home: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    # cron's timeout and systemd send SIGTERM: it must clean up as Ctrl-C does, not
    # leave a hidden .part file behind, under a new random name at every run.
    remote = tmp_path / "slow"
    remote.mkdir()
    (remote / "big.bin").write_bytes(bytes(4 << 20))
    server = make_server(**alice_with(remote, download_rate=256 * 1024))
    local = tmp_path / "copy"
    command = [*KETCH, "mirror", server.url("/"), str(local)]
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, env={**os.environ, "HOME": str(home)}
    ) as process:
        try:
            deadline = time.monotonic() + TIMEOUT
            while not (local.is_dir() and any(p.stat().st_size for p in local.iterdir())):
                assert time.monotonic() < deadline, "the download never started"
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.05)
            process.send_signal(stop)
            _, stderr = process.communicate(timeout=TIMEOUT)
        finally:
            process.kill()
    expected = {signal.SIGTERM: (143, "terminated"), signal.SIGINT: (130, "interrupted")}[stop]
    assert (process.returncode, stderr.decode().strip()) == (
        expected[0],
        f"ketch: {expected[1]}" + (" (SIGTERM)" if stop == signal.SIGTERM else ""),
    )
    assert os.listdir(local) == []


def test_a_mirrored_file_replaces_a_local_symbolic_link_and_keeps_permissions(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    tree = server.home / "t"
    tree.mkdir()
    (tree / "linked.txt").write_bytes(b"remote linked")
    (tree / "plain.txt").write_bytes(b"remote plain")
    local = tmp_path / "copy"
    local.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"must not be written through the link")
    (local / "linked.txt").symlink_to(outside)
    (local / "plain.txt").write_bytes(b"old")
    (local / "plain.txt").chmod(0o600)
    os.utime(local / "plain.txt", (0, 0))
    counts, stderr = mirror(home, server.url("/t/"), str(local))
    assert counts == {"transferred": 2, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert outside.read_bytes() == b"must not be written through the link"
    assert not (local / "linked.txt").is_symlink()
    assert (local / "linked.txt").read_bytes() == b"remote linked"
    assert (local / "plain.txt").read_bytes() == b"remote plain"
    assert (local / "plain.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(local)) == ["linked.txt", "plain.txt"]


@pytest.mark.peer
def test_times_are_compared_no_finer_than_the_listing_gives_them(
    vsftpd_server: PeerServer, home: Path, tmp_path: Path
) -> None:
    # vsftpd has no MLSD (ketch has, with times to the second), and its LIST shows
    # this file's time to the minute: a local copy 15 s later in the same minute is
    # the same file, one a minute later is not.
    peer = vsftpd_server
    remote_time = (time.time() // 60 - 120) * 60 + 30  # hh:mm:30, two hours ago
    tree = peer.writable / "t"
    tree.mkdir()
    local = tmp_path / "copy"
    local.mkdir()
    for name, local_offset in (("same-minute.txt", 15), ("next-minute.txt", 60)):
        write(tree / name, b"same bytes")
        os.utime(tree / name, (remote_time, remote_time))
        write(local / name, b"same bytes")
        os.utime(local / name, (remote_time + local_offset, remote_time + local_offset))
    url = peer.url("t/")
    counts, stderr = mirror(home, url, str(local))
    assert counts == {"transferred": 1, "skipped": 1, "failed": 0, "exit": 0}, stderr
    assert "get next-minute.txt: 10 bytes" in stderr
    # The transferred file now carries the remote time (as LIST gives it: to the minute).
    assert (local / "next-minute.txt").stat().st_mtime == remote_time - 30


@pytest.mark.peer
def test_mirror_both_ways_with_mlsd_and_mfmt_on_pure_ftpd(
    pure_ftpd_server: PeerServer, home: Path, tmp_path: Path
) -> None:
    # pure-ftpd lists with MLSD (times to the second) and sets times with MFMT,
    # so both directions compare times for equality, to the second.
    peer = pure_ftpd_server
    url = f"ftp://{peer.user}:{peer.password}@{peer.host}:{peer.port}/up/"
    local = tmp_path / "local"
    stamp = time.time() // 60 * 60 - 3 * 3600 + 17  # three hours ago, at hh:mm:17
    expected = {}
    for n in range(12):
        relative = f"d{n % 3}/f{n}.bin"
        (local / f"d{n % 3}").mkdir(parents=True, exist_ok=True)
        expected[relative] = write(local / relative, os.urandom(1000 + n))
        os.utime(local / relative, (stamp + n, stamp + n))

    counts, stderr = mirror(home, "--reverse", "-v", "-j", "2", str(local), url)
    assert counts == {"transferred": 12, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert sum(line.startswith("> MFMT ") for line in stderr.splitlines()) == 12
    remote = peer.root / "up"
    assert tree_digests(remote) == expected
    assert (remote / "d1" / "f4.bin").stat().st_mtime == stamp + 4

    counts, stderr = mirror(home, "--reverse", str(local), url)
    assert counts == {"transferred": 0, "skipped": 12, "failed": 0, "exit": 0}, stderr

    # Same size, new time: only a time comparison for equality notices it.
    changed = local / "d2" / "f5.bin"
    expected["d2/f5.bin"] = write(changed, os.urandom(1005))
    os.utime(changed, (stamp - 600, stamp - 600))
    counts, stderr = mirror(home, "--reverse", str(local), url)
    assert counts == {"transferred": 1, "skipped": 11, "failed": 0, "exit": 0}, stderr
    assert tree_digests(remote) == expected

    copy = tmp_path / "copy"
    counts, stderr = mirror(home, "-j", "2", url, str(copy))
    assert counts == {"transferred": 12, "skipped": 0, "failed": 0, "exit": 0}, stderr
    assert tree_digests(copy) == expected
    assert (copy / "d1" / "f4.bin").stat().st_mtime == stamp + 4  # to the second, via MLSD
    counts, stderr = mirror(home, url, str(copy))
    assert counts == {"transferred": 0, "skipped": 12, "failed": 0, "exit": 0}, stderr


@pytest.fixture
def far_past_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose files keep a time before the year 1000 (tmpfs does, ext4 clamps
    to 1901), or a skip where this host has none."""
    for parent in (tmp_path, Path("/dev/shm")):
        if not parent.is_dir():
            continue
        directory = Path(tempfile.mkdtemp(prefix="ketch-far-past-", dir=parent))
        probe = directory / "probe"
        probe.write_bytes(b"")
        os.utime(probe, (YEAR_999, YEAR_999))
        kept = probe.stat().st_mtime == YEAR_999
        probe.unlink()
        if kept:
            yield directory
            shutil.rmtree(directory)
            return
        directory.rmdir()
    pytest.skip("no local file system here keeps a time before the year 1000")


YEAR_999 = datetime(999, 5, 6, 7, 8, 9, tzinfo=UTC).timestamp()


def test_mfmt_gives_a_year_before_1000_in_four_digits(
    server: RunningServer, home: Path, far_past_dir: Path
) -> None:
    # RFC 3659's time-val is YYYYMMDDHHMMSS: "MFMT 9990506070809 old.txt" (13 digits)
    # was refused, so every run uploaded the file again.
    (far_past_dir / "old.txt").write_bytes(b"old")
    os.utime(far_past_dir / "old.txt", (YEAR_999, YEAR_999))
    counts, stderr = mirror(home, "--reverse", "-v", str(far_past_dir), server.url("/up/"))
    assert counts == {"transferred": 1, "skipped": 0, "failed": 0, "exit": 0}, stderr
    mfmt = [line for line in stderr.splitlines() if line.startswith("> MFMT ")]
    assert mfmt == ["> MFMT 09990506070809 up/old.txt"], stderr
    assert "refused" not in stderr, stderr


def test_a_local_symbolic_link_to_a_directory_is_refused_not_written_through(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    # Followed, out/sub -> ../elsewhere put the server's sub/planted in elsewhere/,
    # outside the target: whoever could place the link chose where files went.
    tree = server.home / "t"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "sub" / "planted").write_bytes(b"planted")
    (tree / "sub" / "deeper" / "planted").write_bytes(b"deeper")
    (tree / "top.txt").write_bytes(b"top")
    local = tmp_path / "out"
    local.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (local / "sub").symlink_to("../elsewhere")

    dry = run_ketch(home, "mirror", "--dry-run", server.url("/t/"), str(local))
    assert dry.returncode == 9, dry.stderr
    assert dry.stdout.decode().splitlines() == ["get top.txt"]

    counts, stderr = mirror(home, server.url("/t/"), str(local))
    assert counts == {"transferred": 1, "skipped": 0, "failed": 3, "exit": 9}, stderr
    failures = sorted(line for line in stderr.splitlines() if line.startswith("ketch: "))
    assert failures[0].startswith("ketch: sub/: "), stderr
    assert "symbolic link (to ../elsewhere)" in failures[0], stderr
    assert failures[1:] == [
        "ketch: sub/deeper/planted: not transferred: the directory sub/ failed",
        "ketch: sub/planted: not transferred: the directory sub/ failed",
    ]
    assert os.listdir(elsewhere) == []
    assert (local / "sub").is_symlink()
    assert (local / "top.txt").read_bytes() == b"top"


# -- against scripted servers: listings no packaged server gives on demand -----------

Answers = Callable[[str, str], bytes | None]  # (verb, path) -> data, or None for 550


def mirror_scripted(
    answers: Answers,
    local: Path,
    *,
    remote: str = "",
    dry_run: bool = False,
    features: bytes = MLSD_FEATURES,
    other: Callable[[str], bytes] | None = None,
    mlsd_refusal: bytes | None = None,
) -> MirrorResult:
    """``mirror_download`` (one session) from a scripted server answering ``answers``;
    with ``mlsd_refusal``, MLSD is answered that instead."""
    transfer = send_by_path(answers)
    if mlsd_refusal is not None:
        transfer = refusing_mlsd(mlsd_refusal, transfer)
    with scripted_server(transfer, features=features, other=other) as port:

        def connect() -> Client:
            return Client("127.0.0.1", port, user="u", password="p", timeout=10)

        run = mirror_download(connect, remote, local, dry_run=dry_run)
        return asyncio.run(asyncio.wait_for(run, 30))


def refusing_mlsd(refusal: bytes, otherwise: Handler) -> Handler:
    """MLSD answered ``refusal``; any other transfer as ``otherwise`` answers it."""
    refused = refuse(refusal)

    def transfer(line: str, control: socket.socket, data_listener: socket.socket) -> bytes | None:
        handler = refused if line.partition(" ")[0].upper() == "MLSD" else otherwise
        return handler(line, control, data_listener)

    return transfer


def mlsd(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode()


FILE_FACTS = "type=file;size=2;modify=20240102030405;"


def test_a_name_too_long_for_the_local_disk_fails_alone(tmp_path: Path) -> None:
    # 270 bytes in UTF-8: more than NAME_MAX. It aborted the whole mirror (exit 8,
    # nothing transferred), and a file so named was told to remove "a directory?".
    long_dir, long_file = "日本語" * 30, "f" * 300
    tree = {
        "": mlsd(f"type=dir; {long_dir}", f"{FILE_FACTS} {long_file}", f"{FILE_FACTS} ok.txt"),
        long_dir: mlsd(f"{FILE_FACTS} inside"),
    }

    def answers(verb: str, path: str) -> bytes | None:
        return b"ok" if verb == "RETR" else tree.get(path)

    local = tmp_path / "copy"
    local.mkdir()
    dry = mirror_scripted(answers, local, dry_run=True)  # it too stopped at the name
    assert dry.planned == [long_file, "ok.txt"]  # a dry run writes no file to find out
    assert [line.split(": ")[0] for line in dry.failed] == [f"{long_dir}/", f"{long_dir}/inside"]

    result = mirror_scripted(answers, local)
    failed = dict(line.split(": ", 1) for line in result.failed)
    assert sorted(failed) == sorted([f"{long_dir}/", f"{long_dir}/inside", long_file])
    hint = "File name too long — the name is longer than the local file system allows"
    assert hint in failed[f"{long_dir}/"] and hint in failed[long_file], failed
    assert failed[f"{long_dir}/inside"] == f"not transferred: the directory {long_dir}/ failed"
    assert result.transferred == 1
    assert os.listdir(local) == ["ok.txt"]

    # What a user ran into: `ketch mirror` stopped with exit 8; now the run ends in 9.
    again = tmp_path / "again"
    command = ketch_with_server(send_by_path(answers), tmp_path, "mirror", str(again))
    assert command.returncode == 9, command.stderr
    assert os.listdir(again) == ["ok.txt"]


def test_an_unreadable_listing_of_one_directory_fails_that_directory_alone(
    tmp_path: Path,
) -> None:
    # A name with a line break splits an MLSD line in two; the second half is no
    # MLSD line. That stopped the whole mirror (exit 7) with nothing transferred.
    tree = {
        "": mlsd("type=dir; bad", "type=dir; good", f"{FILE_FACTS} top.txt"),
        "bad": mlsd(f"{FILE_FACTS} line", "break"),
        "good": mlsd(f"{FILE_FACTS} inside.txt"),
    }

    def answers(verb: str, path: str) -> bytes | None:
        return b"ok" if verb == "RETR" else tree.get(path)

    local = tmp_path / "copy"
    result = mirror_scripted(answers, local)
    assert len(result.failed) == 1, result.failed
    assert result.failed[0].startswith("bad/: cannot list it: unreadable MLSD/MLST answer for bad")
    assert result.transferred == 2
    assert (local / "good" / "inside.txt").read_bytes() == b"ok"
    assert (local / "top.txt").read_bytes() == b"ok"


def test_a_listed_name_with_a_line_break_fails_that_name_saying_ftp_cannot_request_it(
    tmp_path: Path,
) -> None:
    # A file so named was told "remove it from the path or password"; a directory
    # stopped the whole mirror with the same advice.
    tree = {
        "": mlsd(f"{FILE_FACTS} bad\rname", "type=dir; cr\rdir", f"{FILE_FACTS} ok.txt"),
        "cr\rdir": mlsd(f"{FILE_FACTS} inside"),
    }
    asked: list[tuple[str, str]] = []

    def answers(verb: str, path: str) -> bytes | None:
        asked.append((verb, path))
        return b"ok" if verb == "RETR" else tree.get(path)

    local = tmp_path / "copy"
    result = mirror_scripted(answers, local)
    problem = "the server lists a name it cannot be asked for: FTP cannot send a name containing CR"
    assert sorted(result.failed) == [f"bad\rname: {problem} or LF", f"cr\rdir/: {problem} or LF"]
    assert result.transferred == 1
    assert asked == [("MLSD", ""), ("RETR", "ok.txt")]
    assert os.listdir(local) == ["ok.txt"]


@pytest.mark.parametrize(
    ("facts", "refused", "why"),
    [
        ("type=dir;", "/".join(["loop"] * 65) + "/", "more than 64 directories deep"),
        ("type=dir;unique=801U1;", "loop/loop/", "lists it as loop/ again"),
    ],
    ids=["no unique fact", "unique fact"],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["mirror", "dry run"])
def test_a_link_loop_on_the_server_is_cut_short_and_reported(
    tmp_path: Path, facts: str, refused: str, why: str, dry_run: bool
) -> None:
    # A server that lists "loop -> ." as a plain directory lists it again inside
    # itself, for ever: thousands of MLSDs and hundreds of nested local directories,
    # until something broke. This one stops at 100 levels, to end a walk without
    # a bound too.
    listed: list[str] = []

    def answers(verb: str, path: str) -> bytes | None:
        if verb == "RETR":
            return b"ok"
        listed.append(path)
        depth = len(path.split("/")) if path else 0
        return mlsd(f"{facts} loop", f"{FILE_FACTS} f") if depth < 100 else None

    local = tmp_path / "copy"
    result = mirror_scripted(answers, local, dry_run=dry_run)
    assert len(result.failed) == 1, result.failed
    assert result.failed[0].startswith(f"{refused}: not mirrored: "), result.failed
    assert why in result.failed[0] and "link loop on the server" in result.failed[0]
    levels = refused.count("/")  # listed: the root and the levels above the refused one
    assert len(listed) == levels
    done = result.planned if dry_run else [path for path, _ in tree_digests(local).items()]
    assert sorted(done) == sorted("loop/" * level + "f" for level in range(levels))


def test_a_cut_off_download_advises_running_the_mirror_again_not_resuming(tmp_path: Path) -> None:
    # ketch get's advice, "try again with -c to resume", is no use here: mirror has
    # no -c, and the partial copy was removed.
    def answers(verb: str, path: str) -> bytes | None:
        if verb == "RETR":
            return b"o"  # one byte of the two listed, then 226
        return mlsd(f"{FILE_FACTS} short.txt") if path == "" else None

    local = tmp_path / "copy"
    result = mirror_scripted(answers, local)
    assert result.failed == [
        "short.txt: download of short.txt ended after 1 of 2 bytes — run the mirror again: "
        "it transfers what failed"
    ]
    assert os.listdir(local) == []


class VsftpdLike:
    """A LIST-only server that answers LIST of a path it cannot enter as vsftpd does.

    vsftpd's LIST of a directory it may not enter (mode 000) lists that directory
    itself, one line; of a missing path or a file, nothing (226 all the same). Only
    CWD tells: "550 Failed to change directory."
    """

    DIRECTORY = "drwxr-xr-x    2 ftp      ftp          4096 Jan 02 10:15 "
    FILE = "-rw-r--r--    1 ftp      ftp             2 Jan 02 10:15 "

    def __init__(self) -> None:
        self.cwd = "/"
        self.trees = {
            "/pub/t3": [self.DIRECTORY + "locked", self.DIRECTORY + "sub", self.FILE + "ok.txt"],
            "/pub/t3/sub": [self.FILE + "inner.txt"],
        }

    def other(self, line: str) -> bytes:
        verb, _, path = line.partition(" ")
        if verb == "PWD":
            return f'257 "{self.cwd}"\r\n'.encode()
        if verb == "CWD":
            path = path.rstrip("/") or "/"
            if path not in ("/", "/pub") and path not in self.trees:
                return b"550 Failed to change directory.\r\n"
            self.cwd = path
            return b"250 Directory successfully changed.\r\n"
        return b"502 not here\r\n"

    def answers(self, verb: str, path: str) -> bytes:
        if verb == "RETR":
            return b"ok"
        where = posixpath.join(self.cwd, path).rstrip("/")
        if where.endswith("/locked"):
            lines = [self.DIRECTORY.replace("drwxr-xr-x", "d---------") + "locked"]
        else:
            lines = self.trees.get(where, [])
        return "".join(line + "\r\n" for line in lines).encode()


#: Two ways to be without MLSD: vsftpd's (no MLST in FEAT), and a server whose FEAT offers
#: MLST but which answers MLSD as an unknown command (then ketch lists with LIST too).
WITHOUT_MLSD = pytest.mark.parametrize(
    ("features", "mlsd_refusal"),
    [
        pytest.param(LIST_ONLY_FEATURES, None, id="no-MLST-in-FEAT"),
        pytest.param(MLSD_FEATURES, b"500 Unknown command.\r\n", id="MLST-but-MLSD-refused"),
    ],
)


@WITHOUT_MLSD
def test_without_mlsd_a_directory_is_entered_before_its_listing_is_believed(
    tmp_path: Path, features: bytes, mlsd_refusal: bytes | None
) -> None:
    # Believing LIST, the mirror invented locked/locked and missed what locked holds,
    # exit 0.
    server = VsftpdLike()
    local = tmp_path / "copy"
    result = mirror_scripted(
        server.answers,
        local,
        remote="pub/t3",
        features=features,
        other=server.other,
        mlsd_refusal=mlsd_refusal,
    )
    assert result.failed == [
        "locked/: cannot list it: CWD /pub/t3/locked failed: 550 Failed to change directory. "
        "— check that it is a directory this account may enter"
    ]
    assert result.transferred == 2
    assert sorted(tree_digests(local)) == ["ok.txt", "sub/inner.txt"]
    assert os.listdir(local / "locked") == []  # made before its listing failed, as with MLSD
    assert server.cwd == "/"  # back where the transfers' relative paths start


@WITHOUT_MLSD
@pytest.mark.parametrize("remote", ["pub/nonexistent", "pub/t3/ok.txt"])
def test_without_mlsd_a_root_that_cannot_be_entered_is_an_error_naming_it(
    tmp_path: Path, remote: str, features: bytes, mlsd_refusal: bytes | None
) -> None:
    # LIST of it was an empty listing: exit 0 and an empty directory; for a file,
    # RETR pub/t3/ok.txt/ok.txt.
    server = VsftpdLike()
    with pytest.raises(PermanentReplyError) as failure:
        mirror_scripted(
            server.answers,
            tmp_path / "copy",
            remote=remote,
            features=features,
            other=server.other,
            mlsd_refusal=mlsd_refusal,
        )
    assert str(failure.value).startswith(f"CWD /{remote} failed: 550 Failed to change directory.")
    assert not (tmp_path / "copy").exists()


@pytest.mark.peer
def test_vsftpd_a_directory_it_cannot_enter_fails_and_a_missing_root_is_an_error(
    vsftpd_server: PeerServer, home: Path, tmp_path: Path
) -> None:
    # vsftpd has no MLSD, and its LIST of these gives no sign of trouble.
    peer = vsftpd_server
    tree = peer.writable / "t"
    (tree / "locked").mkdir(parents=True)
    (tree / "locked" / "hidden.txt").write_bytes(b"hidden")
    (tree / "ok.txt").write_bytes(b"ok")
    (tree / "locked").chmod(0)
    base = peer.url()
    local = tmp_path / "copy"
    try:
        counts, stderr = mirror(home, base + "t/", str(local))
    finally:
        (tree / "locked").chmod(0o755)
    assert counts == {"transferred": 1, "skipped": 0, "failed": 1, "exit": 9}, stderr
    assert "ketch: locked/: cannot list it: CWD " in stderr, stderr
    assert sorted(tree_digests(local)) == ["ok.txt"]

    for path in ("nonexistent/", "t/ok.txt"):
        result = run_ketch(home, "mirror", base + path, str(tmp_path / "other"))
        stderr = result.stderr.decode()
        assert result.returncode == 5, stderr
        assert f"{path} failed: 550 Failed to change directory." in stderr, stderr
        assert not (tmp_path / "other").exists()
