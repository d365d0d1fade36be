"""The vsftpd and pure-ftpd fixtures work: Python's ftplib drives each in PASV and PORT mode.

These tests check the test equipment, not ketch: ketch's client is tested
against the same fixtures elsewhere, and a failure here means the peers
(tests/peer_servers.py, scripts/fetch-peer-servers) are broken.
"""

from __future__ import annotations

import ftplib
import io
import socket
from collections.abc import Callable, Iterator

import pytest

from peer_servers import PeerServer

pytestmark = pytest.mark.peer

TIMEOUT = 10  # seconds, for the control connection and every data connection
PAYLOAD = b"k\x00\xff"  # 3 bytes; binary, so a text-mode transfer would show


class RecordingFTP(ftplib.FTP):
    """ftplib.FTP that remembers the verb of every command it sends."""

    def __init__(self) -> None:
        super().__init__(timeout=TIMEOUT)
        self.verbs: list[str] = []

    def putcmd(self, line: str) -> None:
        self.verbs.append(line.split(" ", 1)[0].upper())
        super().putcmd(line)


@pytest.fixture(params=["vsftpd", "pure-ftpd"])
def peer(request: pytest.FixtureRequest) -> PeerServer:
    fixture = {"vsftpd": "vsftpd_server", "pure-ftpd": "pure_ftpd_server"}[request.param]
    server: PeerServer = request.getfixturevalue(fixture)
    return server


def connect(server: PeerServer, *, passive: bool) -> RecordingFTP:
    ftp = RecordingFTP()
    ftp.connect(server.host, server.port)
    ftp.login(server.user, server.password)
    ftp.set_pasv(passive)
    if server.workdir:
        ftp.cwd(server.workdir)
    return ftp


@pytest.fixture
def session(peer: PeerServer, request: pytest.FixtureRequest) -> Iterator[RecordingFTP]:
    ftp = connect(peer, passive=request.param)
    yield ftp
    ftp.close()


@pytest.mark.parametrize("session", [True, False], ids=["pasv", "port"], indirect=True)
def test_ftplib_round_trip(peer: PeerServer, session: RecordingFTP) -> None:
    ftp = session
    passive = ftp.passiveserver
    on_disk = peer.writable

    ftp.storbinary("STOR three.bin", io.BytesIO(PAYLOAD))
    assert (on_disk / "three.bin").read_bytes() == PAYLOAD

    assert "three.bin" in ftp.nlst()
    listing: list[str] = []
    ftp.retrlines("LIST", listing.append)
    assert any(line.endswith(" three.bin") for line in listing), listing

    received = io.BytesIO()
    ftp.retrbinary("RETR three.bin", received.write)
    assert received.getvalue() == PAYLOAD

    # A file the test puts on disk (as root) can be downloaded too.
    (on_disk / "given.txt").write_bytes(b"from the test\n")
    given = io.BytesIO()
    ftp.retrbinary("RETR given.txt", given.write)
    assert given.getvalue() == b"from the test\n"

    ftp.rename("three.bin", "renamed.bin")
    assert not (on_disk / "three.bin").exists()
    assert (on_disk / "renamed.bin").read_bytes() == PAYLOAD
    ftp.delete("renamed.bin")
    assert not (on_disk / "renamed.bin").exists()

    ftp.mkd("made")
    assert (on_disk / "made").is_dir()
    ftp.rmd("made")
    assert not (on_disk / "made").exists()
    ftp.quit()

    # Every data connection was set up in the mode under test (ftplib on IPv4: PASV or PORT).
    setups = [verb for verb in ftp.verbs if verb in {"PASV", "EPSV", "PORT", "EPRT"}]
    assert setups == ["PASV" if passive else "PORT"] * 5, ftp.verbs


def test_vsftpd_cmds_denied_refuses_epsv(make_vsftpd: Callable[..., PeerServer]) -> None:
    server = make_vsftpd(extra_config={"cmds_denied": "EPSV"})
    (server.writable / "hello.txt").write_bytes(b"hello\n")
    ftp = connect(server, passive=True)
    try:
        with pytest.raises(ftplib.error_perm):
            ftp.sendcmd("EPSV")
        received = io.BytesIO()
        ftp.retrbinary("RETR hello.txt", received.write)
        assert received.getvalue() == b"hello\n"
        assert ftp.verbs.count("PASV") == 1
        ftp.quit()
    finally:
        ftp.close()


def test_servers_stop_cleanly(
    make_vsftpd: Callable[..., PeerServer], make_pure_ftpd: Callable[..., PeerServer]
) -> None:
    for server in (make_vsftpd(), make_pure_ftpd()):
        assert server.process.poll() is None
        server.stop()
        server.stop()  # idempotent
        assert server.process.returncode is not None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.host, server.port), timeout=2).close()
