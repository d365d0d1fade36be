"""Quota ledgers and upload accounting, without a network: scans, checks, commit and discard."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from ketch.server import atomic_file
from ketch.server.atomic_file import AtomicFile
from ketch.server.auth import Account, Permission
from ketch.server.filesystem import LocalFilesystem
from ketch.server.quota import (
    Quota,
    QuotaBook,
    QuotaExceeded,
    QuotaLedger,
    QuotaLimits,
    scan_usage,
)
from ketch.server.transfers import TransferRefused
from ketch.server.uploads import Upload

# -- measuring a home --------------------------------------------------------------


def test_scan_counts_regular_files_and_their_sizes(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "b.bin").write_bytes(b"x" * 20)
    (tmp_path / "sub" / "deeper" / "c.bin").write_bytes(b"")
    assert scan_usage(str(tmp_path)) == (120, 3)


def test_scan_skips_symlinks_and_upload_temporaries(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"x" * 1000)
    home = tmp_path / "home"
    home.mkdir()
    (home / "real.bin").write_bytes(b"x" * 10)
    (home / "link-to-dir").symlink_to(outside)
    (home / "link-to-file").symlink_to(outside / "big.bin")
    (home / ".ketch-upload-0123.real.bin.part").write_bytes(b"x" * 500)
    assert scan_usage(str(home)) == (10, 1)


def test_scan_of_a_missing_home_is_empty(tmp_path: Path) -> None:
    assert scan_usage(str(tmp_path / "gone")) == (0, 0)


def test_many_sessions_waiting_for_the_ledger_share_one_scan() -> None:
    calls: list[str] = []

    def scan(home: str) -> tuple[int, int]:
        calls.append(home)
        return 500, 5

    ledger = QuotaLedger("/home/x", scan)

    async def run() -> None:
        await asyncio.gather(*(ledger.ready() for _ in range(5)))
        await ledger.ready()

    asyncio.run(run())
    assert calls == ["/home/x"]
    assert (ledger.bytes, ledger.files) == (500, 5)


def test_a_waiter_giving_up_does_not_cancel_the_scan_for_the_others() -> None:
    release = asyncio.Event()

    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()

        def scan(home: str) -> tuple[int, int]:
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=5)
            return 7, 1

        ledger = QuotaLedger("/h", scan)
        impatient = asyncio.create_task(ledger.ready())
        patient = asyncio.create_task(ledger.ready())
        await asyncio.sleep(0.05)
        impatient.cancel()
        release.set()
        await asyncio.wait_for(patient, 5)
        return ledger.bytes, ledger.files

    assert asyncio.run(run()) == (7, 1)


# -- checking and charging --------------------------------------------------------


def measured(used_bytes: int, used_files: int) -> QuotaLedger:
    ledger = QuotaLedger("/h", lambda home: (used_bytes, used_files))
    asyncio.run(ledger.ready())
    return ledger


def test_check_refuses_growth_beyond_the_byte_limit_with_the_numbers() -> None:
    ledger = measured(900, 1)
    limits = QuotaLimits(bytes=1000)
    ledger.check(limits, 100, 0)  # exactly full is allowed
    with pytest.raises(QuotaExceeded) as caught:
        ledger.check(limits, 101, 0)
    assert caught.value.code == 552
    assert "Quota exceeded (1000 bytes allowed, 900 in use" in caught.value.text


def test_check_refuses_a_file_beyond_the_file_limit() -> None:
    ledger = measured(0, 3)
    with pytest.raises(QuotaExceeded, match=r"3 files allowed, 3 in use"):
        ledger.check(QuotaLimits(files=3), 0, 1)
    ledger.check(QuotaLimits(files=4), 0, 1)


def test_zero_limits_and_shrinking_are_never_refused() -> None:
    ledger = measured(10**12, 10**6)
    ledger.check(QuotaLimits(), 10**9, 10)
    ledger.check(QuotaLimits(bytes=1, files=1), -5, -1)


def test_a_refused_charge_records_nothing() -> None:
    quota = Quota(measured(90, 1), QuotaLimits(bytes=100))
    with pytest.raises(QuotaExceeded):
        quota.charge(11, 0)
    assert quota.ledger.bytes == 90
    quota.charge(10, 1)
    assert (quota.ledger.bytes, quota.ledger.files) == (100, 2)


def account(home: Path, *, quota_bytes: int = 0, quota_files: int = 0) -> Account:
    return Account(
        name="alice",
        home=home,
        permissions=Permission.ALL,
        quota_bytes=quota_bytes,
        quota_files=quota_files,
    )


def test_book_gives_no_quota_without_limits_and_one_ledger_per_home(tmp_path: Path) -> None:
    scans: list[str] = []

    def scan(home: str) -> tuple[int, int]:
        scans.append(home)
        return 0, 0

    book = QuotaBook(scan)

    async def run() -> tuple[Quota | None, Quota | None, Quota | None]:
        return (
            await book.quota_for(account(tmp_path)),
            await book.quota_for(account(tmp_path, quota_bytes=10)),
            await book.quota_for(account(tmp_path, quota_files=3)),
        )

    none, by_bytes, by_files = asyncio.run(run())
    assert none is None
    assert by_bytes is not None and by_files is not None
    assert by_bytes.ledger is by_files.ledger
    assert by_files.limits == QuotaLimits(bytes=0, files=3)
    assert scans == [str(tmp_path)]


# -- an upload's charges ------------------------------------------------------------


class Channel:
    """Hands out the given pieces, then EOF, like a data connection."""

    #: No socket underneath: receive_file takes its piece-by-piece path, the one the meter guards.
    zero_copy = False

    def __init__(self, *pieces: bytes) -> None:
        self._pieces = list(pieces)
        self.bytes_moved = 0
        self.paused = False

    async def receive_into(self, buffer: bytearray) -> int:
        if not self._pieces:
            return 0
        piece = self._pieces.pop(0)
        buffer[: len(piece)] = piece
        self.bytes_moved += len(piece)
        return len(piece)


def upload_to(
    home: Path, name: str, quota: Quota | None, *, atomic: bool = True, max_size: int = 0
) -> Upload:
    fs = LocalFilesystem(home)
    path = f"/{name}"
    existing = (home / name).stat().st_size if (home / name).exists() else None
    target: AtomicFile | None = fs.open_atomic_write(path) if atomic else None
    file = target.file if target else fs.open_write(path, append=True)
    upload = Upload(
        path,
        file,
        atomic=target,
        ascii=False,
        base=0 if target else file.tell(),
        baseline=existing or 0,
        max_size=max_size,
        quota=quota,
        throttle=None,
    )
    upload.start_charges(new_file=existing is None)
    return upload


def run_upload(upload: Upload, *pieces: bytes) -> None:
    async def run() -> None:
        try:
            await upload.run(Channel(*pieces))  # type: ignore[arg-type]
        finally:
            upload.close()

    asyncio.run(run())


def leftovers(home: Path) -> list[str]:
    return [name for name in os.listdir(home) if name.startswith(".ketch-upload-")]


def test_atomic_replacement_charges_only_growth_and_settles_on_commit(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"o" * 600)
    quota = Quota(measured(600, 1), QuotaLimits(bytes=1000, files=1))
    upload = upload_to(tmp_path, "a.bin", quota)
    assert (upload.charged_bytes, upload.charged_files) == (0, 0)  # a replacement: no new file
    # 900 bytes replacing 600 need only 300 more while both exist on disk.
    run_upload(upload, b"n" * 500, b"n" * 400)
    assert (tmp_path / "a.bin").read_bytes() == b"n" * 900
    assert (quota.ledger.bytes, quota.ledger.files) == (900, 1)
    assert leftovers(tmp_path) == []


def test_atomic_upload_over_quota_is_refused_and_gives_everything_back(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"o" * 600)
    quota = Quota(measured(600, 1), QuotaLimits(bytes=1000))
    upload = upload_to(tmp_path, "new.bin", quota)
    assert upload.charged_files == 1
    with pytest.raises(QuotaExceeded):
        run_upload(upload, b"n" * 300, b"n" * 300)
    assert not (tmp_path / "new.bin").exists()
    assert leftovers(tmp_path) == []
    assert (quota.ledger.bytes, quota.ledger.files) == (600, 1)


def test_size_limit_stops_before_writing_the_piece_that_crosses_it(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"old")
    upload = upload_to(tmp_path, "a.bin", None, max_size=100)
    with pytest.raises(TransferRefused) as caught:
        run_upload(upload, b"n" * 60, b"n" * 60)
    assert caught.value.code == 552 and "100 bytes" in caught.value.text
    assert (tmp_path / "a.bin").read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_direct_append_is_charged_as_written_and_kept_when_refused(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_bytes(b"x" * 50)
    quota = Quota(measured(50, 1), QuotaLimits(bytes=100))
    upload = upload_to(tmp_path, "log.txt", quota, atomic=False)
    with pytest.raises(QuotaExceeded):
        run_upload(upload, b"y" * 40, b"y" * 40)
    # The first piece was appended for real and stays charged; the second never got written.
    assert (tmp_path / "log.txt").read_bytes() == b"x" * 50 + b"y" * 40
    assert (quota.ledger.bytes, quota.ledger.files) == (90, 1)


def test_cancelled_atomic_upload_keeps_old_file_and_reserved_file_is_released(
    tmp_path: Path,
) -> None:
    quota = Quota(measured(0, 0), QuotaLimits(files=1))
    upload = upload_to(tmp_path, "new.bin", quota)
    assert quota.ledger.files == 1  # reserved while it runs

    class Stuck(Channel):
        async def receive_into(self, buffer: bytearray) -> int:
            if self.bytes_moved:
                await asyncio.sleep(3600)
            return await super().receive_into(buffer)

    async def run() -> None:
        task = asyncio.create_task(upload.run(Stuck(b"z" * 10)))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert not (tmp_path / "new.bin").exists()
    assert leftovers(tmp_path) == []
    assert (quota.ledger.bytes, quota.ledger.files) == (0, 0)


def test_atomic_file_keeps_the_replaced_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "script.sh"
    path.write_bytes(b"old")
    path.chmod(0o750)
    target = LocalFilesystem(tmp_path).open_atomic_write("/script.sh")
    target.file.write(b"new content")
    assert target.commit() == (11, 3)
    assert path.read_bytes() == b"new content"
    assert path.stat().st_mode & 0o7777 == 0o750


def test_atomic_file_through_a_symlink_replaces_the_link_target(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_bytes(b"old")
    (tmp_path / "alias.txt").symlink_to("real.txt")
    target = LocalFilesystem(tmp_path).open_atomic_write("/alias.txt")
    target.file.write(b"new")
    target.commit()
    assert (tmp_path / "alias.txt").is_symlink()
    assert (tmp_path / "real.txt").read_bytes() == b"new"


def test_temporary_names_are_hidden_and_reserved(tmp_path: Path) -> None:
    fs = LocalFilesystem(tmp_path)
    target = fs.open_atomic_write("/a.bin")
    names = leftovers(tmp_path)
    assert len(names) == 1 and names[0].endswith(".a.bin.part")
    assert [facts.name for facts in fs.list_dir("/")] == []
    refused: list[Any] = []
    for action in (fs.stat, fs.open_read, fs.remove):
        with pytest.raises(Exception, match="reserved for uploads in progress") as caught:
            action(f"/{names[0]}")
        refused.append(caught.value)
    target.discard()
    assert leftovers(tmp_path) == [] and len(refused) == 3


def test_a_temporary_file_left_behind_is_logged_as_one_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The temporary name holds the client's name: it must not forge log fields."""
    target = LocalFilesystem(tmp_path).open_atomic_write("/x result=ok user=root")

    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied", "the-name")

    monkeypatch.setattr(atomic_file.os, "unlink", refuse)
    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        target.discard()
    monkeypatch.undo()
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith('cannot remove the temporary upload file path="')
    assert message.endswith('.x result=ok user=root.part": Permission denied')
    for leftover in leftovers(tmp_path):
        os.unlink(tmp_path / leftover)


def test_temporary_name_of_a_long_file_name_still_fits(tmp_path: Path) -> None:
    name = "n" * 250
    target = LocalFilesystem(tmp_path).open_atomic_write(f"/{name}")
    target.file.write(b"x")
    target.commit()
    assert (tmp_path / name).read_bytes() == b"x"
