"""``ketch doctor`` run as users run it, against real servers on loopback.

ketch's own server (which answers SITE NATINFO) with every mode working,
with active mode refused, and behind a small FTP "helper" that rewrites PORT
commands on the way, as a NAT router's conntrack helper does; vsftpd (no
NATINFO) advertising a private PASV address and refusing EPSV, and with
every data command disabled. Real NAT and firewalls are in tests/lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PASSWORD, USER, RunningServer
from ftp_helpers import free_port
from peer_servers import PeerServer, make_tls_files

KETCH = [sys.executable, "-m", "ketch", "doctor"]
RUN_TIMEOUT = 60
PRIVATE_ELSEWHERE = "198.18.0.5"  # private (RFC 2544), and not this machine
CONTRACT_KEYS = {
    "url",
    "server",
    "client_address",
    "server_sees",
    "behind_nat",
    "modes",
    "rewrites",
    "verdict",
    "fixes",
}
MODE_NAMES = {"EPSV", "PASV", "PASV-fixup", "EPRT", "PORT"}


def doctor(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)  # no ~/.netrc of the user's
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [*KETCH, *args], capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False
    )


def doctor_json(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    result = doctor(tmp_path, "--json", *args)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"one JSON object expected, got {result.stdout!r}; {result.stderr}"
    return result.returncode, json.loads(lines[0]), result.stderr


def problems(report: dict[str, Any]) -> dict[str, str | None]:
    return {name: mode["problem"] for name, mode in report["modes"].items()}


@pytest.fixture
def ketch_server(make_server: Callable[..., RunningServer]) -> RunningServer:
    server = make_server()
    (server.home / "listed.txt").write_bytes(b"something to list\n")
    return server


# -- ketch ------------------------------------------------------------------------------


def test_every_mode_works_against_ketch_and_the_json_is_the_contract(
    ketch_server: RunningServer, tmp_path: Path
) -> None:
    code, report, _ = doctor_json(tmp_path, ketch_server.url("/"))
    assert code == 0
    assert set(report) == CONTRACT_KEYS
    assert set(report["modes"]) == MODE_NAMES
    for name, mode in report["modes"].items():
        assert set(mode) == {"works", "problem", "detail"}, name
        assert mode["works"] is True and mode["problem"] is None, (name, mode)
        assert "LIST gave 0 bytes" not in mode["detail"]  # the listing really came through
    assert report["url"] == f"ftp://127.0.0.1:{ketch_server.port}/"
    assert report["server"] == f"127.0.0.1:{ketch_server.port}"
    assert report["client_address"] == "127.0.0.1"
    assert report["server_sees"] == "127.0.0.1"  # from SITE NATINFO
    assert report["behind_nat"] is False
    assert report["rewrites"] == []
    assert report["fixes"] == {"client": [], "server": []}
    assert "Every data-connection mode works" in report["verdict"]
    assert PASSWORD not in json.dumps(report)


def test_every_mode_works_over_explicit_and_implicit_ftps(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    # tls_required = "all": a data connection in the clear would be refused, so every
    # mode that works here worked under TLS, resuming the control session.
    files = make_tls_files(tmp_path / "tls")
    implicit_port = free_port()
    server = make_server(
        tls_certificate=str(files.server_file),
        tls_required="all",
        implicit_tls_port=implicit_port,
    )
    (server.home / "listed.txt").write_bytes(b"something to list\n")
    cacert = ("--cacert", str(files.ca_file))
    implicit_url = f"ftps://{USER}:{PASSWORD}@{server.host}:{implicit_port}/"
    for args in (("--ftps", *cacert, server.url("/")), (*cacert, implicit_url)):
        code, report, stderr = doctor_json(tmp_path, *args)
        assert code == 0, stderr
        assert {name: mode["works"] for name, mode in report["modes"].items()} == dict.fromkeys(
            MODE_NAMES, True
        ), report
    assert report["url"].startswith("ftps://")
    # Without --ftps the server refuses the clear login, and the doctor says so.
    result = doctor(tmp_path, server.url("/"))
    assert result.returncode == 4, result.stderr
    assert "AUTH TLS" in result.stdout + result.stderr


def test_the_report_for_people_has_a_line_per_step_and_mode(
    ketch_server: RunningServer, tmp_path: Path
) -> None:
    result = doctor(tmp_path, ketch_server.url("/"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"ketch doctor ftp://127.0.0.1:{ketch_server.port}/"
    steps = {line.split()[0]: line.split()[1] for line in lines[1:] if line.startswith("  ")}
    assert steps == {
        "resolve": "ok",
        "connect": "ok",
        "login": "ok",
        "natinfo": "ok",
        **dict.fromkeys(MODE_NAMES, "works"),
    }
    assert f"logged in as {USER}" in result.stdout
    assert "the server sees you as 127.0.0.1" in result.stdout
    assert lines[-1].startswith("Verdict: Every data-connection mode works")
    assert PASSWORD not in result.stdout + result.stderr


def test_active_mode_refused_by_the_server_is_explained_and_passive_recommended(
    ketch_server: RunningServer, tmp_path: Path
) -> None:
    # Advertising an address that is not ours: the server refuses PORT/EPRT (RFC 2577).
    code, report, _ = doctor_json(
        tmp_path, "--active-address", PRIVATE_ELSEWHERE, ketch_server.url("/")
    )
    assert code == 0
    assert problems(report) == {
        "EPSV": None,
        "PASV": None,
        "PASV-fixup": None,
        "EPRT": "refused-by-server",
        "PORT": "refused-by-server",
    }
    assert PRIVATE_ELSEWHERE in report["modes"]["PORT"]["detail"]
    assert report["verdict"].startswith(
        "Passive mode works (EPSV, PASV, PASV-fixup); active mode fails because the server "
        "refuses it"
    )
    assert any("--passive" in fix for fix in report["fixes"]["client"])


def test_a_server_that_cannot_bind_its_active_source_port_is_blamed(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    # Another socket holds the fixed active_source_port: every connect-back fails to bind.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        server = make_server(active_source_port=holder.getsockname()[1])
        (server.home / "listed.txt").write_bytes(b"something to list\n")
        code, report, _ = doctor_json(tmp_path, "--timeout", "3", server.url("/"))
    assert code == 0  # passive works
    assert problems(report)["EPRT"] == problems(report)["PORT"] == "server-setup"
    assert "the server cannot open its side of the connection" in report["verdict"]
    (client_fix,) = report["fixes"]["client"]  # use passive mode: nothing to open here
    assert "passive" in client_fix.lower()
    assert any("active_source_port" in fix for fix in report["fixes"]["server"])


def test_over_ipv6_pasv_and_port_are_not_tried_and_the_rest_works(
    make_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        server = make_server(listen_address="::1")
    except OSError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    (server.home / "listed.txt").write_bytes(b"something to list\n")
    code, report, _ = doctor_json(tmp_path, f"ftp://{USER}:{PASSWORD}@[::1]:{server.port}/")
    assert code == 0
    assert report["server"] == f"[::1]:{server.port}"
    assert report["behind_nat"] is False
    assert {name for name, mode in report["modes"].items() if mode["works"]} == {"EPSV", "EPRT"}
    for name in ("PASV", "PASV-fixup", "PORT"):
        assert report["modes"][name]["detail"].startswith("not tried:"), report["modes"][name]
        # Neither works nor fails: "error" contradicted the verdict and the exit code 0.
        assert report["modes"][name]["works"] is False
        assert report["modes"][name]["problem"] == "not-applicable"
    assert report["verdict"].startswith("Every data-connection mode that applies works")
    assert report["fixes"] == {"client": [], "server": []}
    table = doctor(tmp_path, f"ftp://{USER}:{PASSWORD}@[::1]:{server.port}/").stdout
    assert "FAILS" not in table, table
    assert re.search(r"^  PORT +n/a +not tried: PORT cannot describe", table, re.M), table


def test_port_and_pasv_rewritten_on_the_way_are_detected_through_natinfo(
    ketch_server: RunningServer, tmp_path: Path
) -> None:
    with rewriting_proxy(ketch_server.port) as proxy_port:
        url = f"ftp://{USER}:{PASSWORD}@127.0.0.1:{proxy_port}/"
        code, report, _ = doctor_json(tmp_path, url)
    assert code == 0
    assert all(mode["works"] for mode in report["modes"].values()), report["modes"]
    assert set(problems(report).values()) == {None}  # rewriting that works is no problem
    rewrites = report["rewrites"]
    assert len(rewrites) == 3, rewrites  # PASV, PASV-fixup and PORT; EPSV and EPRT pass as sent
    for rewrite in rewrites[:2]:
        assert rewrite.startswith(
            "the PASV reply was rewritten between server and client: server sent "
            "'227 Entering Passive Mode (127,0,0,1,"
        )
    assert rewrites[2].startswith(
        "PORT was rewritten between client and server: sent 'PORT 127,0,0,1,"
    )
    assert "server received 'PORT 127,0,0,1," in rewrites[2]
    assert "PASV replies and PORT commands were rewritten on the way" in report["verdict"]


def test_a_refused_login_exits_4_with_a_verdict(
    ketch_server: RunningServer, tmp_path: Path
) -> None:
    code, report, stderr = doctor_json(tmp_path, ketch_server.url("/", password="wrong"))
    assert code == 4
    assert report["modes"] == {}
    assert "login as 'alice' refused" in report["verdict"]
    assert stderr.startswith("ketch: login as 'alice' refused")


def test_a_server_that_is_not_there_exits_3_with_a_verdict(tmp_path: Path) -> None:
    port = free_port()
    code, report, stderr = doctor_json(tmp_path, f"ftp://127.0.0.1:{port}/")
    assert code == 3
    assert report["server"] is None and report["modes"] == {}
    assert f"cannot connect to 127.0.0.1:{port}" in report["verdict"]
    assert any(f"listens on port {port}" in fix for fix in report["fixes"]["server"])
    assert stderr.startswith("ketch: cannot connect")


# -- vsftpd (no SITE NATINFO) ---------------------------------------------------------------


@pytest.mark.peer
def test_vsftpd_advertising_a_private_address_and_refusing_epsv(
    make_vsftpd: Callable[..., PeerServer], tmp_path: Path
) -> None:
    peer = make_vsftpd(
        extra_config={
            "cmds_denied": "EPSV",
            "pasv_address": PRIVATE_ELSEWHERE,
            "pasv_addr_resolve": "NO",
        }
    )
    (peer.writable / "listed.txt").write_bytes(b"something to list\n")
    url = f"ftp://{peer.user}:{peer.password}@{peer.host}:{peer.port}/pub/"
    code, report, _ = doctor_json(tmp_path, "--timeout", "1", url)
    assert code == 0
    found = problems(report)
    assert found["EPSV"] == "refused-by-server"
    # The 227 names 198.18.0.5, neither global nor the server's address: that is the
    # diagnosis whatever connecting to it then does (time out, or be unreachable).
    assert found["PASV"] == "private-address"
    assert found["PASV-fixup"] is None and report["modes"]["PASV-fixup"]["works"]
    assert found["EPRT"] is None and found["PORT"] is None
    for working in ("PASV-fixup", "EPRT", "PORT"):
        assert "LIST gave 0 bytes" not in report["modes"][working]["detail"]
    assert PRIVATE_ELSEWHERE in report["modes"]["PASV"]["detail"]
    assert report["server_sees"] is None and report["behind_nat"] is None
    verdict = report["verdict"]
    assert "does not offer SITE NATINFO" in verdict
    assert "Plain PASV fails (private-address)" in verdict
    assert "The server refuses EPSV" in verdict
    server_fixes = " ".join(report["fixes"]["server"])
    # Not masquerade_address = "127.0.0.1": every client would be told that loopback address.
    assert 'masquerade_address = "127.0.0.1"' not in server_fixes
    assert '[masquerade_map] "127.0.0.0/24" = "127.0.0.1"' in server_fixes
    assert "Allow EPSV" in server_fixes
    assert any("--trust-pasv-address" in fix for fix in report["fixes"]["client"])


@pytest.mark.peer
def test_vsftpd_with_every_data_command_disabled_exits_6(
    make_vsftpd: Callable[..., PeerServer], tmp_path: Path
) -> None:
    peer = make_vsftpd(extra_config={"pasv_enable": "NO", "port_enable": "NO"})
    url = f"ftp://{peer.user}:{peer.password}@{peer.host}:{peer.port}/"
    result = doctor(tmp_path, "--timeout", "2", url)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "FAILS  refused-by-server" in result.stdout
    assert "works" not in result.stdout.split("Verdict:")[0]
    assert "Verdict: No data connection can be made" in result.stdout
    assert "natinfo     FAILED not offered" in result.stdout
    assert result.stderr.startswith("ketch: no data connection could be made with 127.0.0.1")


# -- an FTP ALG: a middlebox rewriting PORT and PASV -----------------------------------


@contextlib.contextmanager
def rewriting_proxy(server_port: int) -> Iterator[int]:
    """A control-connection relay that rewrites PORT and 227 replies, as an FTP ALG does.

    PORT (client to server) and the 227 reply to PASV (server to client) are
    changed to name a port of this relay, which forwards the data connection
    to the port originally named. EPRT and EPSV pass unchanged. Yields the
    relay's port.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    sockets: list[socket.socket] = [listener]

    def start(target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        threads.append(thread)
        thread.start()

    def forward(forwarder: socket.socket, target_port: int, download: bool) -> None:
        """Join the connection arriving at ``forwarder`` to ``target_port``; pipe one way."""
        forwarder.settimeout(10)
        with contextlib.suppress(OSError):
            arrived, _ = forwarder.accept()
            onward = socket.create_connection(("127.0.0.1", target_port), timeout=10)
            sockets.extend((arrived, onward))
            # A listing flows from the server: from the arrived side in active mode,
            # from the onward side in passive mode.
            source, sink = (onward, arrived) if download else (arrived, onward)
            source.settimeout(10)
            while chunk := source.recv(65536):
                sink.sendall(chunk)
            sink.close()
            source.close()
        forwarder.close()

    def relay_port(numbers: list[bytes], download: bool) -> tuple[int, int]:
        """A forwarder to the port in PORT/227 numbers; (its port's p1, p2)."""
        forwarder = socket.create_server(("127.0.0.1", 0))
        sockets.append(forwarder)
        start(forward, forwarder, int(numbers[4]) * 256 + int(numbers[5]), download)
        port = forwarder.getsockname()[1]
        return port // 256, port % 256

    def rewrite_command(line: bytes) -> bytes:
        if not line.upper().startswith(b"PORT "):
            return line
        p1, p2 = relay_port(line[5:].strip().split(b","), download=False)
        return b"PORT 127,0,0,1,%d,%d\r\n" % (p1, p2)

    def rewrite_reply(line: bytes) -> bytes:
        if not line.startswith(b"227 "):
            return line
        numbers = line[line.index(b"(") + 1 : line.index(b")")].split(b",")
        p1, p2 = relay_port(numbers, download=True)
        return b"227 Entering Passive Mode (127,0,0,1,%d,%d)\r\n" % (p1, p2)

    def relay(
        source: socket.socket, sink: socket.socket, rewrite: Callable[[bytes], bytes]
    ) -> None:
        source.settimeout(30)
        buffered = b""
        with contextlib.suppress(OSError):
            while not stop.is_set() and (chunk := source.recv(65536)):
                buffered += chunk
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    sink.sendall(rewrite(line + b"\n"))
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", server_port), timeout=10)
            sockets.extend((client, server))
            start(relay, client, server, rewrite_command)
            start(relay, server, client, rewrite_reply)

    start(serve)
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in threads:
            thread.join(timeout=5)


def test_the_password_is_asked_for_once_on_a_terminal(
    ketch_server: RunningServer, tmp_path: Path
) -> None:
    # -u without a password on a terminal prompts; the doctor must ask once, not per lookup.
    home = tmp_path / "home"
    home.mkdir()
    controller, terminal = pty.openpty()

    def take_the_terminal() -> None:  # runs in the child, after setsid
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [*KETCH, "--json", "-u", USER, f"ftp://{ketch_server.host}:{ketch_server.port}/"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "HOME": str(home)},
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(terminal)
    seen = bytearray()
    answered = 0
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while process.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):  # EIO once the child is gone
                    seen.extend(os.read(controller, 65536))
            if seen.lower().count(b"password") > answered:
                os.write(controller, PASSWORD.encode() + b"\n")
                answered += 1
            if answered > 1:
                break  # asked again: that is the failure
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        with contextlib.suppress(OSError):
            seen.extend(os.read(controller, 65536))
        os.close(controller)
    assert answered == 1, seen.decode(errors="replace")
    assert process.returncode == 0, seen.decode(errors="replace")
    assert b'"verdict"' in seen
