"""Python's ftplib against a real ketch server, with set_pasv(True) (PASV) and False (PORT).

ftplib is the client most Python users script against; these tests use its
public API the way they do, and record every command and reply so each test
can check the reply codes and that the data connections used the mode under
test.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PASSWORD, USER, RunningServer
from payloads import BIG, KIB, SMALL_SIZES, Payload, make_payload, sha256_bytes, sha256_file

pytestmark = pytest.mark.peer

TIMEOUT = 30  # seconds, for the control connection and every data connection
RESUME_TOTAL = 300_000
RESUME_PRESENT = 100_000
TEXT_LF = b"line one\nline two\n\nlast line\n"
TEXT_CRLF = TEXT_LF.replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class FtplibMode:
    name: str
    passive: bool
    setup_verb: str  # what ftplib sends for an IPv4 data connection in this mode


MODES = (FtplibMode("passive", True, "PASV"), FtplibMode("active", False, "PORT"))
MODE_PARAMS = [pytest.param(mode, id=mode.name) for mode in MODES]
TRANSFER_PARAMS = [
    pytest.param(mode, size, id=f"{mode.name}-{size}B")
    for mode in MODES
    for size in (*SMALL_SIZES, BIG)
]


# -- helpers ------------------------------------------------------------------


class RecordingFTP(ftplib.FTP):
    """ftplib.FTP that keeps every command it sent and every reply it read."""

    def __init__(self) -> None:
        super().__init__(timeout=TIMEOUT)
        self.sent: list[str] = []
        self.replies: list[str] = []

    def putcmd(self, line: str) -> None:
        self.sent.append(line)
        super().putcmd(line)

    def getmultiline(self) -> str:
        reply = super().getmultiline()
        self.replies.append(reply)
        return reply

    def setup_verbs(self) -> set[str]:
        return {c.split()[0] for c in self.sent if c.split()[0] in ("EPSV", "PASV", "EPRT", "PORT")}


def connect(
    server: RunningServer, mode: FtplibMode, user: str = USER, password: str = PASSWORD
) -> RecordingFTP:
    ftp = RecordingFTP()
    ftp.connect(server.host, server.port, timeout=TIMEOUT)
    ftp.set_pasv(mode.passive)
    ftp.login(user, password)
    return ftp


@pytest.fixture(params=MODE_PARAMS)
def mode(request: pytest.FixtureRequest) -> FtplibMode:
    mode: FtplibMode = request.param
    return mode


@pytest.fixture
def alice(server: RunningServer, mode: FtplibMode) -> Iterator[RecordingFTP]:
    """A logged-in ftplib session as alice in the mode under test; it must end with 221."""
    ftp = connect(server, mode)
    try:
        yield ftp
        assert ftp.quit().startswith("221")
    finally:
        ftp.close()
    if any(c.split()[0] in ("RETR", "STOR", "APPE", "STOU", "LIST", "NLST") for c in ftp.sent):
        assert ftp.setup_verbs() == {mode.setup_verb}, ftp.sent
    # ftplib ignores the address in 227 (it reuses the control host), other clients do not.
    low, high = server.server.config.passive_ports
    for reply in ftp.replies:
        if match := re.match(r"227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply):
            numbers = [int(n) for n in match.groups()]
            assert numbers[:4] == [127, 0, 0, 1], reply
            assert low <= numbers[4] * 256 + numbers[5] <= high, reply


# -- login and listing --------------------------------------------------------


def test_ftplib_login_is_accepted_with_230_and_starts_at_root(
    alice: RecordingFTP,
) -> None:
    assert alice.welcome.startswith("220")
    assert alice.replies[-1].startswith("230")
    assert alice.pwd() == "/"


@pytest.mark.parametrize("mode", [MODES[0]], ids=["passive"])
def test_ftplib_wrong_password_is_refused_with_530(
    server: RunningServer,
    mode: FtplibMode,
) -> None:
    ftp = RecordingFTP()
    ftp.connect(server.host, server.port, timeout=TIMEOUT)
    try:
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            ftp.login(USER, "wrong")
        # Still refused afterwards: the failed login left the session logged out.
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            ftp.nlst()
    finally:
        ftp.close()


def test_ftplib_nlst_and_list_show_the_names(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    (server.home / "alice-file.txt").write_bytes(b"mine\n")
    (server.home / "alice-dir").mkdir()
    assert sorted(alice.nlst()) == ["alice-dir", "alice-file.txt"]
    lines: list[str] = []
    assert alice.retrlines("LIST", lines.append).startswith("226")
    kinds = {line.split(None, 8)[8]: line[0] for line in lines}
    assert kinds == {"alice-file.txt": "-", "alice-dir": "d"}


def test_ftplib_anonymous_nlst_shows_the_served_names(
    server: RunningServer,
    mode: FtplibMode,
) -> None:
    ftp = RecordingFTP()
    ftp.connect(server.host, server.port, timeout=TIMEOUT)
    try:
        ftp.set_pasv(mode.passive)
        assert ftp.login().startswith("230")  # ftplib's anonymous login
        assert sorted(ftp.nlst()) == ["docs", "hello.txt"]
        assert ftp.nlst("docs") == ["docs/readme.md"]
        assert ftp.setup_verbs() == {mode.setup_verb}
        ftp.quit()
    finally:
        ftp.close()


# -- downloads and uploads ----------------------------------------------------


@pytest.mark.parametrize(("mode", "size"), TRANSFER_PARAMS)
def test_ftplib_retrbinary_is_byte_exact(
    server: RunningServer,
    alice: RecordingFTP,
    big_payload: Payload,
    size: int,
) -> None:
    expected = make_payload(server.home / "payload.bin", size, big_payload)
    digest = hashlib.sha256()
    received = 0

    def take(chunk: bytes) -> None:
        nonlocal received
        digest.update(chunk)
        received += len(chunk)

    assert alice.retrbinary("RETR payload.bin", take, blocksize=256 * KIB).startswith("226")
    assert received == size
    assert digest.hexdigest() == expected


@pytest.mark.parametrize(("mode", "size"), TRANSFER_PARAMS)
def test_ftplib_storbinary_is_byte_exact(
    server: RunningServer,
    alice: RecordingFTP,
    big_payload: Payload,
    tmp_path: Path,
    size: int,
) -> None:
    if size == BIG:
        source, expected = big_payload.path, big_payload.sha256
    else:
        source = tmp_path / "upload.bin"
        expected = make_payload(source, size, big_payload)
    with source.open("rb") as file:
        assert alice.storbinary("STOR uploaded.bin", file, blocksize=256 * KIB).startswith("226")
    stored = server.home / "uploaded.bin"
    assert stored.stat().st_size == size
    assert sha256_file(stored) == expected


def test_ftplib_retr_150_reply_announces_the_size(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    data = os.urandom(12_345)
    (server.home / "sized.bin").write_bytes(data)
    alice.voidcmd("TYPE I")
    conn, size = alice.ntransfercmd("RETR sized.bin")
    with conn:
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    assert alice.voidresp().startswith("226")
    assert size == len(data)  # ftplib parses "(N bytes)" from the 150 reply
    assert received == data


# -- resume (REST) --------------------------------------------------------------


def test_ftplib_retrbinary_with_rest_completes_a_partial_file_byte_exact(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    data = os.urandom(RESUME_TOTAL)
    (server.home / "resume.bin").write_bytes(data)
    partial = bytearray(data[:RESUME_PRESENT])
    reply = alice.retrbinary("RETR resume.bin", partial.extend, rest=RESUME_PRESENT)
    assert reply.startswith("226")
    assert f"REST {RESUME_PRESENT}" in alice.sent
    assert any(r.startswith("350") for r in alice.replies)
    assert sha256_bytes(bytes(partial)) == sha256_bytes(data)


def test_ftplib_rest_then_stor_completes_a_partial_upload_byte_exact(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    data = os.urandom(RESUME_TOTAL)
    (server.home / "resume.bin").write_bytes(data[:RESUME_PRESENT])
    alice.voidcmd("TYPE I")
    with alice.transfercmd("STOR resume.bin", rest=RESUME_PRESENT) as conn:
        conn.sendall(data[RESUME_PRESENT:])
    assert alice.voidresp().startswith("226")
    assert sha256_file(server.home / "resume.bin") == sha256_bytes(data)


def test_ftplib_rest_then_stor_drops_what_followed_the_offset(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    # RFC 959 REST + STOR: the file is rewritten from the marker; stale bytes after it go.
    (server.home / "resume.bin").write_bytes(b"0123456789" + b"stale" * 100)
    alice.voidcmd("TYPE I")
    with alice.transfercmd("STOR resume.bin", rest=10) as conn:
        conn.sendall(b"ABC")
    assert alice.voidresp().startswith("226")
    assert (server.home / "resume.bin").read_bytes() == b"0123456789ABC"


def test_ftplib_rest_beyond_the_end_of_the_file_is_refused_for_retr(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    (server.home / "short.bin").write_bytes(b"12345")
    alice.voidcmd("TYPE I")
    with pytest.raises(ftplib.error_perm, match=r"^55\d"):
        alice.retrbinary("RETR short.bin", lambda _: None, rest=6)
    # The session goes on, and the offset did not stick to the next transfer.
    received = bytearray()
    assert alice.retrbinary("RETR short.bin", received.extend).startswith("226")
    assert bytes(received) == b"12345"


# -- rename, delete, directories ---------------------------------------------


def test_ftplib_rename_moves_the_file(server: RunningServer, alice: RecordingFTP) -> None:
    (server.home / "old-name.txt").write_bytes(b"rename me\n")
    assert alice.rename("old-name.txt", "new-name.txt").startswith("250")
    assert any(r.startswith("350") for r in alice.replies)
    assert not (server.home / "old-name.txt").exists()
    assert (server.home / "new-name.txt").read_bytes() == b"rename me\n"
    assert alice.nlst() == ["new-name.txt"]


def test_ftplib_rename_of_a_missing_file_is_refused_with_550(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        alice.rename("nothing-here.txt", "other.txt")
    assert not (server.home / "other.txt").exists()


def test_ftplib_delete_removes_the_file(server: RunningServer, alice: RecordingFTP) -> None:
    (server.home / "doomed.txt").write_bytes(b"bye\n")
    (server.home / "kept.txt").write_bytes(b"stay\n")
    assert alice.delete("doomed.txt").startswith("250")
    assert not (server.home / "doomed.txt").exists()
    assert alice.nlst() == ["kept.txt"]
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        alice.delete("doomed.txt")


def test_ftplib_mkd_cwd_and_rmd_manage_directories(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    assert alice.mkd("made") == "/made"
    assert alice.mkd("made/deeper") == "/made/deeper"
    assert (server.home / "made" / "deeper").is_dir()
    assert alice.cwd("made").startswith("250")
    assert alice.pwd() == "/made"
    assert alice.nlst() == ["deeper"]
    assert alice.cwd("..").startswith("250")
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        alice.rmd("made")  # not empty
    assert alice.rmd("made/deeper").startswith("250")
    assert alice.rmd("made").startswith("250")
    assert not (server.home / "made").exists()
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        alice.mkd("no/such/parent")


# -- ASCII (TYPE A) ------------------------------------------------------------


def test_ftplib_retrlines_gives_the_lines_of_a_lf_file(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    (server.home / "text.txt").write_bytes(TEXT_LF)
    lines: list[str] = []
    assert alice.retrlines("RETR text.txt", lines.append).startswith("226")
    assert lines == ["line one", "line two", "", "last line"]
    assert "TYPE A" in alice.sent


def test_ftplib_ascii_retr_puts_crlf_on_the_wire(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    (server.home / "text.txt").write_bytes(TEXT_LF)
    alice.voidcmd("TYPE A")
    with alice.transfercmd("RETR text.txt") as conn:
        wire = b""
        while chunk := conn.recv(65536):
            wire += chunk
    assert alice.voidresp().startswith("226")
    assert wire == TEXT_CRLF


def test_ftplib_storlines_of_crlf_lines_is_stored_with_lf(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    assert alice.storlines("STOR text.txt", io.BytesIO(TEXT_CRLF)).startswith("226")
    assert "TYPE A" in alice.sent
    assert (server.home / "text.txt").read_bytes() == TEXT_LF


def test_ftplib_ascii_stor_joins_a_crlf_split_across_packets(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    alice.voidcmd("TYPE A")
    with alice.transfercmd("STOR split.txt") as conn:
        conn.sendall(b"first\r")
        time.sleep(0.1)  # let the server read the CR on its own
        conn.sendall(b"\nlone\rcr\r\n")
    assert alice.voidresp().startswith("226")
    assert (server.home / "split.txt").read_bytes() == b"first\nlone\rcr\n"


# -- STOU ------------------------------------------------------------------------


def stou(ftp: RecordingFTP, data: bytes, command: str = "STOU") -> tuple[str, str]:
    """Upload ``data`` with STOU; return the 150 and 226 replies."""
    ftp.voidcmd("TYPE I")
    with ftp.transfercmd(command) as conn:
        opening = ftp.replies[-1]
        conn.sendall(data)
    return opening, ftp.voidresp()


def test_ftplib_stou_names_a_new_file_that_holds_the_bytes(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    data = os.urandom(20_000)
    opening, done = stou(alice, data)
    assert opening.startswith("150 FILE: "), opening  # RFC 1123 4.1.2.9
    name = opening.removeprefix("150 FILE: ").strip()
    assert name and "/" not in name
    assert done.startswith("226")
    assert name in done
    assert (server.home / name).read_bytes() == data


def test_ftplib_stou_of_a_file_called_tilde_replies_a_name_retr_finds(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    # RETR ~ would name the home directory: the name replied must reach the new file.
    opening, done = stou(alice, b"stored under ~", "STOU ~")
    name = opening.removeprefix("150 FILE: ").strip()
    assert name == "./~", opening
    assert done.startswith("226") and name in done
    assert (server.home / "~").read_bytes() == b"stored under ~"
    assert alice.size(name) == len(b"stored under ~")


def test_ftplib_stou_twice_gives_two_distinct_files(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    first, second = os.urandom(1000), os.urandom(1000)
    (server.home / "upload").write_bytes(b"already here")
    names = []
    for data in (first, second):
        opening, done = stou(alice, data)
        assert done.startswith("226")
        names.append(opening.removeprefix("150 FILE: ").strip())
    assert len(set(names)) == 2
    assert "upload" not in names
    assert (server.home / names[0]).read_bytes() == first
    assert (server.home / names[1]).read_bytes() == second
    assert (server.home / "upload").read_bytes() == b"already here"
    assert sorted(alice.nlst()) == sorted(["upload", *names])


def test_ftplib_stou_into_a_directory_stores_there_under_the_name_it_replies(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    (server.home / "sub").mkdir()
    (server.home / "sub" / "report").write_bytes(b"already here")
    data = os.urandom(1000)
    opening, done = stou(alice, data, "STOU sub/report")
    assert opening.startswith("150 FILE: sub/"), opening  # RFC 1123 4.1.2.9
    name = opening.removeprefix("150 FILE: ").strip()
    assert name != "sub/report" and name in done
    assert (server.home / name).read_bytes() == data
    assert (server.home / "sub" / "report").read_bytes() == b"already here"
    assert os.listdir(server.home) == ["sub"]
    received = bytearray()
    alice.retrbinary(f"RETR {name}", received.extend)  # the name replied is one RETR finds
    assert bytes(received) == data


@pytest.mark.parametrize(
    ("directory", "says"),
    [("nodir", "no such directory"), ("outside", "outside your home directory")],
)
def test_ftplib_stou_into_a_directory_it_may_not_use_gets_550_and_stores_nothing(
    server: RunningServer,
    alice: RecordingFTP,
    tmp_path: Path,
    directory: str,
    says: str,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (server.home / "outside").symlink_to(elsewhere)
    with pytest.raises(ftplib.error_perm, match=f"^550 /{directory}: .*{says}"):
        stou(alice, b"data", f"STOU {directory}/report")
    assert os.listdir(server.home) == ["outside"]
    assert os.listdir(elsewhere) == []


# -- APPE ------------------------------------------------------------------------


def test_ftplib_appe_adds_to_the_end_of_an_existing_file(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    first, second = os.urandom(70_000), os.urandom(33_333)
    (server.home / "log.bin").write_bytes(first)
    assert alice.storbinary("APPE log.bin", io.BytesIO(second)).startswith("226")
    assert sha256_file(server.home / "log.bin") == sha256_bytes(first + second)


def test_ftplib_appe_to_a_missing_file_creates_it(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    data = os.urandom(1234)
    assert alice.storbinary("APPE fresh.bin", io.BytesIO(data)).startswith("226")
    assert (server.home / "fresh.bin").read_bytes() == data


# -- ABOR ------------------------------------------------------------------------


def test_ftplib_abort_stops_a_download_and_the_session_goes_on(
    server: RunningServer,
    alice: RecordingFTP,
    big_payload: Payload,
) -> None:
    shutil.copyfile(big_payload.path, server.home / "big.bin")
    alice.voidcmd("TYPE I")
    conn = alice.transfercmd("RETR big.bin")
    try:
        assert conn.recv(65536)
        # RFC 959 4.1.3: 426 for the aborted transfer, then 226 for the ABOR itself.
        assert alice.abort().startswith("426")
        assert alice.getresp().startswith("226")
    finally:
        conn.close()
    assert alice.voidcmd("NOOP").startswith("200")
    received = bytearray()
    (server.home / "small.bin").write_bytes(b"after abort")
    assert alice.retrbinary("RETR small.bin", received.extend).startswith("226")
    assert bytes(received) == b"after abort"


# -- REST applies to the next transfer only ---------------------------------------


@pytest.mark.parametrize("between", ["NLST", "APPE", "STOU"])
def test_ftplib_rest_not_used_by_the_next_transfer_does_not_apply_to_a_later_stor(
    server: RunningServer,
    alice: RecordingFTP,
    between: str,
) -> None:
    # RFC 959: REST "shall be immediately followed by" the transfer it restarts. A later
    # STOR is a plain STOR, which replaces the file; a stale offset would keep old bytes.
    (server.home / "target.bin").write_bytes(b"0123456789")
    alice.voidcmd("TYPE I")
    assert alice.sendcmd("REST 3").startswith("350")
    if between == "NLST":
        alice.nlst()
    elif between == "APPE":
        alice.storbinary("APPE other.bin", io.BytesIO(b"appended"))
    else:
        stou(alice, b"unique")
    assert alice.storbinary("STOR target.bin", io.BytesIO(b"XYZ")).startswith("226")
    assert (server.home / "target.bin").read_bytes() == b"XYZ"


def test_ftplib_rest_not_used_by_a_listing_does_not_apply_to_a_later_retr(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    (server.home / "whole.bin").write_bytes(b"0123456789")
    alice.voidcmd("TYPE I")
    assert alice.sendcmd("REST 5").startswith("350")
    alice.retrlines("LIST", lambda _: None)
    received = bytearray()
    assert alice.retrbinary("RETR whole.bin", received.extend).startswith("226")
    assert bytes(received) == b"0123456789"


# -- SIZE and MDTM (what mirroring clients compare) ------------------------------


def test_ftplib_size_and_mdtm_report_the_file_in_bytes_and_utc(
    server: RunningServer,
    alice: RecordingFTP,
) -> None:
    path = server.home / "dated.bin"
    path.write_bytes(os.urandom(4321))
    stamp = 1577934245  # 2020-01-02 03:04:05 UTC
    os.utime(path, (stamp, stamp))
    alice.voidcmd("TYPE I")
    assert alice.size("dated.bin") == 4321
    assert alice.sendcmd("MDTM dated.bin") == "213 20200102030405"


# -- where active connections come from -------------------------------------------


@pytest.mark.parametrize("mode", [MODES[1]], ids=["active"])
def test_ftplib_active_data_connections_come_from_the_port_below_the_control_port(
    server: RunningServer,
    alice: RecordingFTP,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="ketch.server.data")
    (server.home / "source.bin").write_bytes(b"download me")
    alice.voidcmd("TYPE I")
    sources = []
    for command in ("RETR source.bin", "STOR sink.bin", "RETR source.bin"):
        with alice.transfercmd(command) as conn:
            sources.append(conn.getpeername()[1])
            if command.startswith("RETR"):
                assert conn.recv(100) == b"download me"
            else:
                conn.sendall(b"uploaded")
        assert alice.voidresp().startswith("226")
    assert (server.home / "sink.bin").read_bytes() == b"uploaded"
    fell_back = any(
        "active source port" in r.getMessage() and "unavailable" in r.getMessage()
        for r in caplog.records
    )
    if not fell_back:  # "auto": control port - 1 whenever the server may bind it
        assert sources == [server.port - 1] * 3
