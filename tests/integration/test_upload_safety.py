"""Uploads that fail never damage the file they would replace; limits and quotas answer 552.

Real sockets throughout: ftplib for the control connection, raw data sockets
so a test can stop, reset or hold an upload half-way.
"""

from __future__ import annotations

import ftplib
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ketch.protocol.addresses import parse_pasv_reply

from conftest import RunningServer, alice_with
from ftp_helpers import connect, log_messages, one_transfer_line, reply_to, wait_for

KIB = 1024
MIB = 1024 * KIB
TEMP_PREFIX = ".ketch-upload-"
OLD = b"old content, complete\n" * 4096  # about 90 KiB


def temporaries(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX)]


def temporary_size(directory: Path) -> int:
    names = temporaries(directory)
    return (directory / names[0]).stat().st_size if names else -1


def begin_upload(ftp: ftplib.FTP, command: str, first: bytes = b"") -> socket.socket:
    """Send ``command``, read its 150, and send ``first`` on the data connection."""
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd(command)
    data.sendall(first)
    return data


def send_and_close(data: socket.socket, payload: bytes) -> None:
    """Send what the server will take; it may stop reading and reset the connection."""
    try:
        data.sendall(payload)
    except OSError:
        pass
    finally:
        data.close()


def upload(ftp: ftplib.FTP, command: str, payload: bytes) -> str:
    """A whole upload; the final reply's text, whatever its code."""
    send_and_close(begin_upload(ftp, command), payload)
    return ftp.getmultiline()


def reset(data: socket.socket) -> None:
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    data.close()


@pytest.fixture
def old_file(server: RunningServer) -> Path:
    path = server.home / "report.txt"
    path.write_bytes(OLD)
    return path


def assert_untouched(path: Path) -> None:
    assert path.read_bytes() == OLD, "the old file must stay whole"
    assert wait_for(lambda: temporaries(path.parent) == []), "the temporary file must go"
    assert temporaries(path.parent) == []


# -- interrupted uploads --------------------------------------------------------------


def test_abor_mid_stor_keeps_the_old_file_and_removes_the_temporary(
    server: RunningServer, old_file: Path
) -> None:
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new" * 10_000)
    assert wait_for(lambda: temporary_size(server.home) == 30_000)
    assert ftp.abort().startswith("426")
    assert ftp.getmultiline().startswith("226")
    data.close()
    # The temporary file is gone by the time the 426 arrives.
    assert temporaries(server.home) == []
    assert_untouched(old_file)
    assert server.counters["transfer_aborted"] == 1
    assert ftp.voidcmd("NOOP").startswith("200")


def test_control_connection_dropped_mid_stor_keeps_the_old_file(
    server: RunningServer, old_file: Path
) -> None:
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new" * 10_000)
    assert wait_for(lambda: temporary_size(server.home) == 30_000)
    ftp.sock.close()  # the data connection stays open: it is the control that went away
    ftp.file.close()
    assert wait_for(lambda: temporaries(server.home) == [])
    assert_untouched(old_file)
    assert wait_for(lambda: server.server.limits.total == 0)
    data.close()
    assert old_file.read_bytes() == OLD


def test_reset_data_connection_mid_stor_keeps_the_old_file(
    server: RunningServer, old_file: Path
) -> None:
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new" * 10_000)
    assert wait_for(lambda: temporary_size(server.home) == 30_000)
    reset(data)
    assert ftp.getmultiline().startswith("426")
    assert_untouched(old_file)
    assert wait_for(lambda: server.counters.get("transfer_interrupted") == 1)


def test_stalled_stor_keeps_the_old_file(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(data_stall_timeout=0.5)
    old_file = server.home / "report.txt"
    old_file.write_bytes(OLD)
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new" * 10_000)
    reply = ftp.getmultiline()  # the client sends nothing more; the watchdog fires
    assert reply.startswith("426") and "no data moved" in reply
    assert_untouched(old_file)
    data.close()
    assert wait_for(lambda: server.counters.get("transfer_stalled") == 1)


def test_server_shutdown_mid_stor_keeps_the_old_file(server: RunningServer, old_file: Path) -> None:
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new" * 10_000)
    assert wait_for(lambda: temporary_size(server.home) == 30_000)
    server.stop()
    assert_untouched(old_file)
    data.close()


def test_a_reader_during_a_replacing_upload_gets_the_old_file_whole(
    server: RunningServer, old_file: Path
) -> None:
    new = os.urandom(2 * MIB)
    writer = connect(server)
    data = begin_upload(writer, "STOR report.txt", new[:MIB])
    assert wait_for(lambda: temporary_size(server.home) == MIB)
    reader = connect(server)
    reader.voidcmd("TYPE I")
    assert reader.size("report.txt") == len(OLD)
    assert "report.txt" in reader.nlst() and all(
        not name.startswith(TEMP_PREFIX) for name in reader.nlst("-a")
    )
    # A download that starts before the upload ends and finishes after it is replaced.
    reader.voidcmd("TYPE I")
    downloading = reader.transfercmd("RETR report.txt")
    first = downloading.recv(1000)
    send_and_close(data, new[MIB:])
    assert writer.voidresp().startswith("226")
    rest = bytearray()
    while chunk := downloading.recv(65536):
        rest.extend(chunk)
    downloading.close()
    assert reader.voidresp().startswith("226")
    assert first + bytes(rest) == OLD
    assert old_file.read_bytes() == new
    assert temporaries(server.home) == []
    got = bytearray()
    reader.retrbinary("RETR report.txt", got.extend)
    assert bytes(got) == new


def test_replacing_keeps_the_permission_bits(server: RunningServer, old_file: Path) -> None:
    old_file.chmod(0o640)
    ftp = connect(server)
    assert upload(ftp, "STOR report.txt", b"new").startswith("226")
    assert old_file.read_bytes() == b"new"
    assert old_file.stat().st_mode & 0o777 == 0o640


def test_temporary_files_cannot_be_listed_read_or_deleted(
    server: RunningServer, old_file: Path
) -> None:
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new")
    assert wait_for(lambda: len(temporaries(server.home)) == 1)
    (name,) = temporaries(server.home)
    other = connect(server)
    assert sorted(other.nlst("-a")) == ["report.txt"]
    listing: list[str] = []
    other.retrlines("LIST -a", listing.append)
    assert not any(TEMP_PREFIX in line for line in listing)
    for command in (f"DELE {name}", f"MDTM {name}", f"RNFR {name}", f"STOR {name}"):
        if command.startswith("STOR"):  # a data connection prepared: the name is what fails
            assert other.sendcmd("PASV").startswith("227")
        reply = reply_to(other, command)
        assert reply.startswith("550") and "reserved for uploads" in reply, command
    send_and_close(data, b"")
    assert ftp.voidresp().startswith("226")
    assert old_file.read_bytes() == b"new"


def test_appe_writes_to_the_file_itself_and_keeps_what_arrived(
    server: RunningServer, old_file: Path
) -> None:
    ftp = connect(server)
    data = begin_upload(ftp, "APPE report.txt", b"tail" * 1000)
    # No temporary file: the bytes go straight onto the end of the file.
    assert wait_for(lambda: old_file.stat().st_size == len(OLD) + 4000)
    assert temporaries(server.home) == []
    assert ftp.abort().startswith("426")
    ftp.getmultiline()
    data.close()
    assert old_file.read_bytes() == OLD + b"tail" * 1000


def test_rest_stor_resumes_in_place(server: RunningServer, old_file: Path) -> None:
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd("STOR report.txt", rest=10)
    send_and_close(data, b"RESUMED")
    assert ftp.voidresp().startswith("226")
    assert old_file.read_bytes() == OLD[:10] + b"RESUMED"


def test_without_atomic_uploads_stor_writes_in_place(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(atomic_uploads=False)
    old_file = server.home / "report.txt"
    old_file.write_bytes(OLD)
    ftp = connect(server)
    data = begin_upload(ftp, "STOR report.txt", b"new")
    assert wait_for(lambda: old_file.read_bytes() == b"new")
    assert temporaries(server.home) == []
    send_and_close(data, b"")
    assert ftp.voidresp().startswith("226")


@pytest.mark.parametrize("passive", [False, True], ids=["no PASV", "PASV never connected"])
@pytest.mark.parametrize(
    "commands",
    [["STOR report.txt"], ["REST 10", "STOR report.txt"], ["APPE report.txt"]],
    ids=["STOR", "REST+STOR", "APPE"],
)
def test_an_upload_that_gets_no_data_connection_changes_nothing(
    make_server: Callable[..., RunningServer], commands: list[str], passive: bool
) -> None:
    # Written in place (no atomic uploads): opening must not cut the file before the
    # data connection is there. A 425 means nothing happened (RFC 959 4.2).
    server = make_server(atomic_uploads=False, data_connect_timeout=0.3)
    old_file = server.home / "report.txt"
    old_file.write_bytes(OLD)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    if passive:
        assert ftp.sendcmd("PASV").startswith("227")  # and the client never connects
    *setup, command = commands
    for line in setup:
        assert ftp.sendcmd(line).startswith("350")
    reply = reply_to(ftp, command)
    if passive:
        assert reply.startswith("150"), reply
        reply = ftp.getmultiline()
    assert reply.startswith("425"), reply
    assert old_file.read_bytes() == OLD
    assert os.listdir(server.home) == ["report.txt"]


@pytest.mark.parametrize("command", ["STOR", "APPE"])
def test_an_upload_to_a_new_name_that_gets_no_data_connection_leaves_no_file(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path], command: str
) -> None:
    # Opening creates the file (for the 550s to come before the 150); the 425 after
    # the 150 must take it away again.
    _, home = served_tree
    before = sorted(os.listdir(home))
    server = make_server(
        atomic_uploads=False, data_connect_timeout=0.3, **alice_with(home, quota_files=2)
    )
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    assert ftp.sendcmd("PASV").startswith("227")  # and the client never connects
    assert reply_to(ftp, f"{command} brand-new.txt").startswith("150")
    assert ftp.getmultiline().startswith("425")
    assert sorted(os.listdir(home)) == before
    # Nor does it stay charged: two new files still fit the quota of two.
    for name in ("a.txt", "b.txt"):
        assert upload(ftp, f"STOR {name}", b"x").startswith("226")
    assert sorted(os.listdir(home)) == sorted([*before, "a.txt", "b.txt"])
    assert ftp.voidcmd("NOOP").startswith("200")


@pytest.mark.parametrize("command", ["STOR new.txt", "APPE new.txt", "STOU new.txt"])
@pytest.mark.parametrize("atomic", [True, False])
def test_an_upload_without_pasv_or_port_creates_no_file(
    make_server: Callable[..., RunningServer], command: str, atomic: bool
) -> None:
    server = make_server(atomic_uploads=atomic)
    ftp = connect(server)
    reply = reply_to(ftp, command)
    assert reply.startswith("425") and "PASV" in reply, reply
    assert os.listdir(server.home) == []


def test_aborted_stou_leaves_no_file_and_a_completed_one_is_stored(
    server: RunningServer,
) -> None:
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    data, _ = ftp.ntransfercmd("STOU draft.txt")
    data.sendall(b"partial")
    assert wait_for(lambda: len(temporaries(server.home)) == 1)
    assert ftp.abort().startswith("426")
    ftp.getmultiline()
    data.close()
    assert os.listdir(server.home) == []  # neither the temporary file nor the reserved name
    data, _ = ftp.ntransfercmd("STOU draft.txt")
    send_and_close(data, b"complete")
    assert "draft.txt" in ftp.voidresp()
    assert (server.home / "draft.txt").read_bytes() == b"complete"


# -- a full disk ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for the test and unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 1 MiB tmpfs for the disk-full test")
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_disk_full_answers_552_and_the_session_goes_on(
    make_server: Callable[..., RunningServer],
    small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    existing = small_disk / "target.bin"
    existing.write_bytes(OLD)
    server = make_server(anonymous={"home": str(small_disk), "permissions": ["all"]})
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(server.host, server.port)
    ftp.login()
    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        reply = upload(ftp, "STOR target.bin", os.urandom(2 * MIB))
    assert reply.startswith("552") and "disk is full" in reply
    # The admin hears of it too, at the level that shows problems.
    assert [m for m in warnings_of(caplog) if "errno=ENOSPC" in m], caplog.text
    assert existing.read_bytes() == OLD
    assert sorted(os.listdir(small_disk)) == ["target.bin"]  # no partial or temporary file
    small = os.urandom(10 * KIB)
    assert upload(ftp, "STOR small.bin", small).startswith("226")
    assert (small_disk / "small.bin").read_bytes() == small
    assert upload(ftp, "STOR target.bin", small).startswith("226")
    assert existing.read_bytes() == small
    ftp.quit()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return log_messages(caplog, level=logging.WARNING)


def test_a_local_error_mid_stor_is_a_warning_naming_errno_path_user_and_client(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The upload's directory vanishes under it: putting the file in place fails with
    # ENOENT, a local error as a full or failing disk would be. The client's 451 is
    # not enough: at log level warning the admin must see it too.
    directory = server.home / "sub"
    directory.mkdir()
    ftp = connect(server)
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        data = begin_upload(ftp, "STOR sub/x.bin", b"q" * 50_000)
        assert wait_for(lambda: temporary_size(directory) == 50_000)
        shutil.rmtree(directory)
        data.close()
        reply = ftp.getmultiline()
        assert reply.startswith("451") and "No such file or directory" in reply, reply
        line = one_transfer_line(caplog)
    assert warnings_of(caplog) == [
        "transfer STOR stopped by a local I/O error user=alice client=127.0.0.1 "
        'path=/sub/x.bin errno=ENOENT reason="No such file or directory"'
    ]
    # The transfer line: the server's side failed, and why.
    assert line.endswith(' result=error reason="No such file or directory"'), line
    assert reply_to(ftp, "NOOP").startswith("200")


# -- the size limit -------------------------------------------------------------------


def test_upload_over_max_upload_size_is_stopped_with_552(
    make_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(max_upload_size=100_000)
    old_file = server.home / "report.txt"
    old_file.write_bytes(OLD)
    ftp = connect(server)
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        reply = upload(ftp, "STOR report.txt", os.urandom(300_000))
        line = one_transfer_line(caplog)
    assert reply.startswith("552") and "100000 bytes" in reply
    # The log names the limit, in the words of the client's 552.
    assert " result=refused reason=" in line and "upload size limit of 100000 bytes" in line
    assert_untouched(old_file)
    assert wait_for(lambda: server.counters.get("transfer_refused") == 1)
    reply = upload(ftp, "STOR fresh.bin", os.urandom(300_000))
    assert reply.startswith("552")
    assert not (server.home / "fresh.bin").exists()
    exactly = os.urandom(100_000)
    assert upload(ftp, "STOR fresh.bin", exactly).startswith("226")
    assert (server.home / "fresh.bin").read_bytes() == exactly
    # APPE counts the size of the file it makes, not just the bytes of this upload.
    assert upload(ftp, "APPE fresh.bin", b"x").startswith("552")


# -- quotas ---------------------------------------------------------------------------


def test_quota_bytes_stops_an_upload_and_deleting_makes_room(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    _, home = served_tree
    (home / "already.bin").write_bytes(b"x" * 100_000)  # measured when first needed
    server = make_server(**alice_with(home, quota_bytes=300_000))
    ftp = connect(server)
    assert upload(ftp, "STOR a.bin", os.urandom(150_000)).startswith("226")
    reply = upload(ftp, "STOR b.bin", os.urandom(100_000))
    assert reply.startswith("552") and "Quota exceeded (300000 bytes allowed" in reply
    assert not (home / "b.bin").exists()
    assert temporaries(home) == []
    ftp.delete("a.bin")
    assert upload(ftp, "STOR b.bin", os.urandom(100_000)).startswith("226")
    # Replacing a file needs room only for the difference.
    assert upload(ftp, "STOR b.bin", os.urandom(200_000)).startswith("226")


def test_quota_files_refuses_a_new_file_before_the_transfer(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    _, home = served_tree
    (home / "one.txt").write_bytes(b"1")
    server = make_server(**alice_with(home, quota_files=2))
    ftp = connect(server)
    assert upload(ftp, "STOR two.txt", b"2").startswith("226")
    ftp.voidcmd("TYPE I")
    with pytest.raises(ftplib.error_perm, match=r"^552 Quota exceeded \(2 files allowed"):
        ftp.transfercmd("STOR three.txt")
    assert upload(ftp, "STOR two.txt", b"replaced").startswith("226")  # not a new file
    # RNTO over an existing file frees one.
    ftp.rename("two.txt", "one.txt")
    assert upload(ftp, "STOR three.txt", b"3").startswith("226")
    assert sorted(os.listdir(home)) == ["one.txt", "three.txt"]


def test_renaming_a_file_onto_another_name_of_itself_frees_no_quota(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    # Two names of one file: a path through a symlinked directory, and a hard link.
    # rename() between them changes nothing on disk, so no bytes or files come back.
    _, home = served_tree
    (home / "d").mkdir()
    (home / "d" / "a.bin").write_bytes(b"x" * 950)
    (home / "lnk").symlink_to("d")
    os.link(home / "d" / "a.bin", home / "hard.bin")
    server = make_server(**alice_with(home, quota_bytes=2_000, quota_files=3))
    ftp = connect(server)
    for _ in range(3):
        ftp.rename("d/a.bin", "lnk/a.bin")
        ftp.rename("hard.bin", "d/a.bin")
    reply = upload(ftp, "STOR new.bin", os.urandom(1_000))
    assert reply.startswith("552") and "Quota exceeded (2000 bytes allowed" in reply
    assert not (home / "new.bin").exists()


def test_quota_is_shared_by_concurrent_sessions(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    _, home = served_tree
    server = make_server(**alice_with(home, quota_bytes=300_000))
    first = connect(server)
    data = begin_upload(first, "STOR first.bin", b"a" * 200_000)
    assert wait_for(lambda: temporary_size(home) == 200_000)
    second = connect(server)
    reply = upload(second, "STOR second.bin", b"b" * 150_000)
    assert reply.startswith("552") and "Quota exceeded" in reply
    send_and_close(data, b"")
    assert first.voidresp().startswith("226")
    assert os.listdir(home) == ["first.bin"]
    assert upload(second, "STOR second.bin", b"b" * 100_000).startswith("226")


def test_a_resumed_upload_waiting_for_its_data_connection_frees_no_quota_yet(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    # REST 10 + STOR will cut the 200 KB file to 10 bytes, but only once data flows:
    # until then those bytes are still on disk, and still count.
    _, home = served_tree
    (home / "big.bin").write_bytes(b"x" * 200_000)
    server = make_server(**alice_with(home, quota_bytes=300_000))
    waiting = connect(server)
    waiting.voidcmd("TYPE I")
    assert waiting.sendcmd("PASV").startswith("227")  # and never connects
    assert waiting.sendcmd("REST 10").startswith("350")
    waiting.putcmd("STOR big.bin")
    assert waiting.getresp().startswith("150")
    other = connect(server)
    reply = upload(other, "STOR new.bin", os.urandom(150_000))
    assert reply.startswith("552") and "Quota exceeded" in reply
    assert (home / "big.bin").stat().st_size == 200_000


def test_a_file_that_shrinks_below_the_offset_before_the_data_comes_is_not_padded(
    server: RunningServer, old_file: Path
) -> None:
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    port = parse_pasv_reply(ftp.sendcmd("PASV")).port
    assert ftp.sendcmd("REST 1000").startswith("350")
    ftp.putcmd("STOR report.txt")
    assert ftp.getresp().startswith("150")
    os.truncate(old_file, 50)  # someone else cuts it meanwhile
    with socket.create_connection((server.host, port), timeout=10) as data:
        data.sendall(b"resumed")
    reply = ftp.getmultiline()
    assert reply.startswith("451") and "below the restart offset 1000" in reply, reply
    assert old_file.read_bytes() == OLD[:50]  # no zeros, nothing written


def test_parallel_uploads_never_take_a_user_over_quota(
    make_server: Callable[..., RunningServer], served_tree: tuple[Path, Path]
) -> None:
    _, home = served_tree
    server = make_server(**alice_with(home, quota_bytes=500_000))
    replies: list[str] = []

    def one(index: int) -> None:
        ftp = connect(server)
        replies.append(upload(ftp, f"STOR part{index}.bin", os.urandom(200_000)))
        ftp.quit()

    threads = [threading.Thread(target=one, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(reply[:3] for reply in replies) == ["226", "226", "552", "552"]
    assert sum(path.stat().st_size for path in home.iterdir()) == 400_000
    assert temporaries(home) == []
