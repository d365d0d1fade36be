"""Every refusal the server must make, on real sockets: RFC 2577, jail, limits, login."""

from __future__ import annotations

import contextlib
import ftplib
import logging
import os
import socket
import time
from pathlib import Path

import pytest

from ketch.protocol.addresses import parse_pasv_reply
from ketch.server.jail import Jail

from conftest import (
    PASSWORD,
    READER,
    READER_PASSWORD,
    USER,
    RunningServer,
    control_port_with_free_neighbour,
)
from ftp_helpers import connect, log_messages, reply_to, wait_for

# -- RFC 2577: bounce attacks and port theft -----------------------------------


def test_port_to_another_host_is_refused_as_bounce(server: RunningServer) -> None:
    ftp = connect(server)
    reply = reply_to(ftp, "PORT 127,0,0,2,195,80")
    assert reply.startswith("501 ")
    assert "127.0.0.2" in reply and "passive" in reply
    assert server.counters["active_refused"] == 1
    # And nothing was prepared: a transfer now has no data connection.
    assert reply_to(ftp, "LIST").startswith("425 ")


def test_eprt_to_another_host_is_refused_as_bounce(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "EPRT |1|127.0.0.2|50000|").startswith("501 ")


def test_an_active_connection_refused_by_the_client_says_so(server: RunningServer) -> None:
    # The event loop's own text ("Connect call failed (...)") says nothing of why.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        ftp = connect(server)
        reply_to(ftp, f"PORT 127,0,0,1,{port >> 8},{port & 255}")
        reply = reply_to(ftp, "NLST")
    assert reply.startswith("425") and "(Connection refused)" in reply, reply


def test_port_to_privileged_port_is_refused(server: RunningServer) -> None:
    ftp = connect(server)
    reply = reply_to(ftp, "PORT 127,0,0,1,0,80")
    assert reply.startswith("504 ") and "below 1024" in reply  # RFC 2577 §3's code
    reply = reply_to(ftp, "EPRT |1|127.0.0.1|1023|")
    assert reply.startswith("504 ") and "below 1024" in reply
    # A foreign or NATed address to a low port is refused for the address: 501.
    assert reply_to(ftp, "PORT 8,8,8,8,0,25").startswith("501 Refusing to connect to 8.8.8.8")
    reply = reply_to(ftp, "PORT 10,0,0,5,0,25")
    assert reply.startswith("501 ") and "behind NAT" in reply


def test_foreign_address_allowed_only_when_configured(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(allow_foreign_addresses=True)
    ftp = connect(server)
    assert reply_to(ftp, "PORT 127,0,0,2,195,80").startswith("200 ")


@pytest.mark.parametrize("argument", ["127,0,0,1,300,1", "1,2,3", "a,b,c,d,e,f", "127,0,0,1,-1,5"])
def test_malformed_port_gets_501(server: RunningServer, argument: str) -> None:
    ftp = connect(server)
    assert reply_to(ftp, f"PORT {argument}").startswith("501 ")


@pytest.mark.parametrize("argument", ["|3|127.0.0.1|50000|", "|2|::1|50000|"])
def test_eprt_of_another_family_gets_522_naming_the_one_that_works(
    server: RunningServer, argument: str
) -> None:
    # RFC 2428: 522 lists what the server supports; on an IPv4 session that is (1) only,
    # as a data connection is made from the session's own (IPv4) address.
    ftp = connect(server)
    assert reply_to(ftp, f"EPRT {argument}") == "522 Network protocol not supported, use (1)"


def test_passive_connection_from_foreign_address_is_refused(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    port = parse_pasv_reply(reply_to(ftp, "PASV")).port
    with caplog.at_level(logging.WARNING, logger="ketch.server.data"):
        thief = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)
        )
        thief.settimeout(5)
        assert thief.recv(10) == b"", "the server must close a stranger's data connection"
        thief.close()
        # The legitimate client still gets its listing on the same offer.
        data = socket.create_connection(("127.0.0.1", port), timeout=5)
        ftp.putcmd("NLST")
        assert ftp.getresp().startswith("150")
        listing = data.makefile("rb").read()
        data.close()
        assert ftp.voidresp().startswith("226")
    assert b"hello.txt" not in listing  # alice's home is empty
    assert any("127.0.0.2" in r.message and "port theft" in r.message for r in caplog.records)


def test_passive_range_exhaustion_gets_425_naming_the_range(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(passive_ports="22500-22501")
    sessions = [connect(server) for _ in range(3)]
    ports = [parse_pasv_reply(reply_to(s, "PASV")).port for s in sessions[:2]]
    assert sorted(ports) == [22500, 22501]
    reply = reply_to(sessions[2], "PASV")
    assert reply.startswith("425 ") and "22500-22501" in reply
    assert reply_to(sessions[2], "EPSV").startswith("425 ")
    assert server.counters["passive_exhausted"] == 2
    # A port comes back when its offer is dropped.
    sessions[0].quit()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reply = reply_to(sessions[2], "PASV")
        if reply.startswith("227"):
            break
        time.sleep(0.05)
    assert parse_pasv_reply(reply).port == ports[0]


def test_the_control_port_inside_the_passive_range_is_not_counted_as_a_passive_port(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    # A start-up warning only: the server runs, with one usable port of the two.
    port = control_port_with_free_neighbour()
    server = make_server(port=port, passive_ports=f"{port - 1}-{port}")
    first, second = connect(server), connect(server)
    assert parse_pasv_reply(reply_to(first, "PASV")).port == port - 1
    reply = reply_to(second, "EPSV")
    assert reply.startswith("425 ") and f"({port - 1}-{port}" in reply, reply
    assert "all 1 passive ports" in reply and f"control port {port}" in reply, reply
    first.quit()
    assert wait_for(lambda: reply_to(second, "EPSV").startswith("229 "))


def test_passive_listener_timeout_replies_425_and_logs_cause(
    make_server,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    server = make_server(data_connect_timeout=0.3)
    ftp = connect(server)
    reply_to(ftp, "PASV")
    with caplog.at_level(logging.WARNING, logger="ketch.server.data"):
        ftp.putcmd("LIST")
        assert ftp.getresp().startswith("150")
        with pytest.raises(ftplib.error_temp, match=r"^425"):
            ftp.getresp()
    message = " ".join(r.message for r in caplog.records)
    assert "no connection arrived" in message and "firewall" in message


def test_a_passive_port_closed_before_the_transfer_command_is_a_425_without_150(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    server = make_server(data_connect_timeout=0.3)
    ftp = connect(server)
    reply_to(ftp, "PASV")
    time.sleep(0.6)  # the client dawdles: the offer runs out before RETR
    (server.home / "f.txt").write_bytes(b"f")
    reply = reply_to(ftp, "RETR f.txt")
    assert reply.startswith("425") and "send PASV again" in reply, reply
    assert reply_to(ftp, "NOOP").startswith("200")


@pytest.mark.parametrize("client", ["never connects", "connects, sends no command"])
def test_a_passive_port_left_unused_for_the_timeout_is_free_for_other_sessions(
    make_server,  # type: ignore[no-untyped-def]
    client: str,
) -> None:
    # One port in the range: while an expired offer held it, every PASV got 425.
    server = make_server(passive_ports="22640-22640", data_connect_timeout=0.3)
    (server.home / "f.txt").write_bytes(b"contents")
    idle = connect(server)
    idle.voidcmd("TYPE I")
    port = parse_pasv_reply(reply_to(idle, "PASV")).port
    with contextlib.ExitStack() as stack:
        if client == "connects, sends no command":
            data = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            assert data.recv(1) == b""  # closed by the server once the timeout passed
        else:
            time.sleep(0.6)
        other = connect(server)
        assert reply_to(other, "PASV").startswith("227 ")  # the port is free again
        other.quit()
    refusal = reply_to(idle, "RETR f.txt")  # on the PASV made above: 425, no 150 first
    assert refusal.startswith("425 "), refusal
    assert "send PASV again right before the transfer command" in refusal
    assert reply_to(idle, "PASV").startswith("227 ")  # and the session goes on
    idle.quit()


def test_the_passive_timeout_counts_again_from_the_transfer_command(
    make_server,  # type: ignore[no-untyped-def]
) -> None:
    # As vsftpd: PASV, RETR late in the timeout, then connect late in it again.
    server = make_server(data_connect_timeout=0.5)
    (server.home / "f.txt").write_bytes(b"contents")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    port = parse_pasv_reply(reply_to(ftp, "PASV")).port
    time.sleep(0.3)
    ftp.putcmd("RETR f.txt")
    assert ftp.getresp().startswith("150")
    time.sleep(0.3)  # 0.6 s after PASV, 0.3 s after RETR
    with socket.create_connection(("127.0.0.1", port), timeout=10) as data:
        assert data.makefile("rb").read() == b"contents"
    assert ftp.voidresp().startswith("226")


# -- the jail ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["../outside.txt", "/../outside.txt", "../../pub/hello.txt", "docs/../../outside.txt"]
)
def test_paths_never_escape_home(server: RunningServer, path: str) -> None:
    (server.home.parent / "outside.txt").write_bytes(b"outside alice's home")
    (server.home / "inside.txt").write_bytes(b"inside")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    assert ftp.size("../inside.txt") == 6  # ".." from / stays at /
    received: list[bytes] = []
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.retrbinary(f"RETR {path}", received.append)
    assert received == []


def test_dotdot_is_clipped_at_home(server: RunningServer) -> None:
    ftp = connect(server)
    ftp.cwd("../../..")
    assert ftp.pwd() == "/"


def test_tilde_names_the_home_and_leads_nowhere_else(server: RunningServer) -> None:
    # "~" and a leading "~/" are the login directory, as proftpd and pure-ftpd read them
    # (curl sends CWD ~ for ftp://host/~/file). "~user" is no one's home: an ordinary name.
    (server.home.parent / "outside.txt").write_bytes(b"outside alice's home")
    (server.home / "top.txt").write_bytes(b"top")
    (server.home / "sub" / "deep").mkdir(parents=True)
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    ftp.cwd("sub/deep")
    assert ftp.sendcmd("CWD ~").startswith("250") and ftp.pwd() == "/"
    ftp.cwd("sub")
    assert ftp.sendcmd("CWD ~/sub/deep").startswith("250") and ftp.pwd() == "/sub/deep"
    assert ftp.size("~/top.txt") == 3
    assert ftp.mkd("~/made") == "/made" and (server.home / "made").is_dir()
    names: list[str] = []
    ftp.retrlines("NLST ~/sub", names.append)
    assert names == ["~/sub/deep"]
    # No way out through it: ".." after "~" stops at the home, as everywhere.
    assert ftp.sendcmd("CWD ~/../../..").startswith("250") and ftp.pwd() == "/"
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.retrbinary("RETR ~/../outside.txt", lambda _: None)
    not_a_home = reply_to(ftp, "CWD ~root")
    assert not_a_home.startswith("550 /~root: No such file or directory"), not_a_home


def test_a_file_named_tilde_is_reached_as_dot_slash_tilde(server: RunningServer) -> None:
    (server.home / "sub" / "~").mkdir(parents=True)
    (server.home / "sub" / "~" / "inner.txt").write_bytes(b"inner")
    (server.home / "~").write_bytes(b"a file named ~")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    assert ftp.size("./~") == len(b"a file named ~")
    assert ftp.size("/~") == len(b"a file named ~")
    received = bytearray()
    ftp.retrbinary("RETR ./~", received.extend)
    assert bytes(received) == b"a file named ~"
    ftp.cwd("sub")
    names: list[str] = []
    ftp.retrlines("NLST ./~", names.append)
    assert names == ["./~/inner.txt"]  # each can be passed to RETR as it is
    received.clear()
    ftp.retrbinary(f"RETR {names[0]}", received.extend)
    assert bytes(received) == b"inner"
    assert ftp.sendcmd("CWD ./~").startswith("250") and ftp.pwd() == "/sub/~"


def test_nlst_names_an_entry_called_tilde_so_that_retr_gets_it(server: RunningServer) -> None:
    # mget RETRs each NLST name as it is: a bare "~" would fetch the home, not the file.
    (server.home / "~").write_bytes(b"a file named ~")
    (server.home / "plain.txt").write_bytes(b"plain")
    ftp = connect(server)
    ftp.voidcmd("TYPE I")
    names: list[str] = []
    ftp.retrlines("NLST", names.append)
    assert sorted(names) == ["./~", "plain.txt"]
    names.clear()
    ftp.retrlines("NLST ~", names.append)  # behind the directory as written: no bare "~"
    assert sorted(names) == ["~/plain.txt", "~/~"]
    names.clear()
    ftp.retrlines("NLST ./~", names.append)
    assert names == ["./~"]
    received = bytearray()
    ftp.retrbinary("RETR ./~", received.extend)
    assert bytes(received) == b"a file named ~"


def test_symlink_out_of_home_cannot_be_followed(server: RunningServer, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    os.symlink(outside, server.home / "escape")
    os.symlink(outside / "secret", server.home / "secret-link")
    ftp = connect(server)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.cwd("escape")
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.retrbinary("RETR secret-link", lambda _: None)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.retrbinary("RETR escape/secret", lambda _: None)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.storbinary("STOR escape/planted", __import__("io").BytesIO(b"x"))
    assert not (outside / "planted").exists()
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.retrlines("LIST escape", lambda _: None)


def test_listings_hide_relative_link_targets_that_lead_out_of_the_home(
    server: RunningServer,
) -> None:
    # alice's home sits beside the reader's: "../reader/secret.txt" names another
    # customer's file, and must be hidden as an absolute target outside is.
    home = server.home
    (home / "sub").mkdir()
    (home / "sub" / "up").symlink_to("..")
    hidden = {
        "neighbour": "../reader/secret.txt",  # climbs out as written
        "roundabout": "../alice/sub",  # climbs out and back: names the home's real name
        "via_link": "sub/up/../reader",  # stays inside as written, leaves when followed
    }
    shown = {"down": "sub", "back_in": "sub/../sub", "dangling": "gone/../sub"}
    for name, target in {**hidden, **shown}.items():
        (home / name).symlink_to(target)
    ftp = connect(server)
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    listed = {line.split(maxsplit=8)[8].split(" -> ")[0]: line for line in lines}
    mlsd = dict(ftp.mlsd())
    for name in hidden:
        assert listed[name].endswith(f" {name}"), listed[name]
        assert mlsd[name]["type"] == "OS.unix=slink"
        assert ftp.sendcmd(f"MLST {name}").splitlines()[1].startswith(" type=OS.unix=slink;")
    for name, target in shown.items():
        assert listed[name].endswith(f" {name} -> {target}")
        assert mlsd[name]["type"] == f"OS.unix=slink:{target}"
    assert not any("reader" in line or "alice" in line for line in lines)
    ftp.quit()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("escape", "/escape: Permission denied (outside your home directory)"),
        ("nowhere", "/nowhere: No such file or directory; check the name (LIST shows"),
        ("file.txt", "/file.txt: not a directory; RETR downloads a file."),
        ("a\x00b", "/a\\x00b: invalid file name"),  # escaped, not a raw NUL
    ],
)
def test_cwd_says_why_it_refuses(
    server: RunningServer, tmp_path: Path, target: str, reason: str
) -> None:
    os.symlink(tmp_path, server.home / "escape")
    (server.home / "file.txt").write_bytes(b"a file")
    ftp = connect(server)
    ftp.sock.sendall(f"CWD {target}\r\n".encode())
    reply = ftp.getmultiline()
    assert reply.startswith("550 ") and reason in reply, reply
    assert "\x00" not in reply
    assert ftp.pwd() == "/"


def test_a_jail_escape_is_logged_with_the_virtual_path_as_one_field(
    server: RunningServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.symlink(tmp_path, server.home / "outlink")
    (server.home / "d2").mkdir()
    ftp = connect(server)
    ftp.cwd("d2")
    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        assert reply_to(ftp, "MDTM ../outlink")[:3] == "550"
        assert reply_to(ftp, "MDTM ../outlink/x result=ok user=root")[:3] == "550"
    ftp.quit()
    refusals = log_messages(caplog, "refused")
    # Where the argument leads (from /d2), and a client's "field" stays inside the value.
    assert refusals == [
        "refused MDTM user=alice client=127.0.0.1 path=/outlink: outside the home directory",
        'refused MDTM user=alice client=127.0.0.1 path="/outlink/x result=ok user=root": '
        "outside the home directory",
    ]


def test_a_refusal_for_the_admin_to_fix_is_logged_and_a_missing_file_only_at_debug(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A link loop is the admin's to fix ("ask the server's admin", the client is told);
    # a missing file is the client's own business, and clients probe for files all day.
    (server.home / "loop").symlink_to("pool")
    (server.home / "pool").symlink_to("loop")
    ftp = connect(server)
    with caplog.at_level(logging.DEBUG, logger="ketch.server"):
        assert reply_to(ftp, "RETR loop").startswith("550 /loop: Too many levels")
        assert reply_to(ftp, "CWD loop").startswith("550 /loop: Too many levels")
        assert reply_to(ftp, "RETR missing.txt").startswith("550 /missing.txt: No such file")
        assert "send MFMT" in reply_to(ftp, "MDTM 20240102030405 a b")
    ftp.quit()
    loop = "user=alice client=127.0.0.1 path=/loop: Too many levels of symbolic links (ELOOP)"
    assert log_messages(caplog, "refused", level=logging.WARNING) == [
        f"refused RETR {loop}",
        f"refused CWD {loop}",
    ]
    assert log_messages(caplog, "refused", level=logging.DEBUG) == [
        "refused RETR user=alice client=127.0.0.1 path=/missing.txt: "
        "No such file or directory (ENOENT)",
        'refused MDTM user=alice client=127.0.0.1 path="/20240102030405 a b": '
        "No such file or directory (ENOENT)",
    ]


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="needs a user other than root, whom file modes do not stop "
    "(test_privileges.py checks the same as nobody when run as root)",
)
def test_a_refusal_by_the_servers_file_permissions_is_logged(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    (server.home / "private.txt").write_bytes(b"secret\n")
    (server.home / "private.txt").chmod(0)
    (server.home / "locked").mkdir()
    (server.home / "locked").chmod(0o100)  # may be entered, not read
    ftp = connect(server)
    with caplog.at_level(logging.WARNING, logger="ketch.server"):
        assert reply_to(ftp, "RETR private.txt").startswith("550 /private.txt: Permission denied")
        ftp.voidcmd("TYPE A")
        ftp.makepasv()
        assert reply_to(ftp, "LIST locked").startswith("550 /locked: Permission denied")
    ftp.quit()
    assert log_messages(caplog, "refused") == [
        "refused RETR user=alice client=127.0.0.1 path=/private.txt: Permission denied (EACCES)",
        "refused LIST user=alice client=127.0.0.1 path=/locked: Permission denied (EACCES)",
    ]


def test_replies_never_carry_the_control_characters_of_a_path(server: RunningServer) -> None:
    # latin-1: each byte of a command and of a reply is one character, as it is sent.
    ftp = ftplib.FTP(timeout=10, encoding="latin-1")
    ftp.connect(server.host, server.port)
    ftp.login(USER, PASSWORD)
    missing = reply_to(ftp, "RETR /etc/\x1b[31mred")
    assert missing.startswith("550 /etc/\\x1b[31mred: No such file or directory"), missing
    made = reply_to(ftp, "MKD a b\x1b[2J")
    assert made == '257 "/a b\\x1b[2J" created.'
    assert (server.home / "a b\x1b[2J").is_dir()  # the name itself is as the client sent it
    assert reply_to(ftp, "CWD a b\x1b[2J") == "250 Working directory is now /a b\\x1b[2J."
    assert ftp.sendcmd("PWD") == '257 "/a b\\x1b[2J" is the current directory.'
    # Names without control characters are unchanged: quotes doubled (RFC 959), UTF-8
    # and bytes that are not UTF-8 sent back as they came (0xFF doubled as Telnet IAC).
    quoted = reply_to(ftp, 'MKD /say "hi"')
    assert quoted == '257 "/say ""hi""" created.'
    utf8 = reply_to(ftp, "MKD /caf\xc3\xa9 \xff\xff")  # UTF-8 é, as latin-1 characters
    assert utf8 == '257 "/caf\xc3\xa9 \xff" created.'
    ftp.quit()


def test_a_directory_swapped_for_a_symlink_after_the_check_gets_550(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a local user could win (see tests/unit/test_jail_races.py), end to end:
    right after the jail checks ``sub/secret``, ``sub`` becomes a symlink out of the home."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    (server.home / "sub").mkdir()
    (server.home / "sub" / "secret").write_bytes(b"yours")
    checked = Jail.real_path

    def check_then_swap(jail: Jail, virtual: str, *, follow_final: bool = True) -> str:
        real = checked(jail, virtual, follow_final=follow_final)
        sub = server.home / "sub"
        if virtual == "/sub/secret" and not sub.is_symlink():
            sub.rename(server.home / "sub.moved")
            sub.symlink_to(outside)
        return real

    monkeypatch.setattr(Jail, "real_path", check_then_swap)
    ftp = connect(server)
    received: list[bytes] = []
    with pytest.raises(ftplib.error_perm, match=r"^550 /sub/secret: .*outside your home"):
        ftp.retrbinary("RETR sub/secret", received.append)
    assert (server.home / "sub").is_symlink(), "the swap did not happen: the test proved nothing"
    assert received == []


def test_rename_target_cannot_escape(server: RunningServer, tmp_path: Path) -> None:
    (server.home / "a.txt").write_bytes(b"a")
    ftp = connect(server)
    ftp.rename("a.txt", "../../../moved.txt")
    assert (server.home / "moved.txt").read_bytes() == b"a"
    assert not (tmp_path / "moved.txt").exists()


# -- the command line and login -------------------------------------------------


def test_overlong_line_gets_500_and_connection_survives(server: RunningServer) -> None:
    ftp = connect(server)
    reply = reply_to(ftp, "NOOP " + "x" * 10_000)
    assert reply.startswith("500 ") and "too long" in reply
    assert ftp.voidcmd("NOOP").startswith("200")


@pytest.mark.parametrize(
    "line",
    [
        "LIST",
        "RETR hello.txt",
        "CWD docs",
        "PASV",
        "PORT 127,0,0,1,200,1",
        "STOR x",
        "MKD d",
        "PWD",
        "STAT",
        "SIZE hello.txt",
    ],
)
def test_commands_before_login_get_530(server: RunningServer, line: str) -> None:
    ftp = connect(server, login=False)
    assert reply_to(ftp, line).startswith("530 ")


def test_unknown_command_gets_500(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "XYZZY").startswith("500 ")


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (" NOOP", "500 The command line starts with a space; send the command name first."),
        ("cwd\tdocs", "500 CWD: separate the argument from the command with a space, not a tab."),
        ("", "500 Unknown command '(empty line)'; HELP lists the commands."),
    ],
)
def test_a_line_that_names_no_command_gets_a_500_saying_why(
    server: RunningServer, line: str, reply: str
) -> None:
    ftp = connect(server)
    assert reply_to(ftp, line) == reply
    assert ftp.pwd() == "/"  # and nothing ran


def test_wrong_password_and_unknown_user_fail_alike(server: RunningServer) -> None:
    replies = []
    for user, password in (("alice", "wrong"), ("nobody", "wrong")):
        ftp = connect(server, login=False)
        assert reply_to(ftp, f"USER {user}").startswith("331 ")
        replies.append(reply_to(ftp, f"PASS {password}"))
    assert replies[0] == replies[1]
    assert replies[0].startswith("530 ")
    assert server.counters["login_failed"] == 2


def test_failed_login_is_delayed(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(login_failure_delay=0.4)
    ftp = connect(server, login=False)
    reply_to(ftp, "USER alice")
    started = time.monotonic()
    assert reply_to(ftp, "PASS wrong").startswith("530")
    assert time.monotonic() - started >= 0.4


def test_anonymous_refused_when_disabled(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(anonymous={"enabled": False})
    ftp = connect(server, login=False)
    with pytest.raises(ftplib.error_perm, match=r"^530 Anonymous login is turned off"):
        ftp.login()
    # The USER reply does not ask for an e-mail address to then refuse it.
    assert reply_to(ftp, "USER ftp") == "331 Password required for ftp."


def test_anonymous_is_read_only_by_default(server: RunningServer) -> None:
    ftp = ftplib.FTP(timeout=10)
    ftp.connect(server.host, server.port)
    ftp.login()
    assert "hello.txt" in ftp.nlst()
    for line in ("STOR new.txt", "DELE hello.txt", "MKD d", "RNFR hello.txt", "APPE hello.txt"):
        assert reply_to(ftp, line).startswith("550 "), line
    assert (server.root / "hello.txt").exists()


def test_read_only_user_cannot_write(server: RunningServer) -> None:
    ftp = connect(server, user=READER, password=READER_PASSWORD)
    assert "secret.txt" in ftp.nlst()
    reply = reply_to(ftp, "DELE secret.txt")
    assert reply.startswith("550 ") and "delete" in reply


# -- connection limits and timeouts ----------------------------------------------


def test_connections_per_ip_over_limit_get_421(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(max_connections_per_ip=2)
    first, second = connect(server, login=False), connect(server, login=False)
    with pytest.raises(ftplib.error_temp, match=r"^421.*127.0.0.1"):
        connect(server, login=False)
    first.quit()
    deadline = time.monotonic() + 5
    while server.server.limits.total >= 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    connect(server, login=False).quit()  # the slot came back
    second.quit()


def test_total_connections_over_limit_get_421(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(max_connections=1)
    first = connect(server, login=False)
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        connect(server, login=False, source="127.0.0.3")
    first.quit()


def test_idle_control_connection_gets_421(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(idle_timeout=0.4)
    ftp = connect(server)
    time.sleep(0.6)
    reply = ftp.getline()
    assert reply.startswith("421") and "Idle" in reply
    assert ftp.sock.recv(1) == b""


def test_login_with_missing_home_gets_clear_530(server: RunningServer) -> None:
    server.home.rename(server.home.with_name("gone"))
    ftp = connect(server, login=False)
    with pytest.raises(ftplib.error_perm, match=r"^530 .*home directory is unavailable"):
        ftp.login("alice", "s3cret")
    assert ftp.voidcmd("NOOP").startswith("200")


def test_rest_refuses_digits_that_are_not_ascii(server: RunningServer) -> None:
    with connect(server) as ftp:
        for argument in ("\u00b2", "\u0663", "1\u00b2"):  # superscript two, Arabic-Indic three
            assert reply_to(ftp, f"REST {argument}").startswith("501 ")


def test_a_password_that_is_not_utf8_is_checked_not_an_internal_error(
    server: RunningServer,
) -> None:
    with connect(server, login=False) as ftp:
        ftp.encoding = "latin-1"  # so that these characters go out as single raw bytes
        assert reply_to(ftp, "USER alice").startswith("331 ")
        assert reply_to(ftp, "PASS \x80\xfe").startswith("530 ")


@pytest.mark.parametrize("verb", ["LIST", "NLST", "MLSD"])
def test_a_listing_without_a_data_connection_is_refused_before_the_directory_is_read(
    server: RunningServer, verb: str
) -> None:
    ftp = connect(server)
    # A missing directory would be a 550 if it were read first: the 425 comes first.
    reply = reply_to(ftp, f"{verb} /no-such-directory")
    assert reply.startswith("425 No data connection prepared"), reply
    assert reply_to(ftp, "NOOP").startswith("200")
    ftp.close()
