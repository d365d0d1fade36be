"""lftp against a real ketch server, with ftp:passive-mode on (PASV) and off (PORT).

lftp is run as ``lftp -d -c "<script>"``: the script is what a user would
type, and the debug trace (``---> CMD`` / ``<--- reply``) lets each test
check the replies and that every data connection was made in the mode under
test (lftp can silently switch passive mode when one fails).

lftp 4.9 has no append or STOU command (``put -a`` means ASCII), so APPE
and STOU are covered by the curl and ftplib tests.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PASSWORD, USER, RunningServer, require_program
from payloads import BIG, SMALL_SIZES, Payload, make_payload, sha256_bytes, sha256_file

pytestmark = pytest.mark.peer

SUBPROCESS_TIMEOUT = 90
RESUME_TOTAL = 300_000
RESUME_PRESENT = 100_000
TEXT_LF = b"line one\nline two\n\nlast line\n"


@dataclass(frozen=True)
class LftpMode:
    name: str
    passive: bool
    setup_verb: str  # what lftp sends for an IPv4 data connection in this mode


MODES = (LftpMode("passive", True, "PASV"), LftpMode("active", False, "PORT"))
MODE_PARAMS = [pytest.param(mode, id=mode.name) for mode in MODES]
TRANSFER_PARAMS = [
    pytest.param(mode, size, id=f"{mode.name}-{size}B")
    for mode in MODES
    for size in (*SMALL_SIZES, BIG)
]


# -- helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class Lftp:
    path: str
    caplog: pytest.LogCaptureFixture  # sees the server's log: it runs in this process

    def active_source_port_fell_back(self) -> bool:
        """Whether the server said it could not bind control port - 1 for active mode."""
        return any(
            "active source port" in record.getMessage() and "unavailable" in record.getMessage()
            for record in self.caplog.records
        )


@pytest.fixture
def lftp(caplog: pytest.LogCaptureFixture) -> Lftp:
    caplog.set_level(logging.DEBUG, logger="ketch.server.data")
    return Lftp(require_program("lftp"), caplog)


@dataclass
class LftpRun:
    returncode: int
    stdout: str
    stderr: str
    lftp: Lftp
    server: RunningServer

    @property
    def sent(self) -> list[str]:
        return [line[5:] for line in self.stderr.splitlines() if line.startswith("---> ")]

    @property
    def replies(self) -> list[str]:
        return [line[5:] for line in self.stderr.splitlines() if line.startswith("<--- ")]

    def replied(self, prefix: str) -> bool:
        return any(reply.startswith(prefix) for reply in self.replies)


def run_lftp(
    lftp: Lftp,
    server: RunningServer,
    mode: LftpMode,
    commands: str,
    home: Path,
    *,
    user: str | None = USER,
    password: str = PASSWORD,
) -> LftpRun:
    login = f"-u {user},{password} " if user else ""
    script = "; ".join(
        [
            "set net:max-retries 1",
            "set net:timeout 10",
            "set cmd:fail-exit yes",
            "set ftp:ssl-allow no",
            "set cache:enable no",
            f"set ftp:passive-mode {'on' if mode.passive else 'off'}",
            f"open {login}-p {server.port} {server.host}",
            commands,
        ]
    )
    # A private HOME keeps the user's ~/.lftprc, bookmarks and history out of the test.
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run(
        [lftp.path, "-d", "-c", script],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return LftpRun(result.returncode, result.stdout, result.stderr, lftp, server)


def assert_ok(run: LftpRun, mode: LftpMode, *, data: bool = True) -> None:
    """lftp succeeded, and every data connection was made the way the mode says:
    passive to a port of the configured range on the control address, active from
    the port below the control port (RFC 959's L-1) unless the server logged that
    it could not bind it."""
    assert run.returncode == 0, f"lftp exit {run.returncode}:\n{run.stdout}\n{run.stderr}"
    setups = [c.split()[0] for c in run.sent if c.split()[0] in ("EPSV", "PASV", "EPRT", "PORT")]
    if data:
        assert setups, f"lftp opened no data connection:\n{run.stderr}"
    assert set(setups) <= {mode.setup_verb}, (
        f"expected only {mode.setup_verb}, lftp sent {setups}:\n{run.stderr}"
    )
    assert "Switching passive mode" not in run.stderr
    low, high = run.server.server.config.passive_ports
    for reply in run.replies:
        if match := re.match(r"227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply):
            numbers = [int(n) for n in match.groups()]
            assert numbers[:4] == [127, 0, 0, 1], reply
            assert low <= numbers[4] * 256 + numbers[5] <= high, reply
    if not mode.passive:
        sources = [
            int(port)
            for port in re.findall(
                r"^---- Accepted data connection from \(127\.0\.0\.1\) port (\d+)$",
                run.stderr,
                re.MULTILINE,
            )
        ]
        assert len(sources) == len(setups), run.stderr
        if not run.lftp.active_source_port_fell_back():
            assert set(sources) <= {run.server.port - 1}, (sources, run.server.port)


@pytest.fixture
def client_dir(tmp_path: Path) -> Path:
    path = tmp_path / "client"
    path.mkdir()
    return path


# -- login and listing --------------------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_login_with_password_lists_the_home(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    (server.home / "alice-file.txt").write_bytes(b"mine\n")
    (server.home / "alice-dir").mkdir()
    run = run_lftp(lftp, server, mode, "cls -1 -F", client_dir)
    assert_ok(run, mode)
    assert f"USER {USER}" in run.sent
    assert run.replied("230")
    assert sorted(run.stdout.splitlines()) == ["alice-dir/", "alice-file.txt"]


def test_lftp_wrong_password_fails_with_530(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
) -> None:
    run = run_lftp(lftp, server, MODES[0], "cls -1", client_dir, password="wrong")
    assert run.returncode != 0
    assert run.replied("530")
    assert "Login failed" in run.stdout + run.stderr


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_anonymous_ls_shows_the_served_names(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    run = run_lftp(lftp, server, mode, "ls", client_dir, user=None)
    assert_ok(run, mode)
    names = {line.split(None, 8)[8]: line[0] for line in run.stdout.splitlines()}
    assert names == {"hello.txt": "-", "docs": "d"}, run.stdout


def test_lftp_lists_over_the_control_connection_with_stat(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
) -> None:
    # ftp:use-stat-for-list: lftp sends STAT <dir> and reads the listing from the
    # multi-line reply (212, RFC 959's directory status), with no data connection.
    run = run_lftp(
        lftp, server, MODES[0], "set ftp:use-stat-for-list on; ls docs", client_dir, user=None
    )
    assert_ok(run, MODES[0], data=False)
    assert "STAT docs" in run.sent and run.replied("212 End of status."), run.stderr
    assert [line.split(None, 8)[8] for line in run.stdout.splitlines()] == ["readme.md"]


# -- downloads and uploads ----------------------------------------------------


@pytest.mark.parametrize(("mode", "size"), TRANSFER_PARAMS)
def test_lftp_get_is_byte_exact(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    big_payload: Payload,
    mode: LftpMode,
    size: int,
) -> None:
    expected = make_payload(server.home / "payload.bin", size, big_payload)
    target = client_dir / "downloaded.bin"
    run = run_lftp(lftp, server, mode, f"get payload.bin -o {target}", client_dir)
    assert_ok(run, mode)
    assert "RETR payload.bin" in run.sent
    assert run.replied("226")
    assert target.stat().st_size == size
    assert sha256_file(target) == expected


@pytest.mark.parametrize(("mode", "size"), TRANSFER_PARAMS)
def test_lftp_put_is_byte_exact(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    big_payload: Payload,
    mode: LftpMode,
    size: int,
) -> None:
    if size == BIG:
        source, expected = big_payload.path, big_payload.sha256
    else:
        source = client_dir / "upload.bin"
        expected = make_payload(source, size, big_payload)
    run = run_lftp(lftp, server, mode, f"put {source} -o uploaded.bin", client_dir)
    assert_ok(run, mode)
    assert "STOR uploaded.bin" in run.sent
    assert run.replied("226")
    stored = server.home / "uploaded.bin"
    assert stored.stat().st_size == size
    assert sha256_file(stored) == expected


# -- resume (REST) --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_get_continue_completes_a_partial_file_byte_exact(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    data = os.urandom(RESUME_TOTAL)
    (server.home / "resume.bin").write_bytes(data)
    local = client_dir / "resume.bin"
    local.write_bytes(data[:RESUME_PRESENT])
    run = run_lftp(lftp, server, mode, f"get -c resume.bin -o {local}", client_dir)
    assert_ok(run, mode)
    assert f"REST {RESUME_PRESENT}" in run.sent
    assert run.replied("350")
    assert sha256_file(local) == sha256_bytes(data)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_put_continue_completes_a_partial_file_byte_exact(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    data = os.urandom(RESUME_TOTAL)
    (server.home / "resume.bin").write_bytes(data[:RESUME_PRESENT])
    local = client_dir / "resume.bin"
    local.write_bytes(data)
    run = run_lftp(lftp, server, mode, f"put -c {local} -o resume.bin", client_dir)
    assert_ok(run, mode)
    assert f"REST {RESUME_PRESENT}" in run.sent
    assert "STOR resume.bin" in run.sent
    assert sha256_file(server.home / "resume.bin") == sha256_bytes(data)


# -- rename, delete, directories ---------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_mv_renames_the_file(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    (server.home / "old-name.txt").write_bytes(b"rename me\n")
    run = run_lftp(lftp, server, mode, "mv old-name.txt new-name.txt; cls -1", client_dir)
    assert_ok(run, mode)
    assert "RNFR old-name.txt" in run.sent
    assert "RNTO new-name.txt" in run.sent
    assert run.replied("350")
    assert run.stdout.splitlines() == ["new-name.txt"]
    assert not (server.home / "old-name.txt").exists()
    assert (server.home / "new-name.txt").read_bytes() == b"rename me\n"


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_rm_deletes_the_file(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    (server.home / "doomed.txt").write_bytes(b"bye\n")
    (server.home / "kept.txt").write_bytes(b"stay\n")
    run = run_lftp(lftp, server, mode, "rm doomed.txt; cls -1", client_dir)
    assert_ok(run, mode)
    assert "DELE doomed.txt" in run.sent
    assert run.stdout.splitlines() == ["kept.txt"]
    assert not (server.home / "doomed.txt").exists()
    assert (server.home / "kept.txt").read_bytes() == b"stay\n"


def test_lftp_rm_of_a_missing_file_fails_with_550(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
) -> None:
    run = run_lftp(lftp, server, MODES[0], "rm nothing-here.txt", client_dir)
    assert run.returncode != 0
    assert run.replied("550")


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_mkdir_and_rmdir_create_and_remove_directories(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    made = run_lftp(lftp, server, mode, "mkdir -p made/deeper; mkdir other; cls -1 -F", client_dir)
    assert_ok(made, mode)
    assert made.replied('257 "/made"')
    assert (server.home / "made" / "deeper").is_dir()
    assert (server.home / "other").is_dir()
    assert sorted(made.stdout.splitlines()) == ["made/", "other/"]

    refused = run_lftp(lftp, server, mode, "rmdir made", client_dir)
    assert refused.returncode != 0  # not empty
    assert refused.replied("550")
    assert (server.home / "made" / "deeper").is_dir()

    removed = run_lftp(
        lftp, server, mode, "rmdir made/deeper; rmdir made; rmdir other; cls -1", client_dir
    )
    assert_ok(removed, mode, data=False)  # an empty listing may need no data bytes
    assert removed.stdout == ""
    assert list(server.home.iterdir()) == []


# -- ASCII (TYPE A) ------------------------------------------------------------


def type_before(sent: list[str], command: str) -> str:
    """The representation type in force when ``command`` was sent (RFC 959: A until TYPE)."""
    in_force = "A"
    for line in sent[: sent.index(command)]:
        if line.upper().startswith("TYPE "):
            in_force = line.split()[1].upper()
    return in_force


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_get_ascii_arrives_with_lf_line_ends(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    (server.home / "text.txt").write_bytes(TEXT_LF)
    (server.home / "first.bin").write_bytes(b"\r\n binary first \n")
    target = client_dir / "text.txt"
    # A binary get first, so that lftp has to switch the session to TYPE A.
    run = run_lftp(
        lftp,
        server,
        mode,
        f"get first.bin -o {client_dir / 'first.bin'}; get -a text.txt -o {target}",
        client_dir,
    )
    assert_ok(run, mode)
    assert type_before(run.sent, "RETR first.bin") == "I"
    assert type_before(run.sent, "RETR text.txt") == "A"
    assert (client_dir / "first.bin").read_bytes() == b"\r\n binary first \n"
    assert target.read_bytes() == TEXT_LF


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_put_ascii_is_stored_with_lf_line_ends(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    source = client_dir / "text.txt"
    source.write_bytes(TEXT_LF)
    binary = client_dir / "first.bin"
    binary.write_bytes(b"\r\n binary first \n")
    run = run_lftp(
        lftp, server, mode, f"put {binary} -o first.bin; put -a {source} -o text.txt", client_dir
    )
    assert_ok(run, mode)
    assert type_before(run.sent, "STOR first.bin") == "I"
    assert type_before(run.sent, "STOR text.txt") == "A"
    assert (server.home / "first.bin").read_bytes() == b"\r\n binary first \n"
    assert (server.home / "text.txt").read_bytes() == TEXT_LF


# -- whole trees (mirror: LIST parsing, CWD, many transfers on one session) ---


def make_tree(base: Path) -> dict[str, bytes]:
    files = {
        "top.bin": os.urandom(10_000),
        "empty.txt": b"",
        "sub/inner.bin": os.urandom(70_000),
        "sub/deeper/leaf.txt": b"leaf\n",
    }
    for name, data in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def read_tree(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_mirror_downloads_a_tree_byte_exact(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    files = make_tree(server.home / "tree")
    target = client_dir / "copy"
    run = run_lftp(lftp, server, mode, f"mirror tree {target}", client_dir)
    assert_ok(run, mode)
    assert read_tree(target) == files


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_mirror_reverse_uploads_a_tree_byte_exact(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    files = make_tree(client_dir / "tree")
    run = run_lftp(lftp, server, mode, f"mirror -R {client_dir / 'tree'} uploaded", client_dir)
    assert_ok(run, mode)
    assert read_tree(server.home / "uploaded") == files


# -- names and times ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_file_names_with_spaces_and_utf8_round_trip(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    name = " lead and höfn ø.txt"
    data = os.urandom(2048)
    source = client_dir / "source.bin"
    source.write_bytes(data)
    back = client_dir / "back.bin"
    run = run_lftp(
        lftp, server, mode, f'put {source} -o "{name}"; cls -1; get "{name}" -o {back}', client_dir
    )
    assert_ok(run, mode)
    assert (server.home / name).read_bytes() == data
    assert run.stdout.splitlines() == [name]
    assert back.read_bytes() == data


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_lftp_get_keeps_the_remote_modification_time(
    server: RunningServer,
    lftp: Lftp,
    client_dir: Path,
    mode: LftpMode,
) -> None:
    remote = server.home / "dated.bin"
    remote.write_bytes(os.urandom(1000))
    stamp = 1577934245  # 2020-01-02 03:04:05 UTC
    os.utime(remote, (stamp, stamp))
    target = client_dir / "dated.bin"
    run = run_lftp(lftp, server, mode, f"get dated.bin -o {target}", client_dir)
    assert_ok(run, mode)
    assert "213 20200102030405" in run.replies  # MDTM, in UTC
    assert target.stat().st_mtime == stamp
