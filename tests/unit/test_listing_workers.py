"""Listing workers: worker processes making big listings in parts (ketch.server.listing_workers).

What is checked is what a user of LIST and MLSD relies on: the bytes are
those a single in-process pass makes, whatever the workers go through (an
error on the directory, a cancelled listing, workers that cannot start, a
planted ``ketch`` package in the server's working directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.listing import list_payload
from ketch.protocol.mlsx import FACT_NAMES, Access, format_mlsd
from ketch.server import event_loop, listed_names, listing_worker, listing_workers
from ketch.server.filesystem import LocalFilesystem
from ketch.server.filesystem_api import OpenDirectory
from ketch.server.jail import FilesystemError
from ketch.server.listing_threads import BIG_DIRECTORY
from ketch.server.listing_worker import ListingOptions, join_names, parts_of, split_names
from ketch.server.listing_workers import LIST, MLSD, ListingWorkers

# The reason's full text (see ketch.server.os_errors).
NOT_A_DIRECTORY = "Not a directory; a name on the path is a file; check the path"

ACCESS = Access(list=True, read=True, write=True, delete=True, rename=True, mkdir=True)


@pytest.fixture(autouse=True)
def names_never_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listing reads its directory, unless a test keeps names (see ``keep_names``)."""
    monkeypatch.setattr(listed_names, "SETTLED_NS", 10**30)


def keep_names(monkeypatch: pytest.MonkeyPatch, settled: float = 0.0) -> None:
    """Keep the names of directories unchanged for ``settled`` seconds (ketch's own: 2)."""
    monkeypatch.setattr(listed_names, "SETTLED_NS", int(settled * 1e9))


@pytest.fixture(params=["read", "kept"])
def names_from(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a listing gets its names: read by the first worker, or kept from before."""
    if request.param == "kept":
        keep_names(monkeypatch)
    return str(request.param)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(loop_name: str, scenario: Coroutine[Any, Any, None]) -> None:
    event_loop.run(scenario, loop_name)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose /big is big enough for the workers, with every kind of entry."""
    home = tmp_path_factory.mktemp("home")
    big = home / "big"
    big.mkdir()
    (big / "sub").mkdir()
    (big / "inside").symlink_to(home / "big" / "sub")  # shown as /big/sub
    (big / "outside").symlink_to("/etc/passwd")  # target hidden
    (big / "relative").symlink_to("../big")
    (big / ".ketch-upload-abc123").write_bytes(b"half an upload")  # never shown
    (big / "line\nbreak").write_bytes(b"")
    os.close(os.open(os.fsencode(big) + b"/latin1-\xe9", os.O_CREAT | os.O_WRONLY, 0o644))
    index = 0
    while os.stat(big).st_size <= BIG_DIRECTORY:
        for _ in range(500):
            (big / f"file{index:06d}-{'x' * (index % 40)}").write_bytes(b"y" * (index % 9))
            index += 1
    return home


def expected_list(fs: LocalFilesystem) -> bytes:
    return list_payload(fs.list_lines("/big", time.time()))


def expected_mlsd(fs: LocalFilesystem, selected: tuple[str, ...] = FACT_NAMES) -> bytes:
    listed = fs.mlsx_entry("/big", follow=True)
    return format_mlsd(fs.list_mlsx("/big"), selected, ACCESS, listed=listed)


async def by_workers(
    workers: ListingWorkers, fs: LocalFilesystem, kind: int, selected: tuple[str, ...] = FACT_NAMES
) -> tuple[bytes, bool]:
    """``workers.make`` of /big, and whether the workers made it (else in-process)."""
    listed = fs.mlsx_entry("/big", follow=True)

    def options(home: str) -> ListingOptions:
        if kind == LIST:
            return ListingOptions(home)
        return ListingOptions(home, selected, ACCESS, listed)

    def here() -> bytes:
        return expected_list(fs) if kind == LIST else expected_mlsd(fs, selected)

    return await workers.make(fs, "/big", kind, options, here, BIG_DIRECTORY + 1)


async def check_listing(
    workers: ListingWorkers, fs: LocalFilesystem, kind: int, *, by_workers_expected: bool,
    selected: tuple[str, ...] = FACT_NAMES,
) -> bytes:  # fmt: skip
    """/big listed through ``workers``: the in-process bytes, made where expected."""
    data, in_workers = await by_workers(workers, fs, kind, selected)
    assert in_workers == by_workers_expected
    assert data == (expected_list(fs) if kind == LIST else expected_mlsd(fs, selected))
    return data


@pytest.fixture
def worker_pids() -> Iterator[list[int]]:
    """Pids a test saw; each must be gone (reaped) by the end of the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def pids_of(workers: ListingWorkers) -> list[int]:
    return [worker.process.pid for worker in workers._workers]


@pytest.fixture
def waiting_for_answers(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when the server first waits for a worker's answer, mid-listing (after READY)."""
    waiting = asyncio.Event()
    receive = listing_workers._Worker.receive

    async def noted_receive(
        self: listing_workers._Worker, within: float | None = None
    ) -> tuple[int, bytearray]:
        if within is None:  # not a start's wait for READY
            waiting.set()
        return await receive(self, within)

    monkeypatch.setattr(listing_workers._Worker, "receive", noted_receive)
    return waiting


@contextlib.asynccontextmanager
async def running_workers(count: int, pids: list[int]) -> AsyncIterator[ListingWorkers]:
    """``count`` workers, started and ready (their pids noted in ``pids``), closed after."""
    workers = ListingWorkers(count)
    await workers.start()
    assert workers.running == count
    pids.extend(pids_of(workers))
    try:
        yield workers
    finally:
        await workers.close()


def test_parts_made_by_workers_join_into_the_listing_of_one_pass(
    loop_name: str, home: Path, worker_pids: list[int], names_from: str
) -> None:
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        # An odd count: parts of unequal length.
        async with running_workers(3, worker_pids) as workers:
            for kind in (LIST, MLSD):
                await check_listing(workers, fs, kind, by_workers_expected=True)
            selected = ("size", "type")
            await check_listing(workers, fs, MLSD, by_workers_expected=True, selected=selected)
            reused = workers._counters["listing_names_reused"]
            assert reused == (2 if names_from == "kept" else 0)

    run(loop_name, scenario())
    listing = expected_list(fs).decode("utf-8", "surrogateescape")
    assert ".ketch-upload-" not in listing
    assert "inside -> /big/sub\r\n" in listing and "relative -> ../big\r\n" in listing
    assert "outside\r\n" in listing and "/etc/passwd" not in listing
    assert "line?break" in listing and "latin1-\udce9" in listing


def test_small_directories_and_the_first_big_one_are_listed_in_process(
    loop_name: str, home: Path, worker_pids: list[int]
) -> None:
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        workers = ListingWorkers(2)
        try:
            data, in_workers = await workers.make(
                fs, "/big", LIST, ListingOptions, lambda: b"small", BIG_DIRECTORY
            )
            assert (data, in_workers, workers.running) == (b"small", False, 0)
            # The first big listing starts the workers and does not wait for them.
            await check_listing(workers, fs, LIST, by_workers_expected=False)
            await workers.start()
            worker_pids.extend(pids_of(workers))
            await check_listing(workers, fs, LIST, by_workers_expected=True)
        finally:
            await workers.close()

    run(loop_name, scenario())


class _NotADirectory(LocalFilesystem):
    """Hands the workers a regular file, as if the directory had been swapped meanwhile."""

    def open_directory(self, path: str) -> OpenDirectory | None:
        directory = super().open_directory(path)
        assert directory is not None
        os.close(directory.fd)
        fd = os.open(self._jail.home / "big" / "file000001-x", os.O_RDONLY | os.O_CLOEXEC)
        return OpenDirectory(fd, directory.home)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_an_error_reading_the_directory_is_a_filesystem_error_and_workers_stay_in_step(
    loop_name: str, home: Path, worker_pids: list[int], count: int, names_from: str
) -> None:
    # "kept": the first worker is also asked for its own part's names, so with
    # one worker the error comes where those would.
    async def scenario() -> None:
        async with running_workers(count, worker_pids) as workers:
            for kind in (LIST, MLSD):
                with pytest.raises(FilesystemError, match=rf"^/big: {NOT_A_DIRECTORY}$"):
                    await by_workers(workers, _NotADirectory(home), kind)
            assert pids_of(workers) == worker_pids  # the same workers carry on
            await check_listing(workers, LocalFilesystem(home), LIST, by_workers_expected=True)

    run(loop_name, scenario())


# prctl(2): drop a capability from the bounding set, which after exec is all root has.
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _drop_root_file_access() -> None:
    """In a worker about to exec: root no longer overrides file permissions, as after run_as."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def workers_bound_by_file_permissions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing workers started from now on cannot look into a directory without x for them."""
    if os.geteuid() != 0:
        pytest.skip("needs root: workers are made to lack root's power over file permissions")
    try:
        subprocess.run(["true"], check=True, preexec_fn=_drop_root_file_access)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot drop capabilities here ({error})")
    start = asyncio.create_subprocess_exec
    monkeypatch.setattr(
        asyncio,
        "create_subprocess_exec",
        functools.partial(start, preexec_fn=_drop_root_file_access),
    )


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.usefixtures("workers_bound_by_file_permissions")
def test_entries_workers_may_not_look_at_are_a_filesystem_error_not_an_empty_listing(
    loop_name: str, home: Path, tmp_path: Path, worker_pids: list[int], count: int
) -> None:
    # Mode 0600: the workers may read the names, but lstat no entry (no x).
    unsearchable = tmp_path / "home"
    (unsearchable / "big").mkdir(parents=True)
    for index in range(6):
        (unsearchable / "big" / f"file{index}").write_bytes(b"x")
    (unsearchable / "big").chmod(0o600)
    denied = r"^/big: Permission denied; the server may not read or search this directory"

    async def scenario() -> None:
        async with running_workers(count, worker_pids) as workers:
            for kind in (LIST, MLSD):
                # The test itself is root and could list it: a listing comes from the workers.
                with pytest.raises(FilesystemError, match=denied):
                    await by_workers(workers, LocalFilesystem(unsearchable), kind)
            assert pids_of(workers) == worker_pids  # the same workers carry on, in step
            await check_listing(workers, LocalFilesystem(home), MLSD, by_workers_expected=True)

    run(loop_name, scenario())


def test_a_cancelled_listing_stops_the_workers_and_the_next_one_is_whole(
    loop_name: str, home: Path, worker_pids: list[int], waiting_for_answers: asyncio.Event
) -> None:
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            waiting_for_answers.clear()
            listing = asyncio.ensure_future(by_workers(workers, fs, LIST))
            await waiting_for_answers.wait()  # the first request is out, its answers unread
            listing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await listing
            # Answers of the cancelled listing must not be taken for the next one's.
            assert workers.running == 0
            await check_listing(workers, fs, LIST, by_workers_expected=False)
            await workers.start()
            worker_pids.extend(pids_of(workers))
            await check_listing(workers, fs, LIST, by_workers_expected=True)

    run(loop_name, scenario())


def test_workers_that_cannot_start_leave_listings_to_a_thread(
    loop_name: str, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", str(home / "no-such-python"))
    starts = []
    real_start = listing_workers._start_worker

    async def counted_start() -> listing_workers._Worker:
        starts.append(1)
        return await real_start()

    monkeypatch.setattr(listing_workers, "_start_worker", counted_start)
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        workers = ListingWorkers(2)
        try:
            await workers.start()
            assert workers.running == 0 and starts == [1]
            for _ in range(2):
                await check_listing(workers, fs, LIST, by_workers_expected=False)
                await asyncio.sleep(0.05)
            assert starts == [1]  # not tried again before RETRY_AFTER
        finally:
            await workers.close()

    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        run(loop_name, scenario())
    [warning] = [r.getMessage() for r in caplog.records if "listing workers" in r.getMessage()]
    assert "could not start (" in warning and "no-such-python" in warning
    assert "made in a thread instead" in warning


def test_a_worker_speaking_another_protocol_is_not_used(
    loop_name: str, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    worker_pids: list[int],
) -> None:  # fmt: skip
    # As if this server had started before an upgrade changed the workers' messages.
    monkeypatch.setattr(listing_workers, "PROTOCOL", "ketch listing worker 0")
    real_start = listing_workers._start_worker

    async def noted_start() -> listing_workers._Worker:
        worker = await real_start()
        worker_pids.append(worker.process.pid)
        return worker

    monkeypatch.setattr(listing_workers, "_start_worker", noted_start)

    async def scenario() -> None:
        workers = ListingWorkers(2)
        try:
            await workers.start()
            assert workers.running == 0
            await check_listing(workers, LocalFilesystem(home), LIST, by_workers_expected=False)
        finally:
            await workers.close()

    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        run(loop_name, scenario())
    assert len(worker_pids) == 2  # both started, both stopped and reaped
    [warning] = [r.getMessage() for r in caplog.records if "listing workers" in r.getMessage()]
    assert f"speaks {listing_worker.PROTOCOL!r}, not 'ketch listing worker 0'" in warning
    assert os.path.realpath(listing_worker.__file__) in warning
    assert "was ketch upgraded since the server started? Restart the server" in warning


def test_a_worker_out_of_descriptors_leaves_the_listing_to_a_thread_and_carries_on(
    loop_name: str, home: Path, worker_pids: list[int]
) -> None:
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            first = worker_pids[0]
            limits = resource.prlimit(first, resource.RLIMIT_NOFILE)
            # Room for the descriptor it is sent (the lowest free number), none for the
            # copy listdir makes of it (the next free one).
            taken = {int(fd) for fd in os.listdir(f"/proc/{first}/fd")}
            free = [number for number in range(len(taken) + 2) if number not in taken]
            resource.prlimit(first, resource.RLIMIT_NOFILE, (free[1], limits[1]))
            await check_listing(workers, fs, LIST, by_workers_expected=False)  # not a 550
            assert pids_of(workers) == worker_pids  # the same workers, still in step
            resource.prlimit(first, resource.RLIMIT_NOFILE, limits)
            await check_listing(workers, fs, LIST, by_workers_expected=True)

    run(loop_name, scenario())


def test_a_worker_that_takes_no_request_is_given_up_on(
    loop_name: str, home: Path, monkeypatch: pytest.MonkeyPatch, worker_pids: list[int]
) -> None:
    monkeypatch.setattr(listing_workers, "_SOCKET_BUFFER", 4096)  # names outgrow it
    monkeypatch.setattr(listing_workers, "ANSWER_TIMEOUT", 0.5)
    monkeypatch.setattr(listing_workers, "STOP_TIMEOUT", 0.2)
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            os.kill(worker_pids[1], signal.SIGSTOP)  # alive, but reads nothing
            await asyncio.wait_for(check_listing(workers, fs, MLSD, by_workers_expected=False), 10)
            assert workers.running == 0  # stopped (killed) and reaped: see worker_pids

    run(loop_name, scenario())


def test_parts_larger_than_the_socket_buffers_arrive_whole(
    loop_name: str, home: Path, monkeypatch: pytest.MonkeyPatch, worker_pids: list[int]
) -> None:
    monkeypatch.setattr(listing_workers, "_SOCKET_BUFFER", 4096)  # the kernel's minimum, or near
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(3, worker_pids) as workers:
            for kind in (LIST, MLSD):
                await check_listing(workers, fs, kind, by_workers_expected=True)

    run(loop_name, scenario())


@pytest.mark.parametrize("stop_timeout", [10.0, 0.0])
def test_closing_during_a_listing_lets_it_finish_or_moves_it_to_a_thread(
    loop_name: str, home: Path, monkeypatch: pytest.MonkeyPatch, worker_pids: list[int],
    waiting_for_answers: asyncio.Event, stop_timeout: float,
) -> None:  # fmt: skip
    monkeypatch.setattr(listing_workers, "STOP_TIMEOUT", stop_timeout)
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            waiting_for_answers.clear()
            listing = asyncio.ensure_future(
                check_listing(workers, fs, MLSD, by_workers_expected=stop_timeout > 0)
            )
            await waiting_for_answers.wait()  # the first request is out, its answers unread
            await workers.close()  # killed under the listing when it may not wait: a thread's
            await asyncio.wait_for(listing, 30)
            assert workers.running == 0

    run(loop_name, scenario())


def test_a_big_listing_while_the_workers_are_busy_is_made_in_a_thread(
    loop_name: str, home: Path, worker_pids: list[int]
) -> None:
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            results = await asyncio.gather(*(by_workers(workers, fs, LIST) for _ in range(3)))
            assert [data for data, _ in results] == [expected_list(fs)] * 3
            assert sorted(in_workers for _, in_workers in results) == [False, False, True]

    run(loop_name, scenario())


def test_an_emptied_big_directory_lists_as_empty(
    loop_name: str, tmp_path: Path, worker_pids: list[int]
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    while os.stat(big).st_size <= BIG_DIRECTORY:
        for index in range(500):
            (big / f"gone{len(os.listdir(big)):06d}-{index}").touch()
    for name in os.listdir(big):
        (big / name).unlink()
    if os.stat(big).st_size <= BIG_DIRECTORY:
        pytest.skip("this file system shrinks emptied directories (ext4 does not)")
    fs = LocalFilesystem(tmp_path)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            assert await check_listing(workers, fs, LIST, by_workers_expected=True) == b""
            data = await check_listing(workers, fs, MLSD, by_workers_expected=True)
            assert data.count(b"\r\n") == 1 and data.endswith(b"; .\r\n")  # the cdir line

    run(loop_name, scenario())


def make_big_directory(parent: Path) -> LocalFilesystem:
    """A fresh /big under ``parent``, big enough for the workers; its filesystem."""
    big = parent / "big"
    big.mkdir()
    index = 0
    while os.stat(big).st_size <= BIG_DIRECTORY:
        for _ in range(500):
            (big / f"file{index:06d}").write_bytes(b"y")
            index += 1
    return LocalFilesystem(parent)


def test_kept_names_serve_only_while_the_directory_is_unchanged(
    loop_name: str, tmp_path: Path, worker_pids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    keep_names(monkeypatch, 2.0)  # ketch's own
    fs = make_big_directory(tmp_path)
    big = tmp_path / "big"
    since_change = 0.0  # seconds: what the workers' clock says has passed since /big changed

    def clock() -> int:
        return os.stat(big).st_ctime_ns + int(since_change * 1e9)

    async def listing(kind: int = LIST) -> tuple[str, int]:
        """/big listed (checked against one pass), and how many listings reused names."""
        data = await check_listing(workers, fs, kind, by_workers_expected=True)
        return data.decode("utf-8", "surrogateescape"), workers._counters["listing_names_reused"]

    async def scenario() -> None:
        nonlocal workers, since_change
        async with running_workers(2, worker_pids) as workers:
            workers._names._clock = clock
            since_change = 1.9
            await listing()  # read: too lately changed to keep
            assert (await listing())[1] == 0
            since_change = 2.1
            await listing()  # read, and kept
            assert (await listing(MLSD))[1] == 1
            assert (await listing())[1] == 2

            # An entry's own change leaves the directory as it was: names are
            # reused, and the entry is looked at afresh.
            (big / "file000003").write_bytes(b"grown to 23 bytes here.")
            text, reused = await listing()
            assert reused == 3 and " 23 " in next(
                line for line in text.splitlines() if line.endswith("file000003")
            )

            changes = [
                lambda: (big / "added").write_bytes(b""),
                lambda: (big / "file000004").unlink(),
                lambda: (big / "file000005").rename(big / "renamed"),
                lambda: (big / "file000006").rename(tmp_path / "moved-out"),
            ]
            for change in changes:
                change()
                since_change = 0.0
                await listing()  # read: the directory changed
                assert (await listing())[1] == reused  # read: too lately changed to keep
                since_change = 2.1
                await listing()  # read, and kept
                text, reused = await listing()
                assert reused == 4 + changes.index(change)
            assert "added\r\n" in text and "renamed\r\n" in text
            assert "file000004" not in text and "file000005" not in text
            assert "file000006" not in text

            workers.keep_names = False  # listing_cache = false (as after a reload)
            await listing()
            assert (await listing())[1] == reused
            # Back on, nothing kept before comes back: the first listing reads again.
            workers.keep_names = True
            assert (await listing())[1] == reused
            assert (await listing())[1] == reused + 1

    workers: ListingWorkers
    run(loop_name, scenario())


def test_a_ketch_package_in_the_working_directory_is_not_what_workers_import(
    loop_name: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    worker_pids: list[int],
) -> None:  # fmt: skip
    planted = tmp_path / "ketch"
    (planted / "server").mkdir(parents=True)
    marker = tmp_path / "imported"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "server" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)  # an FTP user could have uploaded ketch/ here

    async def scenario() -> None:
        async with running_workers(1, worker_pids) as workers:
            await check_listing(workers, LocalFilesystem(home), LIST, by_workers_expected=True)

    run(loop_name, scenario())
    assert not marker.exists()


def test_a_killed_worker_costs_one_listing_its_speed_and_workers_come_back(
    loop_name: str, home: Path, monkeypatch: pytest.MonkeyPatch, worker_pids: list[int]
) -> None:
    monkeypatch.setattr(listing_workers, "RETRY_AFTER", 0.0)
    fs = LocalFilesystem(home)

    async def scenario() -> None:
        async with running_workers(2, worker_pids) as workers:
            first = pids_of(workers)
            os.kill(first[1], signal.SIGKILL)
            await check_listing(workers, fs, LIST, by_workers_expected=False)
            assert workers.running == 0
            await workers.start()
            worker_pids.extend(pids_of(workers))
            assert workers.running == 2 and set(pids_of(workers)).isdisjoint(first)
            await check_listing(workers, fs, MLSD, by_workers_expected=True)

    run(loop_name, scenario())


# What listdir can return: no NUL or "/", and surrogate escapes for bytes that are not UTF-8.
name_characters = st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",))
names = st.lists(
    st.text(name_characters | st.sampled_from(["\udce9", "\udcff"]), min_size=1, max_size=4),
    unique=True,
).map(sorted)


@given(names, st.integers(1, 5))
def test_parts_cut_a_listing_into_ordered_runs_that_travel_intact(
    listed: list[str], parts: int
) -> None:
    runs = parts_of(listed, parts)
    assert len(runs) == parts
    assert [name for run in runs for name in run] == listed
    assert max(map(len, runs)) - min(map(len, runs)) <= 1
    assert [split_names(join_names(run)) for run in runs] == runs


raw_names = st.lists(st.binary(min_size=1, max_size=6).filter(lambda raw: b"\0" not in raw))


@given(raw_names)
def test_names_travel_as_the_bytes_the_directory_holds(raw: list[bytes]) -> None:
    # Any bytes a name may hold, as listdir decodes them (undecodable ones as escapes).
    listed = [os.fsdecode(name) for name in raw]
    assert join_names(listed) == b"\0".join(raw)
    assert split_names(b"\0".join(raw)) == listed
