"""The client against scripted servers that answer in ways no packaged server does on demand.

Each server is a small thread on loopback (real sockets) that plays one
conversation; the client must turn what it gets into a clear FtpError, or
carry on, never crash or hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ketch.cli.common import exit_code_for
from ketch.client import Client, ConnectFailed, FtpError, PermanentReplyError, ProtocolError
from ketch.protocol.remote_listing import RemoteEntry

from ftp_helpers import (
    KETCH,
    KETCH_TIMEOUT,
    LIST_ONLY_FEATURES,
    Handler,
    ketch_with_server,
    one_error_line,
    refuse,
    run_ketch,
    scripted_server,
    send_data,
    wait_for,
    with_server,
)


def by_line(handlers: dict[str, Handler]) -> Handler:
    """Each command line ("MLSD", "LIST sub", "RETR a.txt") to its own handler; 550 for
    the rest."""

    def transfer(line: str, control: socket.socket, data_listener: socket.socket) -> bytes | None:
        handler = handlers.get(line, refuse(b"550 not scripted\r\n"))
        return handler(line, control, data_listener)

    return transfer


def listing_commands(heard: list[str]) -> list[str]:
    return [line for line in heard if line.split(" ")[0] in ("MLSD", "LIST", "NLST")]


def ls_lines(*names: str) -> bytes:
    return b"".join(f"-rw-r--r--   1 ftp ftp 3 Jan  2 10:15 {name}\r\n".encode() for name in names)


@pytest.mark.parametrize(
    "refusal",
    [
        b"500 MLSD not understood\r\n",
        b"502 not implemented\r\n",
        b"504 command not implemented for that parameter\r\n",
    ],
)
def test_mlsd_refused_as_unknown_falls_back_to_list_for_the_rest_of_the_session(
    refusal: bytes,
) -> None:
    # FEAT offers MLST (the command for one path), but the server has no MLSD: curl and
    # lftp list such a server with LIST; ketch failed with "MLSD failed: 500".
    heard: list[str] = []
    transfer = by_line(
        {
            "MLSD": refuse(refusal),
            "LIST": send_data(ls_lines("a.txt")),
            "LIST sub": send_data(ls_lines("b.txt")),
        }
    )

    async def work(ftp: Client) -> list[list[str]]:
        return [[entry.name for entry in await ftp.list(path)] for path in ("", "sub")]

    assert with_server(transfer, work, heard=heard) == [["a.txt"], ["b.txt"]]
    assert listing_commands(heard) == ["MLSD", "LIST", "LIST sub"]  # MLSD tried once


def test_mlsd_refused_for_the_path_is_an_error_without_a_list_fallback() -> None:
    # 550 is about the directory, not the command: LIST would be refused the same way.
    heard: list[str] = []
    transfer = by_line({"MLSD gone": refuse(b"550 gone: no such directory\r\n")})
    with pytest.raises(PermanentReplyError, match="MLSD failed: 550"):
        with_server(transfer, lambda ftp: ftp.list("gone"), heard=heard)
    assert listing_commands(heard) == ["MLSD gone"]


NOT_IMPLEMENTED_REPLIES = [
    b"500 Unknown command.\r\n",
    b"502 not implemented\r\n",
    b"504 command not implemented for that parameter\r\n",
]


def mlst_refused(refusal: bytes) -> Callable[[str], bytes]:
    """MLST answered ``refusal``; SIZE and MDTM answered for a.txt alone (550 for the rest,
    as vsftpd and pure-ftpd answer them for a directory); any other command 502."""

    def other(line: str) -> bytes:
        verb, _, path = line.partition(" ")
        if verb == "MLST":
            return refusal
        if verb == "SIZE":
            return b"213 3\r\n" if path == "a.txt" else b"550 Could not get file size.\r\n"
        if verb == "MDTM":
            return b"213 20240102101530\r\n" if path == "a.txt" else b"550 not a file\r\n"
        return b"502 not here\r\n"

    return other


@pytest.mark.parametrize("refusal", NOT_IMPLEMENTED_REPLIES)
def test_stat_with_mlst_refused_asks_size_and_mdtm_then_the_parents_listing(
    refusal: bytes,
) -> None:
    # FEAT offers MLST, but the server answers it as unknown: ls of a file failed with
    # "MLST failed: 500".
    heard: list[str] = []
    listing = ls_lines("a.txt") + b"drwxr-xr-x   2 ftp ftp 4096 Jan  2 10:15 sub\r\n"
    transfer = by_line({"MLSD": refuse(refusal), "LIST": send_data(listing)})

    async def work(ftp: Client) -> list[RemoteEntry]:
        entries = [await ftp.stat(path) for path in ("a.txt", "sub")]
        with pytest.raises(PermanentReplyError, match=r"550 gone\.txt: no such file"):
            await ftp.stat("gone.txt")
        return entries

    file, directory = with_server(transfer, work, other=mlst_refused(refusal), heard=heard)
    assert (file.name, file.kind, file.size) == ("a.txt", "file", 3)
    assert (file.mtime, file.mtime_precision) == (
        datetime(2024, 1, 2, 10, 15, 30, tzinfo=UTC),
        "second",
    )
    assert (directory.name, directory.kind) == ("sub", "dir")
    asked = [line for line in heard if line.split(" ")[0] in ("MLST", "SIZE", "MDTM", "LIST")]
    assert asked == [
        "MLST a.txt",  # once: the refusal holds for the rest of the session
        "SIZE a.txt",
        "MDTM a.txt",
        "SIZE sub",
        "LIST",
        "SIZE gone.txt",
        "LIST",
    ]


def test_stat_on_a_server_that_refuses_mlst_size_and_list_says_so() -> None:
    # Nothing tells what the path is: the error names it and what was refused.
    transfer = by_line({"MLSD": refuse(b"502 not here\r\n"), "LIST": refuse(b"502 not here\r\n")})
    with pytest.raises(PermanentReplyError) as failure:
        with_server(transfer, lambda ftp: ftp.stat("a.txt"))  # MLST and SIZE: 502 too
    message = str(failure.value)
    assert message.startswith("LIST failed: 502 not here — "), message
    assert "what a.txt is" in message and "MLST" in message and "SIZE" in message, message
    assert exit_code_for(failure.value) == 5


def test_mirror_of_a_server_without_mlsd_copies_what_list_shows(tmp_path: Path) -> None:
    transfer = by_line(
        {
            "MLSD": refuse(b"500 MLSD not understood\r\n"),
            "LIST": send_data(ls_lines("a.txt")),
            "RETR a.txt": send_data(b"abc"),
        }
    )
    # Each directory is entered with CWD before its LIST is believed, as without MLST.
    result = ketch_with_server(
        transfer, tmp_path, "mirror", str(tmp_path / "copy"), other=only_root
    )
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "copy" / "a.txt").read_bytes() == b"abc"


OFF_FACTS_FEAT = b"211-Features:\r\n MLST type;size;modify;perm*;\r\n EPSV\r\n211 End\r\n"


def opts_ok(line: str) -> bytes:
    """OPTS taken (as OPTS MLST type;size;modify;perm;), any other command 502."""
    if line.partition(" ")[0].upper() == "OPTS":
        return b"200 MLST OPTS type;size;modify;perm;\r\n"
    return b"502 not here\r\n"


def mlsd_with_selected_facts(heard: list[str]) -> Handler:
    """MLSD as RFC 3659 §7.9 has it: perm alone until OPTS MLST selects more facts."""

    def transfer(line: str, control: socket.socket, data_listener: socket.socket) -> bytes:
        if any(said.upper().startswith("OPTS MLST ") for said in heard):
            listing = b"type=file;size=3;modify=20240102101500;perm=r; a.txt\r\n"
            listing += b"type=dir;modify=20240102101500;perm=el; sub\r\n"
        else:
            listing = b"perm=r; a.txt\r\nperm=el; sub\r\n"
        return send_data(listing)(line, control, data_listener)

    return transfer


def test_facts_feat_lists_off_are_selected_with_opts_mlst_at_each_login() -> None:
    # ketch ls showed "? - - a.txt" and mirror copied nothing (exit 0) from such a server.
    heard: list[str] = []

    async def work(ftp: Client) -> list[tuple[str, str, int | None]]:
        await ftp.login("u", "p")  # a new login is a new selection on some servers
        return [(entry.name, entry.kind, entry.size) for entry in await ftp.list()]

    listed = with_server(
        mlsd_with_selected_facts(heard), work, features=OFF_FACTS_FEAT, other=opts_ok, heard=heard
    )
    assert listed == [("a.txt", "file", 3), ("sub", "dir", None)]
    opts = [line for line in heard if line.upper().startswith("OPTS MLST")]
    assert opts == ["OPTS MLST type;size;modify;perm;"] * 2


def test_mirror_fails_an_mlsd_entry_without_a_type_and_ls_marks_it_unknown(
    tmp_path: Path,
) -> None:
    # A server that cannot give the type fact: a mirror must not report success (exit 0)
    # having copied nothing.
    untyped = send_data(b"size=3;modify=20240102101500; a.txt\r\n")
    copy = tmp_path / "copy"
    mirrored = ketch_with_server(untyped, tmp_path, "mirror", str(copy))
    stderr = mirrored.stderr.decode()
    assert mirrored.returncode == 9, stderr
    assert "a.txt: the server's listing does not say whether it is a file or a directory" in stderr
    assert list(copy.iterdir()) == []

    listed = ketch_with_server(untyped, tmp_path, "ls", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    assert json.loads(listed.stdout)["type"] == "unknown"


GERMAN_LIST = (
    "insgesamt 12\r\n"
    "-rw-r--r-- 1 ftp ftp 3 2026-10-02 10:15 iso.txt\r\n"  # GNU ls --time-style=long-iso
    "-rw-r--r-- 1 ftp ftp 3 Okt  2 10:15 german.txt\r\n"
    "-rw-r--r-- 1 ftp ftp 3 M\u00e4r  2 10:15 maerz.txt\r\n"
    "-rw-r--r-- 1 ftp ftp 3 Oct  2 10:15 english.txt\r\n"
).encode()


def only_root(line: str) -> bytes:
    """PWD and CWD of a server with the one directory "/", where a mirror without MLSD
    enters each directory it lists; any other command 502."""
    verb, _, path = line.partition(" ")
    if verb.upper() == "PWD":
        return b'257 "/"\r\n'
    if verb.upper() == "CWD" and path == "/":
        return b"250 ok\r\n"
    return b"502 not here\r\n"


def test_ls_reads_iso_dates_and_warns_of_each_line_it_cannot_read(tmp_path: Path) -> None:
    # The German dates were dropped without a word, even with -v; then, warned about,
    # with exit 0: a script could not tell the listing was incomplete. Exit 9, as a
    # mirror that could not read them.
    result = ketch_with_server(send_data(GERMAN_LIST), tmp_path, "ls", features=LIST_ONLY_FEATURES)
    stderr = result.stderr.decode()
    assert result.returncode == 9, stderr
    iso, english = result.stdout.decode().splitlines()
    assert iso == "- 3 2026-10-02 10:15 iso.txt"
    assert re.fullmatch(r"- 3 [0-9]{4}-10-02 10:15 english\.txt", english), english  # year: ls's
    warnings = stderr.splitlines()
    assert len(warnings) == 2, stderr
    assert all(line.startswith("ketch: warning: ") for line in warnings), stderr
    assert "3 Okt  2 10:15 german.txt" in warnings[0]
    assert "3 M\u00e4r  2 10:15 maerz.txt" in warnings[1]
    assert "insgesamt" not in stderr
    for option in ("--names", "--json"):
        other = ketch_with_server(
            send_data(GERMAN_LIST), tmp_path, "ls", option, features=LIST_ONLY_FEATURES
        )
        assert other.returncode == 9, other.stderr.decode()
        assert len(other.stdout.decode().splitlines()) == 2


def test_mirror_fails_each_listing_line_it_cannot_read_and_copies_the_rest(
    tmp_path: Path,
) -> None:
    transfer = by_line(
        {
            "LIST": send_data(GERMAN_LIST),
            "RETR iso.txt": send_data(b"iso"),
            "RETR english.txt": send_data(b"eng"),
        }
    )
    copy = tmp_path / "copy"
    result = ketch_with_server(
        transfer, tmp_path, "mirror", str(copy), features=LIST_ONLY_FEATURES, other=only_root
    )
    stderr = result.stderr.decode()
    assert result.returncode == 9, stderr  # was 0, with "0 failed"
    assert {path.name: path.read_bytes() for path in copy.iterdir()} == {
        "iso.txt": b"iso",
        "english.txt": b"eng",
    }
    failures = [line for line in stderr.splitlines() if line.startswith("ketch: ./: ")]
    assert len(failures) == 2, stderr
    assert "german.txt" in failures[0] and "maerz.txt" in failures[1]
    assert "2 failed" in stderr


def test_ls_writes_years_before_1000_with_four_digits(tmp_path: Path) -> None:
    # glibc's %Y gave "1-01-01T00:00:00Z", which is not RFC 3339.
    year_one = send_data(b"type=file;size=3;modify=00010101000000; y1\r\n")
    as_json = ketch_with_server(year_one, tmp_path, "ls", "--json")
    assert as_json.returncode == 0, as_json.stderr.decode()
    assert json.loads(as_json.stdout)["mtime"] == "0001-01-01T00:00:00Z"
    as_text = ketch_with_server(year_one, tmp_path, "ls")
    assert as_text.returncode == 0, as_text.stderr.decode()
    assert as_text.stdout.decode() == "- 3 0001-01-01 00:00:00 y1\n"


def test_mdtm_and_mlsd_read_a_year_before_1000() -> None:
    # RFC 3659's time-val has a four-digit year: 0999, as ketch's MFMT now sends it.
    def mdtm(line: str) -> bytes:
        return b"213 09990506070809\r\n" if line.startswith("MDTM ") else b"502 not here\r\n"

    listing = send_data(b"type=file;size=3;modify=09990506070809; old.txt\r\n")

    async def work(ftp: Client) -> list[datetime | None]:
        return [await ftp.mdtm("old.txt"), (await ftp.list())[0].mtime]

    assert with_server(listing, work, other=mdtm) == [datetime(999, 5, 6, 7, 8, 9, tzinfo=UTC)] * 2


def test_a_name_with_a_line_break_in_mlsd_is_a_protocol_error_not_a_crash() -> None:
    listing = b"type=file;size=3; good.txt\r\ntype=file;size=3; bad\r\nname\r\n"
    with pytest.raises(ProtocolError, match="outside the MLSD format"):
        with_server(send_data(listing), lambda ftp: ftp.list())


def test_a_transfer_answered_226_without_150_ends_at_once() -> None:
    # Some servers answer an empty transfer with its final reply alone.
    def no_opening(_: str, __: socket.socket, data_listener: socket.socket) -> bytes:
        data, _ = data_listener.accept()
        data.close()
        return b"226 nothing to send\r\n"

    got = io.BytesIO()
    result = with_server(no_opening, lambda ftp: ftp.download("empty.txt", got, size=0))
    assert got.getvalue() == b""
    assert result.bytes == 0  # type: ignore[attr-defined]
    assert with_server(no_opening, lambda ftp: ftp.list()) == []


def test_a_server_dying_mid_download_says_the_local_file_is_incomplete(tmp_path: Path) -> None:
    local = tmp_path / "partial.bin"
    with pytest.raises(FtpError) as failure:  # the server process is gone after 1000 bytes
        with_server(sends_then(None), lambda ftp: ftp.download("big.bin", local))
    message = str(failure.value)
    assert f"{local} is incomplete (1000 bytes)" in message, message
    assert "-c" in message
    assert local.read_bytes() == b"x" * 1000


def test_an_abor_answered_426_and_451_leaves_the_session_in_step() -> None:
    # pure-ftpd's answer to ABOR in mid-transfer has no 2xx: waiting for one ran out the
    # timeout and closed the session.
    retrievals = []

    def aborted_once(_: str, control: socket.socket, data_listener: socket.socket) -> bytes:
        retrievals.append(1)
        if len(retrievals) > 1:
            return send_data(b"second")(_, control, data_listener)
        data, _ = data_listener.accept()
        with data, contextlib.suppress(OSError):  # the client stops reading, then closes
            control.sendall(b"150 here\r\n")
            data.sendall(bytes(8 << 20))
        seen = b""
        while b"ABOR" not in seen and (more := control.recv(64)):
            seen += more
        return b"426 Transfer aborted\r\n451-Transfer aborted\r\n451 0.003 seconds\r\n"

    class GivenUp(Exception):
        pass

    def give_up(done: int, total: int | None) -> None:
        if done >= 1 << 20:
            raise GivenUp

    async def work(ftp: Client) -> bytes:
        with pytest.raises(GivenUp):
            await ftp.download("big.bin", io.BytesIO(), progress=give_up)
        second = io.BytesIO()
        await ftp.download("small.bin", second)  # on the same connection, in step
        return second.getvalue()

    assert with_server(aborted_once, work) == b"second"


def sends_then(final: bytes | None) -> Handler:
    """RETR: 1000 bytes, then ``final`` as the reply (None: the server dies instead)."""

    def transfer(_: str, control: socket.socket, data_listener: socket.socket) -> bytes | None:
        data, _ = data_listener.accept()
        control.sendall(b"150 here\r\n")
        data.sendall(b"x" * 1000)
        data.close()
        if final is None:
            control.shutdown(socket.SHUT_RDWR)
        return final

    return transfer


def test_a_servers_451_keeps_its_advice_and_does_not_suggest_resuming(tmp_path: Path) -> None:
    # Resuming a file that changed as it was sent would join two versions of it.
    final = b"451 Transfer aborted: f shrank while being sent; download it again later.\r\n"
    local = tmp_path / "f"
    with pytest.raises(FtpError) as failure:
        with_server(sends_then(final), lambda ftp: ftp.download("f", local))
    message = str(failure.value)
    assert f"{local} is incomplete (1000 bytes)" in message, message
    assert "-c" not in message


def test_a_download_whose_bytes_all_came_is_not_called_incomplete(tmp_path: Path) -> None:
    local = tmp_path / "f"
    with pytest.raises(FtpError) as failure:
        with_server(sends_then(None), lambda ftp: ftp.download("f", local, size=1000))
    message = str(failure.value)
    assert "all 1000 bytes reached" in message and "incomplete" not in message, message


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [("closes", "closed the control connection"), ("is silent", "no reply from")],
)
def test_a_server_that_gives_no_greeting_is_a_failure_to_connect(behaviour: str, why: str) -> None:
    # Exit code 3 ("cannot connect") and a hint about the address, not a protocol error.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    accepted: list[socket.socket] = []

    def accept() -> None:
        connection, _ = listener.accept()
        if behaviour == "closes":
            connection.close()
        else:
            accepted.append(connection)  # held open, saying nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]

    async def scenario() -> None:
        async with Client("127.0.0.1", port, user="u", password="p", timeout=1):
            pass

    try:
        with pytest.raises(ConnectFailed) as failure:
            asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        thread.join(20)
        listener.close()
        for connection in accepted:
            connection.close()
    message = str(failure.value)
    assert message.startswith(f"no FTP greeting from 127.0.0.1 port {port}: "), message
    assert why in message and "may not be an FTP server" in message, message
    assert exit_code_for(failure.value) == 3


# -- a broken download over an existing file ------------------------------------------


def test_a_broken_download_over_an_existing_file_leaves_it_whole(tmp_path: Path) -> None:
    local = tmp_path / "keep.bin"
    local.write_bytes(b"the old, complete copy")
    with pytest.raises(FtpError) as failure:  # the server is gone after 1000 bytes
        with_server(sends_then(None), lambda ftp: ftp.download("keep.bin", local))
    message = str(failure.value)
    assert local.read_bytes() == b"the old, complete copy"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.bin"]  # no .part left
    assert f"{local} was left as it was" in message, message
    assert "-c" not in message and "resume" not in message, message


def test_a_download_over_an_existing_file_replaces_it_and_keeps_its_mode(tmp_path: Path) -> None:
    local = tmp_path / "keep.bin"
    local.write_bytes(b"old")
    local.chmod(0o640)
    with_server(send_data(b"new contents"), lambda ftp: ftp.download("keep.bin", local))
    assert local.read_bytes() == b"new contents"
    assert local.stat().st_mode & 0o777 == 0o640
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.bin"]


def test_ketch_get_broken_over_an_existing_file_leaves_it_whole(tmp_path: Path) -> None:
    (tmp_path / "keep.bin").write_bytes(b"the old, complete copy")
    with scripted_server(sends_then(None)) as port:
        result = run_ketch(tmp_path, "get", f"ftp://u:p@127.0.0.1:{port}/big.bin", "keep.bin")
    line = one_error_line(result, 7)
    assert "keep.bin was left as it was" in line, line
    assert (tmp_path / "keep.bin").read_bytes() == b"the old, complete copy"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.bin"]


# -- get stopped by Ctrl-C or SIGTERM ---------------------------------------------------


def sends_then_waits(_: str, control: socket.socket, data_listener: socket.socket) -> bytes:
    """RETR: 200000 of the 1000000 bytes SIZE promised, then nothing until the client aborts."""
    data, _ = data_listener.accept()
    data.settimeout(20)
    with data, contextlib.suppress(OSError):
        control.sendall(b"150 here\r\n")
        data.sendall(b"x" * 200_000)
        data.recv(1)  # the client's abort (a reset, or its end)
    return b"426 aborted\r\n"


def size_and_abor(line: str) -> bytes:
    verb = line.partition(" ")[0].upper()
    return {"SIZE": b"213 1000000\r\n", "ABOR": b"226 aborted\r\n"}.get(verb, b"502 not here\r\n")


def get_stopped_by(signal_number: int, cwd: Path, dest: str) -> tuple[int, str]:
    """``ketch get`` of big.bin to ``dest``, sent ``signal_number`` once bytes reach the
    disk (under any name in ``cwd``); its exit code and stderr."""
    with scripted_server(sends_then_waits, other=size_and_abor) as port:
        url = f"ftp://u:p@127.0.0.1:{port}/big.bin"
        env = {**os.environ, "HOME": str(cwd)}
        getter = subprocess.Popen(
            [*KETCH, "get", url, dest], stderr=subprocess.PIPE, cwd=cwd, env=env
        )
        try:
            arrived = wait_for(
                lambda: any(
                    path.stat().st_size > 0 and path.name != "keep.bin" for path in cwd.iterdir()
                ),
                20,
            )
            getter.send_signal(signal_number)
            _, stderr = getter.communicate(timeout=KETCH_TIMEOUT)
        finally:
            getter.kill()
            getter.wait(KETCH_TIMEOUT)
        assert arrived, stderr
    return getter.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("signal_number", "code", "what"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_get_stopped_says_the_new_file_is_incomplete_and_resumable(
    tmp_path: Path, signal_number: int, code: int, what: str
) -> None:
    returncode, stderr = get_stopped_by(signal_number, tmp_path, "big.bin")
    assert returncode == code, stderr
    have = (tmp_path / "big.bin").stat().st_size
    assert stderr.splitlines() == [
        f"ketch: {what} — big.bin is incomplete ({have} of 1000000 bytes); "
        "download again with -c (resume=True)"
    ], stderr
    assert (tmp_path / "big.bin").read_bytes() == b"x" * have


def test_get_stopped_over_an_existing_file_says_it_was_left_whole(tmp_path: Path) -> None:
    (tmp_path / "keep.bin").write_bytes(b"the old, complete copy")
    returncode, stderr = get_stopped_by(signal.SIGTERM, tmp_path, "keep.bin")
    assert returncode == 143, stderr
    assert stderr.splitlines() == [
        "ketch: terminated (SIGTERM) — keep.bin was left as it was; download it again"
    ], stderr
    assert (tmp_path / "keep.bin").read_bytes() == b"the old, complete copy"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["keep.bin"]


def cuts_the_upload(_: str, control: socket.socket, data_listener: socket.socket) -> None:
    """STOR: take some bytes, then reset the data connection and say nothing."""
    data, _ = data_listener.accept()
    control.sendall(b"150 send\r\n")
    data.recv(1000)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    data.close()


def test_a_broken_upload_says_the_remote_file_may_be_incomplete_and_put_c_resumes_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "big.bin").write_bytes(bytes(32 << 20))
    other = {"ABOR": b"226 aborted\r\n"}
    with scripted_server(
        cuts_the_upload, other=lambda line: other.get(line, b"502 not here\r\n")
    ) as port:
        result = run_ketch(tmp_path, "put", "big.bin", f"ftp://u:p@127.0.0.1:{port}/big.bin")
    line = one_error_line(result, 6)
    assert "resumes a download" not in line, line
    assert "big.bin on the server may be incomplete" in line, line
    assert "ketch put -c" in line, line
