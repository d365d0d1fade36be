"""The ketch command as people use it: config validation, password hashes, examples."""

from __future__ import annotations

import datetime
import ftplib
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import argon2
import pytest
import trustme
from serve_process import KETCH_SERVE, STARTUP_TIMEOUT, STOP_TIMEOUT, free_port, ketch_serve

KETCH = [sys.executable, "-m", "ketch"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KETCH, *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_bad_config_value_is_one_line_naming_key_value_and_rule(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text('passive_ports = "60000-50000"\n')
    result = run("serve", "--config", str(config))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "passive_ports" in lines[0] and "60000-50000" in lines[0] and "LOW <= HIGH" in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_config_key_suggests_the_right_one(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text("pasive_ports = '50000-50010'\n")
    result = run("config", "check", str(config))
    assert result.returncode != 0
    assert "pasive_ports" in result.stderr and "passive_ports" in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        # [users] (one table) where [[users]] (a list of tables) was meant.
        '[users]\nname = "bob"\npassword_hash = "MyS3cretPassw0rd"\nhome = "srv"\n',
        'users = ["bob:MyS3cretPassw0rd"]\n',
        'users = [["bob", "MyS3cretPassw0rd"]]\n',
        '[[users]]\nname = "bob"\nhome = "srv"\npassword_hash = ["MyS3cretPassw0rd"]\n',
    ],
    ids=["table", "string", "pair", "list"],
)
def test_config_check_never_shows_a_password_put_in_the_wrong_place(
    tmp_path: Path, text: str
) -> None:
    (tmp_path / "srv").mkdir()
    config = tmp_path / "ketch.toml"
    config.write_text(text)
    result = run("config", "check", str(config))
    assert result.returncode != 0
    assert "MyS3cretPassw0rd" not in result.stdout + result.stderr
    assert f"{config}: users" in result.stderr, result.stderr
    assert "not shown" in result.stderr and "Traceback" not in result.stderr


def test_users_as_one_table_shows_its_keys_but_not_the_password(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    config = tmp_path / "ketch.toml"
    config.write_text('[users]\nname = "bob"\npassword_hash = "MyS3cretPassw0rd"\nhome = "srv"\n')
    result = run("config", "check", str(config))
    assert result.stderr.strip() == (
        f"Error: {config}: users = {{name = 'bob', password_hash = (not shown), "
        "home = 'srv'}: is one [users] table, but accounts are a list of tables: write "
        "the header as [[users]] (double brackets), once before each account"
    )


def test_a_key_set_twice_is_named_with_the_line_to_remove(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text("port = 21\nport = 22\n")
    result = run("config", "check", str(config))
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"Error: {config}:2: port is set twice (also on line 1); remove one of them"
    )


def test_config_check_also_finds_what_serve_looks_up_at_start(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(
        f'root = "{tmp_path}"\nrun_as = "no-such-user-here"\n'
        'masquerade_address = "no-such-host.invalid"\n'
    )
    result = run("config", "check", str(config))
    assert result.returncode != 0
    assert "run_as = 'no-such-user-here': no such user" in result.stderr
    assert "no-such-host.invalid' does not resolve" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_prints_the_warnings_serve_would_log(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(f'root = "{tmp_path}"\nport = 2121\npassive_ports = "2100-2200"\n')
    result = run("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert "includes the control port 2121" in result.stderr
    assert result.stderr.count(": warning: ") == 3
    assert result.stdout.strip() == f"{config}: ok, with 3 warning(s)"


def test_config_check_warns_of_a_masquerade_name_that_resolves_to_a_private_address(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(f'root = "{tmp_path}"\nmasquerade_address = "localhost"\n')
    result = run("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert (
        f"{config}: warning: masquerade_address localhost (127.0.0.1) is not a public address"
        in result.stderr
    )
    assert result.stdout.strip() == f"{config}: ok, with 1 warning(s)"


def test_config_check_warns_when_nobody_can_log_in(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(f'root = "{tmp_path}"\n[anonymous]\nenabled = false\n')
    result = run("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert f"{config}: warning: nobody can log in: anonymous access is off" in result.stderr
    assert "add --user NAME:PASSWORD or a [[users]] entry" in result.stderr
    assert result.stdout.strip() == f"{config}: ok, with 1 warning(s)"


def test_config_check_warns_about_an_expired_certificate(tmp_path: Path) -> None:
    issued = trustme.CA().issue_cert(
        "127.0.0.1",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2020, 1, 3, tzinfo=datetime.UTC),
    )
    certificate, key = tmp_path / "old.crt", tmp_path / "old.key"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    config = tmp_path / "ketch.toml"
    config.write_text(
        f'root = "{tmp_path}"\ntls_certificate = "{certificate}"\ntls_key = "{key}"\n'
    )
    result = run("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert f"warning: TLS certificate {certificate} has expired" in result.stderr
    assert "ketch cert" in result.stderr
    assert result.stdout.strip() == f"{config}: ok, with 1 warning(s)"


def test_config_check_refuses_passive_ports_run_as_could_not_bind(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(f'root = "{tmp_path}"\nrun_as = "nobody"\npassive_ports = "1000-1100"\n')
    result = run("config", "check", str(config))
    if "no such user" in result.stderr:
        pytest.skip("there is no user 'nobody' on this system")
    assert result.returncode != 0
    assert "passive_ports 1000-1100 starts below" in result.stderr
    assert "use a range from" in result.stderr and "Traceback" not in result.stderr


def test_a_tilde_naming_no_user_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text('root = "~no-such-user-for-ketch/x"\n')
    for args in (
        ["config", "check", str(config)],
        ["firewall", "--config", str(config), "--format", "nftables"],
        ["serve", "--port", "0", "--root", "~no-such-user-for-ketch"],
    ):
        result = run(*args)
        assert result.returncode != 0
        setting = "--root '" if "serve" in args else "root = '"  # a flag is named as typed
        assert setting + "~no-such-user-for-ketch" in result.stderr, args
        assert "no such user for '~no-such-user-for-ketch'; write the full path" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_unknown_event_loop_in_the_environment_is_named_as_its_source(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [*KETCH, "serve", "--port", "0", "--listen", "127.0.0.1", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KETCH_EVENT_LOOP": "foo"},
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: KETCH_EVENT_LOOP = 'foo' (in the environment): unknown event loop; "
        "use 'auto', 'asyncio' or 'uvloop', or unset KETCH_EVENT_LOOP"
    )
    assert "Traceback" not in result.stderr


def test_a_user_flag_with_a_name_no_account_may_have_names_the_flag() -> None:
    serve = ["serve", "--port", "0", "--listen", "127.0.0.1", "--user"]
    result = run(*serve, "ftp:x")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Error: command line: --user 'ftp': is reserved for anonymous login "
        "(configured under [anonymous]); pick another user name"
    )
    result = run(*serve, "bad name:x")
    assert "--user 'bad name': contains spaces" in result.stderr, result.stderr
    assert "users[0]" not in result.stderr


def test_a_user_flag_clashing_with_a_configured_user_names_the_flag_and_the_file(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ketch.toml"
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    config.write_text(
        f'root = "{tmp_path}"\n[[users]]\nname = "alice"\npassword_hash = "{hashed}"\n'
        f'home = "{tmp_path}"\n'
    )
    serve = ["serve", "--port", "0", "--listen", "127.0.0.1"]
    result = run(*serve, "--config", str(config), "--user", "alice:x")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"Error: command line: --user alice: {config} already has a user 'alice' "
        "(users[0]); give --user another name, or remove one of them"
    )
    result = run(*serve, "--root", str(tmp_path), "--user", "bob:x", "--user", "bob:y")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Error: command line: --user bob: given twice; give every --user a different name"
    )


SERVE_HERE = ["serve", "--port", "0", "--listen", "127.0.0.1"]


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The last stderr line of a ketch command that must have failed."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_setting_from_the_command_line_is_named_by_its_flag(tmp_path: Path) -> None:
    result = run(*SERVE_HERE, "--root", str(tmp_path), "--tls-required", "control")
    assert error_line(result) == (
        "Error: command line: --tls-required 'control': needs a certificate: set "
        "--tls-certificate (and --tls-key) to a pair from `ketch cert --host NAME`, or "
        "serve with --tls for a generated self-signed one"
    )
    missing = tmp_path / "no-such-dir"
    result = run(*SERVE_HERE, "--root", str(missing))
    assert error_line(result) == (
        f"Error: command line: --root '{missing}': no such directory; "
        "create it or choose an existing directory"
    )


def test_a_setting_from_the_file_is_prefixed_by_the_file_name(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text(f'root = "{tmp_path}"\ntls_required = "control"\n')
    result = run(*SERVE_HERE, "--config", str(config))
    assert error_line(result) == (
        f"Error: {config}: tls_required = 'control': needs a certificate: set "
        "tls_certificate (and tls_key) to a pair from `ketch cert --host NAME`, or "
        "serve with --tls for a generated self-signed one"
    )


def test_a_user_flag_without_a_password_names_the_flag_and_hides_the_password() -> None:
    result = run(*SERVE_HERE, "--user", "alice")
    assert result.returncode == 2
    assert error_line(result) == (
        "Error: Invalid value for '--user': 'alice' has no password; write it as NAME:PASSWORD"
    )
    result = run(*SERVE_HERE, "--user", ":s3cret")
    assert error_line(result) == (
        "Error: Invalid value for '--user': the name before ':' is empty; write it as NAME:PASSWORD"
    )
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("toml", "flags", "file_error", "flag_error"),
    [
        (
            'run_as = "no-such-user-here"',
            ["--run-as", "no-such-user-here"],
            "run_as = 'no-such-user-here': no such user on this system; name an existing user",
            "--run-as 'no-such-user-here': no such user on this system; name an existing user",
        ),
        (
            'masquerade_address = "no-such-host.invalid"',
            ["--masquerade-address", "no-such-host.invalid"],
            "masquerade_address 'no-such-host.invalid' does not resolve to an IPv4 address",
            "--masquerade-address 'no-such-host.invalid' does not resolve to an IPv4 address",
        ),
        (
            '[masquerade_map]\n"10.0.0.0/8" = "no-such-host.invalid"',
            None,
            "masquerade_map[\"10.0.0.0/8\"] 'no-such-host.invalid' does not resolve",
            None,
        ),
        (
            'run_as = "nobody"\npassive_ports = "900-999"',
            ["--run-as", "nobody", "--passive-ports", "900-999"],
            "passive_ports 900-999 starts below 1024, the lowest port nobody may bind once "
            "root is dropped (run_as), so every PASV and EPSV would fail",
            "--passive-ports 900-999 starts below 1024, the lowest port nobody may bind once "
            "root is dropped (--run-as), so every PASV and EPSV would fail",
        ),
    ],
    ids=["run_as", "masquerade_address", "masquerade_map", "passive_ports"],
)
def test_a_start_up_problem_says_where_its_setting_came_from(
    tmp_path: Path, toml: str, flags: list[str] | None, file_error: str, flag_error: str | None
) -> None:
    if "nobody" in toml:
        _skip_unless_nobody_is_refused_port_900()
    config = tmp_path / "ketch.toml"
    config.write_text(f'root = "{tmp_path}"\n{toml}\n')
    line = error_line(run(*SERVE_HERE, "--config", str(config)))
    assert line.startswith(f"Error: {config}: {file_error}"), line
    if flags is not None:
        line = error_line(run(*SERVE_HERE, "--root", str(tmp_path), *flags))
        assert line.startswith(f"Error: command line: {flag_error}"), line


def _skip_unless_nobody_is_refused_port_900() -> None:
    """run_as = "nobody" with passive ports 900-999: refused by root, if nobody exists and
    the kernel keeps ports below 1024 for root (containers may lower the limit to 0)."""
    if os.geteuid() != 0:
        pytest.skip("run_as needs the server to start as root")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody' on this system")
    limit = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    if limit.exists() and int(limit.read_text()) != 1024:
        pytest.skip("the kernel's lowest unprivileged port is not the usual 1024")


def test_bad_flag_value_is_refused_before_listening() -> None:
    result = run("serve", "--port", "2121", "--active-source-port", "banana")
    assert result.returncode != 0
    assert "command line: --active-source-port 'banana': must be 'auto'" in result.stderr


def test_a_listening_failure_names_the_port_or_address_at_fault(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        cases = [
            (["--port", port], "port is in use; pick another port (--port)"),
            (["--port", "0", "--listen", "192.0.2.99"], "fix listen_address (--listen)"),
            (
                ["--port", "0", "--tls", "--implicit-tls-port", port],
                "pick another implicit_tls_port (--implicit-tls-port)",
            ),
        ]
        for flags, expected in cases:
            result = subprocess.run(
                [*KETCH, "serve", "--listen", "127.0.0.1", *flags],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,  # --tls writes its certificate here
            )
            assert result.returncode != 0
            lines = result.stderr.strip().splitlines()
            assert expected in lines[-1], result.stderr
            assert "Traceback" not in result.stderr


def test_user_hash_prints_a_verifiable_argon2_hash() -> None:
    result = run("user", "hash", "--password-stdin", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(hashed, "correct horse")


def test_user_hash_of_a_password_that_is_not_utf8_hashes_its_bytes_and_warns() -> None:
    # The server checks a password's bytes as sent; this was a UnicodeEncodeError traceback.
    result = subprocess.run(
        [*KETCH, "user", "hash", "--password-stdin"],
        input=b"\xff\xfe\n",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert argon2.PasswordHasher().verify(result.stdout.decode().strip(), b"\xff\xfe")
    assert result.stderr.decode() == (
        "warning: the password is not UTF-8 text (byte 0xff at offset 0); "
        "it is hashed as these bytes, which a client must send\n"
    )


def test_user_hash_with_standard_input_closed_says_to_pipe_the_password_in() -> None:
    # Python sets sys.stdin to None: this was an AttributeError traceback.
    script = 'exec "$@" <&-'
    result = subprocess.run(
        ["sh", "-c", script, "sh", *KETCH, "user", "hash", "--password-stdin"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr == (
        "Error: standard input is closed, so there is no password to read; "
        "pipe it in: ketch user hash --password-stdin < FILE\n"
    )


def test_user_hash_without_a_terminal_says_to_add_password_stdin() -> None:
    # click.prompt warned "Password input may be echoed" and aborted with no hint.
    result = run("user", "hash", stdin="secret\n")
    assert result.returncode != 0
    assert result.stderr == (
        "Error: standard input is not a terminal, so the password cannot be typed; "
        "to read it from standard input, add --password-stdin\n"
    )
    assert "secret" not in result.stdout + result.stderr


def test_config_example_is_a_valid_config(tmp_path: Path) -> None:
    example = run("config", "example")
    assert example.returncode == 0
    path = tmp_path / "ketch.toml"
    path.write_text(example.stdout)
    checked = run("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "passive_ports" in example.stdout and "masquerade_address" in example.stdout


README = Path(__file__).resolve().parents[2] / "README.md"
#: README's placeholders, and real values to check its snippets with.
PLACEHOLDERS = {'"ftp.example.com"': '"1.1.1.1"'}


def readme_toml_snippets() -> list[str]:
    """Every ```toml block of README.md, placeholders replaced by real values."""
    snippets = re.findall(r"^```toml\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    for placeholder, value in PLACEHOLDERS.items():
        snippets = [snippet.replace(placeholder, value) for snippet in snippets]
    return snippets


def test_readme_config_snippets_pass_config_check_without_warnings(tmp_path: Path) -> None:
    snippets = readme_toml_snippets()
    assert snippets, "README.md has no ```toml block"
    for number, snippet in enumerate(snippets, 1):
        config = tmp_path / f"readme-{number}.toml"
        config.write_text(snippet)
        result = run("config", "check", str(config))
        assert result.returncode == 0, f"{snippet}\n{result.stderr}"
        assert result.stdout.strip() == f"{config}: ok", f"{snippet}\n{result.stderr}"


def test_serve_says_when_nobody_can_log_in(tmp_path: Path) -> None:
    args = ["--port", "0", "--listen", "127.0.0.1", "--no-anonymous"]
    with ketch_serve(args, tmp_path) as serving:
        summary = "".join(serving.stdout)
        assert "(no anonymous access and no accounts)" in summary
        warnings = [line for line in serving.stdout if line.startswith("  warning  ")]
        assert any("nobody can log in" in w and "--user NAME:PASSWORD" in w for w in warnings)
        assert "WARNING" in serving.wait_for("set-up: nobody can log in")
    with ketch_serve([*args, "--user", "bob:pw"], tmp_path) as serving:
        assert not [line for line in serving.stdout if "nobody can log in" in line]


def _session_of(line: str) -> str:
    """The session=N field a log line ends with."""
    field = line.rstrip("\n").rsplit(" ", 1)[-1]
    assert field.startswith("session="), line
    return field


def test_a_sessions_log_lines_name_it_and_its_end_says_who_and_how_long(tmp_path: Path) -> None:
    """Two sessions from one address: each line says which one it belongs to."""
    port = free_port()
    args = ["--port", str(port), "--listen", "127.0.0.1", "--root", str(tmp_path)]
    with ketch_serve([*args, "--user", "bob:pw", "--write"], tmp_path) as serving:
        bob = ftplib.FTP(timeout=10)
        bob.connect("127.0.0.1", port)
        bob_port = bob.sock.getsockname()[1]
        connected = serving.wait_for(f"connect client=127.0.0.1 port={bob_port} ")
        stranger = ftplib.FTP(timeout=10)
        stranger.connect("127.0.0.1", port)
        bob.login("bob", "pw")
        bob.mkd("made")
        stranger.quit()
        bob.quit()
        session = _session_of(connected)
        assert _session_of(serving.wait_for("login ok user=bob")) == session
        assert _session_of(serving.wait_for("mkdir user=bob")) == session
        ended = serving.wait_for("disconnect client=127.0.0.1 user=bob seconds=")
        assert _session_of(ended) == session
        other = serving.wait_for("disconnect client=127.0.0.1 user=- seconds=")
        assert _session_of(other) != session


def test_a_single_process_server_logs_that_it_serves(tmp_path: Path) -> None:
    """The summary goes to stdout; the log (stderr) must say too that the server started."""
    port = free_port()
    args = ["--port", str(port), "--listen", "127.0.0.1", "--passive-ports", "41000-41099"]
    with ketch_serve(args, tmp_path) as serving:
        line = serving.wait_for(" serving address=")
    assert " INFO ketch.server: ketch " in line
    assert f"serving address=127.0.0.1 port={port} pid={serving.pid} " in line
    assert "passive_ports=41000-41099 tls=off tls_required=off implicit_tls_port=-" in line
    assert line.rstrip().endswith(("event_loop=asyncio", "event_loop=uvloop"))


def test_log_times_are_utc_and_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server in Tokyo logs UTC with a Z, not local time without an offset."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    before = datetime.datetime.now(datetime.UTC)
    with ketch_serve(["--port", str(free_port()), "--listen", "127.0.0.1"], tmp_path) as serving:
        line = serving.wait_for(" serving address=")
    after = datetime.datetime.now(datetime.UTC)
    stamp = line.split(" ", 1)[0]
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-22T12:48:46.199Z"), line
    logged = datetime.datetime.fromisoformat(stamp)
    # Whole seconds are enough: Tokyo's local time would be 9 hours off.
    assert before.replace(microsecond=0) <= logged <= after, (before, logged, after)


@pytest.mark.parametrize("closed", [0, 1, 2], ids=["stdin", "stdout", "stderr"])
def test_serve_started_with_a_standard_descriptor_closed_serves_and_stops_cleanly(
    tmp_path: Path, closed: int
) -> None:
    # As a daemon may start it (`ketch serve <&-`): the event loop's own descriptor must
    # not take the free number, which libuv refuses to close (it aborted, exit 134).
    port = free_port()
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "pub.txt").write_text("hi")
    output = (tmp_path / "output.txt").open("w")
    address = ["--port", str(port), "--listen", "127.0.0.1"]
    process = subprocess.Popen(
        [*KETCH_SERVE, "--root", str(tmp_path / "srv"), *address],
        stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        preexec_fn=lambda: os.close(closed),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and not _accepts(port):
            assert process.poll() is None, (tmp_path / "output.txt").read_text()
            time.sleep(0.1)
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=10)
            ftp.login()
            assert ftp.nlst() == ["pub.txt"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_TIMEOUT) == 0, (tmp_path / "output.txt").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        output.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
