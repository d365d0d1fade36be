"""curl against a real ketch server, in passive (EPSV, PASV) and active (EPRT, PORT) mode.

Every test runs the curl binary exactly as a user would and checks what the
user relies on: the bytes that arrive (by sha256), the names a listing shows,
the files left on the server's disk, and the replies curl saw (``curl -v``).
Each test also checks that curl really used the data-connection command its
mode names, so a silent fallback (EPSV -> PASV, EPRT -> PORT) cannot pass for
the mode under test.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import READER, READER_PASSWORD, USER, RunningServer, require_program
from payloads import BIG, MIB, SMALL_SIZES, Payload, make_payload, sha256_bytes, sha256_file

pytestmark = pytest.mark.peer

CURL_TIMEOUT = 60  # curl's own --max-time
SUBPROCESS_TIMEOUT = 90  # the test's hard limit on one curl run
RESUME_TOTAL = 300_000
RESUME_PRESENT = 100_000
TEXT_LF = b"line one\nline two\n\nlast line\n"
TEXT_CRLF = TEXT_LF.replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class CurlMode:
    name: str
    options: tuple[str, ...]
    setup_verb: str  # the data-setup command curl must send in this mode
    default: bool  # curl's default command for its family (carries the 50 MiB case)


MODES = (
    CurlMode("passive-epsv", ("--ftp-pasv",), "EPSV", default=True),
    CurlMode("passive-pasv", ("--ftp-pasv", "--disable-epsv"), "PASV", default=False),
    CurlMode("active-eprt", ("-P", "-"), "EPRT", default=True),
    CurlMode("active-port", ("-P", "-", "--disable-eprt"), "PORT", default=False),
)
MODE_PARAMS = [pytest.param(mode, id=mode.name) for mode in MODES]
# 0 B, 1 B and 64 KiB in every mode; 50 MiB once up and once down per data mode
# (passive and active), through curl's default command for it.
TRANSFER_PARAMS = [
    pytest.param(mode, size, id=f"{mode.name}-{size}B")
    for mode in MODES
    for size in (*SMALL_SIZES, *((BIG,) if mode.default else ()))
]


# -- helpers ------------------------------------------------------------------


@pytest.fixture
def curl() -> str:
    return require_program("curl")


def run_curl(
    curl: str,
    mode: CurlMode,
    *args: str,
    verbose: bool = True,
) -> subprocess.CompletedProcess[str]:
    command = [curl, "-sS", "--max-time", str(CURL_TIMEOUT), *mode.options]
    if verbose:
        command.append("-v")
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def sent_commands(verbose: str) -> list[str]:
    """The FTP commands curl sent, from its -v output ("> CMD ...")."""
    return [line[2:] for line in verbose.splitlines() if line.startswith("> ")]


def replies(verbose: str) -> list[str]:
    """The server's replies as curl logged them ("< 226 ...")."""
    return [line[2:] for line in verbose.splitlines() if line.startswith("< ")]


def assert_ok(
    result: subprocess.CompletedProcess[str], mode: CurlMode, server: RunningServer
) -> None:
    """curl succeeded; every data connection used the mode's command and, when passive,
    a port of the configured passive range on the control connection's address."""
    assert result.returncode == 0, f"curl exit {result.returncode}:\n{result.stderr}"
    setups = [
        c.split()[0]
        for c in sent_commands(result.stderr)
        if c.split()[0] in ("EPSV", "PASV", "EPRT", "PORT")
    ]
    assert setups, f"curl opened no data connection:\n{result.stderr}"
    assert set(setups) == {mode.setup_verb}, (
        f"expected only {mode.setup_verb}, curl sent {setups}:\n{result.stderr}"
    )
    low, high = server.server.config.passive_ports
    for reply in replies(result.stderr):
        if match := re.match(r"229 .*\(\|\|\|(\d+)\|\)", reply):
            assert low <= int(match[1]) <= high, reply
        elif match := re.match(r"227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply):
            numbers = [int(n) for n in match.groups()]
            assert numbers[:4] == [127, 0, 0, 1], reply
            assert low <= numbers[4] * 256 + numbers[5] <= high, reply


def assert_replied(result: subprocess.CompletedProcess[str], prefix: str) -> None:
    assert any(r.startswith(prefix) for r in replies(result.stderr)), (
        f"no reply starting {prefix!r}:\n{result.stderr}"
    )


def listing_names(listing: str) -> dict[str, str]:
    """Name -> type character, from `ls -l` style LIST output."""
    names: dict[str, str] = {}
    for line in listing.splitlines():
        fields = line.split(None, 8)
        assert len(fields) == 9, f"not an `ls -l` line: {line!r}"
        names[fields[8]] = line[0]
    return names


def trace_blocks(trace: str) -> list[tuple[str, bytes]]:
    """(kind, bytes) for every block of a `curl --trace` file, e.g. ("Recv data", b"...")."""
    blocks: list[tuple[str, bytearray]] = []
    header = re.compile(r"^(?:=>|<=) (Send|Recv) (header|data|SSL data), \d+ bytes")
    hex_line = re.compile(r"^[0-9a-f]{4,}: ")
    for line in trace.splitlines():
        if match := header.match(line):
            blocks.append((f"{match[1]} {match[2]}", bytearray()))
        elif (match := hex_line.match(line)) and blocks:
            # 16 "xx " groups (padded with spaces), then the printable rendering.
            hex_area = line[match.end() : match.end() + 48]
            blocks[-1][1].extend(bytes.fromhex("".join(hex_area.split())))
        else:
            blocks.append(("other", bytearray()))
    return [(kind, bytes(data)) for kind, data in blocks]


def traced(trace: str, kind: str) -> bytes:
    return b"".join(data for block_kind, data in trace_blocks(trace) if block_kind == kind)


# -- login and listing --------------------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_login_with_password_lists_the_home(
    server: RunningServer,
    curl: str,
    mode: CurlMode,
) -> None:
    (server.home / "alice-file.txt").write_bytes(b"mine\n")
    (server.home / "alice-dir").mkdir()
    result = run_curl(curl, mode, server.url("/"))
    assert_ok(result, mode, server)
    assert f"USER {USER}" in sent_commands(result.stderr)
    assert_replied(result, "230")
    assert_replied(result, "226")
    assert listing_names(result.stdout) == {"alice-file.txt": "-", "alice-dir": "d"}


def test_curl_wrong_password_is_refused_with_530(server: RunningServer, curl: str) -> None:
    result = run_curl(curl, MODES[0], server.url("/", password="wrong"))
    assert result.returncode == 67, result.stderr  # CURLE_LOGIN_DENIED
    assert_replied(result, "530")


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_anonymous_list_shows_the_served_names(
    server: RunningServer,
    curl: str,
    mode: CurlMode,
) -> None:
    result = run_curl(curl, mode, server.url("/", user=None))
    assert_ok(result, mode, server)
    names = listing_names(result.stdout)
    assert names == {"hello.txt": "-", "docs": "d"}, result.stdout
    line = next(li for li in result.stdout.splitlines() if li.endswith(" hello.txt"))
    assert line.split()[4] == "13"  # the size column of `ls -l`


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_name_list_gives_exactly_the_names(
    server: RunningServer,
    curl: str,
    mode: CurlMode,
) -> None:
    result = run_curl(curl, mode, "--list-only", server.url("/", user=None))
    assert_ok(result, mode, server)
    assert "NLST" in sent_commands(result.stderr)
    assert sorted(result.stdout.splitlines()) == ["docs", "hello.txt"]
    assert result.stdout.endswith("\n")


def test_curl_home_relative_url_reaches_the_home(server: RunningServer, curl: str) -> None:
    # ftp://host/~/docs/readme.md: curl sends "CWD ~", which names the login directory.
    result = run_curl(curl, MODES[0], server.url("/~/docs/readme.md", user=None))
    assert_ok(result, MODES[0], server)
    sent = sent_commands(result.stderr)
    assert "CWD ~" in sent and sent[sent.index("CWD ~") + 1] == "CWD docs", result.stderr
    assert result.stdout == "# docs\n"


# -- downloads and uploads ----------------------------------------------------


@pytest.mark.parametrize(("mode", "size"), TRANSFER_PARAMS)
def test_curl_download_is_byte_exact(
    server: RunningServer,
    curl: str,
    big_payload: Payload,
    tmp_path: Path,
    mode: CurlMode,
    size: int,
) -> None:
    expected = make_payload(server.home / "payload.bin", size, big_payload)
    target = tmp_path / "downloaded.bin"
    result = run_curl(curl, mode, server.url("/payload.bin"), "-o", str(target))
    assert_ok(result, mode, server)
    assert "RETR payload.bin" in sent_commands(result.stderr)
    assert_replied(result, "226")
    assert target.stat().st_size == size
    assert sha256_file(target) == expected


@pytest.mark.parametrize(("mode", "size"), TRANSFER_PARAMS)
def test_curl_upload_is_byte_exact(
    server: RunningServer,
    curl: str,
    big_payload: Payload,
    tmp_path: Path,
    mode: CurlMode,
    size: int,
) -> None:
    if size == BIG:
        source, expected = big_payload.path, big_payload.sha256
    else:
        source = tmp_path / "upload.bin"
        expected = make_payload(source, size, big_payload)
    result = run_curl(curl, mode, "-T", str(source), server.url("/uploaded.bin"))
    assert_ok(result, mode, server)
    assert "STOR uploaded.bin" in sent_commands(result.stderr)
    assert_replied(result, "226")
    stored = server.home / "uploaded.bin"
    assert stored.stat().st_size == size
    assert sha256_file(stored) == expected


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_upload_replaces_a_longer_existing_file(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    (server.home / "replace.bin").write_bytes(b"x" * 10_000)
    source = tmp_path / "short.bin"
    source.write_bytes(b"short")
    result = run_curl(curl, mode, "-T", str(source), server.url("/replace.bin"))
    assert_ok(result, mode, server)
    assert (server.home / "replace.bin").read_bytes() == b"short"


# -- resume (REST, and curl's SIZE + APPE for uploads) -------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_resumed_download_completes_a_partial_file_byte_exact(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    data = os.urandom(RESUME_TOTAL)
    (server.home / "resume.bin").write_bytes(data)
    local = tmp_path / "resume.bin"
    local.write_bytes(data[:RESUME_PRESENT])
    result = run_curl(curl, mode, "-C", "-", "-o", str(local), server.url("/resume.bin"))
    assert_ok(result, mode, server)
    assert f"REST {RESUME_PRESENT}" in sent_commands(result.stderr)
    assert_replied(result, "350")
    assert sha256_file(local) == sha256_bytes(data)


@pytest.mark.parametrize(
    "offset_option", ["-", str(RESUME_PRESENT)], ids=["continue-at-auto", "continue-at-offset"]
)
@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_resumed_upload_completes_a_partial_file_byte_exact(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
    offset_option: str,
) -> None:
    data = os.urandom(RESUME_TOTAL)
    (server.home / "resume.bin").write_bytes(data[:RESUME_PRESENT])
    local = tmp_path / "resume.bin"
    local.write_bytes(data)
    result = run_curl(
        curl, mode, "--continue-at", offset_option, "-T", str(local), server.url("/resume.bin")
    )
    assert_ok(result, mode, server)
    if offset_option == "-":
        assert "SIZE resume.bin" in sent_commands(result.stderr)
        assert_replied(result, f"213 {RESUME_PRESENT}")
    assert "APPE resume.bin" in sent_commands(result.stderr)
    assert sha256_file(server.home / "resume.bin") == sha256_bytes(data)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_download_resumed_at_the_end_of_the_file_transfers_nothing(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    data = os.urandom(4096)
    (server.home / "done.bin").write_bytes(data)
    local = tmp_path / "done.bin"
    local.write_bytes(data)
    result = run_curl(curl, mode, "-C", "-", "-o", str(local), server.url("/done.bin"))
    assert result.returncode == 0, result.stderr
    # SIZE says the local copy is complete, so curl needs no RETR at all.
    assert "SIZE done.bin" in sent_commands(result.stderr)
    assert_replied(result, "213 4096")
    assert not any(c.startswith("RETR") for c in sent_commands(result.stderr))
    assert local.read_bytes() == data


# -- rename, delete, directories ---------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_quote_rnfr_rnto_renames_the_file(
    server: RunningServer,
    curl: str,
    mode: CurlMode,
) -> None:
    (server.home / "old-name.txt").write_bytes(b"rename me\n")
    result = run_curl(
        curl, mode, "-Q", "-RNFR old-name.txt", "-Q", "-RNTO new-name.txt", server.url("/")
    )
    assert_ok(result, mode, server)
    assert "old-name.txt" in listing_names(result.stdout)  # listed before the rename
    assert_replied(result, "350")
    assert_replied(result, "250")
    assert not (server.home / "old-name.txt").exists()
    assert (server.home / "new-name.txt").read_bytes() == b"rename me\n"


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_quote_dele_deletes_the_file(
    server: RunningServer,
    curl: str,
    mode: CurlMode,
) -> None:
    (server.home / "doomed.txt").write_bytes(b"bye\n")
    (server.home / "kept.txt").write_bytes(b"stay\n")
    result = run_curl(curl, mode, "-Q", "-DELE doomed.txt", server.url("/"))
    assert_ok(result, mode, server)
    assert_replied(result, "250")
    assert not (server.home / "doomed.txt").exists()
    assert (server.home / "kept.txt").read_bytes() == b"stay\n"


def test_curl_quote_dele_of_a_missing_file_fails_with_550(
    server: RunningServer,
    curl: str,
) -> None:
    result = run_curl(curl, MODES[0], "-Q", "-DELE nothing-here.txt", server.url("/"))
    assert result.returncode == 21, result.stderr  # CURLE_QUOTE_ERROR
    assert_replied(result, "550")


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_create_dirs_on_upload_then_rmd_removes_them(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    source = tmp_path / "nested.bin"
    data = os.urandom(5000)
    source.write_bytes(data)
    result = run_curl(
        curl, mode, "--ftp-create-dirs", "-T", str(source), server.url("/made/deeper/nested.bin")
    )
    assert_ok(result, mode, server)
    assert any(c.startswith("MKD made") for c in sent_commands(result.stderr)), result.stderr
    assert_replied(result, "257")
    assert (server.home / "made" / "deeper" / "nested.bin").read_bytes() == data

    # A directory that is not empty is refused; after deleting the file both go.
    refused = run_curl(curl, mode, "-Q", "-RMD made", server.url("/"))
    assert refused.returncode == 21, refused.stderr
    assert_replied(refused, "550")
    assert (server.home / "made").is_dir()

    removed = run_curl(
        curl,
        mode,
        "-Q",
        "-DELE made/deeper/nested.bin",
        "-Q",
        "-RMD made/deeper",
        "-Q",
        "-RMD made",
        server.url("/"),
    )
    assert_ok(removed, mode, server)
    assert not (server.home / "made").exists()


# -- ASCII (TYPE A) ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_ascii_download_has_crlf_on_the_wire_and_lf_on_disk(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    (server.home / "text.txt").write_bytes(TEXT_LF)
    target = tmp_path / "text.txt"
    trace = tmp_path / "trace.txt"
    result = run_curl(
        curl,
        mode,
        "--use-ascii",
        "--trace",
        str(trace),
        "-o",
        str(target),
        server.url("/text.txt"),
        verbose=False,
    )
    assert result.returncode == 0, result.stderr
    log = trace.read_text(errors="replace")
    sent = traced(log, "Send header").decode().splitlines()
    assert "TYPE A" in sent
    assert {
        line.split()[0] for line in sent if line.split()[0] in ("EPSV", "PASV", "EPRT", "PORT")
    } == {mode.setup_verb}
    assert traced(log, "Recv data") == TEXT_CRLF  # RFC 959: CRLF ends lines on the wire
    assert target.read_bytes() == TEXT_LF  # curl on Linux turns them back into LF


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_ascii_upload_of_crlf_lines_is_stored_with_lf(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    source = tmp_path / "text.txt"
    source.write_bytes(TEXT_LF)
    trace = tmp_path / "trace.txt"
    # -B sends TYPE A; --crlf makes curl put CRLF on the wire as RFC 959 wants.
    result = run_curl(
        curl,
        mode,
        "-B",
        "--crlf",
        "--trace",
        str(trace),
        "-T",
        str(source),
        server.url("/text.txt"),
        verbose=False,
    )
    assert result.returncode == 0, result.stderr
    log = trace.read_text(errors="replace")
    sent = traced(log, "Send header").decode().splitlines()
    assert "TYPE A" in sent
    assert {
        line.split()[0] for line in sent if line.split()[0] in ("EPSV", "PASV", "EPRT", "PORT")
    } == {mode.setup_verb}
    assert traced(log, "Send data") == TEXT_CRLF
    assert (server.home / "text.txt").read_bytes() == TEXT_LF


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_ascii_upload_of_lf_lines_is_stored_unchanged(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    source = tmp_path / "text.txt"
    source.write_bytes(TEXT_LF)
    result = run_curl(curl, mode, "-B", "-T", str(source), server.url("/text.txt"))
    assert_ok(result, mode, server)
    assert "TYPE A" in sent_commands(result.stderr)
    assert (server.home / "text.txt").read_bytes() == TEXT_LF


# -- APPE ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_append_adds_to_the_end_of_an_existing_file(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    first, second = os.urandom(70_000), os.urandom(33_333)
    (server.home / "log.bin").write_bytes(first)
    source = tmp_path / "more.bin"
    source.write_bytes(second)
    result = run_curl(curl, mode, "--append", "-T", str(source), server.url("/log.bin"))
    assert_ok(result, mode, server)
    assert "APPE log.bin" in sent_commands(result.stderr)
    assert_replied(result, "226")
    assert sha256_file(server.home / "log.bin") == sha256_bytes(first + second)


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_append_to_a_missing_file_creates_it(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    data = os.urandom(1234)
    source = tmp_path / "new.bin"
    source.write_bytes(data)
    result = run_curl(curl, mode, "--append", "-T", str(source), server.url("/fresh.bin"))
    assert_ok(result, mode, server)
    assert (server.home / "fresh.bin").read_bytes() == data


# -- paths and permissions -------------------------------------------------------


@pytest.mark.parametrize("method", ["multicwd", "singlecwd", "nocwd"])
def test_curl_downloads_from_a_subdirectory_with_each_ftp_method(
    server: RunningServer,
    curl: str,
    method: str,
) -> None:
    mode = MODES[0]
    result = run_curl(curl, mode, "--ftp-method", method, server.url("/docs/readme.md", user=None))
    assert_ok(result, mode, server)
    assert result.stdout == "# docs\n"
    sent = sent_commands(result.stderr)
    if method == "nocwd":
        assert "RETR docs/readme.md" in sent
    else:
        assert any(c.startswith("CWD ") for c in sent)
        assert "RETR readme.md" in sent


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_file_names_with_spaces_and_utf8_round_trip(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    name = " lead and höfn ø.txt"
    data = os.urandom(2048)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    encoded = "/%20lead%20and%20h%C3%B6fn%20%C3%B8.txt"
    up = run_curl(curl, mode, "-T", str(source), server.url(encoded))
    assert_ok(up, mode, server)
    assert (server.home / name).read_bytes() == data
    listed = run_curl(curl, mode, "--list-only", server.url("/"))
    assert_ok(listed, mode, server)
    assert listed.stdout.splitlines() == [name]
    target = tmp_path / "back.bin"
    down = run_curl(curl, mode, "-o", str(target), server.url(encoded))
    assert_ok(down, mode, server)
    assert target.read_bytes() == data


def test_curl_upload_by_a_read_only_user_is_refused_with_550(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "attempt.bin"
    source.write_bytes(b"not allowed")
    result = run_curl(
        curl,
        MODES[0],
        "-T",
        str(source),
        server.url("/attempt.bin", user=READER, password=READER_PASSWORD),
    )
    assert result.returncode == 25, result.stderr  # CURLE_UPLOAD_FAILED
    assert_replied(result, "550")
    reader_home = server.home.parent / "reader"
    assert sorted(p.name for p in reader_home.iterdir()) == ["secret.txt"]


def test_curl_anonymous_upload_is_refused_with_550(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "attempt.bin"
    source.write_bytes(b"not allowed")
    result = run_curl(curl, MODES[0], "-T", str(source), server.url("/attempt.bin", user=None))
    assert result.returncode == 25, result.stderr
    assert_replied(result, "550")
    assert not (server.root / "attempt.bin").exists()


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_curl_range_download_gets_exactly_the_range(
    server: RunningServer,
    curl: str,
    tmp_path: Path,
    mode: CurlMode,
) -> None:
    # curl reads the range after REST, then closes the data connection and sends ABOR.
    data = os.urandom(4 * MIB)
    (server.home / "ranged.bin").write_bytes(data)
    target = tmp_path / "range.bin"
    result = run_curl(curl, mode, "-r", "1000-1099", "-o", str(target), server.url("/ranged.bin"))
    assert_ok(result, mode, server)
    assert "REST 1000" in sent_commands(result.stderr)
    assert target.read_bytes() == data[1000:1100]
