"""ketch's client over FTPS against vsftpd, configured as strictly as real servers are.

The vsftpd here allows nothing but TLS (logins and data) and has
``require_ssl_reuse=YES``: a data connection must resume the control
connection's TLS session, or vsftpd refuses it with 522. Python's
``ftplib.FTP_TLS`` does not resume sessions and fails there (a test shows
it); ketch's client must work, in passive and active mode, through the
library and the ``ketch`` command. Certificates come from a throw-away CA
(trustme), so the tests also show what a user sees when the CA is unknown.
"""

from __future__ import annotations

import asyncio
import ftplib
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.client import Client, PermanentReplyError
from ketch.client.control import ControlConnection

from conftest import PASSWORD, USER, RunningServer
from ftp_helpers import ok, one_error_line
from ftp_helpers import run_ketch as ketch
from payloads import MIB, sha256_file
from peer_servers import (
    PeerServer,
    TlsFiles,
    make_tls_files,
    pure_ftpd_tls_args,
    vsftpd_tls_config,
)

pytestmark = pytest.mark.peer

MODES = ("passive", "active")
EXPECTED_COMMAND = {"passive": "EPSV", "active": "EPRT"}


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def vsftpd_tls(make_vsftpd: Callable[..., PeerServer], tls_files: TlsFiles) -> PeerServer:
    """vsftpd with explicit FTPS only, and TLS session reuse required on data connections."""
    return make_vsftpd(extra_config=vsftpd_tls_config(tls_files))


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


def url(server: PeerServer, path: str = "", scheme: str = "ftp") -> str:
    return f"{scheme}://{server.host}:{server.port}/{path}"


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(left, MIB))
            digest.update(chunk)
            file.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


# -- the library -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_files_round_trip_over_explicit_ftps_with_session_reuse_required(
    vsftpd_tls: PeerServer, tls_files: TlsFiles, tmp_path: Path, mode: str
) -> None:
    sizes = {"empty.bin": 0, "one.bin": MIB, "twenty.bin": 20 * MIB}
    digests = {name: random_file(tmp_path / name, size) for name, size in sizes.items()}

    async def scenario() -> None:
        async with Client(
            vsftpd_tls.host,
            vsftpd_tls.port,
            user=vsftpd_tls.user,
            password=vsftpd_tls.password,
            mode=mode,  # type: ignore[arg-type]
            tls="explicit",
            cafile=str(tls_files.ca_file),
            data_connect_timeout=5,
            timeout=30,
        ) as ftp:
            for name in sizes:
                result = await ftp.upload(tmp_path / name, f"pub/{name}")
                assert result.mode == EXPECTED_COMMAND[mode]
                assert sha256_file(vsftpd_tls.writable / name) == digests[name]
            listed = {entry.name: entry.size for entry in await ftp.list("pub")}
            assert listed == sizes
            for name in sizes:
                back = tmp_path / f"back-{name}"
                result = await ftp.download(f"pub/{name}", back)
                assert result.mode == EXPECTED_COMMAND[mode]
                assert sha256_file(back) == digests[name]

    run(scenario())
    assert "No SSL session reuse" not in vsftpd_tls.log()


def test_ftplib_fails_where_ketch_resumes_the_tls_session(
    vsftpd_tls: PeerServer, tls_files: TlsFiles
) -> None:
    """The reason ketch resumes sessions: without that, this server refuses every transfer."""
    ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(tls_files.ca_file)))
    ftp.connect(vsftpd_tls.host, vsftpd_tls.port, timeout=10)
    try:
        ftp.login(vsftpd_tls.user, vsftpd_tls.password)
        ftp.prot_p()
        with pytest.raises(ftplib.error_perm, match=r"522 .*session reuse required"):
            ftp.nlst("pub")
    finally:
        ftp.close()


def test_a_data_connection_the_server_refuses_says_what_the_server_said(
    vsftpd_tls: PeerServer, tls_files: TlsFiles
) -> None:
    """ketch made to offer no session fails like ftplib, and passes vsftpd's 522 on."""

    async def scenario() -> None:
        async with Client(
            vsftpd_tls.host,
            vsftpd_tls.port,
            user=vsftpd_tls.user,
            password=vsftpd_tls.password,
            tls="explicit",
            cafile=str(tls_files.ca_file),
            timeout=20,
        ) as ftp:
            ftp.control.__class__ = _NoSessionControl
            with pytest.raises(PermanentReplyError, match=r"522 .*session reuse required"):
                await ftp.list("pub")
            # (vsftpd then ends the session: no later command to check.)

    run(scenario())


class _NoSessionControl(ControlConnection):
    """A control connection that offers data connections no TLS session to resume."""

    @property
    def tls_session(self) -> None:
        return None


# -- the command line --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_ketch_put_ls_get_over_ftps(
    vsftpd_tls: PeerServer, tls_files: TlsFiles, tmp_path: Path, mode: str
) -> None:
    digest = random_file(tmp_path / "data.bin", MIB + 7)
    tls = ["--ftps", "--cacert", str(tls_files.ca_file), f"--{mode}"]
    stderr = ok(ketch(tmp_path, "put", "-v", *tls, "data.bin", url(vsftpd_tls, "pub/")))
    assert "> AUTH TLS" in stderr and "> PROT P" in stderr
    assert "data connection: TLSv1.3, TLS session resumed" in stderr
    assert f"via {EXPECTED_COMMAND[mode]}" in stderr
    assert sha256_file(vsftpd_tls.writable / "data.bin") == digest

    listing = ketch(tmp_path, "ls", "--names", *tls, url(vsftpd_tls, "pub/"))
    ok(listing)
    assert listing.stdout.decode().split() == ["data.bin"]

    ok(ketch(tmp_path, "get", *tls, url(vsftpd_tls, "pub/data.bin"), "back.bin"))
    assert sha256_file(tmp_path / "back.bin") == digest


def test_an_unknown_ca_is_a_clear_certificate_error(vsftpd_tls: PeerServer, tmp_path: Path) -> None:
    # The system's CAs do not know the test CA.
    line = one_error_line(ketch(tmp_path, "ls", "--ftps", url(vsftpd_tls, "pub/")), 3)
    assert "TLS certificate of 127.0.0.1 is not trusted" in line
    assert "--cacert" in line
    # Nor does another CA.
    other = make_tls_files(tmp_path / "other")
    args = ["ls", "--ftps", "--cacert", str(other.ca_file), url(vsftpd_tls, "pub/")]
    line = one_error_line(ketch(tmp_path, *args), 3)
    assert "not trusted" in line


def test_insecure_skips_the_certificate_check_and_warns(
    vsftpd_tls: PeerServer, tmp_path: Path
) -> None:
    (vsftpd_tls.writable / "seen.txt").write_bytes(b"seen\n")
    result = ketch(tmp_path, "ls", "--names", "--ftps", "--insecure", url(vsftpd_tls, "pub/"))
    stderr = ok(result)
    assert result.stdout.decode().split() == ["seen.txt"]
    assert "not checking the TLS certificate of 127.0.0.1" in stderr
    quiet = ketch(tmp_path, "ls", "-q", "--ftps", "--insecure", url(vsftpd_tls, "pub/"))
    assert ok(quiet) == ""
    both = ketch(tmp_path, "ls", "--insecure", "--cacert", "/etc/hostname", url(vsftpd_tls))
    assert both.returncode == 2 and "contradict" in both.stderr.decode()


def test_ftps_against_a_server_without_tls_says_so(
    make_server: Callable[..., RunningServer], tls_files: TlsFiles, tmp_path: Path
) -> None:
    server = make_server()
    target = f"ftp://{USER}:{PASSWORD}@{server.host}:{server.port}/"
    line = one_error_line(ketch(tmp_path, "ls", "--ftps", target), 3)
    assert "does not offer TLS: AUTH TLS answered 5" in line
    # A certificate option alone asks for TLS too: never a login in the clear.
    for option in ("--insecure", f"--cacert={tls_files.ca_file}"):
        result = ketch(tmp_path, "ls", "-v", option, target)
        stderr = result.stderr.decode()
        assert result.returncode == 3 and "does not offer TLS" in stderr, stderr
        assert "> AUTH TLS" in stderr and "> PASS" not in stderr, stderr


def test_mirror_over_ftps_keeps_remote_times(
    vsftpd_tls: PeerServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """Listings, transfers and the time-keeping of mirror work alike over TLS."""
    stamp = (int(time.time()) // 60 - 120) * 60  # a whole minute: LIST shows no seconds
    for name in ("a.txt", "b.txt"):
        path = vsftpd_tls.writable / name
        path.write_bytes(name.encode() * 100)
        os.utime(path, (stamp, stamp))
    tls = ["--ftps", "--cacert", str(tls_files.ca_file)]
    stderr = ok(ketch(tmp_path, "mirror", *tls, url(vsftpd_tls, "pub/"), "copy"))
    assert "mirror: 2 transferred" in stderr
    for name in ("a.txt", "b.txt"):
        local = tmp_path / "copy" / name
        assert local.read_bytes() == name.encode() * 100
        assert int(local.stat().st_mtime) == stamp
    again = ok(ketch(tmp_path, "mirror", *tls, url(vsftpd_tls, "pub/"), "copy"))
    assert "mirror: 0 transferred" in again and "2 skipped" in again


def test_mirror_upload_to_pure_ftpd_over_tls_keeps_times_with_mfmt(
    make_pure_ftpd: Callable[..., PeerServer], tls_files: TlsFiles, tmp_path: Path
) -> None:
    """MLSD and MFMT, the precise way mirror keeps times, over TLS with another server."""
    peer = make_pure_ftpd(extra_args=pure_ftpd_tls_args(tls_files))
    site = tmp_path / "site"
    (site / "img").mkdir(parents=True)
    stamp = int(time.time()) - 86400 * 3 + 17  # seconds too: MLSD and MFMT keep them
    for relative in ("index.html", "img/logo.png"):
        (site / relative).write_bytes(os.urandom(70000))
        os.utime(site / relative, (stamp, stamp))
    target = f"ftp://{peer.user}:{peer.password}@{peer.host}:{peer.port}/www/"
    tls = ["--ftps", "--cacert", str(tls_files.ca_file), "-v"]
    stderr = ok(ketch(tmp_path, "mirror", "--reverse", *tls, str(site), target))
    assert "mirror: 2 transferred" in stderr and stderr.count("> MFMT ") == 2
    assert "> MLSD" in stderr
    for relative in ("index.html", "img/logo.png"):
        on_server = peer.root / "www" / relative
        assert on_server.read_bytes() == (site / relative).read_bytes()
        assert int(on_server.stat().st_mtime) == stamp
    again = ok(ketch(tmp_path, "mirror", "--reverse", *tls, str(site), target))
    assert "mirror: 0 transferred" in again and "2 skipped" in again


# -- implicit FTPS -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_implicit_ftps_url(
    make_vsftpd: Callable[..., PeerServer], tls_files: TlsFiles, tmp_path: Path, mode: str
) -> None:
    server = make_vsftpd(extra_config=vsftpd_tls_config(tls_files, implicit=True))
    digest = random_file(tmp_path / "up.bin", 3 * MIB)
    tls = ["--cacert", str(tls_files.ca_file), f"--{mode}"]
    ok(ketch(tmp_path, "put", *tls, "up.bin", url(server, "pub/", scheme="ftps")))
    assert sha256_file(server.writable / "up.bin") == digest
    ok(ketch(tmp_path, "get", *tls, url(server, "pub/up.bin", scheme="ftps"), "down.bin"))
    assert sha256_file(tmp_path / "down.bin") == digest

    async def scenario() -> None:
        async with Client(
            server.host,
            server.port,
            user=server.user,
            password=server.password,
            mode=mode,  # type: ignore[arg-type]
            tls="implicit",
            cafile=str(tls_files.ca_file),
            timeout=20,
        ) as ftp:
            assert [entry.name for entry in await ftp.list("pub")] == ["up.bin"]

    run(scenario())
    # Implicit TLS on a plain FTP port: a clear handshake error, not a hang.
    plain = make_vsftpd()
    line = one_error_line(ketch(tmp_path, "ls", *tls, url(plain, "pub/", scheme="ftps")), 3)
    assert "TLS handshake with 127.0.0.1 failed" in line


# -- ketch's own server ------------------------------------------------------------


@pytest.fixture
def ketch_tls(make_server: Callable[..., RunningServer], tls_files: TlsFiles) -> RunningServer:
    """ketch's server with FTPS required for logins and data, session reuse required."""
    return make_server(
        tls_certificate=str(tls_files.server_file),
        tls_required="all",
        tls_require_session_reuse=True,
        implicit_tls_port=0,
    )


@pytest.mark.parametrize("mode", MODES)
def test_ketch_client_and_server_over_explicit_and_implicit_tls(
    ketch_tls: RunningServer, tls_files: TlsFiles, tmp_path: Path, mode: str
) -> None:
    implicit = ketch_tls.server.implicit_tls_address
    assert implicit is not None
    digest = random_file(tmp_path / "up.bin", 5 * MIB)

    async def scenario(tls: str, port: int) -> None:
        async with Client(
            ketch_tls.host,
            port,
            user=USER,
            password=PASSWORD,
            mode=mode,  # type: ignore[arg-type]
            tls=tls,  # type: ignore[arg-type]
            cafile=str(tls_files.ca_file),
            timeout=20,
        ) as ftp:
            result = await ftp.upload(tmp_path / "up.bin", f"{tls}.bin")
            assert result.mode == EXPECTED_COMMAND[mode]
            assert sha256_file(ketch_tls.home / f"{tls}.bin") == digest
            entry = await ftp.stat(f"{tls}.bin")  # MLST, and MLSD below
            assert (entry.size, entry.mtime_precision) == (5 * MIB, "second")
            assert f"{tls}.bin" in [entry.name for entry in await ftp.list()]
            await ftp.download(f"{tls}.bin", tmp_path / f"{tls}-back.bin")
            assert sha256_file(tmp_path / f"{tls}-back.bin") == digest
            assert (await ftp.verify(f"{tls}.bin", tmp_path / "up.bin")).digest == digest

    run(scenario("explicit", ketch_tls.port))
    run(scenario("implicit", implicit[1]))


def test_mirror_upload_over_tls_keeps_times_with_mfmt_and_verifies(
    ketch_tls: RunningServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "css").mkdir(parents=True)
    stamp = int(time.time()) - 7200
    for relative in ("index.html", "css/main.css"):
        (site / relative).write_bytes(relative.encode() * 50)
        os.utime(site / relative, (stamp, stamp))
    target = f"ftp://{USER}:{PASSWORD}@{ketch_tls.host}:{ketch_tls.port}/www/"
    tls = ["--ftps", "--cacert", str(tls_files.ca_file), "--verify", "-v"]
    stderr = ok(ketch(tmp_path, "mirror", "--reverse", *tls, str(site), target))
    assert "mirror: 2 transferred" in stderr
    assert stderr.count("> MFMT ") == 2 and stderr.count("> HASH ") == 2
    for relative in ("index.html", "css/main.css"):
        assert int((ketch_tls.home / "www" / relative).stat().st_mtime) == stamp
    again = ok(ketch(tmp_path, "mirror", "--reverse", *tls, str(site), target))
    assert "mirror: 0 transferred" in again and "2 skipped" in again


def test_ketch_server_refuses_data_without_session_reuse_and_the_session_goes_on(
    ketch_tls: RunningServer, tls_files: TlsFiles
) -> None:
    async def scenario() -> None:
        async with Client(
            ketch_tls.host,
            ketch_tls.port,
            user=USER,
            password=PASSWORD,
            tls="explicit",
            cafile=str(tls_files.ca_file),
            timeout=20,
        ) as ftp:
            ftp.control.__class__ = _NoSessionControl
            with pytest.raises(PermanentReplyError, match="did not resume"):
                await ftp.list()
            ftp.control.__class__ = ControlConnection
            assert await ftp.list() == []

    run(scenario())


@pytest.mark.parametrize("server", ["ketch", "vsftpd"])
def test_a_login_refused_for_want_of_tls_says_to_use_ftps(
    request: pytest.FixtureRequest, tmp_path: Path, server: str
) -> None:
    # vsftpd: "530 Anonymous sessions must use encryption."; ketch names TLS.
    if server == "ketch":
        running: RunningServer = request.getfixturevalue("ketch_tls")
        target = running.url("/")
    else:
        target = url(request.getfixturevalue("vsftpd_tls"), "pub/")
    line = one_error_line(ketch(tmp_path, "ls", target), 4)
    assert line.endswith("— the server wants TLS: use --ftps (or an ftps:// URL)"), line
