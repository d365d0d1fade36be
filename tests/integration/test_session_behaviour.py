"""Session behaviour users rely on: ABOR, timeouts, active source ports, IPv6, parameters."""

from __future__ import annotations

import contextlib
import ftplib
import io
import logging
import os
import posixpath
import re
import socket
import time
from pathlib import Path

import pytest

from ketch.protocol.addresses import parse_epsv_reply
from ketch.server.commands import transfer as transfer_commands

from conftest import PASSWORD, USER, RunningServer
from ftp_helpers import (
    connect,
    download_under_way,
    free_port,
    log_messages,
    one_transfer_line,
    reply_to,
    transfer_lines,
    wait_for,
)

BIG = 64 * 1024 * 1024


@pytest.fixture
def big_file(server: RunningServer) -> Path:
    path = server.home / "big.bin"
    with path.open("wb") as file:
        file.truncate(BIG)
    return path


# -- aborting and failing transfers ----------------------------------------------


def test_abor_during_transfer_answers_426_then_226(
    server: RunningServer, big_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        ftp, data = download_under_way(server)
        ftp.putcmd("ABOR")
        assert ftp.getmultiline().startswith("426")
        assert ftp.getmultiline().startswith("226")
        data.close()
        assert server.counters["transfer_aborted"] == 1
        assert ftp.voidcmd("NOOP").startswith("200")  # the session goes on
    line = one_transfer_line(caplog)
    assert line.endswith(
        ' result=aborted reason="Transfer aborted by ABOR; data connection closed."'
    )


def test_abor_behind_a_command_waiting_for_the_transfer_is_still_heard(
    server: RunningServer, big_file: Path
) -> None:
    # PWD waits for the transfer's end (its reply follows the 226); ABOR sent after it
    # must still stop the transfer at once (RFC 959 4.1.3), and PWD then gets its turn.
    ftp, data = download_under_way(server)  # and no more read: it cannot end by itself
    ftp.putcmd("PWD")
    ftp.putcmd("ABOR")
    assert ftp.getmultiline().startswith("426")
    assert ftp.getmultiline().startswith("226")
    assert ftp.getmultiline().startswith('257 "/"')
    data.close()
    assert server.counters["transfer_aborted"] == 1
    assert ftp.voidcmd("NOOP").startswith("200")


def test_noop_behind_a_waiting_command_is_answered_after_it(
    server: RunningServer, big_file: Path
) -> None:
    # Each line in a read of its own: NOOP must not overtake PWD's reply (RFC 959 4.2).
    ftp, data = download_under_way(server)
    ftp.putcmd("PWD")
    time.sleep(0.3)
    ftp.putcmd("NOOP")
    time.sleep(0.3)
    ftp.putcmd("ABOR")  # ABOR alone goes ahead, so that the transfer stops
    assert ftp.getmultiline().startswith("426")
    assert ftp.getmultiline().startswith("226")
    assert ftp.getmultiline().startswith('257 "/"')
    assert ftp.getmultiline().startswith("200")
    data.close()


def test_a_client_hanging_up_behind_a_waiting_command_ends_the_transfer(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    server = make_server(data_stall_timeout=60)
    with (server.home / "big.bin").open("wb") as file:
        file.truncate(BIG)
    ftp, data = download_under_way(server)
    ftp.putcmd("PWD")
    ftp.close()  # gone, with the transfer stuck on a client that reads no more
    assert wait_for(lambda: server.server.sessions == {}, timeout=10), "still served"
    data.close()


def test_quit_then_a_half_close_still_gets_the_whole_download_then_226_and_221(
    server: RunningServer,
) -> None:
    # What a script piping its commands into a socket does: its last line, then EOF on
    # its side only. RFC 959: QUIT waits for the transfer; the download must not be cut.
    payload = os.urandom(8 * 1024 * 1024)
    (server.home / "whole.bin").write_bytes(payload)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    port = parse_epsv_reply(reply_to(ftp, "EPSV"))
    with socket.create_connection((server.host, port), timeout=10) as data:
        ftp.sock.sendall(b"RETR whole.bin\r\nQUIT\r\n")
        ftp.sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := data.recv(1 << 20):
            received += chunk
    assert bytes(received) == payload
    replies = [ftp.getmultiline()[:3] for _ in range(3)]
    assert replies == ["150", "226", "221"]
    ftp.close()


@pytest.mark.parametrize("line", ["NOOP", "STAT"])
def test_a_noop_or_stat_pipelined_behind_retr_is_answered_after_its_replies(
    server: RunningServer, line: str
) -> None:
    # Read with RETR in one piece, before the transfer has said 150: answered at once,
    # its 200 (or 211) would come first, and a pipelining client would take it for RETR's.
    (server.home / "small.txt").write_bytes(b"small file\n")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    port = parse_epsv_reply(reply_to(ftp, "EPSV"))
    with socket.create_connection((server.host, port), timeout=10) as data:
        ftp.sock.sendall(f"RETR small.txt\r\n{line}\r\n".encode())
        assert data.makefile("rb").read() == b"small file\n"
    replies = [ftp.getmultiline()[:3] for _ in range(3)]
    assert replies == ["150", "226", "200" if line == "NOOP" else "211"]
    ftp.quit()


def test_ftplib_abort_with_urgent_data_is_understood(server: RunningServer, big_file: Path) -> None:
    ftp, data = download_under_way(server)
    # ftplib sends ABOR with MSG_OOB; the urgent byte must not be lost from the line.
    assert ftp.abort().startswith("426")
    assert ftp.getmultiline().startswith("226")  # RFC 959: 426 for the transfer, then 226
    data.close()
    assert wait_for(lambda: server.counters.get("transfer_aborted") == 1)
    assert ftp.voidcmd("NOOP").startswith("200")


def test_abor_without_transfer_answers_226_and_drops_prepared_connection(
    server: RunningServer,
) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "ABOR").startswith("226")
    reply_to(ftp, "PASV")
    assert reply_to(ftp, "ABOR").startswith("226")
    assert reply_to(ftp, "LIST").startswith("425")  # the PASV offer is gone


def test_pasv_retr_abor_pipelined_answer_each_and_free_the_passive_port(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    """RETR and ABOR read at once: the transfer still starts, answers and gives its port back.

    Cancelled before its first step, the transfer task once ran none of its code:
    no 150 or 426, and its passive port stayed taken, so a client repeating this
    emptied the passive range (here one port: the second PASV got 425).
    """
    server = make_server(passive_ports="22620-22620", command_rate=0)
    (server.home / "file.bin").write_bytes(b"x" * 100_000)
    ftp = connect(server)
    for _ in range(3):
        ftp.sock.sendall(b"PASV\r\nRETR file.bin\r\nABOR\r\n")
        assert ftp.getmultiline().startswith("227")
        assert ftp.getmultiline().startswith("150")
        assert ftp.getmultiline().startswith("426 Transfer aborted by ABOR")
        assert ftp.getmultiline().startswith("226 ABOR successful")
    assert wait_for(lambda: server.counters.get("transfer_aborted") == 3)
    assert reply_to(ftp, "PASV").startswith("227")  # the one port is free again
    ftp.quit()


def test_pasv_pasv_pipelined_leave_no_port_bound(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    """A PASV replaced before its listener ever ran still closes it: the port can be reused."""
    # Three ports: a new PASV opens its listener before the one it replaces has closed.
    server = make_server(passive_ports="22622-22624", command_rate=0)
    ftp = connect(server)
    for _ in range(4):
        ftp.sock.sendall(b"PASV\r\nPASV\r\n")
        assert ftp.getmultiline().startswith("227")
        assert ftp.getmultiline().startswith("227")
        # Before, the listener of the first PASV stayed bound: its port was back in the
        # pool but could not be bound again, until "all 3 passive ports" were "busy".
        assert reply_to(ftp, "PASV").startswith("227")
    ftp.quit()


def test_one_passive_port_serves_a_pasv_that_replaces_an_unused_one(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    """With a one-port range, PASV after PASV (a client retrying, say) reuses the port.

    The replaced offer let go of its listener only on a later loop pass, so the
    new PASV found the only port still bound and got 425, every second time.
    """
    server = make_server(passive_ports="22626-22626", command_rate=0)
    (server.home / "file.bin").write_bytes(b"y" * 1000)
    ftp = connect(server)
    for verb in ("PASV", "PASV", "EPSV", "PASV"):
        assert reply_to(ftp, verb).startswith(("227", "229")), verb
    ftp.sock.sendall(b"PASV\r\nPASV\r\n")  # also when both are read at once
    assert ftp.getmultiline().startswith("227")
    reply = ftp.getmultiline()
    assert reply.startswith("227"), reply
    # The last offer works: the download arrives through the one port.
    data = socket.create_connection(("127.0.0.1", 22626), timeout=5)
    ftp.voidcmd("TYPE I")
    ftp.putcmd("RETR file.bin")
    assert ftp.getmultiline().startswith("150")
    received = b""
    while chunk := data.recv(65536):
        received += chunk
    data.close()
    assert ftp.getmultiline().startswith("226")
    assert received == b"y" * 1000
    ftp.quit()


def test_client_vanishing_mid_transfer_leaves_server_healthy(
    server: RunningServer, big_file: Path
) -> None:
    ftp, data = download_under_way(server)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    data.close()  # reset, not a clean close
    ftp.close()
    assert wait_for(lambda: server.server.limits.total == 0)
    other = connect(server)
    assert other.nlst() == ["big.bin"]
    other.quit()


def test_a_bug_inside_a_transfer_gets_451_and_the_session_goes_on(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As dispatch does for ordinary commands: the transfer's final reply must come,
    # or the client waits until it times out and every later reply is out of step.
    def broken(path: str, end: int, size: int) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(transfer_commands, "_check_whole", broken)
    (server.home / "small.bin").write_bytes(b"x" * 1000)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        with pytest.raises(ftplib.error_temp) as failure:
            ftp.retrbinary("RETR small.bin", lambda _: None)
        assert str(failure.value).startswith("451 Internal error while running RETR")
        assert reply_to(ftp, "NOOP").startswith("200")  # the next reply is the NOOP's
        line = one_transfer_line(caplog)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, errors
    assert "client=127.0.0.1" in errors[0].getMessage()
    assert line.endswith(' result=error reason="internal error (RuntimeError: simulated bug)"')
    ftp.quit()


def test_a_client_hanging_up_mid_retr_is_logged_as_interrupted(
    server: RunningServer, big_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The data connection stays open: only the control connection goes. The client
    # went away; neither a failure of the server nor a shutdown cut the transfer.
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        ftp, data = download_under_way(server)
        ftp.close()
        line = one_transfer_line(caplog)
    data.close()
    assert line.startswith("transfer RETR user=alice client=127.0.0.1 "), line
    assert line.endswith(' result=interrupted reason="the client closed the control connection"')
    assert server.counters.get("transfer_interrupted") == 1


def test_stalled_transfer_is_aborted_with_426(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(data_stall_timeout=0.5)
    with (server.home / "big.bin").open("wb") as file:
        file.truncate(BIG)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd("RETR big.bin")
    data.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Read nothing: the socket buffers fill, sending stops, the watchdog fires.
    ftp.sock.settimeout(30)
    reply = ftp.getmultiline()
    assert reply.startswith("426") and "no data moved" in reply
    data.close()
    assert wait_for(lambda: server.counters.get("transfer_stalled") == 1)


@pytest.mark.parametrize(
    ("stall_timeout", "piece", "count", "pause"),
    [
        # Far less than the upload loop's wake threshold (SO_RCVLOWAT) arrives in all, a
        # little at a time, for three times the stall timeout: it must be read as it comes.
        (0.5, 500, 15, 0.1),
        # A stall timeout under the loop's LOOK_EVERY (0.2 s): bytes that have arrived
        # but wait unread are progress too.
        (0.12, 200, 25, 0.04),
    ],
    ids=["slow upload", "timeout under the loop's look"],
)
def test_a_trickling_upload_is_progress_not_a_stall(
    make_server,  # type: ignore[no-untyped-def]
    stall_timeout: float,
    piece: int,
    count: int,
    pause: float,
) -> None:
    server = make_server(data_stall_timeout=stall_timeout)
    pieces = [os.urandom(piece) for _ in range(count)]
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    with ftp.transfercmd("STOR trickle.bin") as data:
        for one in pieces:
            data.sendall(one)
            time.sleep(pause)
    assert ftp.voidresp().startswith("226")
    assert (server.home / "trickle.bin").read_bytes() == b"".join(pieces)
    assert server.counters.get("transfer_stalled", 0) == 0


def test_a_download_client_that_only_sends_is_still_stalled(make_server) -> None:  # type: ignore[no-untyped-def]
    # Bytes a client sends on a download's data connection are no download progress.
    server = make_server(data_stall_timeout=0.5)
    (server.home / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    with ftp.transfercmd("RETR big.bin") as data:
        deadline = time.monotonic() + 10
        while server.counters.get("transfer_stalled", 0) == 0 and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                data.sendall(b"x")  # and never reads
            time.sleep(0.05)
    assert server.counters.get("transfer_stalled", 0) == 1
    assert ftp.getmultiline().startswith("426")


def test_dele_removes_a_symlink_to_a_directory_and_refuses_a_directory(
    server: RunningServer,
) -> None:
    (server.home / "real").mkdir()
    (server.home / "real" / "kept.txt").write_bytes(b"k")
    (server.home / "link").symlink_to("real")
    ftp = connect(server)
    assert reply_to(ftp, "DELE link").startswith("250")
    assert not (server.home / "link").is_symlink()
    assert (server.home / "real" / "kept.txt").read_bytes() == b"k"  # not followed
    reply = reply_to(ftp, "DELE real")
    assert reply.startswith("550") and "RMD" in reply, reply
    assert (server.home / "real").is_dir()


@pytest.mark.parametrize("between", ["FOO", "RNTO"], ids=["unknown command", "bare RNTO"])
def test_rnto_must_follow_rnfr_at_once_even_after_a_refused_command(
    server: RunningServer, between: str
) -> None:
    (server.home / "b.txt").write_bytes(b"b")
    ftp = connect(server)
    assert reply_to(ftp, "RNFR b.txt").startswith("350")
    assert reply_to(ftp, between)[:1] == "5"  # 500 unknown / 501 no argument
    assert reply_to(ftp, "RNTO c.txt").startswith("503")
    assert (server.home / "b.txt").exists() and not (server.home / "c.txt").exists()


@pytest.mark.parametrize("line", [b"MKD x\ry", b"USER evil\rINFO forged", b"MKD a\r\x00b"])
def test_a_carriage_return_inside_an_argument_is_refused(
    server: RunningServer, line: bytes
) -> None:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    replies = sock.makefile("rb")
    assert replies.readline().startswith(b"220")
    sock.sendall(b"USER alice\r\nPASS s3cret\r\n")
    assert replies.readline().startswith(b"331") and replies.readline().startswith(b"230")
    sock.sendall(line + b"\r\n")
    reply = replies.readline()
    assert reply.startswith(b"501") and b"carriage return" in reply, reply
    assert os.listdir(server.home) == []
    sock.close()


@pytest.mark.parametrize(
    "line",
    ["STOR newdir/", "STOR a.txt/", "APPE a.txt/", "RETR a.txt/", "SIZE a.txt/", "DELE a.txt/",
     "MDTM a.txt/", "HASH a.txt/", "MFMT 20200101000000 a.txt/"],
)  # fmt: skip
def test_a_file_command_on_a_name_ending_in_a_slash_is_refused(
    server: RunningServer, line: str
) -> None:
    (server.home / "a.txt").write_bytes(b"kept")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    reply_to(ftp, "PASV")
    reply = reply_to(ftp, line)
    code = "553" if line.startswith(("STOR", "APPE")) else "550"  # not a syntax error (501)
    assert reply.startswith(code) and "ends in '/'" in reply, reply
    assert sorted(os.listdir(server.home)) == ["a.txt"]
    assert (server.home / "a.txt").read_bytes() == b"kept"


def test_renaming_a_file_to_a_name_ending_in_a_slash_is_refused(server: RunningServer) -> None:
    (server.home / "a.txt").write_bytes(b"kept")
    (server.home / "d").mkdir()
    ftp = connect(server)
    reply_to(ftp, "RNFR a.txt")
    reply = reply_to(ftp, "RNTO d/a.txt/")
    assert reply.startswith("553") and "ends in '/'" in reply, reply
    assert (server.home / "a.txt").read_bytes() == b"kept"
    assert os.listdir(server.home / "d") == []
    # A directory may be named with its slash.
    reply_to(ftp, "RNFR d")
    assert reply_to(ftp, "RNTO e/").startswith("250")
    assert (server.home / "e").is_dir()


def test_transfer_without_data_setup_gets_425(server: RunningServer) -> None:
    ftp = connect(server)
    reply = reply_to(ftp, "LIST")
    assert reply.startswith("425") and "PASV" in reply


def test_active_connect_failure_gets_425(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    ftp = connect(server)
    port = free_port()  # nobody listens there
    reply_to(ftp, f"PORT 127,0,0,1,{port >> 8},{port & 255}")
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        ftp.putcmd("LIST")
        # The server connects before its 150 (as vsftpd and pure-ftpd do), so the client
        # hears at once why, instead of a 150 and then waiting for a connection.
        reply = ftp.getmultiline()
        assert reply.startswith("425") and "passive" in reply, reply
        line = one_transfer_line(caplog)
    # The log says why too, in the words the client got, quoted as one field (they hold
    # spaces, and no quote or backslash to escape).
    said = reply[4:]
    assert '"' not in said and "\\" not in said, said
    assert line.endswith(f' result=failed reason="{said}"'), (line, reply)
    assert reply_to(ftp, "NOOP").startswith("200")


# -- active mode source port ---------------------------------------------------


def accept_active(ftp: ftplib.FTP, command: str) -> tuple[bytes, int]:
    """Run ``command`` in active mode and return (data, the server's source port)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        ftp.voidcmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")
        ftp.putcmd(command)
        listener.settimeout(10)
        conn, peer = listener.accept()
        with conn:
            payload = conn.makefile("rb").read()
        assert ftp.getmultiline().startswith("150")
        assert ftp.getmultiline().startswith("226")
    return payload, peer[1]


def test_active_source_port_auto_is_control_port_minus_one(server: RunningServer) -> None:
    ftp = connect(server)
    payload, source = accept_active(ftp, "NLST")
    assert source == server.port - 1
    assert payload == b""  # alice's home is empty


def test_active_source_port_fixed_number(make_server) -> None:  # type: ignore[no-untyped-def]
    wanted = free_port()
    server = make_server(active_source_port=wanted)
    ftp = connect(server)
    (server.home / "f.txt").write_bytes(b"x")
    payload, source = accept_active(ftp, "NLST")
    assert source == wanted and payload == b"f.txt\r\n"


def test_active_source_port_ephemeral(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(active_source_port="ephemeral")
    ftp = connect(server)
    _, source = accept_active(ftp, "NLST")
    assert source != server.port - 1 and source >= 1024


# -- IPv6 and dual stack ---------------------------------------------------------


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1) here")


@needs_ipv6
def test_ipv6_epsv_and_eprt_work_and_pasv_is_refused(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(listen_address="::")
    (server.home / "v6.txt").write_bytes(b"over IPv6\n")
    ftp = ftplib.FTP(timeout=10)
    ftp.connect("::1", server.port)
    ftp.login(USER, PASSWORD)
    assert reply_to(ftp, "PASV") == "522 PASV cannot describe an IPv6 address: use EPSV."
    assert reply_to(ftp, "EPSV 1").startswith("522")
    received = io.BytesIO()
    ftp.retrbinary("RETR v6.txt", received.write)  # ftplib uses EPSV on IPv6
    assert received.getvalue() == b"over IPv6\n"
    ftp.set_pasv(False)  # ftplib uses EPRT on IPv6
    received = io.BytesIO()
    ftp.retrbinary("RETR v6.txt", received.write)
    assert received.getvalue() == b"over IPv6\n"


@needs_ipv6
def test_dual_stack_listener_serves_ipv4_with_pasv(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(listen_address="::")
    ftp = connect(server)
    reply = reply_to(ftp, "PASV")
    assert reply.startswith("227") and "(127,0,0,1," in reply
    assert ftp.nlst() == []


def test_epsv_all_refuses_other_data_setup(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "EPSV ALL").startswith("200")
    for line in ("PASV", "PORT 127,0,0,1,200,1", "EPRT |1|127.0.0.1|51200|"):
        assert reply_to(ftp, line).startswith("501"), line
    port = parse_epsv_reply(reply_to(ftp, "EPSV"))
    assert 21000 <= port <= 21999
    # A new login does not undo it (RFC 2428 §4: NATs on the path were told); REIN does.
    reply_to(ftp, "USER alice")
    assert reply_to(ftp, "PASS s3cret").startswith("230")
    assert reply_to(ftp, "PASV").startswith("501")
    assert reply_to(ftp, "REIN").startswith("220")
    reply_to(ftp, "USER alice")
    reply_to(ftp, "PASS s3cret")
    assert reply_to(ftp, "PASV").startswith("227")


# -- transfer parameters and file commands ---------------------------------------


def test_a_rest_offset_past_pythons_digit_limit_is_a_501_not_a_traceback(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    server = make_server(max_line_length=8192)
    ftp = connect(server)
    assert reply_to(ftp, "REST " + "9" * 4400)[:3] == "501"
    assert reply_to(ftp, "NOOP")[:3] == "200"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("TYPE I", "200"),
        ("TYPE A", "200"),
        ("TYPE A N", "200"),
        ("TYPE L 8", "200"),
        ("TYPE E", "504"),
        ("TYPE A T", "504"),
        ("TYPE L 7", "504"),
        ("TYPE Q", "501"),
        ("TYPE E N", "504"),
        ("TYPE A C", "504"),
        ("TYPE L 16", "504"),
        # Not RFC 959's syntax (A|E [N|T|C], I, L <byte size>): 501, not "not implemented".
        ("TYPE L", "501"),
        ("TYPE L abc", "501"),
        ("TYPE A X", "501"),
        ("TYPE A 8", "501"),
        ("TYPE E Q", "501"),
        ("MODE S", "200"),
        ("MODE B", "504"),
        ("MODE C", "504"),
        ("MODE X", "501"),
        ("STRU F", "200"),
        ("STRU R", "504"),
        ("STRU P", "504"),
        ("STRU Z", "501"),
        ("ALLO 100", "202"),
        ("ALLO 100 R 512", "202"),
        ("ALLO 100 r 512", "202"),
        ("ALLO", "501"),
        ("ALLO abc", "501"),
        ("SMNT /mnt", "502"),
        ("LPSV", "502"),
        ("LPRT 4,4,127,0,0,1,2,200,1", "502"),
        ("SYST", "215"),
        ("NOOP", "200"),
        ("OPTS UTF8 ON", "200"),
        ("ACCT x", "202"),
        ("RNTO x", "503"),
        ("REST abc", "501"),
        ("REST 10", "350"),
        ("REST " + "0" * 30 + "18446744073709551615", "350"),  # 20 digits: 2**64 - 1
        ("REST 123456789012345678901", "501"),  # 21: no file is that big
        ("PWD extra", "501"),
        ("SITE HELP", "214"),
        ("SITE NOPE", "500"),
        ("HELP RETR", "214"),
    ],
)
def test_command_reply_codes(server: RunningServer, line: str, code: str) -> None:
    ftp = connect(server)
    assert reply_to(ftp, line)[:3] == code


def test_feat_lists_implemented_extensions(server: RunningServer) -> None:
    ftp = connect(server, login=False)
    lines = reply_to(ftp, "FEAT").splitlines()
    assert lines[0].startswith("211-") and lines[-1].startswith("211 ")
    features = {line.strip() for line in lines[1:-1]}
    assert {"EPRT", "EPSV", "MDTM", "REST STREAM", "SIZE", "UTF8", "TVFS"} <= features


def test_size_refused_in_ascii_and_exact_in_binary(server: RunningServer) -> None:
    (server.home / "lines.txt").write_bytes(b"a\nb\n")
    ftp = connect(server)
    ftp.voidcmd("TYPE A")
    assert reply_to(ftp, "SIZE lines.txt").startswith("550")
    ftp.voidcmd("TYPE I")
    assert ftp.size("lines.txt") == 4


def test_mdtm_reports_utc_timestamp(server: RunningServer) -> None:
    path = server.home / "dated.txt"
    path.write_bytes(b"x")
    import os

    os.utime(path, (1_700_000_000, 1_700_000_000))
    ftp = connect(server)
    assert reply_to(ftp, "MDTM dated.txt") == "213 20231114221320"


def test_a_refused_rest_leaves_no_earlier_offset_pending(server: RunningServer) -> None:
    (server.home / "ten.txt").write_bytes(b"0123456789")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    assert reply_to(ftp, "REST 4").startswith("350")
    assert reply_to(ftp, "REST 0x0").startswith("501")
    received = bytearray()
    ftp.retrbinary("RETR ten.txt", received.extend)
    assert received == b"0123456789"


def test_rest_beyond_end_of_file_gets_554(server: RunningServer) -> None:
    (server.home / "small.txt").write_bytes(b"abc")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    reply_to(ftp, "PASV")
    reply_to(ftp, "REST 10")
    assert reply_to(ftp, "RETR small.txt").startswith("554")


def test_stat_path_lists_over_control_connection(server: RunningServer) -> None:
    # RFC 959 (STAT with a pathname): 212 "Directory status" for a directory, 213 "File
    # status" for a file; either way one multi-line reply that ftplib reads whole.
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(server.host, server.port)
    ftp.login()
    lines = ftp.sendcmd("STAT docs").splitlines()
    assert lines[0] == "212-Status of /docs:" and lines[-1] == "212 End of status.", lines
    assert any(line.endswith(" readme.md") and line.lstrip().startswith("-rw") for line in lines)
    lines = ftp.sendcmd("STAT docs/readme.md").splitlines()
    assert lines[0] == "213-Status of /docs/readme.md:" and lines[-1] == "213 End of status."
    assert len(lines) == 3 and lines[1].endswith(" readme.md"), lines
    assert ftp.voidcmd("NOOP").startswith("200")  # nothing of either reply was left unread


def test_stat_during_transfer_reports_it(server: RunningServer, big_file: Path) -> None:
    ftp, data = download_under_way(server)
    reply = reply_to(ftp, "STAT")
    assert reply.startswith("213") and "RETR /big.bin" in reply
    # With the bytes moved so far (README promises them) and the file's size.
    moved = re.search(r"RETR /big\.bin: (\d+) bytes moved so far", reply)
    assert moved is not None and 0 < int(moved.group(1)) <= BIG, reply
    assert f"of a {BIG}-byte file" in reply and "restart" not in reply, reply
    ftp.putcmd("ABOR")
    ftp.getmultiline()
    ftp.getmultiline()
    data.close()


def test_stat_during_a_resumed_transfer_names_its_offset(
    server: RunningServer, big_file: Path
) -> None:
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd("RETR big.bin", rest=5000)
    assert len(data.recv(65536)) > 0
    reply = reply_to(ftp, "STAT")
    assert reply.startswith("213 Transfer in progress: RETR /big.bin: "), reply
    assert "bytes moved so far, after restarting at byte 5000, of a" in reply, reply
    ftp.putcmd("ABOR")
    assert ftp.getmultiline().startswith("426")
    assert ftp.getmultiline().startswith("226")
    data.close()


def test_site_chmod_sets_mode(server: RunningServer) -> None:
    path = server.home / "script.sh"
    path.write_bytes(b"#!/bin/sh\n")
    ftp = connect(server)
    assert reply_to(ftp, "SITE CHMOD 750 script.sh").startswith("200")
    assert path.stat().st_mode & 0o777 == 0o750
    for bad in ("99x", "0o644", "+644", "6_44", "17777", "-1"):
        assert reply_to(ftp, f"SITE CHMOD {bad} script.sh").startswith("501"), bad
    assert path.stat().st_mode & 0o777 == 0o750
    assert reply_to(ftp, "SITE CHMOD 00640 script.sh").startswith("200")  # as chmod(1)
    assert path.stat().st_mode & 0o777 == 0o640


def test_rein_logs_out(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "REIN").startswith("220")
    assert reply_to(ftp, "PWD").startswith("530")
    ftp.login(USER, PASSWORD)
    assert ftp.pwd() == "/"


def test_rein_drops_a_prepared_data_connection(server: RunningServer) -> None:
    (server.home / "a.txt").write_bytes(b"a")
    ftp = connect(server)
    assert reply_to(ftp, "PASV").startswith("227")
    assert reply_to(ftp, "REIN").startswith("220")
    ftp.login(USER, PASSWORD)
    assert reply_to(ftp, "RETR a.txt").startswith("425")


def test_a_new_login_keeps_the_transfer_type_and_the_prepared_connection(
    server: RunningServer,
) -> None:
    # RFC 959 §4.1.1: USER at any time flushes the login; "all transfer parameters are
    # unchanged". Reset to TYPE A, this download would gain a CR before every LF.
    payload = os.urandom(4096) + b"\n" * 64
    (server.home / "bin.dat").write_bytes(payload)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    host, port = ftplib.parse227(reply_to(ftp, "PASV"))
    ftp.login(USER, PASSWORD)
    with socket.create_connection((host, port), timeout=10) as data:
        assert reply_to(ftp, "RETR bin.dat").startswith("150")
        received = b""
        while chunk := data.recv(65536):
            received += chunk
    assert ftp.getmultiline().startswith("226")
    assert received == payload


def test_rnfr_is_cancelled_by_another_command(server: RunningServer) -> None:
    (server.home / "a.txt").write_bytes(b"a")
    ftp = connect(server)
    assert reply_to(ftp, "RNFR a.txt").startswith("350")
    ftp.voidcmd("NOOP")
    assert reply_to(ftp, "RNTO b.txt").startswith("503")
    assert (server.home / "a.txt").exists()


def test_mkd_reply_quotes_path_with_doubled_quotes(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, 'MKD say "hi"') == '257 "/say ""hi""" created.'
    assert (server.home / 'say "hi"').is_dir()


def test_non_utf8_name_lists_and_downloads(server: RunningServer) -> None:
    import os

    raw = os.fsencode(str(server.home)) + b"/caf\xe9.txt"
    with open(raw, "wb") as file:
        file.write(b"latin-1 name")
    ftp = ftplib.FTP(timeout=10, encoding="latin-1")  # hand the bytes through unchanged
    ftp.connect(server.host, server.port)
    ftp.login(USER, PASSWORD)
    names = ftp.nlst()
    assert names == ["caf\xe9.txt"]
    received = io.BytesIO()
    ftp.retrbinary("RETR caf\xe9.txt", received.write)
    assert received.getvalue() == b"latin-1 name"


def test_nlst_wildcard_matches_last_component(server: RunningServer) -> None:
    for name in ("a.txt", "b.txt", "c.log"):
        (server.home / name).write_bytes(b"x")
    ftp = connect(server)
    assert sorted(ftp.nlst("*.txt")) == ["a.txt", "b.txt"]
    assert ftp.nlst("*.none") == []


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("sub", ["sub/a.txt", "sub/b.log"]),
        ("sub/", ["sub/a.txt", "sub/b.log"]),
        ("/sub", ["/sub/a.txt", "/sub/b.log"]),
        ("sub/*.txt", ["sub/a.txt"]),
        ("sub/a.txt", ["sub/a.txt"]),
        ("-a sub", ["sub/a.txt", "sub/b.log"]),
    ],
)
def test_nlst_of_another_directory_gives_names_that_retr_finds(
    server: RunningServer, argument: str, expected: list[str]
) -> None:
    # What mget does: NLST dir, then RETR each name as given (vsftpd and proftpd
    # put the argument's directory in front for the same reason).
    (server.home / "sub").mkdir()
    (server.home / "sub" / "a.txt").write_bytes(b"content of a")
    (server.home / "sub" / "b.log").write_bytes(b"content of b")
    ftp = connect(server)
    names = sorted(ftp.nlst(argument))
    assert names == expected
    for name in names:
        received = io.BytesIO()
        ftp.retrbinary(f"RETR {name}", received.write)
        assert received.getvalue() == (server.home / "sub" / posixpath.basename(name)).read_bytes()


@pytest.mark.parametrize("argument", [None, "-a", "*", ".", "./"])
def test_nlst_of_the_working_directory_gives_bare_names(
    server: RunningServer, argument: str | None
) -> None:
    (server.home / "a.txt").write_bytes(b"a")
    (server.home / "sub").mkdir()
    ftp = connect(server)
    names = ftp.nlst() if argument is None else ftp.nlst(argument)
    assert sorted(names) == ["a.txt", "sub"]


def test_list_takes_options_and_a_double_dash_before_a_name_with_a_dash(
    server: RunningServer,
) -> None:
    (server.home / "-notes").mkdir()
    (server.home / "-notes" / "inside.txt").write_bytes(b"x")
    ftp = connect(server)
    assert ftp.nlst("-- -notes") == ["-notes/inside.txt"]
    assert ftp.nlst("-a -- -notes") == ["-notes/inside.txt"]
    assert "-notes" in ftp.nlst("-a")  # an option alone: the working directory
    listing: list[str] = []
    ftp.retrlines("LIST -la -- -notes", listing.append)
    assert [line.split()[-1] for line in listing] == ["inside.txt"]


def test_listings_find_names_that_start_or_end_with_a_space(server: RunningServer) -> None:
    # RFC 959 pathnames may hold spaces anywhere, and RETR and STOR keep them: the
    # listings split off only the ls options in front ("-la "), as vsftpd does.
    (server.home / " notes").mkdir()
    (server.home / " notes" / "inner.txt").write_bytes(b"x")
    (server.home / "draft ").write_bytes(b"draft")
    ftp = connect(server)
    assert ftp.nlst(" notes") == [" notes/inner.txt"]
    assert ftp.nlst("-a  notes") == [" notes/inner.txt"]
    assert ftp.nlst("draft ") == ["draft "]
    for argument in (" notes", "-la  notes"):
        listing: list[str] = []
        ftp.retrlines(f"LIST {argument}", listing.append)
        assert [line.split()[-1] for line in listing] == ["inner.txt"], argument
    listing = []
    ftp.retrlines("LIST draft ", listing.append)
    assert len(listing) == 1 and listing[0].endswith(" draft "), listing
    status = ftp.sendcmd("STAT draft ").splitlines()
    assert status[0] == "213-Status of /draft :" and status[1].endswith(" draft "), status


def test_listings_take_the_option_forms_clients_send(server: RunningServer) -> None:
    (server.home / "top.txt").write_bytes(b"x")
    (server.home / "sub").mkdir()
    (server.home / "sub" / "inner.txt").write_bytes(b"x")
    ftp = connect(server)
    for line, expected in [
        ("LIST", ["sub", "top.txt"]),
        ("LIST -la", ["sub", "top.txt"]),
        ("LIST -a /sub", ["inner.txt"]),
        ("LIST -l -a sub", ["inner.txt"]),
        ("LIST  ", ["sub", "top.txt"]),  # blanks alone name no file
        ("LIST -la  ", ["sub", "top.txt"]),
    ]:
        listing: list[str] = []
        ftp.retrlines(line, listing.append)
        assert sorted(entry.split()[-1] for entry in listing) == expected, line
    for line, expected in [("NLST", ["sub", "top.txt"]), ("NLST -1", ["sub", "top.txt"])]:
        names: list[str] = []
        ftp.retrlines(line, names.append)
        assert sorted(names) == expected, line
    assert ftp.sendcmd("STAT -la sub").splitlines()[1].endswith(" inner.txt")


def test_stor_after_rest_beyond_end_gets_554_and_keeps_file(server: RunningServer) -> None:
    (server.home / "short.bin").write_bytes(b"abc")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    reply_to(ftp, "PASV")
    reply_to(ftp, "REST 10")
    assert reply_to(ftp, "STOR short.bin").startswith("554")
    assert (server.home / "short.bin").read_bytes() == b"abc"


@pytest.mark.parametrize("verb", ["STOR", "APPE"])
@pytest.mark.parametrize("path", ["nodir/x", "outside/x", "pipe"])
def test_upload_after_rest_to_a_path_it_cannot_write_gets_the_550_of_a_plain_upload(
    server: RunningServer, tmp_path: Path, verb: str, path: str
) -> None:
    # Not a 554 "offset beyond the end of /nodir/x (0 bytes)": that sends the user
    # after a smaller offset when the path is what is wrong.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (server.home / "outside").symlink_to(elsewhere)
    os.mkfifo(server.home / "pipe")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    reply_to(ftp, "PASV")
    plain = reply_to(ftp, f"{verb} {path}")
    assert plain.startswith("550"), plain
    reply_to(ftp, "PASV")
    assert reply_to(ftp, "REST 5").startswith("350")
    assert reply_to(ftp, f"{verb} {path}") == plain
    assert os.listdir(elsewhere) == []
    assert sorted(os.listdir(server.home)) == ["outside", "pipe"]


@pytest.mark.parametrize("command", ["RETR", "STOR"])
def test_resuming_in_ascii_mode_is_refused_and_binary_resume_still_works(
    server: RunningServer, command: str
) -> None:
    # The LF file is 3 bytes shorter than what TYPE A sends: an offset taken from a
    # partial ASCII copy would not match the file (vsftpd and pyftpdlib refuse too).
    text = b"one\ntwo\nthree\n"
    (server.home / "lines.txt").write_bytes(text)
    ftp = connect(server)
    ftp.voidcmd("TYPE A")
    reply_to(ftp, "PASV")
    assert reply_to(ftp, "REST 5").startswith("350")
    reply = reply_to(ftp, f"{command} lines.txt")
    assert reply.startswith("554") and "TYPE I" in reply, reply
    assert (server.home / "lines.txt").read_bytes() == text
    ftp.voidcmd("TYPE I")
    if command == "RETR":
        got: list[bytes] = []
        ftp.retrbinary("RETR lines.txt", got.append, rest=4)
        assert b"".join(got) == text[4:]
    else:
        ftp.storbinary("STOR lines.txt", io.BytesIO(b"TWO\n"), rest=4)
        assert (server.home / "lines.txt").read_bytes() == b"one\nTWO\n"


def test_the_transfer_log_line_gives_the_rest_offset_and_the_type(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A resumed STOR is not a whole new file, and an ASCII RETR counts the CRs it
    # adds: the line must say both, or its bytes= misleads.
    (server.home / "resumed.bin").write_bytes(b"a" * 6000)
    (server.home / "lines.txt").write_bytes(b"line one\nline two\n")  # 18 bytes, 2 LFs
    ftp = connect(server)
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        ftp.voidcmd("TYPE I")
        ftp.storbinary("STOR resumed.bin", io.BytesIO(b"b" * 1000), rest=5000)
        ftp.voidcmd("TYPE A")  # (retrbinary would send TYPE I)
        with ftp.transfercmd("RETR lines.txt") as data:
            got = data.makefile("rb").read()
        assert ftp.voidresp().startswith("226")
        assert wait_for(lambda: len(transfer_lines(caplog)) == 2), caplog.text
    assert (server.home / "resumed.bin").stat().st_size == 6000
    assert got == b"line one\r\nline two\r\n"  # in TYPE A: CRLF on the wire
    stor, retr = transfer_lines(caplog)
    assert " mode=PASV type=I path=/resumed.bin offset=5000 bytes=1000 " in stor, stor
    assert " mode=PASV type=A path=/lines.txt offset=0 bytes=20 " in retr, retr
    ftp.quit()


def test_a_file_cut_short_while_being_sent_ends_in_451_not_226(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    big = server.home / "growing-smaller.bin"
    big.write_bytes(os.urandom(32 * 1024 * 1024))
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        with ftp.transfercmd("RETR growing-smaller.bin") as data:
            got = data.recv(65536)
            os.truncate(big, 1024 * 1024)  # the sender stops at the new end
            while chunk := data.recv(1 << 20):
                got += chunk
        with pytest.raises(ftplib.error_temp) as failure:
            ftp.voidresp()
        line = one_transfer_line(caplog)
    assert str(failure.value).startswith("451") and "of 33554432)" in str(failure.value)
    assert len(got) < 32 * 1024 * 1024
    # Nothing was refused: the file changed under the transfer, and the log says so.
    assert " result=changed reason=" in line and "shrank while being sent" in line, line
    assert reply_to(ftp, "NOOP").startswith("200")


def test_a_file_cut_after_it_was_all_sent_still_ends_in_226(server: RunningServer) -> None:
    # Only what went out counts: a change once every byte was sent harms no copy.
    path = server.home / "done.bin"
    data = os.urandom(100_000)
    path.write_bytes(data)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    with ftp.transfercmd("RETR done.bin") as conn:
        got = conn.makefile("rb").read()
        os.truncate(path, 0)  # before the server's final reply is read
    assert got == data
    assert ftp.voidresp().startswith("226")


def test_ascii_retr_opening_reply_names_no_byte_count(server: RunningServer) -> None:
    (server.home / "lf.txt").write_bytes(b"a\nb\n")
    ftp = connect(server)
    ftp.voidcmd("TYPE A")
    data, size = ftp.ntransfercmd("RETR lf.txt")
    assert data.makefile("rb").read() == b"a\r\nb\r\n"
    data.close()
    ftp.voidresp()
    assert size is None


def test_shutdown_tells_connected_clients_421(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    ftp = connect(server)
    server.stop()
    reply = ftp.getline()
    assert reply.startswith("421") and "shutting down" in reply


def test_active_auto_falls_back_when_source_port_cannot_reach_client(server: RunningServer) -> None:
    # Hold the client's data port's 4-tuple from port L-1 so the server's bind+connect collides.
    ftp = connect(server)
    (server.home / "f.txt").write_bytes(b"data")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", server.port - 1))
        blocker.connect(("127.0.0.1", port))
        squatter, _ = listener.accept()
        ftp.voidcmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")
        ftp.putcmd("RETR f.txt")
        listener.settimeout(10)
        conn, peer = listener.accept()
        with conn:
            payload = conn.makefile("rb").read()
        assert ftp.getmultiline().startswith("150")
        assert ftp.getmultiline().startswith("226")
        blocker.close()
        squatter.close()
    assert payload == b"data"
    assert peer[1] != server.port - 1


def test_epsv_family_must_match_the_ipv4_control_connection(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "EPSV 2") == "522 Network protocol not supported, use (1)"
    assert reply_to(ftp, "EPSV 3") == "522 Network protocol not supported, use (1)"
    assert reply_to(ftp, "EPSV x").startswith("501")
    assert reply_to(ftp, "EPSV 1").startswith("229")
    assert reply_to(ftp, "PORT 127,0,0,1,200,1").startswith("200")  # IPv4 may use PORT


def test_every_change_to_the_tree_is_logged_like_a_delete(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """MKD, RMD, SITE CHMOD and MFMT leave one audit line each, as DELE and renames do."""
    ftp = connect(server)
    with caplog.at_level(logging.INFO, logger="ketch.server"):
        ftp.mkd("new dir")
        ftp.storbinary("STOR new dir/a.txt", io.BytesIO(b"a"))
        ftp.sendcmd("SITE CHMOD 640 new dir/a.txt")
        ftp.sendcmd("MFMT 20240131235959 new dir/a.txt")
        ftp.delete("new dir/a.txt")
        ftp.rmd("new dir")
    ftp.quit()
    who = "user=alice client=127.0.0.1"
    audit = log_messages(caplog, ("mkdir ", "rmdir ", "chmod ", "mtime ", "delete "))
    assert audit == [
        f'mkdir {who} path="/new dir"',
        f'chmod {who} path="/new dir/a.txt" mode=0640',
        f'mtime {who} path="/new dir/a.txt" time=20240131235959',
        f'delete {who} path="/new dir/a.txt"',
        f'rmdir {who} path="/new dir"',
    ]
