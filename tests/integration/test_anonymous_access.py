"""Who may log in anonymously, and with what: `ketch serve` as a subprocess, real sockets.

Anonymous access is on by default only when no accounts are configured (the
quick start, `ketch serve`); a file with [[users]] or a --user flag turns it
off unless [anonymous] enabled = true (or --anonymous) asks for it.
"""

from __future__ import annotations

import ftplib
import io
import signal
import subprocess
from pathlib import Path

import argon2
import pytest
from serve_process import ServeProcess, free_port, ketch_serve

HOST = "127.0.0.1"
PASSIVE_PORTS = "46300-46399"
_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ALICE_PASSWORD = "alice-pw"
TURNED_OFF = "530 Anonymous login is turned off"


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A directory with a file in it, to serve or to start the server in."""
    directory = tmp_path / "served"
    directory.mkdir()
    (directory / "hello.txt").write_text("hello\n")
    return directory


def config_text(port: int, *, root: Path | None = None, alice: Path | None = None) -> str:
    """Settings as the reviewer's file had them: no root unless given; an account alice
    (home ``alice``) when given; tables are appended by the caller."""
    lines = [f'listen_address = "{HOST}"', f"port = {port}", f'passive_ports = "{PASSIVE_PORTS}"']
    if root is not None:
        lines.append(f'root = "{root}"')
    if alice is not None:
        lines += [
            "[[users]]",
            'name = "alice"',
            f'password_hash = "{_HASHER.hash(ALICE_PASSWORD)}"',
            f'home = "{alice}"',
        ]
    return "\n".join(lines) + "\n"


def alice_home(tmp_path: Path) -> Path:
    home = tmp_path / "alice"
    home.mkdir(exist_ok=True)
    return home


def login(port: int, user: str = "anonymous", password: str = "me@example.com") -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(HOST, port)
    ftp.login(user, password)
    return ftp


def anonymous_refusal(port: int) -> str:
    """The reply to an anonymous login that must fail."""
    with pytest.raises(ftplib.error_perm) as refused:
        login(port).quit()
    return str(refused.value)


def quick_args(port: int, *flags: str) -> list[str]:
    return ["--port", str(port), "--listen", HOST, "--passive-ports", PASSIVE_PORTS, *flags]


def refused_start(args: list[str], cwd: Path) -> str:
    """stderr of a `ketch serve` that must refuse to start (and is stopped if it serves)."""
    server = ServeProcess(args, cwd)
    try:
        code = server.wait_exit(timeout=20)
    except subprocess.TimeoutExpired:
        server.stop()
        pytest.fail(f"ketch serve {' '.join(args)} started:\n{server.output()}")
    assert code == 1, server.output()
    assert "Traceback" not in server.output()
    return "".join(server.stderr)


def summary(server: ServeProcess) -> str:
    return "".join(server.stdout)


# -- 1: accounts turn the anonymous default off ------------------------------------------


def test_a_file_with_only_accounts_gives_no_anonymous_access_to_the_current_directory(
    tmp_path: Path,
) -> None:
    # The reviewer's case: port, passive_ports and one account; started in "/" (as under
    # systemd), anonymous could read /etc/shadow.
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(config_text(port, alice=alice_home(tmp_path)))
    with ketch_serve(["--config", str(config)], Path("/")) as server:
        assert anonymous_refusal(port).startswith(TURNED_OFF)
        alice = login(port, "alice", ALICE_PASSWORD)
        assert alice.pwd() == "/"
        alice.quit()
        text = summary(server)
        assert "(no anonymous access, 1 account(s): alice)" in text, text
        assert (
            "  anonymous off, as accounts are configured; to allow it too, "
            "pass --anonymous or set [anonymous] enabled = true\n"
        ) in text, text


def test_a_file_with_accounts_may_still_allow_anonymous_access_explicitly(
    tmp_path: Path, served: Path
) -> None:
    port = free_port()
    config = tmp_path / "ketch.toml"
    text = config_text(port, root=served, alice=alice_home(tmp_path))
    config.write_text(text + "[anonymous]\nenabled = true\n")
    with ketch_serve(["--config", str(config)], tmp_path) as server:
        ftp = login(port)
        assert ftp.nlst() == ["hello.txt"]
        ftp.quit()
        assert "(anonymous read-only, 1 account(s): alice)" in summary(server)
        assert "anonymous off" not in summary(server)


def test_user_flags_turn_anonymous_access_off_unless_anonymous_is_given(served: Path) -> None:
    port = free_port()
    args = quick_args(port, "--root", str(served), "--user", "bob:pw")
    with ketch_serve(args, served) as server:
        assert anonymous_refusal(port).startswith(TURNED_OFF)
        login(port, "bob", "pw").quit()
        assert "(no anonymous access, 1 account(s): bob)" in summary(server)
        assert "pass --anonymous or set [anonymous] enabled = true" in summary(server)
    port = free_port()
    with ketch_serve(quick_args(port, "--user", "bob:pw", "--anonymous"), served) as server:
        ftp = login(port)
        assert ftp.nlst() == ["hello.txt"]
        ftp.quit()
        login(port, "bob", "pw").quit()
        assert "(anonymous read-only, 1 account(s): bob)" in summary(server)


def test_the_quick_start_still_serves_this_directory_anonymous_read_only(served: Path) -> None:
    port = free_port()
    with ketch_serve(quick_args(port), served) as server:
        ftp = login(port)
        assert ftp.nlst() == ["hello.txt"]
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.mkd("made")
        ftp.quit()
        assert f"serving {served} (anonymous read-only)" in summary(server)


def test_a_file_without_accounts_or_anonymous_table_allows_anonymous(
    tmp_path: Path, served: Path
) -> None:
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(config_text(port, root=served))
    with ketch_serve(["--config", str(config)], tmp_path):
        login(port).quit()


# -- 1: the current directory "/" is not served to anonymous users by default --------------


def test_anonymous_access_to_a_root_left_at_the_current_directory_slash_is_refused(
    tmp_path: Path,
) -> None:
    stderr = refused_start(quick_args(free_port()), Path("/"))
    assert stderr.strip() == (
        "Error: root is not set, so anonymous users would be served the current "
        "directory, / (the whole file system); give --root DIR, or turn anonymous "
        "access off (--no-anonymous)"
    ), stderr
    config = tmp_path / "ketch.toml"
    config.write_text(config_text(free_port()))
    stderr = refused_start(["--config", str(config)], Path("/"))
    assert stderr.strip() == (
        f"Error: {config}: root is not set, so anonymous users would be served the "
        "current directory, / (the whole file system); set root in the file (or give "
        "--root DIR), or turn anonymous access off ([anonymous] enabled = false)"
    ), stderr


def test_a_root_of_slash_given_on_purpose_is_served(tmp_path: Path) -> None:
    port = free_port()
    with ketch_serve(quick_args(port, "--root", "/"), tmp_path) as server:
        assert "serving / (anonymous read-only)" in summary(server)
    port = free_port()  # accounts alone: anonymous is off, so "/" is no accident here
    with ketch_serve(quick_args(port, "--user", "bob:pw"), Path("/")):
        assert anonymous_refusal(port).startswith(TURNED_OFF)


# -- 1: reloads apply the same rules -------------------------------------------------------


def reload(server: ServeProcess) -> str:
    """SIGHUP; the "reload: changed:" line it logs."""
    mark = len(server.stderr)
    server.signal(signal.SIGHUP)
    return server.wait_for("reload: changed: ", start=mark)


def test_a_reload_turns_the_anonymous_default_off_when_accounts_are_added(
    tmp_path: Path, served: Path
) -> None:
    port = free_port()
    config = tmp_path / "ketch.toml"
    without_accounts = config_text(port, root=served)
    config.write_text(without_accounts)
    with ketch_serve(["--config", str(config)], tmp_path) as server:
        login(port).quit()
        assert reload(server).rstrip().endswith("reload: changed: nothing")

        with_alice = config_text(port, root=served, alice=alice_home(tmp_path))
        config.write_text(with_alice)
        changed = reload(server)
        assert "anonymous on -> off (by default, as accounts are now configured)" in changed
        assert "users added: alice" in changed, changed
        assert anonymous_refusal(port).startswith(TURNED_OFF)
        login(port, "alice", ALICE_PASSWORD).quit()
        assert reload(server).rstrip().endswith("reload: changed: nothing")

        config.write_text(with_alice + "[anonymous]\nenabled = true\n")
        changed = reload(server)
        assert "anonymous.enabled (not set) -> true" in changed, changed
        login(port).quit()

        config.write_text(without_accounts)
        changed = reload(server)
        assert "anonymous.enabled true -> (not set)" in changed, changed
        assert "users removed: alice" in changed, changed
        login(port).quit()  # no accounts: on by default again
        assert reload(server).rstrip().endswith("reload: changed: nothing")


# -- 2: --write is for --user accounts, and for anonymous only without accounts ------------


def can_write(ftp: ftplib.FTP, name: str) -> bool:
    """Whether STOR of ``name`` is allowed (550 when it is not), the session closed after."""
    try:
        ftp.storbinary(f"STOR {name}", io.BytesIO(b"written\n"))
    except ftplib.error_perm as refused:
        assert str(refused).startswith("550 "), refused
        return False
    finally:
        ftp.quit()
    return True


def test_write_with_accounts_from_a_file_and_no_user_flag_is_refused(
    tmp_path: Path, served: Path
) -> None:
    # It gave anonymous full write and delete, and left the file's accounts read-only.
    config = tmp_path / "ketch.toml"
    text = config_text(free_port(), root=served, alice=alice_home(tmp_path))
    for tables in ("", "[anonymous]\nenabled = true\n"):
        config.write_text(text + tables)
        stderr = refused_start(["--config", str(config), "--write"], tmp_path)
        assert stderr.strip() == (
            f"Error: command line: --write applies to --user accounts (and to anonymous "
            f"when there are no accounts), but {config} has accounts (alice) and no --user "
            f"is given; set each account's permissions in {config} instead, such as "
            'permissions = ["all"]'
        ), stderr
    assert list(served.iterdir()) == [served / "hello.txt"]


def test_write_with_user_flags_is_for_them_and_never_for_anonymous(
    tmp_path: Path, served: Path
) -> None:
    port = free_port()
    config = tmp_path / "ketch.toml"
    text = config_text(port, root=served, alice=alice_home(tmp_path))
    config.write_text(text + "[anonymous]\nenabled = true\n")
    args = ["--config", str(config), "--user", "bob:pw", "--write"]
    with ketch_serve(args, tmp_path) as server:
        assert can_write(login(port, "bob", "pw"), "by-bob.txt")
        assert not can_write(login(port), "by-anonymous.txt")
        assert not can_write(login(port, "alice", ALICE_PASSWORD), "by-alice.txt")
        assert "(anonymous read-only, 2 account(s): alice, bob)" in summary(server)
    port = free_port()
    with ketch_serve(quick_args(port, "--user", "bob:pw", "--anonymous", "--write"), served):
        assert can_write(login(port, "bob", "pw"), "by-bob-2.txt")
        assert not can_write(login(port), "by-anonymous.txt")
    assert not (served / "by-anonymous.txt").exists()


def test_write_without_any_account_is_for_anonymous(tmp_path: Path, served: Path) -> None:
    port = free_port()
    with ketch_serve(quick_args(port, "--write"), served) as server:
        assert can_write(login(port), "quick.txt")
        assert "(anonymous read-write)" in summary(server)
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(config_text(port, root=served))
    with ketch_serve(["--config", str(config), "--write"], tmp_path) as server:
        assert can_write(login(port), "from-file.txt")
        # Accounts added by a reload: --write is for none of them; nothing changes.
        config.write_text(config_text(port, root=served, alice=alice_home(tmp_path)))
        mark = len(server.stderr)
        server.signal(signal.SIGHUP)
        assert "reload: command line: --write applies to --user accounts" in server.wait_for(
            "--write", start=mark
        )
        server.wait_for("not applied (1 problem(s))", start=mark)
        assert can_write(login(port), "after-reload.txt")


# -- 3: the summary and the login reply say what anonymous users may do ------------------------


@pytest.mark.parametrize(
    ("words", "access", "who"),
    [
        ('["list", "read", "delete"]', "list, read, delete", "with list, read, delete"),
        ('["All"]', "read-write", "read-write"),  # words are case-insensitive
        ('["LIST", "Read"]', "read-only", "read-only"),
        ('["mkdir", "read", "list"]', "list, read, mkdir", "with list, read, mkdir"),
    ],
)
def test_the_summary_and_the_login_say_what_anonymous_users_may_do(
    tmp_path: Path, served: Path, words: str, access: str, who: str
) -> None:
    port = free_port()
    config = tmp_path / "ketch.toml"
    config.write_text(config_text(port, root=served) + f"[anonymous]\npermissions = {words}\n")
    with ketch_serve(["--config", str(config)], tmp_path) as server:
        assert f"serving {served} (anonymous {who})\n" in summary(server)
        ftp = ftplib.FTP(timeout=10)
        ftp.connect(HOST, port)
        assert ftp.login() == f"230 Anonymous access granted ({access})."
        if "delete" in access:  # what "read-only" hid
            ftp.delete("hello.txt")
        ftp.quit()
