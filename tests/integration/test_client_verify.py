"""``--verify`` and ``Client.hash``: the server's hash of a file against the local copy's.

Against ketch's own server (HASH, and XSHA256/XSHA1/XMD5/XCRC) for a match
and for real mismatches: a resumed transfer onto a partial copy that differs
from the original (what --verify is for), and a file changed on the server
after it was uploaded. Against pure-ftpd, which can hash nothing, --verify
must fail before anything is transferred, saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ketch.client import Client, HashUnsupported, ReplyTimedOut, VerifyFailed
from ketch.client.mirror import MirrorEvents, mirror_download

from conftest import PASSWORD, USER, RunningServer
from ftp_helpers import run_ketch as ketch
from peer_servers import PeerServer

EXIT_VERIFY_FAILED = 10
EXIT_REFUSED = 5


def one_error_line(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("ketch: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


def url(server: RunningServer, path: str) -> str:
    return f"ftp://{USER}:{PASSWORD}@{server.host}:{server.port}/{path}"


def client(
    server: RunningServer | PeerServer, user: str = USER, password: str = PASSWORD
) -> Client:
    return Client(server.host, server.port, user=user, password=password, timeout=20)


def test_get_and_put_verify_report_the_matching_hash(server: RunningServer, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "up.bin").write_bytes(data)
    put = ketch(tmp_path, "put", "-v", "--verify", "up.bin", url(server, ""))
    stderr = put.stderr.decode()
    assert put.returncode == 0, stderr
    assert "> HASH up.bin" in stderr
    assert f"verified up.bin: SHA-256 {sha256(data)} on both sides" in stderr

    get = ketch(tmp_path, "get", "--verify", url(server, "up.bin"), "down.bin")
    assert get.returncode == 0, get.stderr.decode()
    assert f"verified up.bin: SHA-256 {sha256(data)}" in get.stderr.decode()
    assert (tmp_path / "down.bin").read_bytes() == data


def test_get_verify_catches_a_resume_onto_a_different_partial_copy(
    server: RunningServer, tmp_path: Path
) -> None:
    original = b"A" * 4000 + b"B" * 4000
    (server.home / "file.bin").write_bytes(original)
    (tmp_path / "file.bin").write_bytes(b"X" * 4000)  # a partial copy, but not of this file
    line = one_error_line(
        ketch(tmp_path, "get", "-c", "--verify", url(server, "file.bin")), EXIT_VERIFY_FAILED
    )
    local = sha256(b"X" * 4000 + b"B" * 4000)
    assert f"the server's SHA-256 is {sha256(original)}, the local file's is {local}" in line
    # Not "transfer it again": the same -c would find the copy complete and fail alike.
    assert "download it again without -c" in line, line
    again = one_error_line(
        ketch(tmp_path, "get", "-c", "--verify", url(server, "file.bin")), EXIT_VERIFY_FAILED
    )
    assert "download it again without -c" in again, again
    assert ketch(tmp_path, "get", "--verify", url(server, "file.bin")).returncode == 0
    assert (tmp_path / "file.bin").read_bytes() == original


def test_put_verify_catches_a_resume_onto_a_different_partial_copy(
    server: RunningServer, tmp_path: Path
) -> None:
    (server.home / "file.bin").write_bytes(b"Z" * 100)
    (tmp_path / "file.bin").write_bytes(b"Y" * 300)
    line = one_error_line(
        ketch(tmp_path, "put", "-c", "--verify", "file.bin", url(server, "file.bin")),
        EXIT_VERIFY_FAILED,
    )
    assert sha256(b"Z" * 100 + b"Y" * 200) in line and sha256(b"Y" * 300) in line
    assert "upload it again without -c" in line, line


def test_verify_and_hash_see_a_file_changed_on_the_server(
    server: RunningServer, tmp_path: Path
) -> None:
    local = tmp_path / "notes.txt"
    local.write_bytes(b"first version\n")

    async def scenario() -> None:
        async with client(server) as ftp:
            await ftp.upload(local, "notes.txt")
            checked = await ftp.verify("notes.txt", local)
            assert (checked.algorithm, checked.digest) == ("SHA-256", sha256(b"first version\n"))
            (server.home / "notes.txt").write_bytes(b"changed on the server\n")
            with pytest.raises(VerifyFailed) as failure:
                await ftp.verify("notes.txt", local)
            assert failure.value.remote_digest == sha256(b"changed on the server\n")
            assert failure.value.local_digest == sha256(b"first version\n")
            # Other algorithms, through OPTS HASH, and the X commands without HASH.
            crc = format(zlib.crc32(b"changed on the server\n"), "08x")
            assert (await ftp.hash("notes.txt", "CRC32")).digest == crc
            assert (await ftp.hash("notes.txt", "md5")).algorithm == "MD5"
            del ftp.features["HASH"]
            via_x = await ftp.hash("notes.txt")
            assert (via_x.algorithm, via_x.digest) == (
                "SHA-256",
                sha256(b"changed on the server\n"),
            )

    run(scenario())


def test_mirror_verify_hashes_every_transferred_file(server: RunningServer, tmp_path: Path) -> None:
    tree = server.home / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"a" * 1000)
    (tree / "sub" / "b.txt").write_bytes(b"b" * 2000)
    result = ketch(tmp_path, "mirror", "-v", "--verify", url(server, "tree/"), "copy")
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "mirror: 2 transferred" in stderr
    assert "; the transferred files' hashes match the server's" in stderr
    assert stderr.count("> HASH ") == 2
    assert (tmp_path / "copy" / "sub" / "b.txt").read_bytes() == b"b" * 2000


def test_a_mirrored_copy_that_fails_verification_never_replaces_the_old_file(
    server: RunningServer, tmp_path: Path
) -> None:
    # The server's file changes once its bytes have been sent: the copy's hash then
    # differs from the server's, and the older local copy must stay as it was.
    tree = server.home / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"version 2, as sent")
    local = tmp_path / "copy"
    local.mkdir()
    (local / "a.txt").write_bytes(b"version 1")
    os.utime(local / "a.txt", (0, 0))

    class ChangeAfterSending(MirrorEvents):
        def started(self, path: str, size: int | None) -> Any:
            def progress(done: int, total: int | None) -> None:
                if total is not None and done >= total:  # replaced whole: HASH sees it
                    (tree / "new.tmp").write_bytes(b"version 3, changed after")
                    (tree / "new.tmp").rename(tree / "a.txt")

            return progress

    result = run(
        mirror_download(
            lambda: client(server), "tree", local, events=ChangeAfterSending(), verify=True
        )
    )
    assert len(result.failed) == 1 and result.failed[0].startswith("a.txt: "), result.failed
    assert f"differs from {local / 'a.txt'}" in result.failed[0], result.failed
    assert (local / "a.txt").read_bytes() == b"version 1"
    assert os.listdir(local) == ["a.txt"]


# -- a server that cannot hash ----------------------------------------------------------


@pytest.mark.peer
def test_verify_against_a_server_without_hash_fails_before_transferring(
    make_pure_ftpd: Callable[..., PeerServer], tmp_path: Path
) -> None:
    peer = make_pure_ftpd()
    (peer.root / "file.txt").write_bytes(b"content\n")
    os.chown(peer.root / "file.txt", *peer.owner)
    base = f"ftp://{peer.user}:{peer.password}@{peer.host}:{peer.port}/"
    line = one_error_line(ketch(tmp_path, "get", "--verify", base + "file.txt"), EXIT_REFUSED)
    assert "offers no command to hash a file" in line
    assert "HASH, XSHA256" in line and "--verify needs" in line
    assert not (tmp_path / "file.txt").exists()  # nothing was transferred

    (tmp_path / "up.txt").write_bytes(b"up\n")
    line = one_error_line(ketch(tmp_path, "put", "--verify", "up.txt", base), EXIT_REFUSED)
    assert "--verify needs" in line
    assert not (peer.root / "up.txt").exists()

    line = one_error_line(ketch(tmp_path, "mirror", "--verify", base, "copy"), EXIT_REFUSED)
    assert "--verify needs" in line

    async def scenario() -> None:
        async with client(peer, peer.user, peer.password) as ftp:
            with pytest.raises(HashUnsupported):
                await ftp.hash("file.txt")

    run(scenario())


def test_a_hash_reply_too_late_for_the_timeout_does_not_answer_the_next_command(
    server: RunningServer,
) -> None:
    """HASH of a big file outlasts the client's timeout: the error comes, then the
    session is back in step (ABOR stops the hash), so the next command gets its own reply."""
    with open(server.home / "big.bin", "wb") as big:
        big.truncate(16 << 30)  # sparse: hashing 16 GiB of zeros takes seconds

    async def scenario() -> tuple[str, str]:
        ftp = Client(server.host, server.port, user=USER, password=PASSWORD, timeout=0.5)
        async with ftp:
            with pytest.raises(ReplyTimedOut) as late:
                await ftp.hash("big.bin", "SHA-256")
            return str(late.value), await ftp.pwd()

    error, cwd = run(scenario())
    assert "no reply" in error and "within 0.5 s" in error
    assert cwd == "/"
