"""FTP extensions on a real ketch server: FEAT/OPTS, MLST/MLSD, HASH, MFMT, AVBL, HOST, CLNT, UTF-8.

Clients are Python's ftplib (its ``mlsd()`` parser included), curl, and raw
command lines where a client has no API for the command.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import logging
import os
import select
import socket
import stat
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from ketch.protocol.remote_listing import parse_mlsd
from ketch.server.listing_threads import BIG_DIRECTORY

from conftest import (
    PASSWORD,
    READER,
    READER_PASSWORD,
    USER,
    RunningServer,
    alice_with,
    require_program,
)
from ftp_helpers import connect, log_messages, reply_to, wait_for
from payloads import MIB

TIMEOUT = 10
UTF8_NAMES = ("señal_ñandú.txt", "日本語.txt")


def _hashes(data: bytes) -> dict[str, str]:
    return {
        "SHA-256": hashlib.sha256(data).hexdigest(),
        "SHA-1": hashlib.sha1(data).hexdigest(),
        "MD5": hashlib.md5(data).hexdigest(),
        "CRC32": f"{zlib.crc32(data):08x}",
    }


@pytest.fixture
def payload(server: RunningServer) -> bytes:
    """A file crossing the server's 1 MiB read chunks, in alice's home as data.bin."""
    data = os.urandom(2 * MIB + 12345)
    (server.home / "data.bin").write_bytes(data)
    return data


def _utf8_client(server: RunningServer) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=TIMEOUT, encoding="utf-8")
    ftp.connect(server.host, server.port)
    ftp.login(USER, PASSWORD)
    return ftp


# -- FEAT is truthful -------------------------------------------------------------------

# For each FEAT line, a command that uses it and the reply code that shows it works.
# Every FEAT line must have one here: a feature that is announced must be tested.
FEATURE_PROBES: dict[str, tuple[str, str]] = {
    "AVBL": ("AVBL", "213"),
    "CLNT": ("CLNT pytest", "200"),
    "EPSV": ("EPSV", "229"),
    "HASH": ("HASH hello.txt", "213"),
    "MDTM": ("MDTM hello.txt", "213"),
    "MFMT": ("MFMT 20200102030405 hello.txt", "213"),
    "MLST": ("MLST hello.txt", "250"),
    "REST": ("REST 0", "350"),
    "SIZE": ("SIZE hello.txt", "213"),
    "TVFS": ("CWD /sub/../", "250"),
    "UTF8": ("OPTS UTF8 ON", "200"),
    "XCRC": ("XCRC hello.txt", "250"),
    "XMD5": ("XMD5 hello.txt", "250"),
    "XSHA1": ("XSHA1 hello.txt", "250"),
    "XSHA256": ("XSHA256 hello.txt", "250"),
}
# Probed by the FTPS tests, which can finish a TLS handshake.
TLS_FEATURES = frozenset({"AUTH", "PBSZ", "PROT", "CCC"})


def test_every_feat_line_names_a_command_that_works(server: RunningServer) -> None:
    (server.home / "hello.txt").write_bytes(b"hello\n")
    (server.home / "sub").mkdir()
    ftp = connect(server)
    lines = reply_to(ftp, "FEAT").splitlines()
    assert lines[0] == "211-Features:" and lines[-1] == "211 End"
    assert all(line.startswith(" ") and not line.startswith("  ") for line in lines[1:-1])
    features = [line.strip() for line in lines[1:-1]]
    # ...and every extension implemented is announced.
    assert {*FEATURE_PROBES, "HOST", "EPRT"} <= {feature.split()[0] for feature in features}
    ftp.voidcmd("TYPE I")
    for feature in features:
        name = feature.split()[0]
        if name in TLS_FEATURES:
            continue
        if name == "HOST":  # only before USER: on a fresh connection
            fresh = connect(server, login=False)
            assert reply_to(fresh, "HOST localhost")[:3] == "220"
            fresh.close()
            continue
        if name == "EPRT":
            with socket.create_server(("127.0.0.1", 0)) as listener:
                port = listener.getsockname()[1]
                assert reply_to(ftp, f"EPRT |1|127.0.0.1|{port}|")[:3] == "200", feature
            continue
        assert name in FEATURE_PROBES, f"FEAT announces {feature!r} but this test has no probe"
        probe, code = FEATURE_PROBES[name]
        reply = reply_to(ftp, probe)
        assert reply[:3] == code, f"{feature}: {probe} -> {reply}"
    ftp.close()


def test_feat_parameters_show_the_current_selections(server: RunningServer) -> None:
    ftp = connect(server, login=False)
    features = {
        line.strip().split()[0]: line.strip() for line in ftp.sendcmd("FEAT").splitlines()[1:-1]
    }
    assert features["MLST"] == "MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;"
    assert features["HASH"] == "HASH SHA-256*;SHA-1;MD5;CRC32"
    assert features["REST"] == "REST STREAM"
    assert ftp.sendcmd("OPTS MLST size;modify;") == "200 MLST OPTS size;modify;"
    assert ftp.sendcmd("OPTS HASH md5") == "200 MD5"
    features = {
        line.strip().split()[0]: line.strip() for line in ftp.sendcmd("FEAT").splitlines()[1:-1]
    }
    assert features["MLST"] == "MLST type;size*;modify*;perm;unique;UNIX.mode;"
    assert features["HASH"] == "HASH SHA-256;SHA-1;MD5*;CRC32"
    ftp.close()


# -- MLSD and MLST -----------------------------------------------------------------------


def test_ftplib_mlsd_reads_every_fact_as_the_disk_has_it(server: RunningServer) -> None:
    home = server.home
    (home / "a file;with semicolon.txt").write_bytes(b"12345")
    (home / "dir").mkdir()
    (home / "link").symlink_to("dir")
    os.utime(home / "a file;with semicolon.txt", (1_700_000_000, 1_700_000_000))
    ftp = connect(server)
    listing = dict(ftp.mlsd())
    assert set(listing) == {".", "a file;with semicolon.txt", "dir", "link"}
    assert listing["."]["type"] == "cdir"
    facts = listing["a file;with semicolon.txt"]
    info = os.stat(home / "a file;with semicolon.txt")
    assert facts == {
        "type": "file",
        "size": "5",
        "modify": "20231114221320",
        "perm": "adfrw",
        "unique": f"{info.st_dev:x}g{info.st_ino:x}",
        "unix.mode": f"{stat.S_IMODE(info.st_mode):04o}",
    }
    assert listing["dir"]["type"] == "dir" and "size" not in listing["dir"]
    assert listing["dir"]["perm"] == "cdeflmp"
    assert listing["link"]["type"] == "OS.unix=slink:dir"
    ftp.close()


def test_ketch_client_parser_reads_ketch_mlsd(server: RunningServer) -> None:
    (server.home / "x.bin").write_bytes(b"x" * 300)
    (server.home / "sub").mkdir()
    ftp = connect(server)
    lines: list[str] = []
    ftp.retrlines("MLSD", lines.append)
    entries = {entry.name: entry for entry in parse_mlsd("\r\n".join(lines))}
    assert set(entries) == {"x.bin", "sub"}
    assert (entries["x.bin"].kind, entries["x.bin"].size) == ("file", 300)
    assert entries["sub"].kind == "dir"
    ftp.close()


def test_mlsd_permissions_follow_the_account(server: RunningServer) -> None:
    ftp = connect(server, user=READER, password=READER_PASSWORD)
    listing = dict(ftp.mlsd())
    assert listing["secret.txt"]["perm"] == "r"
    assert listing["."]["perm"] == "el"
    ftp.close()


def test_perm_claims_only_what_the_server_allows_for_the_home_and_special_files(
    server: RunningServer,
) -> None:
    (server.home / "sub").mkdir()
    os.mkfifo(server.home / "pipe")
    ftp = connect(server)
    # The home: everything but removing (d) and renaming (f) it, which the server refuses.
    assert ";perm=celmp;" in ftp.sendcmd("MLST /")
    assert dict(ftp.mlsd("/"))["."]["perm"] == "celmp"
    assert dict(ftp.mlsd("/sub"))["."]["perm"] == "cdeflmp"  # any other directory: all
    assert reply_to(ftp, "RMD /")[:3] == "550"
    ftp.sendcmd("RNFR /")
    assert reply_to(ftp, "RNTO /moved")[:3] == "550"
    # A FIFO: renamed and deleted (d, f), never transferred (no r, a or w).
    assert dict(ftp.mlsd())["pipe"]["perm"] == "df"
    facts = ftp.sendcmd("MLST pipe").splitlines()[1]
    assert facts.startswith(" type=OS.unix=fifo;") and ";perm=df;" in facts
    for verb in ("RETR", "STOR", "APPE"):
        ftp.sendcmd("EPSV")
        assert reply_to(ftp, f"{verb} pipe")[:3] == "550"
    ftp.rename("pipe", "renamed")
    ftp.delete("renamed")
    assert list(server.home.iterdir()) == [server.home / "sub"]
    ftp.close()


def test_mlsd_of_a_file_is_refused_and_of_a_missing_path_is_550(server: RunningServer) -> None:
    (server.home / "f.txt").write_bytes(b"f")
    ftp = connect(server)
    ftp.sendcmd("EPSV")
    reply = reply_to(ftp, "MLSD f.txt")
    assert reply.startswith("501 ") and "use MLST" in reply
    assert reply_to(ftp, "MLSD nowhere")[:3] == "550"
    ftp.close()


def test_mlst_is_a_250_reply_with_one_indented_fact_line(server: RunningServer) -> None:
    (server.home / "docs").mkdir()
    (server.home / "docs" / "r.md").write_bytes(b"# r\n")
    ftp = connect(server)
    ftp.cwd("docs")
    lines = ftp.sendcmd("MLST r.md").splitlines()
    assert lines[0].startswith("250-") and lines[-1].startswith("250 ") and len(lines) == 3
    assert lines[1].startswith(" type=file;size=4;") and lines[1].endswith(" /docs/r.md")
    assert ftp.sendcmd("MLST").splitlines()[1].startswith(" type=dir;")
    assert reply_to(ftp, "MLST gone.txt")[:3] == "550"
    ftp.close()


def test_opts_mlst_changes_mlst_and_mlsd_output(server: RunningServer) -> None:
    (server.home / "f.txt").write_bytes(b"abc")
    ftp = connect(server)
    assert ftp.sendcmd("OPTS MLST SIZE;nonsense;Type") == "200 MLST OPTS type;size;"
    assert ftp.sendcmd("MLST f.txt").splitlines()[1] == " type=file;size=3; /f.txt"
    assert dict(ftp.mlsd())["f.txt"] == {"type": "file", "size": "3"}
    assert ftp.sendcmd("OPTS MLST") == "200 MLST OPTS"
    assert ftp.sendcmd("MLST f.txt").splitlines()[1] == "  /f.txt"
    ftp.close()


def test_mlsd_and_list_show_all_of_ten_thousand_entries(server: RunningServer) -> None:
    # Speed is measured by `make bench`, not here: this checks the listing is complete and exact.
    big = server.home / "big"
    big.mkdir()
    for index in range(10_000):
        (big / f"file{index:05d}.dat").write_bytes(b"x" * (index % 7))
    # On ext4 and tmpfs (not ZFS) big enough to be listed in a listing thread.
    threaded = os.stat(big).st_size > BIG_DIRECTORY
    ftp = connect(server)
    lines = []
    ftp.retrlines("LIST big", lines.append)
    assert len(lines) == 10_000, f"threaded={threaded}"
    assert [(line.split()[4], line.split()[-1]) for line in lines] == [
        (str(index % 7), f"file{index:05d}.dat") for index in range(10_000)
    ]
    ftp.sendcmd("TYPE I")
    chunks: list[bytes] = []
    ftp.retrbinary("MLSD big", chunks.append)
    data = b"".join(chunks)
    assert data.count(b"\r\n") == 10_001  # the entries and the cdir line
    lines = data.decode().split("\r\n")
    assert lines[-1] == "" and lines[0].startswith("type=cdir;")
    entries = parse_mlsd(data.decode())
    assert len(entries) == 10_000
    assert sorted((e.name, e.kind, e.size) for e in entries) == [
        (f"file{index:05d}.dat", "file", index % 7) for index in range(10_000)
    ]
    ftp.close()


# -- HASH, RANG and the X commands -------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "SHA-1", "MD5", "CRC32"])
def test_hash_equals_hashlib_over_the_whole_file(
    server: RunningServer, payload: bytes, algorithm: str
) -> None:
    ftp = connect(server)
    assert ftp.sendcmd(f"OPTS HASH {algorithm.lower()}") == f"200 {algorithm}"
    reply = ftp.sendcmd("HASH data.bin")
    expected = _hashes(payload)[algorithm]
    assert reply == f"213 {algorithm} 0-{len(payload) - 1} {expected} data.bin"
    ftp.close()


def test_hash_of_an_empty_file(server: RunningServer) -> None:
    (server.home / "empty").touch()
    ftp = connect(server)
    assert ftp.sendcmd("HASH empty") == f"213 SHA-256 0-0 {hashlib.sha256(b'').hexdigest()} empty"
    ftp.close()


def test_rang_selects_an_inclusive_range_for_hash(server: RunningServer, payload: bytes) -> None:
    ftp = connect(server)
    ftp.sendcmd("OPTS HASH SHA-1")
    start, end = MIB - 10, 2 * MIB + 5  # across a chunk boundary
    assert ftp.sendcmd(f"RANG {start} {end}").startswith("350 ")
    expected = hashlib.sha1(payload[start : end + 1]).hexdigest()
    assert ftp.sendcmd("HASH data.bin") == f"213 SHA-1 {start}-{end} {expected} data.bin"
    # The range stays for later HASH commands until RANG 1 0.
    assert ftp.sendcmd("HASH data.bin").split()[2] == f"{start}-{end}"
    assert ftp.sendcmd("RANG 0 0").startswith("350 ")
    assert ftp.sendcmd("HASH data.bin").split()[3] == hashlib.sha1(payload[:1]).hexdigest()
    assert ftp.sendcmd("RANG 1 0").startswith("350 ")
    assert ftp.sendcmd("HASH data.bin").split()[3] == hashlib.sha1(payload).hexdigest()
    ftp.close()


def test_rang_past_the_end_is_cut_and_a_start_past_it_refused(
    server: RunningServer, payload: bytes
) -> None:
    ftp = connect(server)
    size = len(payload)
    ftp.sendcmd(f"RANG {size - 3} {size + 100}")
    expected = hashlib.sha256(payload[-3:]).hexdigest()
    assert ftp.sendcmd("HASH data.bin") == f"213 SHA-256 {size - 3}-{size - 1} {expected} data.bin"
    ftp.sendcmd(f"RANG {size} {size + 1}")
    reply = reply_to(ftp, "HASH data.bin")
    assert reply.startswith("554 ") and f"{size} bytes" in reply and "RANG 1 0" in reply
    reply = reply_to(ftp, "RANG 9 3")
    assert reply.startswith("501 ") and "reset" in reply
    assert ftp.sendcmd("HASH data.bin").split()[2] == f"0-{size - 1}"  # 501 reset the range
    ftp.close()


@pytest.mark.parametrize(
    ("verb", "algorithm"),
    [
        ("XCRC", "CRC32"),
        ("XMD5", "MD5"),
        ("XSHA1", "SHA-1"),
        ("XSHA", "SHA-1"),
        ("XSHA256", "SHA-256"),
    ],
)
def test_x_commands_hash_whole_files_and_exclusive_ranges(
    server: RunningServer, payload: bytes, verb: str, algorithm: str
) -> None:
    ftp = connect(server)
    assert ftp.sendcmd(f"{verb} data.bin") == f"250 {_hashes(payload)[algorithm]}"
    start, end = 1000, MIB + 1000
    part = _hashes(payload[start:end])[algorithm]
    assert ftp.sendcmd(f"{verb} data.bin {start} {end}") == f"250 {part}"
    assert ftp.sendcmd(f'{verb} "data.bin" {start} {end}') == f"250 {part}"
    reply = reply_to(ftp, f"{verb} data.bin 0 {len(payload) + 1}")
    assert reply.startswith("554 ") and str(len(payload)) in reply
    ftp.close()


def test_x_command_path_may_contain_spaces_and_digits(server: RunningServer) -> None:
    (server.home / "a 1 2").write_bytes(b"whole")
    (server.home / "a").write_bytes(b"other")
    ftp = connect(server)
    assert ftp.sendcmd("XMD5 a 1 2") == f"250 {hashlib.md5(b'whole').hexdigest()}"
    assert ftp.sendcmd("XMD5 a 1 3") == f"250 {hashlib.md5(b'th').hexdigest()}"
    # Numbers that cannot be a range: a name's tail when such a file exists, else a 501.
    (server.home / "a -1 3").write_bytes(b"dash")
    (server.home / "a 5 2").write_bytes(b"backwards")
    assert ftp.sendcmd("XMD5 a -1 3") == f"250 {hashlib.md5(b'dash').hexdigest()}"
    assert ftp.sendcmd("XMD5 a 5 2") == f"250 {hashlib.md5(b'backwards').hexdigest()}"
    assert reply_to(ftp, "XMD5 a -2 3").startswith("501 The range -2 3 is not two whole")
    assert reply_to(ftp, "XMD5 a 5 1").startswith("501 The start 5 is after the end 1")
    ftp.close()


def test_abor_stops_a_long_hash_with_426_then_226(server: RunningServer, payload: bytes) -> None:
    """ABOR is heard while a file is being hashed; the hashing thread is freed for others."""
    with (server.home / "huge.bin").open("wb") as file:
        file.truncate(2 << 30)  # holes: many seconds of hashing, no disk
    ftp = connect(server)
    ftp.putcmd("HASH huge.bin")
    ready, _, _ = select.select([ftp.sock], [], [], 0.3)
    assert not ready, "the HASH of 2 GiB answered at once"
    ftp.putcmd("ABOR")
    assert ftp.getmultiline() == "426 HASH huge.bin: aborted by ABOR; no digest."
    assert ftp.getmultiline() == "226 ABOR successful: HASH huge.bin (SHA-256) stopped."
    expected = _hashes(payload)["SHA-256"]
    assert ftp.sendcmd("HASH data.bin") == f"213 SHA-256 0-{len(payload) - 1} {expected} data.bin"
    ftp.close()


def _open_by_server(path: Path) -> bool:
    """Whether this process (the in-process server) holds ``path`` open."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
    return False


def test_abor_of_a_hash_still_waiting_for_a_thread_closes_its_file(server: RunningServer) -> None:
    """Both hashing threads busy: a third HASH waits in the queue; ABOR must close its file."""
    huge = server.home / "huge.bin"
    with huge.open("wb") as file:
        file.truncate(2 << 30)
    queued = server.home / "queued.bin"
    queued.write_bytes(b"q" * 1000)
    busy = [connect(server), connect(server)]
    for ftp in busy:
        ftp.putcmd("HASH huge.bin")
    ftp = connect(server)
    ftp.putcmd("HASH queued.bin")
    assert wait_for(lambda: _open_by_server(queued))
    ready, _, _ = select.select([ftp.sock], [], [], 0.3)
    assert not ready, "the queued HASH answered: the hashing threads were not busy"
    ftp.putcmd("ABOR")
    assert ftp.getmultiline().startswith("426 HASH queued.bin: aborted by ABOR")
    assert ftp.getmultiline().startswith("226")
    assert wait_for(lambda: not _open_by_server(queued))
    for other in [*busy, ftp]:
        other.close()


def test_a_command_pipelined_behind_hash_is_answered_after_it(
    server: RunningServer, payload: bytes
) -> None:
    """While hashing only a well-formed ABOR is answered: a NOOP's 200, or the 501 of
    "ABOR now", must not come before HASH's 213."""
    ftp = connect(server)
    ftp.sock.sendall(b"HASH data.bin\r\nABOR now\r\nNOOP\r\nXCRC data.bin\r\nSTAT\r\n")
    assert ftp.getmultiline().startswith("213 SHA-256 ")
    assert ftp.getmultiline().startswith("501 ABOR takes no argument")
    assert ftp.getmultiline().startswith("200")
    assert ftp.getmultiline() == f"250 {_hashes(payload)['CRC32']}"
    assert "Transfer in progress" not in ftp.getmultiline()
    ftp.close()


def test_hash_refusals_say_what_is_wrong(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    home = tmp_path / "lister"
    home.mkdir()
    (home / "f").write_bytes(b"f")
    (home / "d").mkdir()
    (home / "outside").symlink_to("/etc/hostname")
    server = make_server(**alice_with(home, permissions=["list"]))
    ftp = connect(server)
    reply = reply_to(ftp, "HASH f")
    assert reply.startswith("550 ") and "'read' permission" in reply
    server = make_server(**alice_with(home))
    ftp = connect(server)
    assert "a directory" in reply_to(ftp, "HASH d")
    assert reply_to(ftp, "XCRC d").startswith("550 ")
    assert "No such file" in reply_to(ftp, "HASH missing")
    assert "outside your home" in reply_to(ftp, "HASH outside")
    assert reply_to(ftp, "OPTS HASH CRC-37").startswith("501 ")
    assert ftp.sendcmd("OPTS HASH") == "200 SHA-256"
    assert reply_to(ftp, "HASH")[:3] == "501"
    ftp.close()


def _read_offset_of(path: Path) -> int | None:
    """The file offset of a descriptor this process (the in-process server) has open on ``path``."""
    target = os.path.realpath(path)
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != target:
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except OSError:  # closed meanwhile
            continue
    return None


def test_hashing_a_big_file_does_not_stop_other_sessions(server: RunningServer) -> None:
    # A sparse 512 MiB file: around a second of MD5 or more, hardly touching the disk,
    # against a NOOP round trip of a millisecond or so on loopback.
    size = 512 * MIB
    huge = server.home / "huge.bin"
    with huge.open("wb") as file:
        file.truncate(size)
    hashing = connect(server)
    other = connect(server)  # a second session, on its own connection
    try:
        hashing.sendcmd("OPTS HASH MD5")
        hashing.putcmd("HASH huge.bin")
        # The server has opened huge.bin and read past its start: hashing is under way.
        assert wait_for(lambda: (_read_offset_of(huge) or 0) > 0, timeout=30), "HASH never began"
        assert other.sendcmd("NOOP").startswith("200")
        # Had the event loop been busy hashing, NOOP would have been answered only
        # after the HASH reply had been sent, so that reply would be waiting already.
        readable, _, _ = select.select([hashing.sock], [], [], 0)
        assert not readable, "NOOP was answered only after HASH finished: the loop was blocked"
        hashing.sock.settimeout(120)
        # The MD5 of 512 MiB of zero bytes.
        expected = "aa559b4e3523a6c931f08f4df52d58f2"
        assert hashing.getresp() == f"213 MD5 0-{size - 1} {expected} huge.bin"
    finally:
        hashing.close()
        other.close()
        huge.unlink()


# -- MFMT --------------------------------------------------------------------------------


def test_mfmt_sets_the_modification_time(server: RunningServer) -> None:
    path = server.home / "stamp.txt"
    path.write_bytes(b"x")
    before = os.stat(path).st_atime
    ftp = connect(server)
    assert ftp.sendcmd("MFMT 20200229123456 stamp.txt") == "213 Modify=20200229123456; stamp.txt"
    info = os.stat(path)
    assert info.st_mtime == 1582979696
    assert info.st_atime == pytest.approx(before, abs=1)
    assert ftp.sendcmd("MDTM stamp.txt") == "213 20200229123456"
    assert dict(ftp.mlsd())["stamp.txt"]["modify"] == "20200229123456"
    ftp.close()


def test_mdtm_in_its_setter_form_is_refused_with_a_pointer_to_mfmt(server: RunningServer) -> None:
    # Some clients send "MDTM <time> <path>" to set a time; ketch offers MFMT for that.
    (server.home / "stamp.txt").write_bytes(b"x")
    ftp = connect(server)
    reply = reply_to(ftp, "MDTM 20200229123456 stamp.txt")
    assert reply.startswith("550 /20200229123456 stamp.txt: No such file or directory"), reply
    assert reply.endswith("to set a file's time, send MFMT YYYYMMDDHHMMSS <path>"), reply
    # A file that really has such a name is still answered.
    (server.home / "20200229123456 stamp.txt").write_bytes(b"y")
    assert reply_to(ftp, "MDTM 20200229123456 stamp.txt").startswith("213 ")
    assert "MFMT" not in reply_to(ftp, "MDTM missing.txt")
    ftp.close()


def test_mfmt_refusals(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "MFMT 20201301000000 x").startswith("501 Usage: MFMT")
    assert reply_to(ftp, "MFMT 20200101000000").startswith("501 ")
    assert reply_to(ftp, "MFMT 20200101000000 missing.txt")[:3] == "550"
    ftp.close()
    reader = connect(server, user=READER, password=READER_PASSWORD)
    reply = reply_to(reader, "MFMT 20200101000000 secret.txt")
    assert reply.startswith("550 ") and "'write' permission" in reply
    reader.close()


# -- AVBL --------------------------------------------------------------------------------


def test_avbl_reports_the_free_space_of_the_filesystem(server: RunningServer) -> None:
    ftp = connect(server)
    reply = ftp.sendcmd("AVBL")
    info = os.statvfs(server.home)
    assert reply.startswith("213 ")
    # Other processes write meanwhile: the two readings need only be close.
    assert abs(int(reply.split()[1]) - info.f_bavail * info.f_frsize) < 256 * MIB
    ftp.close()
    reader = connect(server, user=READER, password=READER_PASSWORD)
    assert reply_to(reader, "AVBL").startswith("550 Your account may not upload")
    reader.close()


def test_avbl_reports_what_is_left_of_the_quota(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    home = tmp_path / "quota_home"
    home.mkdir()
    (home / "old.bin").write_bytes(b"o" * 3000)
    server = make_server(**alice_with(home, quota_bytes=10_000))
    ftp = connect(server)
    assert ftp.sendcmd("AVBL") == "213 7000"
    ftp.storbinary("STOR new.bin", io.BytesIO(b"n" * 2500))
    assert ftp.sendcmd("AVBL /") == "213 4500"
    ftp.close()


# -- HOST and CLNT -----------------------------------------------------------------------


def test_host_before_user_is_accepted(server: RunningServer) -> None:
    ftp = connect(server, login=False)
    assert ftp.sendcmd("HOST FTP.Example.COM.") == (
        "220 Host ftp.example.com is ready: log in with USER and PASS."
    )
    assert ftp.sendcmd("HOST [::1]").startswith("220 Host ::1 ")
    ftp.login(USER, PASSWORD)
    reply = reply_to(ftp, "HOST ftp.example.com")
    assert reply.startswith("503 ") and "before USER" in reply
    ftp.close()


def test_host_after_user_and_bad_names_are_refused(server: RunningServer) -> None:
    ftp = connect(server, login=False)
    assert reply_to(ftp, "HOST bad_name!")[:3] == "501"
    ftp.sendcmd(f"USER {USER}")
    assert reply_to(ftp, "HOST ftp.example.com")[:3] == "503"
    ftp.close()


def test_host_names_setting_limits_the_accepted_hosts(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(host_names=["ftp.example.com", "files.example.org"])
    ftp = connect(server, login=False)
    reply = reply_to(ftp, "HOST other.example.net")
    assert reply.startswith("504 ") and "other.example.net" in reply
    assert "ftp.example.com" not in reply  # served names are not told before login
    assert ftp.sendcmd("HOST files.example.org").startswith("220 ")
    ftp.login(USER, PASSWORD)
    ftp.close()


def test_rein_forgets_host_and_options(server: RunningServer) -> None:
    ftp = connect(server)
    ftp.sendcmd("OPTS HASH MD5")
    ftp.sendcmd("REIN")
    assert ftp.sendcmd("HOST ftp.example.com").startswith("220 ")
    assert ftp.sendcmd("OPTS HASH") == "200 SHA-256"
    ftp.close()


def test_clnt_is_accepted_and_logged(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    ftp = connect(server, login=False)
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        assert ftp.sendcmd("CLNT FileZilla 3.66\x07") == "200 Noted: you are using FileZilla 3.66."
        ftp.sendcmd("NOOP")  # the log line is written before the reply; NOOP orders the check
    assert any("FileZilla 3.66" in record.getMessage() for record in caplog.records)
    assert reply_to(ftp, "CLNT")[:3] == "501"
    ftp.close()


def test_clnt_name_cannot_forge_log_fields(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    ftp = connect(server, login=False)
    forged = "foo user=root client=10.9.9.9 result=ok"
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        ftp.sendcmd(f"CLNT {forged}")
        ftp.sendcmd("NOOP")  # the log line is written before the reply; NOOP orders the check
    ftp.close()
    lines = log_messages(caplog, "client name")
    # One field, quoted as every client-chosen value is (client_text.log_field).
    assert lines == [f'client name client=127.0.0.1 user=- name="{forged}"']


# -- RFC 2640: UTF-8 and names that are not UTF-8 ------------------------------------------------


def test_non_ascii_names_round_trip_through_every_command(server: RunningServer) -> None:
    ftp = _utf8_client(server)
    for name in UTF8_NAMES:
        ftp.storbinary(f"STOR {name}", io.BytesIO(name.encode() * 3))
        assert (server.home / name).read_bytes() == name.encode() * 3
    assert sorted(ftp.nlst()) == sorted(UTF8_NAMES)
    listed: list[str] = []
    ftp.retrlines("LIST", listed.append)
    assert sorted(line.split(" ")[-1] for line in listed) == sorted(UTF8_NAMES)
    assert {name for name, _ in ftp.mlsd()} == {".", *UTF8_NAMES}
    for name in UTF8_NAMES:
        received = io.BytesIO()
        ftp.retrbinary(f"RETR {name}", received.write)
        assert received.getvalue() == name.encode() * 3
        assert ftp.sendcmd(f"MLST {name}").splitlines()[1].endswith(f" /{name}")
    ftp.rename(UTF8_NAMES[0], "ñ_renamed_名前.txt")
    assert (server.home / "ñ_renamed_名前.txt").read_bytes() == UTF8_NAMES[0].encode() * 3
    assert not (server.home / UTF8_NAMES[0]).exists()
    ftp.close()


@pytest.mark.peer
def test_curl_downloads_a_non_ascii_name(server: RunningServer, tmp_path: Path) -> None:
    curl = require_program("curl")
    (server.home / UTF8_NAMES[1]).write_bytes(b"nihongo")
    url = server.url("/" + "%E6%97%A5%E6%9C%AC%E8%AA%9E.txt")
    output = tmp_path / "out"
    result = subprocess.run(
        [curl, "-sS", "--max-time", "30", "-o", str(output), url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == b"nihongo"


def test_a_name_that_is_not_utf8_lists_and_downloads(server: RunningServer) -> None:
    raw_name = b"\xff\xfe.bin"
    descriptor = os.open(os.path.join(os.fsencode(server.home), raw_name), os.O_CREAT | os.O_WRONLY)
    os.write(descriptor, b"raw bytes")
    os.close(descriptor)
    # latin-1 maps every byte to one character, so the name's bytes come through unchanged.
    ftp = ftplib.FTP(timeout=TIMEOUT, encoding="latin-1")
    ftp.connect(server.host, server.port)
    ftp.login(USER, PASSWORD)
    shown = raw_name.decode("latin-1")
    assert ftp.nlst() == [shown]
    assert dict(ftp.mlsd())[shown]["size"] == "9"
    listed: list[str] = []
    ftp.retrlines("LIST", listed.append)
    assert listed[0].endswith(f" {shown}")
    # On the control connection a 0xFF byte must be sent twice (Telnet IAC, RFC 2640 §4.1);
    # ftplib does not do it by itself.
    escaped = shown.replace("\xff", "\xff\xff")
    received = io.BytesIO()
    ftp.retrbinary(f"RETR {escaped}", received.write)
    assert received.getvalue() == b"raw bytes"
    assert ftp.sendcmd(f"XCRC {escaped}") == f"250 {zlib.crc32(b'raw bytes'):08x}"
    ftp.close()


def test_a_name_that_is_not_utf8_uploads_and_renames(server: RunningServer) -> None:
    home = os.fsencode(server.home)
    stored, renamed = b"new-\xfe\xff.bin", b"moved-\xff\xe9.bin"  # neither is UTF-8
    ftp = ftplib.FTP(timeout=TIMEOUT, encoding="latin-1")
    ftp.connect(server.host, server.port)
    ftp.login(USER, PASSWORD)

    def wire(name: bytes) -> str:
        # latin-1 sends each character as its byte; 0xFF goes twice (Telnet IAC, RFC 2640 §4.1).
        return name.decode("latin-1").replace("\xff", "\xff\xff")

    ftp.storbinary(f"STOR {wire(stored)}", io.BytesIO(b"uploaded raw"))
    assert os.listdir(home) == [stored]
    with open(os.path.join(home, stored), "rb") as file:
        assert file.read() == b"uploaded raw"
    assert ftp.sendcmd(f"RNFR {wire(stored)}").startswith("350")
    assert ftp.sendcmd(f"RNTO {wire(renamed)}").startswith("250")
    assert os.listdir(home) == [renamed]
    with open(os.path.join(home, renamed), "rb") as file:
        assert file.read() == b"uploaded raw"
    assert ftp.nlst() == [renamed.decode("latin-1")]
    ftp.close()


def test_utf8_is_always_on(server: RunningServer) -> None:
    ftp = connect(server, login=False)
    assert ftp.sendcmd("OPTS UTF8 ON").startswith("200")
    assert reply_to(ftp, "OPTS UTF8 OFF")[:3] == "504"
    ftp.close()
