"""FTPS on the server (RFC 4217): curl, lftp and ftplib over explicit and implicit TLS.

Each test uses a certificate issued by a throw-away CA (trustme) that the
clients are told to trust, so certificate verification stays on, as for a
real user. Transfers are checked by sha256; that the data connection really
ran under TLS (and resumed the control connection's session) is read from
the server's own log, which runs in this process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import ftplib
import logging
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from serve_process import ketch_serve

from ketch.client import SyncClient
from ketch.protocol import security

from conftest import PASSWORD, USER, RunningServer, require_program
from ftp_helpers import free_port, log_messages, reply_to, wait_for
from payloads import MIB, sha256_bytes, sha256_file

pytestmark = pytest.mark.peer

SUBPROCESS_TIMEOUT = 60
PAYLOAD_SIZE = 3 * MIB + 12345  # several TLS records and file pieces, not a round number
SECURED = "data connection secured"


# -- fixtures and helpers ------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    key: Path
    ca: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "server.crt", directory / "server.key", directory / "ca.crt")
    issued.cert_chain_pems[0].write_to_path(str(files.certificate))
    for pem in issued.cert_chain_pems[1:]:
        pem.write_to_path(str(files.certificate), append=True)
    issued.private_key_pem.write_to_path(str(files.key))
    authority.cert_pem.write_to_path(str(files.ca))
    return files


@pytest.fixture
def make_tls_server(
    make_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> Callable[..., RunningServer]:
    def factory(**overrides: Any) -> RunningServer:
        settings = {
            "tls_certificate": str(tls_files.certificate),
            "tls_key": str(tls_files.key),
            **overrides,
        }
        return make_server(**settings)

    return factory


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="ketch.server")
    caplog.set_level(logging.DEBUG, logger="ketch.server.data")  # last: sets the handler level
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return log_messages(caplog)


def secured(caplog: pytest.LogCaptureFixture) -> list[str]:
    return log_messages(caplog, SECURED)


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "payload.bin"
    data = os.urandom(PAYLOAD_SIZE)
    path.write_bytes(data)
    return path, sha256_bytes(data)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def curl_ftps(curl: str, tls_files: TlsFiles, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run(
        [
            curl,
            "-sS",
            "-v",
            "--max-time",
            "30",
            "--cacert",
            str(tls_files.ca),
            "-u",
            f"{USER}:{PASSWORD}",
            *args,
        ]
    )


def sent(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    verbose = result.stderr.decode(errors="replace")
    return [line[2:] for line in verbose.splitlines() if line.startswith("> ")]


def curl_version(curl: str) -> tuple[int, int]:
    first = run([curl, "--version"]).stdout.decode().split()[1]
    major, minor = first.split(".")[:2]
    return int(major), int(minor)


def client_context(tls_files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files.ca))


def ftplib_tls(server: RunningServer, tls_files: TlsFiles) -> ftplib.FTP_TLS:
    ftp = ftplib.FTP_TLS(context=client_context(tls_files), timeout=10)
    ftp.connect(server.host, server.port)
    return ftp


class ControlLine:
    """A raw control connection, for what clients cannot be made to send."""

    def __init__(self, server: RunningServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        lines = [self._line()]
        while re.match(r"\d{3}-", lines[0]) and not re.match(lines[0][:3] + " ", lines[-1]):
            lines.append(self._line())
        return "".join(lines)

    def _line(self) -> str:
        line = self.file.readline().decode()
        if not line:  # at EOF readline() returns "" for ever: fail instead of spinning
            raise AssertionError("the server closed the control connection mid-reply")
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str) -> str:
        """Send one command line and return its whole reply."""
        self.send(f"{line}\r\n".encode())
        return self.reply()

    def log_in(self) -> None:
        self.command(f"USER {USER}")
        answer = self.command(f"PASS {PASSWORD}")
        assert answer.startswith("230"), answer

    def auth_tls(self, context: ssl.SSLContext) -> None:
        """AUTH TLS, its 234, then the handshake."""
        answer = self.command("AUTH TLS")
        assert answer.startswith("234"), answer
        self.secure(context)

    def secure(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlLine:
        """The connection with its greeting read (and checked)."""
        greeting = self.reply()
        assert greeting.startswith("220"), greeting
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- curl ----------------------------------------------------------------------


def test_curl_lists_downloads_and_uploads_over_explicit_tls_in_passive_mode(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    payload: tuple[Path, str],
    server_log: pytest.LogCaptureFixture,
) -> None:
    curl = require_program("curl")
    server = make_tls_server()
    source, digest = payload
    (server.home / "down.bin").write_bytes(source.read_bytes())
    base = f"ftp://{server.host}:{server.port}"

    listing = curl_ftps(curl, tls_files, "--ssl-reqd", f"{base}/")
    assert listing.returncode == 0, listing.stderr.decode()
    assert b"down.bin" in listing.stdout
    # curl tries AUTH SSL first (a synonym we accept, as vsftpd does), then PBSZ 0, PROT P.
    assert sent(listing)[0] == "AUTH SSL" and "PROT P" in sent(listing)

    download = curl_ftps(curl, tls_files, "--ssl-reqd", f"{base}/down.bin")
    assert download.returncode == 0, download.stderr.decode()
    assert sha256_bytes(download.stdout) == digest

    upload = curl_ftps(curl, tls_files, "--ssl-reqd", "-T", str(source), f"{base}/up.bin")
    assert upload.returncode == 0, upload.stderr.decode()
    assert sha256_file(server.home / "up.bin") == digest

    # Three data connections, each under TLS and resuming the control session.
    records = secured(server_log)
    assert len(records) == 3, records
    assert all("resumed=True" in record for record in records), records


def test_curl_downloads_and_uploads_over_tls_in_active_mode(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    payload: tuple[Path, str],
    server_log: pytest.LogCaptureFixture,
) -> None:
    curl = require_program("curl")
    if (7, 87) <= curl_version(curl) < (8, 0):
        pytest.skip(
            "curl 7.87-7.88 cannot do FTPS in active mode (curl issue #10666, fixed in 8.0); "
            "active mode under TLS is covered by lftp below"
        )
    server = make_tls_server()
    source, digest = payload
    (server.home / "down.bin").write_bytes(source.read_bytes())
    base = f"ftp://{server.host}:{server.port}"
    download = curl_ftps(curl, tls_files, "--ssl-reqd", "-P", "127.0.0.1", f"{base}/down.bin")
    assert download.returncode == 0, download.stderr.decode()
    assert sha256_bytes(download.stdout) == digest
    upload = curl_ftps(
        curl, tls_files, "--ssl-reqd", "-P", "127.0.0.1", "-T", str(source), f"{base}/up.bin"
    )
    assert upload.returncode == 0, upload.stderr.decode()
    assert sha256_file(server.home / "up.bin") == digest
    assert any(command.startswith("EPRT") for command in sent(download))
    assert len(secured(server_log)) == 2


def test_curl_downloads_and_uploads_over_implicit_ftps(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    payload: tuple[Path, str],
    server_log: pytest.LogCaptureFixture,
) -> None:
    curl = require_program("curl")
    implicit_port = free_port()
    server = make_tls_server(implicit_tls_port=implicit_port)
    assert server.server.implicit_tls_address == ("127.0.0.1", implicit_port)
    source, digest = payload
    (server.home / "down.bin").write_bytes(source.read_bytes())
    base = f"ftps://{server.host}:{implicit_port}"

    download = curl_ftps(curl, tls_files, f"{base}/down.bin")
    assert download.returncode == 0, download.stderr.decode()
    assert sha256_bytes(download.stdout) == digest
    assert not any(c.startswith("AUTH") for c in sent(download))  # TLS from the first byte
    upload = curl_ftps(curl, tls_files, "-T", str(source), f"{base}/up.bin")
    assert upload.returncode == 0, upload.stderr.decode()
    assert sha256_file(server.home / "up.bin") == digest
    assert len(secured(server_log)) == 2


# -- lftp (GnuTLS) -------------------------------------------------------------


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_lftp_transfers_over_tls_resuming_the_session(
    passive: bool,
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    payload: tuple[Path, str],
    server_log: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    lftp = require_program("lftp")
    server = make_tls_server()  # tls_require_session_reuse = true: GnuTLS resumes
    source, digest = payload
    (server.home / "down.bin").write_bytes(source.read_bytes())
    client = tmp_path / "client"
    client.mkdir()
    script = "; ".join(
        [
            "set net:max-retries 1",
            "set net:timeout 10",
            "set cmd:fail-exit yes",
            "set ftp:ssl-force true",
            "set ftp:ssl-protect-data true",
            "set ftp:ssl-protect-list true",
            f"set ssl:ca-file {tls_files.ca}",
            f"set ftp:passive-mode {'on' if passive else 'off'}",
            f"open -u {USER},{PASSWORD} -p {server.port} {server.host}",
            "ls",
            "get down.bin",
            f"put {source} -o up.bin",
        ]
    )
    result = run([lftp, "-d", "-c", script], cwd=client, env={**os.environ, "HOME": str(client)})
    trace = result.stderr.decode(errors="replace")
    assert result.returncode == 0, trace
    assert "---> AUTH TLS" in trace and "---> PROT P" in trace
    assert ("---> PASV" in trace) is passive and ("---> PORT" in trace) is not passive
    assert sha256_file(client / "down.bin") == digest
    uploaded = server.home / "up.bin"
    assert sha256_file(uploaded) == digest, (uploaded.stat().st_size, trace[-3000:])
    records = secured(server_log)
    assert len(records) == 3, (records, trace)
    assert all("resumed=True" in record for record in records), (records, trace)


# -- Python's ftplib (no session reuse) ----------------------------------------


def test_ftplib_transfers_over_tls_when_session_reuse_is_not_required(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    payload: tuple[Path, str],
) -> None:
    server = make_tls_server(tls_require_session_reuse=False)
    source, digest = payload
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)  # FTP_TLS sends AUTH TLS first
        ftp.prot_p()
        with source.open("rb") as file:
            ftp.storbinary("STOR up.bin", file)
        received = bytearray()
        ftp.retrbinary("RETR up.bin", received.extend)
        names = ftp.nlst()
        ftp.set_pasv(False)  # active mode: the server is still the TLS server
        active = bytearray()
        ftp.retrbinary("RETR up.bin", active.extend)
    finally:
        ftp.close()
    assert sha256_file(server.home / "up.bin") == digest
    assert sha256_bytes(bytes(received)) == digest
    assert sha256_bytes(bytes(active)) == digest
    assert "up.bin" in names


def test_ftplib_is_told_why_when_session_reuse_is_required(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    server_log: pytest.LogCaptureFixture,
) -> None:
    server = make_tls_server()
    (server.home / "file.txt").write_bytes(b"secret\n")
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)
        ftp.prot_p()
        with pytest.raises(ftplib.error_perm) as refusal:
            ftp.retrbinary("RETR file.txt", lambda _: None)
        # The session stays usable: the client can switch to clear data.
        ftp.prot_c()
        received = bytearray()
        ftp.retrbinary("RETR file.txt", received.extend)
    finally:
        ftp.close()
    text = str(refusal.value)
    assert text.startswith("522 ")
    assert "did not resume the control connection's TLS session" in text
    assert "tls_require_session_reuse = false" in text
    assert bytes(received) == b"secret\n"
    # The admin's warning names the session, or it cannot be matched to one.
    warnings = [r.getMessage() for r in server_log.records if r.levelno == logging.WARNING]
    assert warnings == [
        "protected data connection refused user=alice client=127.0.0.1 mode=PASV: "
        "no TLS session resumed"
    ]


def test_plain_bytes_on_a_data_connection_after_prot_p_are_told_to_start_tls(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    # OpenSSL calls bytes that are no TLS a WRONG_VERSION_NUMBER: the advice is to start
    # TLS (or send PROT C), not to upgrade the TLS version.
    with protected_binary_session(make_tls_server, tls_files) as (server, ftp):
        ftp._prot_p = False  # type: ignore[attr-defined]  # ftplib's switch: no TLS on data
        with ftp.transfercmd("STOR plain.txt") as data:
            data.sendall(b"plain bytes, no TLS record\r\n" * 10)
        with pytest.raises(ftplib.error_perm) as refusal:
            ftp.voidresp()
        ftp._prot_p = True  # type: ignore[attr-defined]
    text = str(refusal.value)
    assert text.startswith("522 ") and "WRONG_VERSION_NUMBER" in text, text
    assert "start TLS on the data connection after PROT P, or send PROT C" in text, text
    assert "TLS 1.2 or newer" not in text
    assert not (server.home / "plain.txt").exists()


# -- tls_required ----------------------------------------------------------------


def test_plaintext_login_is_refused_when_tls_is_required_for_control(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    server_log: pytest.LogCaptureFixture,
) -> None:
    server = make_tls_server(tls_required="control")
    plain = ftplib.FTP(timeout=10)
    plain.connect(server.host, server.port)
    try:
        user_reply = reply_to(plain, f"USER {USER}")
        pass_reply = reply_to(plain, f"PASS {PASSWORD}")
    finally:
        plain.close()
    assert user_reply.startswith(
        "530 This server requires TLS: send AUTH TLS before USER (use ftps:// or --ftps)"
    )
    assert pass_reply.startswith("530 This server requires TLS")
    # A password just crossed the network in the clear: the admin hears of it.
    refusals = log_messages(server_log, "refused ")
    assert refusals == [
        f'refused {verb} user=- client=127.0.0.1: no TLS under tls_required = "control"'
        for verb in ("USER", "PASS")
    ]
    secure = ftplib_tls(server, tls_files)
    try:
        assert secure.login(USER, PASSWORD).startswith("230")
        assert secure.pwd() == "/"
    finally:
        secure.close()


def test_clear_data_is_refused_with_521_when_tls_is_required_for_all(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    server_log: pytest.LogCaptureFixture,
) -> None:
    server = make_tls_server(tls_required="all", tls_require_session_reuse=False)
    (server.home / "file.txt").write_bytes(b"data\n")
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)  # no PROT P: data connections stay clear (RFC 2228)
        refusals = {}
        for verb in ("NLST", "LIST", "MLSD", "RETR file.txt", "STOR new.txt", "APPE new.txt"):
            with pytest.raises(ftplib.error_perm) as refusal:
                ftp.transfercmd(verb)
            refusals[verb] = str(refusal.value)
        ftp.prot_p()
        names = ftp.nlst()
    finally:
        ftp.close()
    for verb, text in refusals.items():
        assert text.startswith("521 "), (verb, text)
        assert "send PBSZ 0 and PROT P" in text, (verb, text)
    assert names == ["file.txt"]  # nothing was stored in the clear
    logged = log_messages(server_log, "refused ")
    assert logged == [
        f"refused {verb.split()[0]} user={USER} client=127.0.0.1: clear data connection "
        '(PROT C) under tls_required = "all"'
        for verb in refusals
    ]


def test_prot_c_is_refused_with_534_when_tls_is_required_for_all(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    server_log: pytest.LogCaptureFixture,
) -> None:
    # RFC 2228 (PROT): a level the server "is not willing to accept" gets 534, at PROT
    # time: the client hears it there, not first when a transfer is refused with 521.
    server = make_tls_server(tls_required="all", tls_require_session_reuse=False)
    (server.home / "file.txt").write_bytes(b"data\n")
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)
        ftp.prot_p()
        with pytest.raises(ftplib.error_perm) as refusal:
            ftp.prot_c()
        names = ftp.nlst()  # still PROT P: the refused level changed nothing
    finally:
        ftp.close()
    text = str(refusal.value)
    assert text.startswith("534 ") and "send PROT P" in text, text
    assert names == ["file.txt"]
    assert log_messages(server_log, "refused ") == [
        f"refused PROT user={USER} client=127.0.0.1: clear data connection (PROT C) under "
        'tls_required = "all"'
    ]


def test_a_data_command_the_dispatch_check_misses_is_still_refused_in_the_clear(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    monkeypatch: pytest.MonkeyPatch,
    server_log: pytest.LogCaptureFixture,
) -> None:
    # As MLSD once was: a data command missing from the list dispatch consults.
    monkeypatch.setattr(security, "TRANSFER_COMMANDS", frozenset())
    server = make_tls_server(tls_required="all", tls_require_session_reuse=False)
    (server.home / "file.txt").write_bytes(b"data\n")
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)  # no PROT P: data connections stay clear
        with pytest.raises(ftplib.error_perm) as refusal:
            ftp.nlst()
        ftp.prot_p()
        names = ftp.nlst()
    finally:
        ftp.close()
    assert str(refusal.value).startswith("521 "), refusal.value
    assert names == ["file.txt"]
    # The refusal is logged, for the session it concerns.
    refused = [m for m in messages(server_log) if m.startswith("refused NLST")]
    assert refused == [
        "refused NLST user=alice client=127.0.0.1: clear data connection (PROT C) under "
        'tls_required = "all"'
    ]


def test_garbage_inside_a_tls_upload_is_a_426_tls_error_and_nothing_is_stored(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = make_tls_server(tls_require_session_reuse=False)
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)
        ftp.prot_p()
        conn = ftp.transfercmd("STOR up.bin")
        conn.sendall(b"x" * 1000)
        # Bytes that are no TLS record, written under the TLS layer: what a broken
        # middlebox or an attacker on the path would inject.
        os.write(conn.fileno(), b"\x17\x03\x03\x00\x10" + b"not a tls record")
        with pytest.raises(ftplib.error_temp) as failure:
            ftp.voidresp()
        conn.close()
    finally:
        ftp.close()
    assert str(failure.value).startswith("426 TLS error on the data connection"), failure.value
    assert not (server.home / "up.bin").exists()  # an atomic upload that failed leaves nothing


# -- the control connection ------------------------------------------------------


def test_tls_1_1_client_is_refused_and_the_server_keeps_serving(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = make_tls_server()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(tls_files.ca))
    with pytest.warns(DeprecationWarning):
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    with ControlLine(server) as line:
        assert line.command("AUTH TLS").startswith("234")
        with pytest.raises(ssl.SSLError) as failure:
            line.secure(old)
    # The client did offer TLS 1.1; the server refused it.
    assert failure.value.reason != "NO_PROTOCOLS_AVAILABLE"
    assert wait_for(lambda: server.counters.get("tls_handshake_failed") == 1)
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)
        assert ftp.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
    finally:
        ftp.close()


def test_a_failed_auth_tls_handshake_ends_the_session_and_frees_its_slot(
    make_tls_server: Callable[..., RunningServer],
) -> None:
    """Garbage after AUTH TLS's 234 must not leave a session (and a connection slot) behind.

    Else anyone could fill max_connections with two lines each: the session must
    end, and its close must not wait for a connection TLS has taken over.
    """
    server = make_tls_server(max_connections_per_ip=1)
    with ControlLine(server) as line:
        assert line.command("AUTH TLS").startswith("234")
        line.send(b"NOT A CLIENT HELLO\r\n" * 10)
        assert wait_for(lambda: server.counters.get("tls_handshake_failed") == 1)

    def session_count() -> int:
        return len(server.server.sessions)

    assert wait_for(lambda: session_count() == 0, timeout=15), "the session was left behind"
    with ControlLine(server) as again:  # the one slot is free again: a 220, not a 421
        assert again.command("QUIT").startswith("221")


def test_commands_sent_in_the_clear_after_auth_tls_are_dropped(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = make_tls_server()
    with ControlLine(server) as line:
        # An attacker in the path appends a command to the client's AUTH TLS.
        line.send(f"AUTH TLS\r\nUSER {USER}\r\n".encode())
        assert line.reply().startswith("234")
        line.secure(client_context(tls_files))
        answer = line.command(f"PASS {PASSWORD}")
    assert answer.startswith("503 Send USER first"), answer


def test_auth_tls_drops_options_chosen_in_the_clear(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = make_tls_server()
    with ControlLine(server) as line:
        # Sent in the clear, where anyone on the path could have put it.
        assert line.command("OPTS HASH MD5").startswith("200")
        line.auth_tls(client_context(tls_files))
        line.log_in()
        answer = line.command("OPTS HASH")
    assert answer.strip() == "200 SHA-256", answer


def test_auth_tls_ends_a_login_made_in_the_clear(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = make_tls_server()
    with ControlLine(server) as line:
        line.log_in()
        line.auth_tls(client_context(tls_files))
        answer = line.command("PWD")
    assert answer.startswith("530 Please log in"), answer


def test_rein_keeps_tls_on_the_control_connection_and_resets_pbsz_and_prot(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    # REIN puts the session back as it was once the connection was secured (RFC 959:
    # "all parameters are reset to the default settings"): PROT goes back to C, RFC
    # 2228's default, and PBSZ, which has no default, must come again before PROT P.
    server = make_tls_server(tls_required="all")
    with ControlLine(server) as line:
        line.auth_tls(client_context(tls_files))
        assert line.command("PBSZ 0").startswith("200")
        assert line.command("PROT P").startswith("200")
        line.log_in()
        assert line.command("REIN").startswith("220")
        # The same TLS connection goes on: the login is not refused as one in the clear.
        line.log_in()
        again = line.command("AUTH TLS")
        assert again.startswith("503 The control connection already runs over TLS"), again
        prot_first = line.command("PROT P")
        assert prot_first.startswith("503 Send PBSZ 0 before PROT"), prot_first
        assert line.command("EPSV").startswith("229")
        clear_listing = line.command("NLST")  # data is clear again: tls_required refuses
        assert clear_listing.startswith("521 ") and "PROT P" in clear_listing, clear_listing
        assert line.command("PBSZ 0").startswith("200")
        assert line.command("PROT P").startswith("200 PROT P accepted")


def test_security_commands_answer_in_rfc_4217_order(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    server = make_tls_server()
    answers = {}
    with ControlLine(server) as line:
        for command in ("PBSZ 0", "PROT P", "CCC"):
            answers[f"clear {command}"] = line.command(command)
        line.auth_tls(client_context(tls_files))
        for command in ("PROT P", "PBSZ 0", "PROT S", "PROT X", "PROT P", "CCC", "AUTH TLS"):
            answers.setdefault(command, line.command(command))
    assert answers["clear PBSZ 0"].startswith("503 PBSZ needs a TLS control connection")
    assert answers["clear PROT P"].startswith("503 ")
    assert answers["clear CCC"].startswith("533 ")
    assert answers["PROT P"].startswith("503 Send PBSZ 0 before PROT")
    assert answers["PBSZ 0"].startswith("200 ")
    assert answers["PROT S"].startswith("536 ")
    assert answers["PROT X"].startswith("504 ")
    assert answers["CCC"].startswith("534 CCC refused")
    assert answers["AUTH TLS"].startswith("503 ")


def test_feat_offers_tls_only_when_a_certificate_is_configured(
    make_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    plain = make_server()
    with_tls = make_server(tls_certificate=str(tls_files.certificate), tls_key=str(tls_files.key))
    features = {}
    for name, server in (("plain", plain), ("tls", with_tls)):
        ftp = ftplib.FTP(timeout=10)
        ftp.connect(server.host, server.port)
        try:
            features[name] = ftp.sendcmd("FEAT")
            auth = reply_to(ftp, "AUTH TLS") if name == "plain" else ""
        finally:
            ftp.close()
        if name == "plain":
            assert auth.startswith("502 TLS is not configured")
    assert "AUTH TLS" not in features["plain"] and "PROT" not in features["plain"]
    for line in (" AUTH TLS", " PBSZ", " PROT"):
        assert line in features["tls"].splitlines()


# -- ketch cert and ketch serve --tls ------------------------------------------------


def test_ketch_cert_writes_a_certificate_that_loads_and_names_the_host(tmp_path: Path) -> None:
    result = run(
        [
            *_ketch(),
            "cert",
            "--host",
            "ftp.example.org",
            "--host",
            "192.0.2.7",
            "--out",
            str(tmp_path),
            "--days",
            "30",
        ]
    )
    assert result.returncode == 0, result.stderr.decode()
    certificate, key = tmp_path / "ftp.example.org.crt", tmp_path / "ftp.example.org.key"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    assert key.stat().st_mode & 0o777 == 0o600
    parsed = x509.load_pem_x509_certificate(certificate.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["ftp.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    output = result.stdout.decode()
    assert parsed.fingerprint(_sha256()).hex(":").upper() in output
    again = run([*_ketch(), "cert", "--host", "ftp.example.org", "--out", str(tmp_path)])
    assert again.returncode == 1 and b"--force" in again.stderr


def test_ketch_cert_names_its_files_by_absolute_path(tmp_path: Path) -> None:
    # The "use it" line goes into a configuration read from another directory.
    result = run([*_ketch(), "cert", "--host", "h.example", "--out", "certs"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    output = result.stdout.decode()
    certificate = tmp_path / "certs" / "h.example.crt"
    assert f"tls_certificate = {str(certificate)!r}" in output
    assert f"--tls-key {tmp_path / 'certs' / 'h.example.key'}" in output


def test_ketch_cert_writes_a_non_ascii_host_name_in_its_idna_form(tmp_path: Path) -> None:
    result = run([*_ketch(), "cert", "--host", "ünïcode.example", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr.decode()
    certificate = tmp_path / "xn--ncode-cta3g.example.crt"
    parsed = x509.load_pem_x509_certificate(certificate.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["xn--ncode-cta3g.example"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, tmp_path / "xn--ncode-cta3g.example.key")


@pytest.mark.parametrize(
    "host", [".", "..", "exa_mple..com", "a:b", "a\x01b", "-dash.example", "a b", ""]
)
def test_ketch_cert_refuses_what_is_no_host_name_or_ip_address(host: str, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = run([*_ketch(), "cert", "--host", "ok.example", "--host", host, "--out", str(out)])
    error = result.stderr.decode()
    assert result.returncode == 2, error
    assert f"--host {host!r}: not a host name or IP address; give a name such as" in error
    assert "Traceback" not in error
    assert not out.exists()  # no files named after it, such as certs/..crt


def test_an_implicit_port_chosen_at_start_up_is_named_in_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    args = ["--tls", "--implicit-tls-port", "0", "--port", "0", "--listen", "127.0.0.1"]
    with ketch_serve(args, cwd=tmp_path) as server:
        summary = "".join(server.stdout)
        found = re.search(r"implicit \(ftps://\) on port (\d+),", summary)
        assert found is not None, summary
        with socket.create_connection(("127.0.0.1", int(found[1])), timeout=10):
            pass  # it is the port really listened on


def test_ketch_serve_tls_generates_a_certificate_and_says_so_with_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    curl = require_program("curl")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello over tls\n")
    port = free_port()
    args = [
        "--tls",
        "--workers",  # the supervisor loads the certificate; the workers inherit it
        "2",
        "--passive-ports",
        "42100-42109",
        "--tls-required",
        "control",
        "--port",
        str(port),
        "--listen",
        "127.0.0.1",
        "--root",
        str(root),
    ]
    with ketch_serve(args, cwd=tmp_path) as server:
        summary = "".join(server.stdout)
        certificate = tmp_path / "state" / "ketch" / "serve.crt"
        assert "generated by --tls" in summary
        assert str(certificate) in summary
        parsed = x509.load_pem_x509_certificate(certificate.read_bytes())
        fingerprint = parsed.fingerprint(_sha256()).hex(":").upper()
        assert f"SHA-256 fingerprint {fingerprint}" in summary
        result = run(
            [
                curl,
                "-sS",
                "--max-time",
                "20",
                "--ssl-reqd",
                "--cacert",
                str(certificate),
                f"ftp://127.0.0.1:{port}/hello.txt",
            ]
        )
        assert result.returncode == 0, result.stderr.decode() + server.output()
        assert result.stdout == b"hello over tls\n"
        # tls_required = control: no login in the clear. USER gets 530, which curl
        # reports as CURLE_LOGIN_DENIED (67); -v shows the server's reply line.
        refused = run([curl, "-sS", "-v", "--max-time", "20", f"ftp://127.0.0.1:{port}/hello.txt"])
        verbose = refused.stderr.decode(errors="replace")
        assert refused.returncode == 67, verbose
        assert "< 530 This server requires TLS: send AUTH TLS before USER" in verbose, verbose
        assert refused.stdout == b""


@pytest.mark.parametrize(
    ("certificate", "required", "trust"),
    [
        ("generated by --tls", "control", "--cacert"),
        ("self-signed by ketch cert", "all", "--cacert"),
        ("issued by a CA", "control", "-k"),
    ],
)
def test_the_summary_try_line_works_when_tls_is_required(
    certificate: str,
    required: str,
    trust: str,
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ketch.tools.certificates import write_certificate

    curl = require_program("curl")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    (tmp_path / "hello.txt").write_bytes(b"hello\n")
    if certificate == "generated by --tls":
        tls_args = ["--tls"]
    else:
        pair = (
            write_certificate(tmp_path / "certs", ["127.0.0.1"])
            if certificate == "self-signed by ketch cert"
            else tls_files
        )
        tls_args = ["--tls-certificate", str(pair.certificate), "--tls-key", str(pair.key)]
    args = [*tls_args, "--tls-required", required, "--port", str(free_port())]
    with ketch_serve([*args, "--listen", "127.0.0.1", "--root", str(tmp_path)], tmp_path) as server:
        line = server.wait_for("  try      curl", stream="stdout")  # the last line
        command = shlex.split(line.split("try", 1)[1], comments=True)
        assert command[0] == "curl" and "--ssl-reqd" in command and trust in command, line
        result = run([curl, *command[1:]])
    assert result.returncode == 0, line + result.stderr.decode() + server.output()
    assert b"hello.txt" in result.stdout


def _ketch() -> list[str]:
    import sys

    return [sys.executable, "-m", "ketch"]


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


@contextlib.contextmanager
def protected_binary_session(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles, big_file: bool = False
) -> Iterator[tuple[RunningServer, ftplib.FTP_TLS]]:
    """alice logged in over TLS with PROT P and TYPE I (and a 32 MiB big.bin to fetch)."""
    server = make_tls_server(tls_require_session_reuse=False)
    if big_file:
        (server.home / "big.bin").write_bytes(os.urandom(32 * MIB))
    ftp = ftplib_tls(server, tls_files)
    try:
        ftp.login(USER, PASSWORD)
        ftp.prot_p()
        ftp.voidcmd("TYPE I")
        yield server, ftp
        assert ftp.pwd() == "/"  # the session goes on
    finally:
        ftp.close()


def test_abor_during_a_protected_download_answers_426_then_226_and_the_session_goes_on(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    with protected_binary_session(make_tls_server, tls_files, big_file=True) as (server, ftp):
        conn = ftp.transfercmd("RETR big.bin")
        first = conn.recv(65536)  # the transfer runs; the client stops reading
        ftp.sock.sendall(b"ABOR\r\n")
        replies = [ftp.getline(), ftp.getline()]
        conn.close()
    assert first
    assert replies[0].startswith("426 ") and replies[1].startswith("226 "), replies
    assert wait_for(lambda: server.counters.get("transfer_aborted") == 1)


def test_a_protected_download_the_client_closes_early_is_told_as_such(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    # The client going away is no "TLS error" hinting at damage on the path.
    with protected_binary_session(make_tls_server, tls_files, big_file=True) as (_, ftp):
        conn = ftp.transfercmd("RETR big.bin")
        assert conn.recv(1000)
        conn.close()  # no close_notify, unread data: the server's next write fails
        with pytest.raises(ftplib.error_temp) as failure:
            ftp.voidresp()
    assert str(failure.value).startswith("426 Data connection closed by the other side")


def test_an_upload_cut_off_without_close_notify_is_refused_and_not_stored(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    with protected_binary_session(make_tls_server, tls_files) as (server, ftp):
        conn = ftp.transfercmd("STOR cut.bin")
        conn.sendall(os.urandom(100_000))
        conn.close()  # Python closes a TLS socket without close_notify: a truncation
        with pytest.raises(ftplib.error_temp) as refusal:
            ftp.voidresp()
    assert str(refusal.value).startswith("426 ")
    assert "without TLS close_notify" in str(refusal.value)
    assert not (server.home / "cut.bin").exists()
    assert not [path.name for path in server.home.iterdir() if path.name.startswith(".ketch")]


@pytest.mark.parametrize("renewal", ["EC", "RSA"])
def test_sighup_serves_a_renewed_certificate_and_older_sessions_keep_theirs(
    tmp_path: Path, renewal: str
) -> None:
    # An RSA certificate after the EC one `ketch cert` makes: loaded into the live context
    # it sat beside the EC one, which most clients went on getting.
    from ketch.tools.certificates import write_certificate

    old = write_certificate(tmp_path / "old", ["127.0.0.1"], days=5)
    if renewal == "EC":
        renewed = write_certificate(tmp_path / "new", ["127.0.0.1"], days=90)
        new_certificate, new_key = renewed.certificate.read_bytes(), renewed.key.read_bytes()
    else:
        issued = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
            "127.0.0.1", key_type=trustme.KeyType.RSA
        )
        new_certificate = issued.cert_chain_pems[0].bytes()
        new_key = issued.private_key_pem.bytes()
    new_fingerprint = (
        x509.load_pem_x509_certificate(new_certificate).fingerprint(_sha256()).hex(":").upper()
    )
    live_certificate, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    live_certificate.write_bytes(old.certificate.read_bytes())
    live_key.write_bytes(old.key.read_bytes())
    root = tmp_path / "root"
    root.mkdir()
    (root / "seen.txt").write_bytes(b"seen\n")
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(
        f'listen_address = "127.0.0.1"\nport = {port}\nroot = "{root}"\n'
        f'tls_certificate = "{live_certificate}"\ntls_key = "{live_key}"\n'
    )
    with ketch_serve(["--config", str(config)], cwd=tmp_path) as server:
        assert _served_fingerprint(port) == old.fingerprint
        # A session begun before the reload, whose data connections must resume its TLS
        # session (tls_require_session_reuse, the default) after it.
        with SyncClient(
            "127.0.0.1", port, tls="explicit", cafile=str(old.certificate), timeout=20
        ) as earlier:
            assert earlier.nlst() == ["seen.txt"]
            live_certificate.write_bytes(new_certificate)
            live_key.write_bytes(new_key)
            mark = len(server.stderr)
            server.signal(signal.SIGHUP)
            server.wait_for("loaded for new connections", start=mark)
            assert _served_fingerprint(port) == new_fingerprint
            assert earlier.nlst() == ["seen.txt"]


def test_a_certificate_added_to_the_file_replaces_the_one_tls_generated_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --tls generates a certificate when none is configured, not over one configured later.
    from ketch.tools.certificates import describe_certificate, write_certificate

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    port = free_port()
    config = tmp_path / "ketch.toml"
    plain = f'listen_address = "127.0.0.1"\nport = {port}\nroot = "{tmp_path}"\n'
    config.write_text(plain)
    with ketch_serve(["--tls", "--config", str(config)], cwd=tmp_path) as server:
        state = tmp_path / "state" / "ketch"
        generated = describe_certificate(state / "serve.crt", state / "serve.key")
        assert _served_fingerprint(port) == generated.fingerprint
        mine = write_certificate(tmp_path / "mine", ["127.0.0.1"])
        config.write_text(
            plain + f'tls_certificate = "{mine.certificate}"\ntls_key = "{mine.key}"\n'
        )
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        line = server.wait_for("loaded for new connections", start=mark)
        assert (
            f"{mine.certificate} (configured, so used instead of the one --tls generated)" in line
        )
        assert _served_fingerprint(port) == mine.fingerprint
        config.write_text(plain)  # taken out again: back to the generated one
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        line = server.wait_for("for new connections", start=mark)
        assert f"{generated.certificate} (generated by --tls, as none is configured)" in line
        assert _served_fingerprint(port) == generated.fingerprint


_DAY = datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("valid_from", "valid_until", "summary_says", "warning_says"),
    [
        (
            datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
            datetime.datetime(2020, 1, 3, tzinfo=datetime.UTC),
            "EXPIRED on 2020-01-03",
            "has expired",
        ),
        (2 * _DAY, 60 * _DAY, "NOT VALID before", "is not valid yet"),
        (-30 * _DAY, 5 * _DAY, ", in 4 day(s)", "expires in 4 day(s)"),
    ],
    ids=["expired", "not-yet-valid", "expiring-soon"],
)
def test_a_certificate_outside_its_dates_is_warned_about_at_start_and_on_reload(
    tmp_path: Path,
    valid_from: datetime.datetime | datetime.timedelta,
    valid_until: datetime.datetime | datetime.timedelta,
    summary_says: str,
    warning_says: str,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = (
        now + when if isinstance(when, datetime.timedelta) else when
        for when in (valid_from, valid_until)
    )
    issued = trustme.CA().issue_cert("127.0.0.1", not_before=not_before, not_after=not_after)
    certificate, key = tmp_path / "dated.crt", tmp_path / "dated.key"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(
        f'listen_address = "127.0.0.1"\nport = {port}\nroot = "{tmp_path}"\n'
        f'tls_certificate = "{certificate}"\ntls_key = "{key}"\n'
    )
    dates = (f"{not_before:%Y-%m-%d}", f"{not_after:%Y-%m-%d}")
    with ketch_serve(["--config", str(config)], cwd=tmp_path) as server:
        assert summary_says in "".join(server.stdout)
        warning = server.wait_for(warning_says)
        assert "WARNING" in warning and str(certificate) in warning
        assert all(date in warning for date in dates) and "ketch cert" in warning, warning
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        reloaded = server.wait_for(
            f"reload: TLS certificate {certificate} {warning_says}", start=mark
        )
        assert "WARNING" in reloaded and all(date in reloaded for date in dates)
        # Served all the same: the admin may be in the middle of renewing it.
        fingerprint = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
        assert _served_fingerprint(port) == fingerprint.fingerprint(_sha256()).hex(":").upper()


def _served_fingerprint(port: int) -> str:
    """The SHA-256 fingerprint of the certificate AUTH TLS presents on ``port``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only looking at which certificate is served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        file = raw.makefile("rb")
        assert file.readline().startswith(b"220")
        raw.sendall(b"AUTH TLS\r\n")
        assert file.readline().startswith(b"234")
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).fingerprint(_sha256()).hex(":").upper()


def test_connection_limits_apply_on_the_implicit_port_before_any_tls_handshake(
    make_tls_server: Callable[..., RunningServer], tls_files: TlsFiles
) -> None:
    implicit_port = free_port()
    server = make_tls_server(implicit_tls_port=implicit_port, max_connections_per_ip=1)
    first = client_context(tls_files).wrap_socket(
        socket.create_connection((server.host, implicit_port), timeout=10),
        server_hostname="127.0.0.1",
    )
    try:
        assert first.recv(1024).startswith(b"220")
        # The second connection from this address is over the limit: closed at once,
        # without the server waiting (up to 30 s) for a ClientHello that never comes.
        with socket.create_connection((server.host, implicit_port), timeout=5) as second:
            assert second.recv(1) == b""
    finally:
        first.close()


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_implicit_ftps_takes_a_client_hello_sent_with_the_connection(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    monkeypatch: pytest.MonkeyPatch,
    loop_name: str,
) -> None:
    """Clients send their ClientHello as soon as TCP connects, before the server has
    admitted the connection. Under uvloop a plain protocol read it first, so TLS never
    saw it and the handshake waited for its timeout, about one connection in three."""
    monkeypatch.setenv("KETCH_EVENT_LOOP", loop_name)  # the in-process server's loop
    implicit_port = free_port()
    server = make_tls_server(implicit_tls_port=implicit_port, max_connections_per_ip=100)
    context = client_context(tls_files)

    def banner(_: int) -> bytes:
        raw = socket.create_connection((server.host, implicit_port), timeout=5)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(1024)

    # Many at once, so that the server's loop has other work queued when they arrive.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        banners = list(pool.map(banner, range(48)))
    assert all(line.startswith(b"220") for line in banners)


def test_stopping_the_server_ends_implicit_handshakes_in_progress(
    make_tls_server: Callable[..., RunningServer],
) -> None:
    """A connection to the implicit port that never says ClientHello must not outlive
    the server (its handshake task was left pending, its socket open)."""
    implicit_port = free_port()
    server = make_tls_server(implicit_tls_port=implicit_port)
    with socket.create_connection((server.host, implicit_port), timeout=5) as silent:
        assert wait_for(lambda: server.server.limits.total == 1), "never admitted"
        server.stop()
        assert silent.recv(1) == b""
    assert server.server.limits.total == 0


def test_lftp_downloads_over_implicit_ftps(
    make_tls_server: Callable[..., RunningServer],
    tls_files: TlsFiles,
    payload: tuple[Path, str],
    server_log: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    lftp = require_program("lftp")
    implicit_port = free_port()
    server = make_tls_server(implicit_tls_port=implicit_port)
    source, digest = payload
    (server.home / "down.bin").write_bytes(source.read_bytes())
    client = tmp_path / "client"
    client.mkdir()
    script = "; ".join(
        [
            "set net:max-retries 1",
            "set net:timeout 10",
            "set cmd:fail-exit yes",
            f"set ssl:ca-file {tls_files.ca}",
            f"open -u {USER},{PASSWORD} ftps://{server.host}:{implicit_port}",
            "get down.bin",
        ]
    )
    result = run([lftp, "-d", "-c", script], cwd=client, env={**os.environ, "HOME": str(client)})
    trace = result.stderr.decode(errors="replace")
    assert result.returncode == 0, trace
    assert "---> AUTH" not in trace
    assert sha256_file(client / "down.bin") == digest
    assert len(secured(server_log)) == 1, trace  # lftp sends PROT P, or relies on it
