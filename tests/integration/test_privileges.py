"""run_as: started as root, `ketch serve` binds a low port, then runs as `nobody`.

Needs root (skipped otherwise) and the existing `nobody` user; no user is
created. The served directory lives under /tmp with mode 0777 rather than
in tmp_path, which only root can reach. The control port is a free one
below 1024, which proves it was bound before root was given up; active
mode's source port (control port - 1, as 20 is for 21) comes from the
port-20 helper, which stays root and ends with the server.
"""

from __future__ import annotations

import ftplib
import io
import os
import pwd
import random
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import argon2
import pytest
from serve_process import (
    KETCH_SERVE,
    children,
    command_line,
    ketch_serve,
    process_status,
)

from harness.ports import bindable

HOST = "127.0.0.1"
PASSIVE_PORTS = "44300-44399"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: the server must start as root to bind ports below 1024 and drop to nobody",
)


@pytest.fixture(scope="module")
def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody' on this system")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A served directory every user may read and write, with one file in it."""
    path = Path(tempfile.mkdtemp(prefix="ketch-run-as-", dir="/tmp"))
    try:
        path.chmod(0o777)
        (path / "hello.txt").write_bytes(b"hello from root\n")
        (path / "hello.txt").chmod(0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def low_port_pair() -> int:
    """A free port P in 901-999 whose P - 1 is free too (the active source port)."""
    ports = list(range(901, 1000))
    random.shuffle(ports)
    for port in ports:
        if bindable(port, HOST) and bindable(port - 1, HOST):
            return port
    pytest.skip("no free pair of ports in 900-999")


def serve_args(port: int, root: Path) -> list[str]:
    return [
        "--run-as",
        "nobody",
        "--port",
        str(port),
        "--listen",
        HOST,
        "--root",
        str(root),
        "--write",
        "--passive-ports",
        PASSIVE_PORTS,
    ]


def write_accounts_config(
    config: Path, port: int, public_dir: Path, names: Sequence[str], extra: str = ""
) -> None:
    """A run_as configuration with an account per name (password: name + "-pw"), which
    nobody may read again on SIGHUP."""
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    users = "".join(
        f'[[users]]\nname = "{name}"\npassword_hash = "{hasher.hash(name + "-pw")}"\n'
        f'home = "{public_dir}"\n\n'
        for name in names
    )
    config.write_text(
        f'listen_address = "{HOST}"\nport = {port}\nroot = "{public_dir}"\n'
        f'passive_ports = "{PASSIVE_PORTS}"\nrun_as = "nobody"\n{extra}\n{users}'
    )
    config.chmod(0o644)


def anonymous(port: int) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(HOST, port)
    ftp.login()
    return ftp


def test_server_runs_as_nobody_after_binding_a_low_port(
    public_dir: Path, nobody: pwd.struct_passwd
) -> None:
    port = low_port_pair()
    with ketch_serve(serve_args(port, public_dir), public_dir) as server:
        status = process_status(server.pid)
        # Real, effective, saved and file-system ids: all four.
        assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, status
        assert status["Gid"].split() == [str(nobody.pw_gid)] * 4, status
        assert status["Groups"] == "", status
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
        server.wait_for("running as nobody")

        ftp = anonymous(port)
        ftp.storbinary("STOR upload.txt", io.BytesIO(b"written by nobody\n"))
        ftp.quit()
        uploaded = (public_dir / "upload.txt").stat()
        assert (uploaded.st_uid, uploaded.st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_an_upload_cannot_replace_a_file_the_server_user_may_not_write(
    public_dir: Path,
) -> None:
    # Atomic uploads replace by rename, which needs only the directory's write
    # permission: nobody must still not replace root's 0644 file, or a 0444 one.
    (public_dir / "readonly.txt").write_bytes(b"keep me\n")
    (public_dir / "readonly.txt").chmod(0o444)
    port = low_port_pair()
    with ketch_serve(serve_args(port, public_dir), public_dir):
        ftp = anonymous(port)
        for name in ("hello.txt", "readonly.txt"):
            before = (public_dir / name).read_bytes()
            with pytest.raises(ftplib.error_perm, match=r"550.*Permission denied"):
                ftp.storbinary(f"STOR {name}", io.BytesIO(b"replaced\n"))
            assert (public_dir / name).read_bytes() == before
            assert (public_dir / name).stat().st_uid == 0
        assert sorted(os.listdir(public_dir)) == ["hello.txt", "readonly.txt"]
        ftp.storbinary("STOR mine.txt", io.BytesIO(b"one\n"))
        ftp.storbinary("STOR mine.txt", io.BytesIO(b"two\n"))  # its own file: replaced
        assert (public_dir / "mine.txt").read_bytes() == b"two\n"
        ftp.quit()


def test_a_directory_the_server_user_cannot_search_is_refused_not_listed_as_empty(
    public_dir: Path, nobody: pwd.struct_passwd
) -> None:
    # nobody may read the names in it (r) but not look any up (no x): entering it and
    # listing it would show an empty directory that is not empty.
    noexec = public_dir / "noexec"
    noexec.mkdir()
    (noexec / "f").write_bytes(b"f\n")
    os.chown(noexec, nobody.pw_uid, nobody.pw_gid)
    noexec.chmod(0o644)
    port = low_port_pair()
    with ketch_serve(serve_args(port, public_dir), public_dir):
        ftp = anonymous(port)
        with pytest.raises(ftplib.error_perm, match=r"^550 /noexec: Permission denied; .*search"):
            ftp.cwd("noexec")
        assert ftp.pwd() == "/"
        listing_refused = r"^550 /noexec: Permission denied; .* needs r and x permission"
        with pytest.raises(ftplib.error_perm, match=listing_refused):
            ftp.retrlines("LIST noexec", lambda _: None)
        with pytest.raises(ftplib.error_perm, match=listing_refused):
            list(ftp.mlsd("noexec"))
        assert ftp.nlst("noexec") == ["noexec/f"]  # names alone need no look-up
        noexec.chmod(0o755)
        ftp.cwd("noexec")
        assert [name for name, _ in ftp.mlsd()] == [".", "f"]
        ftp.quit()


def test_a_refusal_by_file_permissions_is_logged_for_the_admin(public_dir: Path) -> None:
    # The client is told to ask the admin: the admin's log must say what was refused.
    (public_dir / "private.txt").write_bytes(b"root's\n")
    (public_dir / "private.txt").chmod(0o600)
    port = low_port_pair()
    with ketch_serve(serve_args(port, public_dir), public_dir) as server:
        ftp = anonymous(port)
        with pytest.raises(ftplib.error_perm, match=r"^550 /private.txt: Permission denied"):
            ftp.retrbinary("RETR private.txt", lambda _: None)
        public_dir.chmod(0o711)  # the root may be searched, not read
        with pytest.raises(ftplib.error_perm, match=r"^550 /: Permission denied"):
            ftp.retrlines("LIST", lambda _: None)
        ftp.quit()
        client = "user=anonymous client=127.0.0.1"
        retr = server.wait_for(f"refused RETR {client} path=/private.txt: ")
        listing = server.wait_for(f"refused LIST {client} path=/: ")
    for line in (retr, listing):
        assert " WARNING ketch.server: " in line and "Permission denied (EACCES)" in line, line


def test_active_mode_comes_from_the_low_port_through_the_root_helper(public_dir: Path) -> None:
    port = low_port_pair()
    with ketch_serve(serve_args(port, public_dir), public_dir) as server:
        helpers = [pid for pid in children(server.pid) if "port20_helper" in command_line(pid)]
        assert len(helpers) == 1, [command_line(pid) for pid in children(server.pid)]
        helper = helpers[0]
        assert process_status(helper)["Uid"].split() == ["0"] * 4

        ftp = anonymous(port)
        ftp.set_pasv(False)
        ftp.voidcmd("TYPE I")
        for _ in range(2):  # the port is reusable from one connection to the next
            conn = ftp.transfercmd("RETR hello.txt")
            assert conn.getpeername()[1] == port - 1
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            conn.close()
            assert data == b"hello from root\n"
            assert ftp.voidresp().startswith("226")
        ftp.quit()

        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()
        deadline = time.monotonic() + 5
        while (state := process_status(helper).get("State", "Z")) and not state.startswith("Z"):
            assert time.monotonic() < deadline, f"the helper is still running: {state}"
            time.sleep(0.05)


def test_workers_run_as_nobody_and_each_has_its_own_root_helper(
    public_dir: Path, nobody: pwd.struct_passwd
) -> None:
    port = low_port_pair()
    with ketch_serve([*serve_args(port, public_dir), "--workers", "2"], public_dir) as server:
        processes = children(server.pid)
        helpers = [pid for pid in processes if "port20_helper" in command_line(pid)]
        workers = [pid for pid in processes if pid not in helpers]
        assert (len(helpers), len(workers)) == (2, 2), [command_line(pid) for pid in processes]
        for pid in (server.pid, *workers):
            assert process_status(pid)["Uid"].split() == [str(nobody.pw_uid)] * 4
        for pid in helpers:
            assert process_status(pid)["Uid"].split() == ["0"] * 4

        served: set[str] = set()
        for _ in range(60):  # until both workers made an active connection from port - 1
            ftp = anonymous(port)
            worker = ftp.sendcmd("STAT").split("Served by worker ")[1][:1]
            if worker not in served:
                served.add(worker)
                ftp.set_pasv(False)
                ftp.voidcmd("TYPE I")
                conn = ftp.transfercmd("RETR hello.txt")
                assert conn.getpeername()[1] == port - 1
                while conn.recv(4096):
                    pass
                conn.close()
                assert ftp.voidresp().startswith("226")
            ftp.quit()
            if len(served) == 2:
                break
        assert served == {"1", "2"}

        server.signal(signal.SIGTERM)
        assert server.wait_exit() == 0, server.output()


def test_run_as_is_refused_when_not_started_as_root(
    public_dir: Path, nobody: pwd.struct_passwd
) -> None:
    try:
        subprocess.run(
            [sys.executable, "-c", "import ketch"],
            check=True,
            timeout=60,
            capture_output=True,
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            cwd=public_dir,
        )
    except (PermissionError, subprocess.CalledProcessError) as error:
        pytest.skip(f"nobody cannot run {sys.executable} with ketch here ({error})")
    result = subprocess.run(
        [
            *KETCH_SERVE,
            "--run-as",
            "nobody",
            "--port",
            "0",
            "--listen",
            HOST,
            "--root",
            str(public_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=public_dir,
        stdin=subprocess.DEVNULL,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
    )
    assert result.returncode != 0
    assert "run_as = 'nobody' needs the server to be started as root" in result.stderr
    assert "Traceback" not in result.stderr


def test_passive_ports_the_run_as_user_could_not_bind_are_refused_at_start(
    public_dir: Path,
) -> None:
    # Passive listeners are bound after root is dropped: every PASV would fail.
    args = ["--run-as", "nobody", "--port", "0", "--listen", HOST, "--root", str(public_dir)]
    result = subprocess.run(
        [*KETCH_SERVE, *args, "--passive-ports", "1000-1100"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert "command line: --passive-ports 1000-1100 starts below 1024" in result.stderr, (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_start_up_names_the_directories_run_as_cannot_use(public_dir: Path) -> None:
    private = public_dir / "private"
    private.mkdir(mode=0o700)  # root's alone
    args = [
        "--run-as",
        "nobody",
        "--port",
        "0",
        "--listen",
        HOST,
        "--root",
        str(private),
        "--passive-ports",
        PASSIVE_PORTS,
    ]
    with ketch_serve(args, public_dir) as server:
        line = server.wait_for("cannot read it")
        assert str(private) in line and "nobody" in line


def test_start_up_warns_when_run_as_cannot_read_the_tls_key_for_reloads(
    public_dir: Path, tmp_path: Path
) -> None:
    # Root loads the key at start; every SIGHUP reads it again, as nobody.
    subprocess.run(
        [sys.executable, "-m", "ketch", "cert", "--host", HOST, "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key = tmp_path / f"{HOST}.key"
    assert key.stat().st_mode & 0o777 == 0o600
    args = [
        *serve_args(0, public_dir),
        "--tls-certificate",
        str(tmp_path / f"{HOST}.crt"),
        "--tls-key",
        str(key),
    ]
    with ketch_serve(args, public_dir) as server:
        line = server.wait_for("tls_key")
        assert str(key) in line and "nobody cannot read it" in line and "SIGHUP" in line


def test_config_check_warns_of_what_run_as_cannot_read_as_serve_does(
    public_dir: Path, tmp_path: Path, nobody: pwd.struct_passwd
) -> None:
    # A 0600 key of root's, a 0700 root and a 0600 file: serve warns of each once root
    # is dropped; config check (as root) said ok.
    subprocess.run(
        [sys.executable, "-m", "ketch", "cert", "--host", HOST, "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    key = tmp_path / f"{HOST}.key"
    private = public_dir / "private"
    private.mkdir(mode=0o700)
    config = public_dir / "ketch.toml"
    config.write_text(
        f'root = "{private}"\npassive_ports = "{PASSIVE_PORTS}"\nmax_connections = 100\n'
        f'run_as = "nobody"\ntls_certificate = "{tmp_path / f"{HOST}.crt"}"\ntls_key = "{key}"\n'
    )
    config.chmod(0o600)
    result = subprocess.run(
        [sys.executable, "-m", "ketch", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert f"{config}: warning: root (anonymous) {private}: nobody cannot read it" in warnings[0]
    assert warnings[1].startswith(f"{config}: warning: nobody cannot read it, so SIGHUP")
    # tmp_path is root's alone (0700), so the certificate too.
    assert "warning: tls_certificate " in warnings[2] and "nobody cannot read it" in warnings[2]
    assert f"warning: tls_key {key}: nobody cannot read it" in warnings[3]
    assert result.stdout.strip() == f"{config}: ok, with 4 warning(s)"


def test_logins_and_reloads_work_after_dropping_root(public_dir: Path) -> None:
    """Password checks and SIGHUP reloads run in worker threads: they must work as nobody."""
    port = low_port_pair()
    config = public_dir / "ketch.toml"

    def write_config(*names: str) -> None:
        write_accounts_config(config, port, public_dir, names)

    write_config("alice")
    with ketch_serve(["--config", str(config)], public_dir) as server:
        alice = ftplib.FTP(timeout=10)
        alice.connect(HOST, port)
        assert alice.login("alice", "alice-pw").startswith("230")

        write_config("alice", "bob")
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        server.wait_for("reload: configuration from", start=mark)
        bob = ftplib.FTP(timeout=10)
        bob.connect(HOST, port)
        assert bob.login("bob", "bob-pw").startswith("230")
        assert "hello.txt" in alice.nlst()
        bob.quit()
        alice.quit()
        assert "Traceback" not in "".join(server.stderr), server.output()


def test_a_reload_that_cannot_read_the_file_says_to_make_it_readable_by_run_as(
    public_dir: Path, nobody: pwd.struct_passwd
) -> None:
    # Root reads the file at start; nobody reads it on SIGHUP. "check the path, or start
    # from `ketch config example`" was no help for a file that is there.
    config = public_dir / "ketch.toml"
    config.write_text(
        f'listen_address = "{HOST}"\nport = 0\nroot = "{public_dir}"\n'
        f'passive_ports = "{PASSIVE_PORTS}"\nrun_as = "nobody"\n'
    )
    config.chmod(0o600)
    with ketch_serve(["--config", str(config)], public_dir) as server:
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        line = server.wait_for("cannot read the configuration file", start=mark)
        assert line.rstrip("\n").endswith(
            f"reload: {config}: cannot read the configuration file (Permission denied); "
            f"make it readable by 'nobody' (uid {nobody.pw_uid}), the user the server runs as "
            "(e.g. chgrp to its group and chmod g+r)"
        ), line
        assert "ketch config example" not in line
        assert "Traceback" not in "".join(server.stderr), server.output()


def test_reloads_keep_the_certificate_tls_generated_which_stays_root_only(
    public_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--tls generates its key as root (0600 in a 0700 directory); nobody cannot read it,
    and must not need to: every SIGHUP was refused for reading it again."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    port = low_port_pair()
    config = public_dir / "ketch.toml"

    def write_config(*names: str) -> None:
        write_accounts_config(config, port, public_dir, names, 'tls_required = "control"\n')

    write_config("alice")
    with ketch_serve(["--tls", "--config", str(config)], public_dir) as server:
        state = tmp_path / "state" / "ketch"
        write_config("alice", "bob")
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        outcome = server.wait_for("applied", start=mark)  # "applied: ..." or "not applied"
        assert "not applied" not in outcome, server.output()
        trusting = ssl.create_default_context(cafile=str(state / "serve.crt"))
        bob = ftplib.FTP_TLS(context=trusting, timeout=10)
        bob.connect(HOST, port)
        assert bob.login("bob", "bob-pw").startswith("230")  # over TLS, with that certificate
        bob.quit()
        log = "".join(server.stderr)
        assert "cannot read it" not in log and "cannot be read" not in log, server.output()
    assert (state / "serve.key").stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700 and state.stat().st_uid == 0


def test_the_summary_describes_the_generated_certificate_read_before_dropping_root(
    public_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The summary is printed as nobody, who cannot read the certificate in root's directory.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    args = [*serve_args(0, public_dir), "--tls", "--tls-required", "control"]
    with ketch_serve(args, public_dir) as server:
        summary = "".join(server.stdout)
        line = server.wait_for("  try      curl", stream="stdout")
        result = subprocess.run(
            ["curl", *shlex.split(line.split("try", 1)[1], comments=True)[1:]],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert "SHA-256 fingerprint" in summary and "generated by --tls" in summary, summary
    assert "--cacert" in line
    assert result.returncode == 0, result.stderr.decode() + server.output()
    assert b"hello.txt" in result.stdout
