"""ketch.client against real servers: ketch's own, vsftpd and pure-ftpd, in both modes.

Each test gets a fresh server and checks what a user of the library relies on:
the operation's effect on the server's disk, the bytes (by sha256), and the
data-connection command that was really used.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ketch.client import (
    Client,
    DataConnectionFailed,
    FtpError,
    InvalidArgument,
    PermanentReplyError,
    SyncClient,
)

from conftest import PASSWORD, USER, RunningServer
from harness.procfs import process_tree, signal_all
from payloads import BIG, MIB, Payload, make_payload, sha256_bytes, sha256_file
from peer_servers import PeerServer

pytestmark = pytest.mark.peer

SERVERS = ("ketch", "vsftpd", "pure-ftpd")
MODES = ("passive", "active")
EXPECTED_COMMAND = {"passive": "EPSV", "active": "EPRT"}


@dataclass
class Target:
    """A running server as the client tests see it."""

    name: str
    host: str
    port: int
    user: str
    password: str
    workdir: str  # remote directory the user may write in ("" = login directory)
    disk: Path  # that directory on the server's disk
    owner: tuple[int, int] | None  # uid/gid the server writes as, for files we put there

    def client(self, mode: str, **settings: Any) -> Client:
        return Client(
            self.host,
            self.port,
            user=self.user,
            password=self.password,
            mode=mode,  # type: ignore[arg-type]
            data_connect_timeout=5,
            timeout=20,
            **settings,
        )

    def put_on_disk(self, name: str, data: bytes) -> Path:
        path = self.disk / name
        path.write_bytes(data)
        self._own(path)
        return path

    def _own(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner)

    def remote(self, name: str) -> str:
        return f"{self.workdir}/{name}" if self.workdir else name


@pytest.fixture(params=SERVERS)
def target(
    request: pytest.FixtureRequest,
    make_server: Callable[..., RunningServer],
) -> Target:
    name: str = request.param
    if name == "ketch":
        running = make_server()
        return Target(name, running.host, running.port, USER, PASSWORD, "", running.home, None)
    factory = request.getfixturevalue("make_vsftpd" if name == "vsftpd" else "make_pure_ftpd")
    peer: PeerServer = factory()
    return Target(
        name,
        peer.host,
        peer.port,
        peer.user,
        peer.password,
        peer.workdir,
        peer.writable,
        peer.owner,
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 90))


@pytest.mark.parametrize("mode", MODES)
def test_every_file_operation_changes_the_server_as_asked(target: Target, mode: str) -> None:
    async def scenario() -> None:
        async with target.client(mode) as ftp:
            if target.workdir:
                await ftp.cwd(target.workdir)
            start = await ftp.pwd()
            await ftp.mkdir("made")
            assert (target.disk / "made").is_dir()
            await ftp.cwd("made")
            assert (await ftp.pwd()).rstrip("/").endswith("/made")
            result = await ftp.upload([b"hello, ", b"world\n"], "greeting.txt")
            assert result.mode == EXPECTED_COMMAND[mode]
            assert (target.disk / "made" / "greeting.txt").read_bytes() == b"hello, world\n"

            entries = {entry.name: entry for entry in await ftp.list()}
            assert set(entries) == {"greeting.txt"}
            greeting = entries["greeting.txt"]
            assert (greeting.kind, greeting.size) == ("file", 13)
            assert greeting.mtime is not None
            assert abs(greeting.mtime - datetime.now(UTC)) < timedelta(minutes=2)
            assert [name.rsplit("/", 1)[-1] for name in await ftp.nlst()] == ["greeting.txt"]
            assert (await ftp.stat("greeting.txt")).size == 13
            assert await ftp.size("greeting.txt") == 13
            assert abs(await ftp.mdtm("greeting.txt") - datetime.now(UTC)) < timedelta(minutes=2)

            await ftp.rename("greeting.txt", "renamed.txt")
            assert not (target.disk / "made" / "greeting.txt").exists()
            assert (target.disk / "made" / "renamed.txt").read_bytes() == b"hello, world\n"
            await ftp.delete("renamed.txt")
            assert not (target.disk / "made" / "renamed.txt").exists()
            await ftp.cwd(start)
            made = {entry.name: entry.kind for entry in await ftp.list()}
            assert made["made"] == "dir"
            await ftp.rmdir("made")
            assert not (target.disk / "made").exists()
            with pytest.raises(PermanentReplyError) as refused:
                await ftp.delete("no-such-file")
            assert refused.value.code == 550

    run(scenario())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [0, 1, BIG], ids=["0B", "1B", "50MiB"])
def test_transfers_keep_every_byte(
    target: Target, mode: str, size: int, big_payload: Payload, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    digest = make_payload(source, size, big_payload)
    back = tmp_path / "back.bin"

    async def scenario() -> tuple[str, str]:
        async with target.client(mode) as ftp:
            up = await ftp.upload(source, target.remote("payload.bin"))
            down = await ftp.download(target.remote("payload.bin"), back)
            assert (up.bytes, down.bytes) == (size, size)
            return up.mode, down.mode

    modes = run(scenario())
    assert modes == (EXPECTED_COMMAND[mode],) * 2
    assert sha256_file(target.disk / "payload.bin") == digest
    assert sha256_file(back) == digest


@pytest.mark.parametrize("mode", MODES)
def test_streams_upload_from_async_chunks_and_download_as_chunks(target: Target, mode: str) -> None:
    chunks = [os.urandom(100_000) for _ in range(7)]
    whole = b"".join(chunks)

    async def produce() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk

    async def scenario() -> bytes:
        async with target.client(mode) as ftp:
            await ftp.upload(produce(), target.remote("stream.bin"))
            received = bytearray()
            async with ftp.open_download(target.remote("stream.bin")) as incoming:
                async for chunk in incoming:
                    received += chunk
            # Leaving a download early aborts it and leaves the session usable.
            async with ftp.open_download(target.remote("stream.bin")) as incoming:
                async for _ in incoming:
                    break
            assert await ftp.size(target.remote("stream.bin")) == len(whole)
            return bytes(received)

    assert sha256_bytes(run(scenario())) == sha256_bytes(whole)
    assert (target.disk / "stream.bin").read_bytes() == whole


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("mode", MODES)
def test_an_interrupted_download_resumes_where_it_stopped(
    target: Target, mode: str, tmp_path: Path
) -> None:
    data = os.urandom(8 * MIB)
    target.put_on_disk("resume.bin", data)
    local = tmp_path / "resume.bin"

    def stop_after_two_mib(done: int, total: int | None) -> None:
        assert total == len(data)
        if done >= 2 * MIB:
            raise Interrupted

    async def interrupted() -> None:
        async with target.client(mode) as ftp:
            with pytest.raises(Interrupted):
                await ftp.download(target.remote("resume.bin"), local, progress=stop_after_two_mib)
            # The session survives the abandoned transfer.
            assert await ftp.size(target.remote("resume.bin")) == len(data)

    run(interrupted())
    partial = local.stat().st_size
    assert 2 * MIB <= partial < len(data)
    assert local.read_bytes() == data[:partial]

    seen: list[int] = []

    async def resumed() -> Any:
        async with target.client(mode) as ftp:
            return await ftp.download(
                target.remote("resume.bin"),
                local,
                resume=True,
                progress=lambda done, total: seen.append(done),
            )

    result = run(resumed())
    assert (result.offset, result.bytes) == (partial, len(data) - partial)
    assert seen[-1] == len(data)
    assert sha256_file(local) == sha256_bytes(data)


@pytest.mark.parametrize("mode", MODES)
def test_an_upload_resumes_by_appending_what_is_missing(
    target: Target, mode: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * MIB + 17)
    target.put_on_disk("half.bin", data[: MIB + 5])
    local = tmp_path / "half.bin"
    local.write_bytes(data)

    async def scenario() -> Any:
        async with target.client(mode) as ftp:
            return await ftp.upload(local, target.remote("half.bin"), resume=True)

    result = run(scenario())
    assert (result.offset, result.bytes) == (MIB + 5, len(data) - MIB - 5)
    assert sha256_file(target.disk / "half.bin") == sha256_bytes(data)


def test_an_upload_from_bytes_io_resumes_by_appending_what_is_missing(target: Target) -> None:
    # A file object without a descriptor still knows its size when it can seek.
    data = os.urandom(2 * MIB + 3)
    target.put_on_disk("half-io.bin", data[:MIB])

    async def scenario() -> Any:
        async with target.client("passive") as ftp:
            return await ftp.upload(io.BytesIO(data), target.remote("half-io.bin"), resume=True)

    result = run(scenario())
    assert (result.offset, result.bytes) == (MIB, len(data) - MIB)
    assert sha256_file(target.disk / "half-io.bin") == sha256_bytes(data)


@pytest.mark.parametrize("mode", MODES)
def test_a_resumable_upload_cut_off_before_the_remote_file_existed_resumes(
    target: Target, mode: str, tmp_path: Path
) -> None:
    # With resume, even the first attempt appends (APPE): ketch discards a STOR that
    # does not finish (atomic_uploads), which left nothing for the next -c to resume.
    data = os.urandom(8 * MIB)
    local = tmp_path / "fresh.bin"
    local.write_bytes(data)

    def stop_after_two_mib(done: int, total: int | None) -> None:
        if done >= 2 * MIB:
            raise Interrupted

    async def attempt(progress: Callable[[int, int | None], None] | None) -> Any:
        async with target.client(mode) as ftp:
            return await ftp.upload(
                local, target.remote("fresh.bin"), resume=True, progress=progress
            )

    with pytest.raises(Interrupted):
        run(attempt(stop_after_two_mib))
    kept = (target.disk / "fresh.bin").stat().st_size
    assert 0 < kept < len(data)
    result = run(attempt(None))
    assert (result.offset, result.bytes) == (kept, len(data) - kept)
    assert sha256_file(target.disk / "fresh.bin") == sha256_bytes(data)


@pytest.mark.parametrize("mode", MODES)
def test_an_upload_given_up_midway_leaves_the_session_usable(target: Target, mode: str) -> None:
    # ABOR then NOOP bring the replies back in step; pure-ftpd answers an ABOR during an
    # upload with 426 and 451, no 2xx: waiting for one closed the session after a timeout.
    def stop_after_one_mib(done: int, total: int | None) -> None:
        if done >= MIB:
            raise Interrupted

    async def scenario() -> int:
        async with target.client(mode) as ftp:
            with pytest.raises(Interrupted):
                await ftp.upload(
                    io.BytesIO(os.urandom(8 * MIB)), target.remote("given-up.bin"),
                    progress=stop_after_one_mib,
                )  # fmt: skip
            await ftp.upload(io.BytesIO(b"next"), target.remote("next.txt"))
            return await ftp.size(target.remote("next.txt"))

    assert run(scenario()) == 4


def test_resuming_an_empty_file_still_creates_it(target: Target, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    target.put_on_disk("remote-empty.txt", b"")
    fetched = tmp_path / "fetched.txt"

    async def scenario() -> None:
        async with target.client("passive") as ftp:
            await ftp.upload(empty, target.remote("new-empty.txt"), resume=True)
            await ftp.download(target.remote("remote-empty.txt"), fetched, resume=True)

    run(scenario())
    assert (target.disk / "new-empty.txt").read_bytes() == b""
    assert fetched.read_bytes() == b""


def test_wrong_upload_sources_and_a_full_local_disk_are_ftp_errors_that_say_so(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = make_server()
    (server.home / "some.bin").write_bytes(b"x" * 1000)

    async def scenario() -> list[str]:
        messages = []
        async with Client(server.host, server.port, user=USER, password=PASSWORD) as ftp:
            for attempt in (
                ftp.upload(b"bytes, not chunks", "a.txt"),  # type: ignore[arg-type]
                ftp.upload([b"chunk"], "b.txt", resume=True),
                ftp.download("some.bin", "/dev/full"),
            ):
                with pytest.raises(FtpError) as failure:
                    await attempt
                messages.append(str(failure.value))
            assert await ftp.pwd() == "/"  # the session goes on
        return messages

    not_bytes, no_resume, disk_full = run(scenario())
    assert "not bytes" in not_bytes and "io.BytesIO(data)" in not_bytes
    assert "cannot resume an upload from chunks" in no_resume
    assert disk_full.startswith("cannot write /dev/full: No space left on device"), disk_full
    assert not (server.home / "a.txt").exists() and not (server.home / "b.txt").exists()


def test_an_open_file_uploads_from_where_it_stands(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    # As ftplib's storbinary and a BytesIO: the caller's seek() decides the start.
    server = make_server()
    data = os.urandom(300_000)
    local = tmp_path / "source.bin"
    local.write_bytes(data)

    async def scenario() -> list[Any]:
        async with Client(
            server.host, server.port, user=USER, password=PASSWORD, timeout=20
        ) as ftp:
            results = []
            with local.open("rb") as file:
                file.seek(1000)
                results.append(await ftp.upload(file, "real-file.bin"))
            stream = io.BytesIO(data)
            stream.seek(1000)
            results.append(await ftp.upload(stream, "bytes-io.bin"))
            return results

    results = run(scenario())
    assert (server.home / "real-file.bin").read_bytes() == data[1000:]
    assert (server.home / "bytes-io.bin").read_bytes() == data[1000:]
    assert [result.bytes for result in results] == [len(data) - 1000] * 2


@pytest.mark.parametrize("mode", MODES)
def test_sync_client_is_the_same_client_behind_a_blocking_interface(
    target: Target, mode: str, tmp_path: Path
) -> None:
    target.put_on_disk("sync.txt", b"blocking is fine\n")
    with SyncClient(
        target.host, target.port, user=target.user, password=target.password, mode=mode
    ) as ftp:
        if target.workdir:
            ftp.cwd(target.workdir)
        assert "sync.txt" in [entry.name for entry in ftp.list()]
        assert b"".join(ftp.iter_download("sync.txt")) == b"blocking is fine\n"
        result = ftp.download("sync.txt", tmp_path / "sync.txt")
        assert result.mode == EXPECTED_COMMAND[mode]
        ftp.upload(iter([b"from ", b"an iterator"]), "iter.txt")
    assert (tmp_path / "sync.txt").read_bytes() == b"blocking is fine\n"
    assert (target.disk / "iter.txt").read_bytes() == b"from an iterator"


def test_errors_are_one_line_with_a_next_step(target: Target, tmp_path: Path) -> None:
    local = tmp_path / "missing.bin"

    async def scenario() -> list[FtpError]:
        errors: list[FtpError] = []
        async with target.client("passive") as ftp:
            for attempt in (
                lambda: ftp.download(target.remote("missing.bin"), local),
                lambda: ftp.cwd("no-such-directory"),
                lambda: ftp.size("no-such-file"),
            ):
                try:
                    await attempt()
                except FtpError as error:
                    errors.append(error)
        return errors

    errors = run(scenario())
    assert len(errors) == 3
    for error in errors:
        message = str(error)
        assert "\n" not in message
        assert " — " in message, message  # what happened — what to do
        assert isinstance(error, PermanentReplyError)
    assert not local.exists()  # a refused download leaves no empty file behind


def test_a_wrong_password_says_which_user_and_what_to_check(target: Target) -> None:
    if target.name == "vsftpd":
        pytest.skip("vsftpd here allows anonymous logins with any password")

    async def scenario() -> None:
        async with Client(target.host, target.port, user=target.user, password="wrong"):
            pass

    with pytest.raises(FtpError) as failed:
        run(scenario())
    assert f"login as {target.user!r} refused" in str(failed.value)
    assert "check the user name and password" in str(failed.value)


def test_a_stalled_download_fails_after_the_timeout_and_says_so(
    make_pure_ftpd: Callable[..., PeerServer], tmp_path: Path
) -> None:
    """A server that stops sending mid-transfer (here: SIGSTOPped) is a stall, not a hang.

    pure-ftpd, because vsftpd stopped and continued never reads the ABOR that
    follows (it does after an ordinary interrupted transfer).
    """
    peer = make_pure_ftpd()
    (peer.writable / "slow.bin").write_bytes(os.urandom(64 * MIB))
    stopped: list[bool] = []

    def freeze_the_server(done: int, total: int | None) -> None:
        if not stopped:
            stopped.extend(process_tree(peer.process.pid))
            signal_all(stopped, signal.SIGSTOP)
            # Let it go again later, so that the session can be resynchronised.
            threading.Timer(4.0, signal_all, (stopped, signal.SIGCONT)).start()

    async def scenario() -> tuple[DataConnectionFailed, int]:
        async with Client(
            peer.host, peer.port, user=peer.user, password=peer.password, timeout=2
        ) as ftp:
            with pytest.raises(DataConnectionFailed) as stalled:
                await ftp.download("slow.bin", tmp_path / "slow.bin", progress=freeze_the_server)
            return stalled.value, await ftp.size("slow.bin")

    try:
        error, size = run(scenario())
    finally:
        signal_all(stopped, signal.SIGCONT)
    assert len(stopped) >= 2  # the listener and the session's processes
    assert "stalled: nothing received for 2 s" in str(error)
    assert "-c resumes a download" in str(error)
    assert size == 64 * MIB  # the session still answers after the stall


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("mode", "Active", "'auto', 'passive', 'active'"),
        ("mode", "act", "'auto', 'passive', 'active'"),
        ("passive_command", "pasv", "'auto', 'EPSV', 'PASV'"),
        ("active_command", "eprt", "'auto', 'EPRT', 'PORT'"),
        ("tls", "TLS", "'explicit', 'implicit'"),
    ],
)
def test_a_setting_outside_its_choices_is_refused_by_name(
    name: str, value: str, allowed: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Client("127.0.0.1", 21, **{name: value})
    message = str(refused.value)
    assert f"{name}={value!r}" in message and allowed in message, message
    with pytest.raises(InvalidArgument):
        SyncClient("127.0.0.1", 21, **{name: value})
    assert not leftover_loop_threads()


def leftover_loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ketch-client-")]


def test_contradictory_tls_settings_are_an_ftp_error() -> None:
    with pytest.raises(InvalidArgument) as refused:
        SyncClient("127.0.0.1", 21, tls="explicit", cafile="x", verify=False)
    assert "cafile" in str(refused.value) and "verify" in str(refused.value)
    assert not leftover_loop_threads()


def test_an_unknown_setting_leaves_no_loop_thread_behind() -> None:
    with pytest.raises(TypeError, match="bogus"):
        SyncClient("127.0.0.1", 21200, bogus=1)
    assert not leftover_loop_threads()
