"""The client commands (ls, get, put, rm, mkdir, mv) run as users run them.

Each test runs ``python -m ketch`` as a subprocess against ketch's own server
on loopback, with HOME pointing at an empty directory so that the user's own
~/.netrc is never read, and checks what a user relies on: the bytes that
arrive (by sha256), the files on the server's disk, the FTP conversation
under -v, and the exit code with its one line on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import re
import socket
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import PASSWORD, READER, READER_PASSWORD, USER, RunningServer
from ftp_helpers import (
    KETCH,
    KETCH_TIMEOUT,
    command_lines,
    free_port,
    ok,
    one_error_line,
    run_ketch,
)
from peer_servers import PeerServer

TIMEOUT = KETCH_TIMEOUT


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME: no ~/.netrc unless a test writes one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The directory the commands run in."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def ketch(
    home: Path, cwd: Path, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return run_ketch(cwd, *args, home=home, stdin=stdin)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sent_commands(stderr: str) -> list[str]:
    """The commands of a -v transcript, without their arguments."""
    return [line[2:].split(" ")[0] for line in stderr.splitlines() if line.startswith("> ")]


# -- ls ------------------------------------------------------------------------------


@pytest.fixture
def listed(server: RunningServer) -> RunningServer:
    """alice's home with an old file, a recent one and a dir (MLSD: times to the second)."""
    old = server.home / "old.txt"
    old.write_bytes(b"x" * 13)
    moment = datetime(2020, 5, 17, 10, 20, 30, tzinfo=UTC).timestamp()
    os.utime(old, (moment, moment))
    recent = server.home / "recent.bin"
    recent.write_bytes(b"y" * 123456)
    (server.home / "sub").mkdir()
    return server


def test_ls_prints_kind_size_time_and_name(listed: RunningServer, home: Path, work: Path) -> None:
    result = ketch(home, work, "ls", listed.url())
    ok(result)
    recent_time = datetime.fromtimestamp((listed.home / "recent.bin").stat().st_mtime, UTC)
    lines = result.stdout.decode().splitlines()
    by_name = {line.rsplit(" ", 1)[-1]: line for line in lines}
    assert set(by_name) == {"old.txt", "recent.bin", "sub"}
    assert re.fullmatch(r"- +13 2020-05-17 10:20:30 old\.txt", by_name["old.txt"])
    assert by_name["recent.bin"] == f"- 123456 {recent_time:%Y-%m-%d %H:%M:%S} recent.bin"
    assert by_name["sub"].startswith("d ")
    # Sizes are right-aligned and names start in one column.
    assert len({line.rindex(" ") for line in lines}) == 1
    assert len({re.match(r"\S +\S+", line).end() for line in lines}) == 1  # type: ignore[union-attr]


def test_ls_names_and_json(listed: RunningServer, home: Path, work: Path) -> None:
    names = ketch(home, work, "ls", "--names", listed.url())
    ok(names)
    assert sorted(names.stdout.decode().splitlines()) == ["old.txt", "recent.bin", "sub"]

    as_json = ketch(home, work, "ls", "--json", listed.url())
    ok(as_json)
    records = {r["name"]: r for r in map(json.loads, as_json.stdout.decode().splitlines())}
    assert records["old.txt"] == {
        "name": "old.txt",
        "type": "file",
        "size": 13,
        "mtime": "2020-05-17T10:20:30Z",
        "mtime_precision": "second",
    }
    assert records["recent.bin"]["size"] == 123456
    assert records["recent.bin"]["mtime_precision"] == "second"
    assert records["sub"]["type"] == "dir"


def test_ls_json_gives_a_name_that_is_not_utf8_as_its_bytes_too(
    server: RunningServer, home: Path, work: Path
) -> None:
    # JSON cannot carry the byte 0xE9 of a Latin-1 name: name_hex keeps it exactly.
    (server.home / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x")
    (server.home / "plain.txt").write_bytes(b"y")
    os.symlink(os.fsdecode(b"caf\xe9.txt"), server.home / "to-latin")
    os.symlink("plain.txt", server.home / "to-plain")
    result = ketch(home, work, "ls", "--json", server.url("/"))
    ok(result)
    result.stdout.decode("utf-8")  # strict UTF-8 throughout: no lone surrogates
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    latin = next(r for r in records if "name_hex" in r)
    assert (latin["name"], bytes.fromhex(latin["name_hex"])) == ("caf\ufffd.txt", b"caf\xe9.txt")
    assert [r for r in records if r["name"] == "plain.txt" and "name_hex" not in r]
    links = {r["name"]: r for r in records if r["type"] == "link"}
    assert links["to-plain"]["target"] == "plain.txt" and "target_hex" not in links["to-plain"]
    # A target MLSD cannot carry (not UTF-8): the key is there, and null.
    assert "target" in links["to-latin"] and links["to-latin"]["target"] is None


def test_ls_of_a_file_shows_that_file_and_of_a_directory_without_slash_its_entries(
    listed: RunningServer, home: Path, work: Path
) -> None:
    one = ketch(home, work, "ls", listed.url("/old.txt"))
    ok(one)
    (line,) = one.stdout.decode().splitlines()
    assert re.fullmatch(r"- 13 2020-05-17 10:20:30 \S*old\.txt", line), line
    (listed.home / "sub" / "inner.txt").write_bytes(b"i")
    names = ketch(home, work, "ls", "--names", listed.url("/sub"))
    ok(names)
    assert names.stdout.decode().splitlines() == ["inner.txt"]
    missing = one_error_line(ketch(home, work, "ls", listed.url("/absent.txt")), 5)
    assert "550" in missing


def test_ls_without_credentials_is_anonymous(server: RunningServer, home: Path, work: Path) -> None:
    result = ketch(home, work, "ls", "--names", "-v", server.url(user=None))
    stderr = ok(result)
    assert "> USER anonymous" in stderr
    assert sorted(result.stdout.decode().splitlines()) == ["docs", "hello.txt"]


# -- get ------------------------------------------------------------------------------


@pytest.fixture
def payload(server: RunningServer) -> bytes:
    data = os.urandom(300_000)
    (server.home / "payload.bin").write_bytes(data)
    return data


def test_get_to_default_name_into_directory_and_to_stdout(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    url = server.url("/payload.bin")
    stderr = ok(ketch(home, work, "get", url))
    assert sha256((work / "payload.bin").read_bytes()) == sha256(payload)
    assert stderr.startswith("get payload.bin: 300000 bytes")

    (work / "inbox").mkdir()
    ok(ketch(home, work, "get", url, "inbox"))
    assert sha256((work / "inbox" / "payload.bin").read_bytes()) == sha256(payload)

    ok(ketch(home, work, "get", url, "renamed.bin"))
    assert sha256((work / "renamed.bin").read_bytes()) == sha256(payload)

    piped = ketch(home, work, "get", url, "-")
    ok(piped)
    assert sha256(piped.stdout) == sha256(payload)


def test_get_to_a_pipe_whose_reader_quits_stops_without_a_word(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    # ketch get URL - | head -c 100: the reader going away is no local disk trouble.
    env = {**os.environ, "HOME": str(home)}
    getter = subprocess.Popen(
        [*KETCH, "get", server.url("/payload.bin"), "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
        env=env,
    )
    assert getter.stdout is not None
    assert len(getter.stdout.read(100)) == 100
    getter.stdout.close()  # as head does when it has its 100 bytes
    _, stderr = getter.communicate(timeout=TIMEOUT)
    assert getter.returncode == 1
    assert stderr == b""


def test_get_continue_resumes_a_partial_file(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    half = len(payload) // 2
    (work / "payload.bin").write_bytes(payload[:half])
    stderr = ok(ketch(home, work, "get", "-c", "-v", server.url("/payload.bin")))
    assert f"> REST {half}" in stderr.splitlines()
    assert f"resumed at byte {half}" in stderr
    assert sha256((work / "payload.bin").read_bytes()) == sha256(payload)


def test_get_of_a_missing_file_leaves_an_existing_local_file_alone(
    server: RunningServer, home: Path, work: Path
) -> None:
    (work / "keep.txt").write_bytes(b"precious")
    result = ketch(home, work, "get", server.url("/missing.txt"), "keep.txt")
    assert "550" in one_error_line(result, 5)
    assert (work / "keep.txt").read_bytes() == b"precious"


# -- put ------------------------------------------------------------------------------


def test_put_to_a_name_and_to_a_directory_url(
    server: RunningServer, home: Path, work: Path
) -> None:
    data = os.urandom(200_000)
    (work / "local.bin").write_bytes(data)
    stderr = ok(ketch(home, work, "put", "local.bin", server.url("/named.bin")))
    assert stderr.startswith("put named.bin: 200000 bytes")
    assert sha256((server.home / "named.bin").read_bytes()) == sha256(data)

    (server.home / "sub").mkdir()
    ok(ketch(home, work, "put", "local.bin", server.url("/sub/")))
    assert sha256((server.home / "sub" / "local.bin").read_bytes()) == sha256(data)


def test_put_continue_sends_only_the_missing_part(
    server: RunningServer, home: Path, work: Path
) -> None:
    data = os.urandom(250_000)
    (work / "local.bin").write_bytes(data)
    (server.home / "local.bin").write_bytes(data[:100_000])
    stderr = ok(ketch(home, work, "put", "-c", "-v", "local.bin", server.url("/")))
    commands = sent_commands(stderr)
    assert "SIZE" in commands and "APPE" in commands and "STOR" not in commands
    assert "put local.bin: 150000 bytes" in stderr
    assert sha256((server.home / "local.bin").read_bytes()) == sha256(data)


# -- rm, mkdir, mv --------------------------------------------------------------------


def test_rm_deletes_files_and_reports_the_one_it_cannot(
    server: RunningServer, home: Path, work: Path
) -> None:
    for name in ("a.txt", "b.txt"):
        (server.home / name).write_bytes(b"bye")
    result = ketch(
        home, work, "rm", server.url("/a.txt"), server.url("/nope.txt"), server.url("/b.txt")
    )
    assert result.returncode == 5, result.stderr
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("ketch:")]
    assert len(errors) == 1 and "nope.txt" in errors[0]
    assert not (server.home / "a.txt").exists()
    assert not (server.home / "b.txt").exists()


def test_mkdir_p_creates_parents_and_accepts_existing(
    server: RunningServer, home: Path, work: Path
) -> None:
    ok(ketch(home, work, "mkdir", "-p", server.url("/x/y/z")))
    assert (server.home / "x" / "y" / "z").is_dir()
    ok(ketch(home, work, "mkdir", "-p", server.url("/x/y/z")))
    one_error_line(ketch(home, work, "mkdir", server.url("/x")), 5)
    ok(ketch(home, work, "mkdir", server.url("/x/w")))
    assert (server.home / "x" / "w").is_dir()


def test_mv_renames_relative_to_the_login_directory(
    server: RunningServer, home: Path, work: Path
) -> None:
    (server.home / "old.txt").write_bytes(b"moving")
    (server.home / "dir").mkdir()
    ok(ketch(home, work, "mv", server.url("/old.txt"), "dir/new.txt"))
    assert not (server.home / "old.txt").exists()
    assert (server.home / "dir" / "new.txt").read_bytes() == b"moving"
    ok(ketch(home, work, "mv", server.url("/dir/new.txt"), "/"))  # the root: alice's home
    assert (server.home / "new.txt").read_bytes() == b"moving"


# -- data-connection modes and -v -------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "used", "unused"),
    [
        (("--active",), "EPRT", {"EPSV", "PASV", "PORT"}),
        (("--passive",), "EPSV", {"EPRT", "PORT", "PASV"}),
        (("--passive", "--no-epsv"), "PASV", {"EPSV", "EPRT", "PORT"}),
    ],
    ids=["active", "passive", "passive-no-epsv"],
)
def test_mode_options_choose_the_data_connection_command(
    server: RunningServer,
    payload: bytes,
    home: Path,
    work: Path,
    flags: tuple[str, ...],
    used: str,
    unused: set[str],
) -> None:
    stderr = ok(ketch(home, work, "get", "-v", *flags, server.url("/payload.bin")))
    commands = sent_commands(stderr)
    assert used in commands
    assert not unused.intersection(commands)
    assert "get payload.bin: 300000 bytes" in stderr and f"via {used}" in stderr
    assert sha256((work / "payload.bin").read_bytes()) == sha256(payload)


def test_verbose_shows_the_fallback_from_passive_to_active(
    make_server: Callable[..., RunningServer], home: Path, work: Path
) -> None:
    # The server's only passive port is taken, so EPSV gets 425 and auto mode
    # must fall back to active.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        server = make_server(passive_ports=f"{port}-{port}")
        (server.home / "f.txt").write_bytes(b"fallback")
        stderr = ok(ketch(home, work, "get", "-v", server.url("/f.txt")))
        plain = ok(ketch(home, work, "get", server.url("/f.txt"), "again.txt"))
    assert "passive mode failed: " in stderr and "trying active mode" in stderr
    assert "via EPRT" in stderr
    assert (work / "f.txt").read_bytes() == b"fallback"
    assert (work / "again.txt").read_bytes() == b"fallback"
    assert plain.startswith("get f.txt: 8 bytes") and "passive" not in plain  # -v only


def test_verbose_shows_the_conversation_with_the_password_masked(
    server: RunningServer, home: Path, work: Path
) -> None:
    stderr = ok(ketch(home, work, "ls", "-v", server.url()))
    lines = stderr.splitlines()
    assert f"> USER {USER}" in lines
    assert "> PASS ****" in lines
    assert any(line.startswith("< 230") for line in lines)
    assert PASSWORD not in stderr


# -- credentials ------------------------------------------------------------------------


def write_netrc(home: Path, text: str) -> None:
    path = home / ".netrc"
    path.write_text(text)
    path.chmod(0o600)


def test_netrc_supplies_user_and_password(server: RunningServer, home: Path, work: Path) -> None:
    write_netrc(home, f"machine {server.host} login {USER} password {PASSWORD}\n")
    (server.home / "mine.txt").write_bytes(b"alice's")
    result = ketch(home, work, "ls", "--names", "-v", server.url(user=None))
    stderr = ok(result)
    assert f"> USER {USER}" in stderr
    assert result.stdout.decode().splitlines() == ["mine.txt"]
    # -u without a password takes the password .netrc has for that login.
    ok(ketch(home, work, "ls", "-u", USER, server.url(user=None)))


def test_a_missing_netrc_file_named_on_the_command_line_is_an_error(
    server: RunningServer, home: Path, work: Path
) -> None:
    result = ketch(home, work, "ls", "--netrc-file", str(work / "typo"), server.url(user=None))
    line = one_error_line(result, 8)
    assert "typo: no such file" in line and "--netrc-file" in line


def test_url_credentials_win_over_netrc(server: RunningServer, home: Path, work: Path) -> None:
    write_netrc(home, f"machine {server.host} login {USER} password {PASSWORD}\n")
    url = server.url(user=READER, password=READER_PASSWORD)
    result = ketch(home, work, "ls", "--names", "-v", url)
    stderr = ok(result)
    assert f"> USER {READER}" in stderr and f"> USER {USER}" not in stderr
    assert result.stdout.decode().splitlines() == ["secret.txt"]


# -- exit codes: one line on stderr each -------------------------------------------------


def test_wrong_password_exits_4(server: RunningServer, home: Path, work: Path) -> None:
    line = one_error_line(ketch(home, work, "ls", server.url(password="wrong")), 4)
    assert "530" in line and "wrong" not in line


def test_connection_refused_exits_3(home: Path, work: Path) -> None:
    line = one_error_line(ketch(home, work, "ls", f"ftp://127.0.0.1:{free_port()}/"), 3)
    assert "cannot connect" in line


def test_missing_remote_file_exits_5(server: RunningServer, home: Path, work: Path) -> None:
    line = one_error_line(ketch(home, work, "get", server.url("/no-such.bin")), 5)
    assert "550" in line
    assert not (work / "no-such.bin").exists()


def test_unwritable_local_destination_exits_8(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    (work / "plain-file").write_bytes(b"")
    # A path "under" a regular file cannot be written, not even by root.
    dest = str(work / "plain-file" / "payload.bin")
    line = one_error_line(ketch(home, work, "get", server.url("/payload.bin"), dest), 8)
    assert "cannot write" in line


def test_missing_local_file_for_put_exits_8(server: RunningServer, home: Path, work: Path) -> None:
    one_error_line(ketch(home, work, "put", "absent.bin", server.url("/")), 8)


def test_put_streams_a_named_pipe_and_a_device(
    server: RunningServer, home: Path, work: Path
) -> None:
    # `ketch put <(command) URL` and a FIFO: not a regular file, but readable as stdin is.
    fifo = work / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(b"through a pipe\n",), daemon=True)
    writer.start()
    try:
        ok(ketch(home, work, "put", str(fifo), server.url("/from-fifo.txt")))
    finally:
        if writer.is_alive():  # nobody read the pipe: open it here, so the writer ends
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
    assert (server.home / "from-fifo.txt").read_bytes() == b"through a pipe\n"
    ok(ketch(home, work, "put", "/dev/null", server.url("/null.txt")))
    assert (server.home / "null.txt").read_bytes() == b""
    line = one_error_line(ketch(home, work, "put", "--verify", "/dev/null", server.url("/n")), 2)
    assert "not a regular file" in line and "without --verify" in line
    line = one_error_line(ketch(home, work, "put", str(work), server.url("/d")), 8)
    assert "it is a directory" in line


def test_a_password_with_a_line_break_is_a_usage_error_that_never_shows_it(
    server: RunningServer, home: Path, work: Path
) -> None:
    line = one_error_line(
        ketch(home, work, "ls", "-u", f"{USER}:top\nsecret", server.url(user=None)), 2
    )
    assert "line break" in line and "PASS ****" in line
    assert "top" not in line and "secret" not in line


def test_a_name_with_byte_0xff_is_sent_doubled_and_arrives_whole(
    server: RunningServer, home: Path, work: Path
) -> None:
    # RFC 2640 §3.1: 0xFF is Telnet's IAC; a client doubles it, the server undoes that.
    name = b"x\xffy.txt"
    (server.home / os.fsdecode(name)).write_bytes(b"latin-1 name")
    ok(ketch(home, work, "get", server.url("/x%FFy.txt"), "got.txt"))
    assert (work / "got.txt").read_bytes() == b"latin-1 name"
    (work / "up.txt").write_bytes(b"uploaded")
    ok(ketch(home, work, "put", "up.txt", server.url("/u%FFp.txt")))
    assert (server.home / os.fsdecode(b"u\xffp.txt")).read_bytes() == b"uploaded"


@pytest.mark.parametrize("command", [["get", "--active"], ["doctor"]])
def test_an_active_address_with_a_zone_id_is_a_usage_error(
    home: Path, work: Path, command: list[str]
) -> None:
    # EPRT has no field for a zone: this crashed with an internal error once connected.
    url = f"ftp://127.0.0.1:{free_port()}/a.txt"
    result = ketch(home, work, *command, "--active-address", "fe80::1%lo", url)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "has a zone id (%lo), which EPRT cannot send" in stderr
    assert "(fe80::1)" in stderr and "internal error" not in stderr


@pytest.mark.parametrize("url", ["http://example.com/x", "ftp://host:99999/x", "ftp://"])
def test_bad_url_exits_2(home: Path, work: Path, url: str) -> None:
    line = one_error_line(ketch(home, work, "ls", url), 2)
    assert "bad URL" in line


def test_piped_output_has_no_terminal_codes(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    results = [
        ketch(home, work, "get", server.url("/payload.bin")),
        ketch(home, work, "ls", server.url()),
        ketch(home, work, "get", server.url("/missing")),
    ]
    assert [result.returncode for result in results] == [0, 0, 5]
    for result in results:
        assert b"\x1b[" not in result.stdout and b"\x1b[" not in result.stderr
    assert results[0].stderr.decode().count("\n") == 1  # the one-line summary


def test_quiet_prints_nothing_on_success(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    result = ketch(home, work, "get", "-q", server.url("/payload.bin"))
    assert result.returncode == 0 and result.stderr == b""
    assert (work / "payload.bin").stat().st_size == len(payload)


@pytest.mark.peer
def test_old_file_listing_uses_the_recent_format_within_a_day(
    vsftpd_server: PeerServer, home: Path, work: Path
) -> None:
    # vsftpd has no MLSD (ketch has): its LIST shows a time a few hours ago to the
    # minute ("Mon DD HH:MM"), and ls shows no more than that.
    peer = vsftpd_server
    path = peer.writable / "hours.txt"
    path.write_bytes(b"h")
    moment = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    os.utime(path, (moment.timestamp(), moment.timestamp()))
    url = peer.url()
    result = ketch(home, work, "ls", url)
    ok(result)
    assert result.stdout.decode().splitlines() == [f"- 1 {moment:%Y-%m-%d %H:%M} hours.txt"]


@pytest.mark.peer
def test_ls_of_one_file_without_mlst_gives_its_size_and_time_to_the_second(
    vsftpd_server: PeerServer, home: Path, work: Path
) -> None:
    # vsftpd has no MLST: ls of a file showed its line in the parent's LIST, whose time
    # is to the minute (to the day for an old file); SIZE and MDTM give the exact size
    # and the time in UTC to the second, as MLST would.
    peer = vsftpd_server
    path = peer.writable / "one.txt"
    path.write_bytes(b"12345")
    moment = datetime(2020, 5, 17, 10, 20, 30, tzinfo=UTC).timestamp()
    os.utime(path, (moment, moment))
    (peer.writable / "sub").mkdir()
    (peer.writable / "sub" / "inner.txt").write_bytes(b"i")
    one = ketch(home, work, "ls", "--json", peer.url("one.txt"))
    ok(one)
    record = json.loads(one.stdout)
    assert record["name"].endswith("one.txt"), record
    assert {key: record[key] for key in ("type", "size", "mtime", "mtime_precision")} == {
        "type": "file",
        "size": 5,
        "mtime": "2020-05-17T10:20:30Z",
        "mtime_precision": "second",
    }
    names = ketch(home, work, "ls", "--names", peer.url("sub"))
    ok(names)
    assert names.stdout.decode().splitlines() == ["inner.txt"]
    missing = one_error_line(ketch(home, work, "ls", peer.url("absent.txt")), 5)
    assert "550" in missing


def on_terminal(home: Path, work: Path, *args: str, stdout_too: bool) -> tuple[int, bytes, bytes]:
    """Run ``ketch ARGS`` with stderr (and stdout, if ``stdout_too``) on a pseudo-terminal;
    returns the exit code, stdout when it is a pipe, and what the terminal received."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "HOME": str(home), "COLUMNS": "100", "TERM": "xterm"}
    drawn = bytearray()
    try:
        process = subprocess.Popen(
            [*KETCH, *args],
            stdout=terminal if stdout_too else subprocess.PIPE,
            stderr=terminal,
            stdin=subprocess.DEVNULL,
            cwd=work,
            env=env,
        )
        os.close(terminal)
        terminal = -1

        def read_terminal() -> None:
            with contextlib.suppress(OSError):  # EIO once the terminal's last writer is gone
                while chunk := os.read(controller, 65536):
                    drawn.extend(chunk)

        reader = threading.Thread(target=read_terminal, daemon=True)
        reader.start()
        data, _ = process.communicate(timeout=TIMEOUT)
        reader.join(timeout=TIMEOUT)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return process.returncode, data or b"", bytes(drawn)


def test_a_terminal_gets_a_progress_bar_on_stderr_and_stdout_stays_clean(
    server: RunningServer, payload: bytes, home: Path, work: Path
) -> None:
    """With stderr on a terminal, rich draws a bar there; the data on stdout is untouched."""
    code, data, drawn = on_terminal(
        home, work, "get", server.url("/payload.bin"), "-", stdout_too=False
    )
    assert code == 0
    assert sha256(data) == sha256(payload)
    screen = drawn.decode(errors="replace")
    assert "\x1b[" in screen  # drawn with terminal codes
    assert "payload.bin" in screen
    assert "MiB" in screen or "KiB" in screen  # rich's download column


def test_a_download_shown_on_the_terminal_draws_no_progress_bar_over_it(
    server: RunningServer, home: Path, work: Path
) -> None:
    """`ketch get URL -` in a terminal: the file is the output; a bar would garble it."""
    text = b"".join(b"line %05d of the file\n" % number for number in range(2000))
    (server.home / "shown.txt").write_bytes(text)
    code, _, drawn = on_terminal(home, work, "get", server.url("/shown.txt"), "-", stdout_too=True)
    assert code == 0
    assert b"\x1b[" not in drawn
    assert drawn.replace(b"\r\n", b"\n").startswith(text)  # the terminal turns \n into \r\n


@pytest.mark.parametrize("command", ["ls", "get"])
def test_output_to_a_closed_stdout_is_a_local_error_that_says_so(
    server: RunningServer, home: Path, work: Path, command: str
) -> None:
    (server.home / "some.txt").write_bytes(b"some text\n")
    url = server.url("/" if command == "ls" else "/some.txt")
    result = subprocess.run(
        [*KETCH, command, url, *(["-"] if command == "get" else [])],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),  # as `ketch ls URL >&-` starts it
        cwd=work,
        env={**os.environ, "HOME": str(home)},
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 8, result.stderr
    what = "local error" if command == "ls" else "cannot write"
    assert result.stderr.decode().splitlines() == [
        f"ketch: {what}: stdout is closed; send the output somewhere (> file)"
    ]


def refuse_login(listener: socket.socket, reply: bytes) -> None:
    """One session whose PASS gets ``reply``."""
    control, _ = listener.accept()
    control.settimeout(20)
    with control:
        control.sendall(b"220 scripted\r\n")
        for line in command_lines(control):
            verb = line.partition(" ")[0].upper()
            answer = {"USER": b"331 password\r\n", "PASS": reply}.get(verb, b"221 bye\r\n")
            control.sendall(answer)
            if answer.startswith(b"221"):
                return


@pytest.mark.parametrize(
    ("reply", "code", "advice"),
    [
        (b"530 Login incorrect.\r\n", 4, "check the user name and password (in the URL, -u"),
        (b"530 Too many sessions for this user (1).\r\n", 4, "the server gave its reason"),
        (b"421 Too many users, try later.\r\n", 7, "refused by 127.0.0.1: 421"),
    ],
)
def test_a_refused_login_gives_the_password_advice_only_without_another_reason(
    tmp_path: Path, reply: bytes, code: int, advice: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    server = threading.Thread(target=refuse_login, args=(listener, reply), daemon=True)
    server.start()
    try:
        result = run_ketch(tmp_path, "ls", f"ftp://u:p@127.0.0.1:{listener.getsockname()[1]}/")
    finally:
        listener.close()
        server.join(20)
    line = one_error_line(result, code)
    assert advice in line, line
    if code != 4 or "incorrect" not in line:
        assert "password" not in line.partition(" — ")[2], line


@pytest.mark.parametrize("existing", [None, "file"])
def test_get_to_a_dest_ending_in_slash_needs_that_directory(
    home: Path, work: Path, existing: str | None
) -> None:
    # As cp: "name/" names a directory; nothing listens, so a connection attempt would be 3.
    if existing == "file":
        (work / "name").write_bytes(b"precious")
    url = f"ftp://127.0.0.1:{free_port()}/notes.txt"
    line = one_error_line(ketch(home, work, "get", url, "name/"), 8)
    assert "cannot write name/: not a directory — create it first or drop the '/'" in line, line
    if existing == "file":
        assert (work / "name").read_bytes() == b"precious"
    else:
        assert not (work / "name").exists()
