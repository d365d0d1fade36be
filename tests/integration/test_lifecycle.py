"""Signals to a real `ketch serve`: SIGTERM stops gracefully, SIGHUP reloads --config.

Every server is a subprocess started with a TOML file in tmp_path and stopped
in teardown. Downloads are kept running by a client that reads slowly: the
server cannot push 64 MiB into socket buffers that hold a few MiB.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import argon2
import pytest
from serve_process import ServeProcess, connection_refused, free_port, ketch_serve

BIG_SIZE = 64 * 1024 * 1024
CHUNK = 64 * 1024
HOST = "127.0.0.1"
PASSIVE_PORTS = "44200-44299"
_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory holding big.bin (64 MiB of random bytes), and its sha256."""
    root = tmp_path_factory.mktemp("lifecycle-root")
    path = root / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(BIG_SIZE // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            file.write(chunk)
    yield root, digest.hexdigest()
    path.unlink()


def config_text(port: int, root: Path, users: list[str], **settings: object) -> str:
    lines = [
        f'listen_address = "{HOST}"',
        f"port = {port}",
        f'root = "{root}"',
        f'passive_ports = "{PASSIVE_PORTS}"',
        "login_failure_delay = 0.05",
    ]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    for name in users:
        lines += [
            "",
            "[[users]]",
            f'name = "{name}"',
            f'password_hash = "{_HASHER.hash(PASSWORDS[name])}"',
            f'home = "{root}"',
            'permissions = ["list", "read"]',
        ]
    return "\n".join(lines) + "\n"


StartServer = Callable[..., tuple[ServeProcess, int, Path]]


@pytest.fixture
def start_server(tmp_path: Path, big_file: tuple[Path, str]) -> Iterator[StartServer]:
    """Write a config for alice (and whoever else) in tmp_path and start `ketch serve`."""
    root = big_file[0]
    with contextlib.ExitStack() as stack:

        def start(
            users: tuple[str, ...] = ("alice",), **settings: object
        ) -> tuple[ServeProcess, int, Path]:
            port = free_port()
            config = tmp_path / "ketch.toml"
            config.write_text(config_text(port, root, list(users), **settings))
            server = stack.enter_context(ketch_serve(["--config", str(config)], tmp_path))
            return server, port, config

        yield start


def login(port: int, user: str = "alice", timeout: float = 10) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=timeout)
    ftp.connect(HOST, port)
    ftp.login(user, PASSWORDS[user])
    return ftp


def start_download(ftp: ftplib.FTP) -> socket.socket:
    ftp.voidcmd("TYPE I")
    return ftp.transfercmd("RETR big.bin")


def read_slowly(conn: socket.socket, digest: hashlib._Hash, amount: int) -> int:
    """Read about ``amount`` bytes in small pieces with pauses: a slow client."""
    got = 0
    while got < amount:
        data = conn.recv(CHUNK)
        if not data:
            break
        digest.update(data)
        got += len(data)
        time.sleep(0.005)
    return got


def read_rest(conn: socket.socket, digest: hashlib._Hash) -> int:
    got = 0
    while data := conn.recv(1 << 20):
        digest.update(data)
        got += len(data)
    return got


def thread_count(server: ServeProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/task"))


def wait_for_a_new_thread(server: ServeProcess, before: int, failure: str) -> None:
    """Until the server has more threads than ``before``: a command has started its work."""
    deadline = time.monotonic() + 10
    while thread_count(server) == before:
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


def test_sigterm_lets_a_running_download_finish_and_closes_idle_sessions(
    start_server: StartServer, big_file: tuple[Path, str]
) -> None:
    server, port, _ = start_server()
    idle = login(port)
    busy = login(port, timeout=30)
    conn = start_download(busy)
    digest = hashlib.sha256()
    received = read_slowly(conn, digest, 1 << 20)

    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # The idle session is told at once; new connections are refused.
    assert idle.getline().startswith("421 Server shutting down")
    assert connection_refused(HOST, port)
    received += read_slowly(conn, digest, 2 << 20)  # still flowing after SIGTERM
    received += read_rest(conn, digest)
    conn.close()

    assert received == BIG_SIZE
    assert digest.hexdigest() == big_file[1]
    assert busy.voidresp().startswith("226")
    assert busy.getline().startswith("421 Server shutting down")
    assert server.wait_exit(timeout=30) == 0, server.output()
    assert time.monotonic() - signalled < 30
    server.wait_for("waiting up to 30 s for 1 running transfer(s) or command(s)")
    server.wait_for("1 finished, 0 cut off")
    idle.close()
    busy.close()


def test_sigterm_cuts_off_a_transfer_that_outlasts_the_grace(
    start_server: StartServer,
) -> None:
    server, port, _ = start_server(shutdown_grace=1)
    busy = login(port)
    conn = start_download(busy)
    digest = hashlib.sha256()
    received = read_slowly(conn, digest, 256 * 1024)

    server.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # The client stops reading: the transfer cannot end within the 1 s grace.
    assert busy.getline() == (
        "426 Transfer cut off: the server is shutting down and its 1 s grace period is over."
    )
    assert busy.getline().startswith("421 Server shutting down")
    assert server.wait_exit(timeout=10) == 0, server.output()
    elapsed = time.monotonic() - signalled
    assert elapsed < 3.0, f"exited {elapsed:.1f} s after SIGTERM with a 1 s grace"
    conn.settimeout(10)
    with contextlib.suppress(ConnectionResetError):
        received += read_rest(conn, digest)
    conn.close()
    assert received < BIG_SIZE  # the data connection was closed early
    server.wait_for("grace period of 1 s over; cutting off 1 transfer(s)")
    server.wait_for("0 finished, 1 cut off")
    # The transfer's own line says the server cut it off: the client did nothing wrong.
    line = server.wait_for("transfer RETR user=alice")
    assert ' result=cut_off reason="the server is shutting down"' in line, line
    busy.close()


def test_sigterm_lets_a_running_command_reply_before_its_421(
    tmp_path: Path, big_file: tuple[Path, str]
) -> None:
    """A session in the middle of a command (PASS, checking a costly hash) is not idle."""
    costly = argon2.PasswordHasher(time_cost=3, memory_cost=256 * 1024, parallelism=1)
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(
        config_text(port, big_file[0], [])
        + f'\n[[users]]\nname = "alice"\npassword_hash = "{costly.hash(PASSWORDS["alice"])}"\n'
        + f'home = "{big_file[0]}"\npermissions = ["list", "read"]\n'
    )
    with ketch_serve(["--config", str(config)], tmp_path) as server:
        busy = ftplib.FTP(timeout=60)
        busy.connect(HOST, port)
        assert busy.sendcmd("USER alice").startswith("331")
        threads = thread_count(server)
        # The NOOP pipelined behind PASS is not run: the session stops after PASS.
        busy.sock.sendall(b"PASS alice-pw\r\nNOOP\r\n")
        # A costly hash is checked in a worker thread, which appears once PASS runs.
        wait_for_a_new_thread(server, threads, "PASS never started checking the password")
        server.signal(signal.SIGTERM)
        assert busy.getline().startswith("230")
        assert busy.getline().startswith("421 Server shutting down")
        assert server.wait_exit(timeout=30) == 0, server.output()
        server.wait_for("0 idle, told 421; waiting up to 30 s for 1 running transfer(s) or command")
        busy.close()


def test_sigterm_lets_a_running_hash_finish(
    start_server: StartServer, big_file: tuple[Path, str]
) -> None:
    """A HASH runs like a transfer: it may finish within the grace, then 421."""
    root = big_file[0]
    sparse = root / "sparse.bin"
    with sparse.open("wb") as file:
        file.truncate(256 << 20)  # holes: about a second of hashing, no disk
    try:
        server, port, _ = start_server()
        busy = login(port, timeout=60)
        threads = thread_count(server)
        busy.sock.sendall(b"HASH sparse.bin\r\nNOOP\r\n")
        # The hashing thread appears once the HASH has started: no guessing with sleeps.
        wait_for_a_new_thread(server, threads, "HASH never started hashing")
        server.signal(signal.SIGTERM)
        reply = busy.getline()
        zeros_sha256 = "a6d72ac7690f53be6ae46ba88506bd97302a093f7108472bd9efc3cefda06484"
        assert reply == f"213 SHA-256 0-{(256 << 20) - 1} {zeros_sha256} sparse.bin", reply
        assert busy.getline().startswith("421 Server shutting down")  # no 200 for the NOOP
        assert server.wait_exit(timeout=30) == 0, server.output()
        server.wait_for("1 finished, 0 cut off")
        busy.close()
    finally:
        sparse.unlink()


def test_sigterm_does_not_wait_for_a_client_that_reads_no_replies(
    start_server: StartServer,
) -> None:
    """A session stuck writing replies nobody reads is closed at once, not after the grace."""
    server, port, _ = start_server(command_rate=0, shutdown_grace=60)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect((HOST, port))
        sock.sendall(b"HELP\r\n" * 20_000)  # some 9 MB of replies, never read
        time.sleep(1)  # the server answers until the buffers are full (or it is still busy)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert server.wait_exit(timeout=20) == 0, server.output()
    elapsed = time.monotonic() - signalled
    assert elapsed < 20, f"exited {elapsed:.1f} s after SIGTERM; the grace is 60 s"


def test_a_second_signal_stops_at_once(start_server: StartServer) -> None:
    server, port, _ = start_server()
    busy = login(port)
    conn = start_download(busy)
    read_slowly(conn, hashlib.sha256(), 256 * 1024)

    server.signal(signal.SIGTERM)
    server.wait_for("waiting up to 30 s for 1 running transfer(s) or command(s)")
    server.signal(signal.SIGINT)
    signalled = time.monotonic()
    assert busy.getline() == (  # not "its 30 s grace period is over", 0.1 s into it
        "426 Transfer cut off: the server is shutting down and was told again to stop at once."
    )
    assert server.wait_exit(timeout=10) == 0, server.output()
    assert time.monotonic() - signalled < 3.0
    server.wait_for("SIGINT received again")
    line = server.wait_for("transfer RETR user=alice")
    assert ' result=cut_off reason="the server is shutting down"' in line, line
    conn.close()
    busy.close()


def test_sighup_reloads_users_and_sessions_keep_running(start_server: StartServer) -> None:
    server, port, config = start_server(users=("alice",))
    old_session = login(port)

    # bob replaces alice; the port change needs a restart and is ignored.
    new_port = free_port()
    config.write_text(config_text(new_port, Path(server_root(config)), ["bob"], idle_timeout=600.0))
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("reload: configuration from", start=mark)
    line = server.wait_for("reload: port changed", start=mark)
    assert f"from {port} to {new_port}" in line and "restart" in line

    bob = login(port, "bob")  # new logins use the new accounts, on the old port
    assert bob.voidcmd("NOOP").startswith("200")
    with pytest.raises(ftplib.error_perm, match="530"):
        login(port, "alice")
    # alice's session from before the reload goes on.
    assert old_session.voidcmd("NOOP").startswith("200")
    assert "big.bin" in old_session.nlst()
    old_session.quit()
    bob.quit()


def test_a_reload_logs_what_it_changed_and_its_set_up_warnings(start_server: StartServer) -> None:
    server, port, config = start_server(users=("alice", "bob"), max_connections=100)
    root = Path(server_root(config))
    changed = {"max_connections": 5000, "allow_foreign_addresses": "true", "idle_timeout": 42.0}
    config.write_text(config_text(port, root, ["bob"], **changed))
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    line = server.wait_for("reload: changed: ", start=mark)
    for change in (
        "max_connections 100 -> 5000",
        "allow_foreign_addresses false -> true",
        "idle_timeout 300.0 -> 42.0",
        "users removed: alice",
        "users changed: bob",  # config_text hashed his password anew: a new salt
    ):
        assert change in line, line
    assert "$argon2" not in line and "password" not in line  # accounts by name only
    # As `ketch config check` and the start would: the new file's risks are told.
    warning = server.wait_for("reload: set-up: allow_foreign_addresses = true", start=mark)
    assert " WARNING " in warning


def test_a_reload_that_leaves_nobody_able_to_log_in_says_so(start_server: StartServer) -> None:
    server, port, config = start_server()
    root = Path(server_root(config))
    config.write_text(config_text(port, root, []) + "\n[anonymous]\nenabled = false\n")
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("reload: changed: ", start=mark)
    warning = server.wait_for("reload: set-up: nobody can log in", start=mark)
    assert " WARNING " in warning and "[[users]]" in warning


def test_a_remembered_password_stops_working_when_a_reload_changes_it(
    start_server: StartServer,
) -> None:
    # login_cache_seconds (default 600 s) remembers alice's password after a login;
    # a reload that changes her hash must not leave the old password working.
    server, port, config = start_server()
    login(port).quit()
    login(port).quit()  # now remembered
    old_hash = next(line for line in config.read_text().splitlines() if "password_hash" in line)
    config.write_text(
        config.read_text().replace(old_hash, f'password_hash = "{_HASHER.hash("n3w-pw")}"')
    )
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("reload: configuration from", start=mark)

    with pytest.raises(ftplib.error_perm, match="530"):
        login(port)
    fresh = ftplib.FTP(timeout=10)
    fresh.connect(HOST, port)
    fresh.login("alice", "n3w-pw")
    assert fresh.voidcmd("NOOP").startswith("200")
    fresh.quit()


def test_sighup_with_an_invalid_file_keeps_the_old_configuration(
    start_server: StartServer,
) -> None:
    server, port, config = start_server()
    before = login(port)
    good = config.read_text()
    config.write_text(
        good.replace(
            f'passive_ports = "{PASSIVE_PORTS}"', 'passive_ports = "60000-50000"\nidle_timout = 5'
        )
    )
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("not applied (2 problem(s))", start=mark)
    problems = "".join(server.stderr[mark:])
    assert "passive_ports = '60000-50000'" in problems
    assert "idle_timout: unknown key; did you mean 'idle_timeout'" in problems

    after = login(port)  # the old accounts still work, old and new sessions alike
    assert after.voidcmd("NOOP").startswith("200")
    assert before.voidcmd("NOOP").startswith("200")
    after.quit()
    before.quit()


def test_a_reload_never_logs_a_password_put_in_the_wrong_place(
    start_server: StartServer,
) -> None:
    server, port, config = start_server()
    root = server_root(config)
    text = config_text(port, Path(root), [])
    config.write_text(
        text + f'[users]\nname = "bob"\npassword_hash = "MyS3cretPassw0rd"\nhome = "{root}"\n'
    )
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("not applied (1 problem(s))", start=mark)
    problems = "".join(server.stderr[mark:])
    assert "MyS3cretPassw0rd" not in problems
    assert "users = {name = 'bob', password_hash = (not shown)" in problems


def test_a_reload_that_only_holds_with_a_restart_only_change_is_refused(
    start_server: StartServer,
) -> None:
    # workers = 2 stays until a restart; quotas need workers = 1, so the new file must
    # not be applied as if it had it (README: quotas with workers are refused).
    server, port, config = start_server(workers=2)
    text = config.read_text().replace("workers = 2", "workers = 1")
    config.write_text(text + "quota_bytes = 150\n")  # alice's, the last table
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("not applied", start=mark)
    problems = "".join(server.stderr[mark:])
    assert "workers kept until a restart" in problems and "workers = 1" in problems
    ftp = login(port)
    assert ftp.voidcmd("NOOP").startswith("200")
    ftp.quit()


def test_sighup_applies_new_limits_to_state_kept_across_the_reload(
    start_server: StartServer,
) -> None:
    """Sessions per user and login bans are limits too: a reload changes them."""
    server, port, config = start_server(max_sessions_per_user=5)
    sessions = [login(port), login(port)]
    config.write_text(
        config_text(port, Path(server_root(config)), ["alice"], max_sessions_per_user=2)
    )
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("reload: configuration from", start=mark)
    # The two sessions from before the reload still count against the new limit.
    with pytest.raises(ftplib.error_perm, match="530 Too many sessions for this user \\(2\\)"):
        login(port)
    sessions.pop().quit()
    sessions.append(login(port))  # a freed slot can be used again
    for ftp in sessions:
        ftp.quit()


@pytest.mark.parametrize("timeout", ["idle_timeout", "line_timeout"])
def test_sighup_shortens_the_timeouts_of_sessions_already_waiting(
    start_server: StartServer, timeout: str
) -> None:
    # A wait begun before the reload was timed with the old value: 30 s here, against 1 s.
    server, port, config = start_server(idle_timeout=30, line_timeout=30)
    ftp = login(port, timeout=20)
    if timeout == "line_timeout":
        ftp.sock.sendall(b"NO")  # a line begun, never ended
    root = Path(server_root(config))
    config.write_text(config_text(port, root, ["alice"], **{timeout: 1}))
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    server.wait_for("reload: configuration from", start=mark)
    reloaded = time.monotonic()
    reply = ftp.getline()
    waited = time.monotonic() - reloaded
    word = "Idle for 1 s" if timeout == "idle_timeout" else "not completed within 1 s"
    assert reply.startswith("421 ") and word in reply, reply
    assert waited < 10, f"closed {waited:.1f} s after the reload, by the old timeout"
    ftp.close()


def server_root(config: Path) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("root = "):
            return line.split('"')[1]
    raise AssertionError(f"no root in {config}")
