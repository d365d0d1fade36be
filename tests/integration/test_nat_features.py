"""The server's NAT features on loopback: masquerade_map, SITE NATINFO, expiry log, PORT refusal.

Loopback is all a test may use without namespaces, so the "client network"
is 127.0.0.2 (a second loopback source address) and the map names an
address from 198.18.0.0/15; tests/lab has the same behaviours through real NAT.
"""

from __future__ import annotations

import asyncio
import ftplib
import logging
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from serve_process import ketch_serve

from ketch.protocol.addresses import parse_pasv_reply
from ketch.server.lifecycle import Reloader
from ketch.server.masquerade import MasqueradePolicy

from conftest import PASSWORD, USER, RunningServer
from ftp_helpers import connect, reply_to, wait_for


def natinfo(ftp: ftplib.FTP) -> dict[str, str]:
    """SITE NATINFO as a dict, checking the layout on the way (shared contract C2)."""
    reply = reply_to(ftp, "SITE NATINFO")
    lines = reply.split("\n")
    assert lines[0] == "200-Data-connection facts as this server sees them:"
    assert lines[-1] == "200 End."
    facts = {}
    for line in lines[1:-1]:
        match = re.fullmatch(r" ([a-z-]+): (.+)", line)
        assert match, f"not a ' key: value' line: {line!r}"
        facts[match[1]] = match[2]
    return facts


NATINFO_KEYS = [
    "client-address",
    "server-address",
    "last-passive-reply",
    "last-active-command",
    "masquerade-address",
    "passive-ports",
    "active-source-port",
    "passive-expired",
]


# -- masquerade_map -------------------------------------------------------------


def test_masquerade_map_picks_the_address_by_client_network(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(
        masquerade_address="203.0.113.5",
        masquerade_map={"127.0.0.2/32": "198.18.0.9", "127.0.0.0/30": "localhost"},
    )
    mapped = connect(server, source="127.0.0.2")
    assert parse_pasv_reply(reply_to(mapped, "PASV")).host == "198.18.0.9"
    # 127.0.0.1 is in the wider entry, whose host name resolved to 127.0.0.1.
    wider = connect(server, source="127.0.0.1")
    reply = reply_to(wider, "PASV")
    assert parse_pasv_reply(reply).host == "127.0.0.1"
    # Other loopback clients match no entry: the local address, never masquerade_address.
    other = connect(server, source="127.0.0.5")
    assert parse_pasv_reply(reply_to(other, "PASV")).host == "127.0.0.1"
    assert natinfo(mapped)["masquerade-address"] == "198.18.0.9"
    assert natinfo(other)["masquerade-address"] == "none"


def test_mapped_client_gets_its_data_and_pasv_looks_the_name_up_again_when_due(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(masquerade_map={"127.0.0.2/32": "localhost"}, masquerade_refresh=30)
    (server.home / "a.txt").write_bytes(b"mapped\n")
    # The server's policy rebuilt from its own configuration, with a stand-in DNS whose
    # every answer differs and a clock the test moves, so each new lookup shows in PASV.
    answers = iter(["198.18.0.21", "198.18.0.22"])
    lookups: list[str] = []
    now = [1000.0]

    async def resolver(name: str) -> str:
        lookups.append(name)
        return next(answers)

    server.server.context.masquerade = MasqueradePolicy.from_config(
        server.server.config, resolver=resolver, clock=lambda: now[0]
    )
    ftp = connect(server, source="127.0.0.2")
    ftp.set_pasv(True)  # ftplib connects to the control address, whatever PASV names

    def retrieve_and_advertised() -> str:
        received: list[bytes] = []
        ftp.retrbinary("RETR a.txt", received.append)
        assert b"".join(received) == b"mapped\n"
        return parse_pasv_reply(natinfo(ftp)["last-passive-reply"]).host

    assert retrieve_and_advertised() == "127.0.0.1"  # "localhost" as resolved at start-up
    now[0] += 29
    assert retrieve_and_advertised() == "127.0.0.1"
    assert lookups == []
    now[0] += 1  # masquerade_refresh has passed: this PASV looks the name up again
    assert retrieve_and_advertised() == "198.18.0.21"
    assert retrieve_and_advertised() == "198.18.0.21"
    assert lookups == ["localhost"]
    now[0] += 30
    assert retrieve_and_advertised() == "198.18.0.22"
    assert lookups == ["localhost", "localhost"]


# -- SITE NATINFO -------------------------------------------------------------------


def test_natinfo_before_any_data_command_says_none(server: RunningServer) -> None:
    ftp = connect(server)
    facts = natinfo(ftp)
    assert list(facts) == NATINFO_KEYS
    assert facts["client-address"] == "127.0.0.1"
    assert facts["server-address"] == f"127.0.0.1:{server.port}"
    assert facts["last-passive-reply"] == "none"
    assert facts["last-active-command"] == "none"
    assert facts["masquerade-address"] == "none"
    assert facts["passive-ports"] == "21000-21999"
    assert facts["active-source-port"] == str(server.port - 1)
    assert facts["passive-expired"] == "0"


def test_natinfo_shows_the_exact_pasv_and_epsv_replies(server: RunningServer) -> None:
    ftp = connect(server)
    pasv = reply_to(ftp, "PASV")
    assert natinfo(ftp)["last-passive-reply"] == pasv
    epsv = reply_to(ftp, "EPSV")
    assert epsv.startswith("229 ")
    assert natinfo(ftp)["last-passive-reply"] == epsv


def test_natinfo_shows_the_port_command_as_received(server: RunningServer) -> None:
    ftp = connect(server)
    assert reply_to(ftp, "port 127,0,0,1,200,10").startswith("200")
    facts = natinfo(ftp)
    assert facts["last-active-command"] == "port 127,0,0,1,200,10"
    assert facts["last-passive-reply"] == "none"
    assert reply_to(ftp, "EPRT |1|127.0.0.1|51210|").startswith("200")
    assert natinfo(ftp)["last-active-command"] == "EPRT |1|127.0.0.1|51210|"


def test_natinfo_reports_a_fixed_or_ephemeral_source_port(make_server) -> None:  # type: ignore[no-untyped-def]
    assert natinfo(connect(make_server(active_source_port=2020)))["active-source-port"] == "2020"
    ephemeral = make_server(active_source_port="ephemeral")
    assert natinfo(connect(ephemeral))["active-source-port"] == "ephemeral"


def test_natinfo_needs_login_and_is_listed_by_site_help(server: RunningServer) -> None:
    assert reply_to(connect(server, login=False), "SITE NATINFO").startswith("530")
    assert "NATINFO" in reply_to(connect(server), "SITE HELP")


# -- passive expiry -------------------------------------------------------------------


def test_expired_passive_listener_is_logged_with_cause_and_counted(
    make_server,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(data_connect_timeout=0.3)
    ftp = connect(server)
    with caplog.at_level(logging.WARNING, logger="ketch.server.data"):
        port = parse_pasv_reply(reply_to(ftp, "PASV")).port
        assert wait_for(lambda: server.counters.get("passive_expired") == 1, timeout=5)
    records = [r for r in caplog.records if "no connection arrived" in r.getMessage()]
    assert len(records) == 1 and records[0].name == "ketch.server.data"
    message = records[0].getMessage()
    assert f"127.0.0.1:{port}" in message
    assert "client 127.0.0.1" in message and "0.3 s" in message
    for word in ("firewall", "passive_ports", "21000-21999", "masquerade_address"):
        assert word in message
    assert natinfo(ftp)["passive-expired"] == "1"


def test_a_used_or_replaced_listener_does_not_count_as_expired(
    make_server,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(data_connect_timeout=0.3)
    ftp = connect(server)
    with caplog.at_level(logging.WARNING, logger="ketch.server.data"):
        ftp.retrlines("NLST", lambda _: None)
        reply_to(ftp, "PASV")
        reply_to(ftp, "PORT 127,0,0,1,200,10")  # replaces (closes) the passive listener
        # One more listener, left to expire. Its deadline is the latest of the three, so
        # once it has expired, the other two would have been counted already.
        last = parse_pasv_reply(reply_to(ftp, "PASV")).port

        def expired() -> list[str]:
            return [
                r.getMessage() for r in caplog.records if "no connection arrived" in r.getMessage()
            ]

        assert wait_for(lambda: any(f"127.0.0.1:{last} " in m for m in expired()), timeout=10)
        assert wait_for(lambda: server.counters.get("passive_expired") == 1, timeout=10)
        assert natinfo(ftp)["passive-expired"] == "1"
    assert server.counters["passive_expired"] == 1
    assert len(expired()) == 1


def expiry_message(
    server: RunningServer, caplog: pytest.LogCaptureFixture, ftp: ftplib.FTP, command: str
) -> str:
    """The log line for a PASV or EPSV (``command``) that nothing connects to."""
    with caplog.at_level(logging.WARNING, logger="ketch.server.data"):
        reply = reply_to(ftp, command)
        assert reply.startswith(("227 ", "229 ")), reply
        assert wait_for(lambda: server.counters.get("passive_expired") == 1, timeout=5)
    messages = [r.getMessage() for r in caplog.records if "no connection arrived" in r.getMessage()]
    assert len(messages) == 1, messages
    return messages[0]


def test_an_expired_epsv_listener_advises_forwarding_not_masquerade_address(
    make_server,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    # EPSV names no address (RFC 2428): masquerade_address cannot help, and here it is set.
    server = make_server(data_connect_timeout=0.3, masquerade_address="198.51.100.7")
    message = expiry_message(server, caplog, connect(server), "EPSV")
    assert "(EPSV)" in message and "firewall" in message and "21000-21999" in message
    assert "set masquerade_address" not in message, message
    assert "forward those ports" in message and "names no address" in message, message


def test_an_expired_pasv_listener_names_the_setting_its_address_came_from(
    make_server,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(data_connect_timeout=0.3, masquerade_map={"127.0.0.0/8": "198.51.100.7"})
    message = expiry_message(server, caplog, connect(server), "PASV")
    assert "at 198.51.100.7:" in message
    assert 'masquerade_map["127.0.0.0/8"]' in message and "forward" in message, message
    assert "set masquerade_address" not in message, message


def test_an_expired_pasv_listener_of_a_client_masquerade_skips_gets_no_masquerade_advice(
    make_server,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A loopback client is told the local address whatever masquerade_address says.
    server = make_server(data_connect_timeout=0.3, masquerade_address="198.51.100.7")
    message = expiry_message(server, caplog, connect(server), "PASV")
    assert "at 127.0.0.1:" in message and "firewall" in message
    assert "masquerade" not in message.split("within 0.3 s")[1], message


# -- PORT/EPRT from behind NAT --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verb"), [("PORT 10,0,0,1,200,10", "PORT"), ("EPRT |1|10.0.0.1|51210|", "EPRT")]
)
def test_active_mode_naming_another_private_address_says_behind_nat(
    server: RunningServer, line: str, verb: str
) -> None:
    ftp = connect(server)
    reply = reply_to(ftp, line)
    assert reply.startswith("501 ")
    assert f"{verb} names 10.0.0.1" in reply and "comes from 127.0.0.1" in reply
    assert "behind NAT" in reply and "passive" in reply
    assert server.counters["active_refused"] == 1
    assert natinfo(ftp)["last-active-command"] == line
    assert reply_to(ftp, "LIST").startswith("425 ")  # nothing was prepared


def test_active_mode_naming_a_shared_address_space_address_says_behind_nat(
    server: RunningServer,
) -> None:
    # 100.64.0.0/10 (RFC 6598): a client behind carrier-grade NAT names it. Python
    # 3.11's ipaddress does not call it private, but it is no more reachable.
    reply = reply_to(connect(server), "PORT 100,64,1,2,200,10")
    assert reply.startswith("501 ") and "names 100.64.1.2" in reply
    assert "behind NAT" in reply and "passive" in reply


@pytest.mark.parametrize(
    ("line", "host"),
    [("PORT 0,0,0,0,200,10", "0.0.0.0"), ("EPRT |1|0.0.0.0|51210|", "0.0.0.0")],
)
def test_active_mode_naming_the_unspecified_address_says_so(
    server: RunningServer, line: str, host: str
) -> None:
    reply = reply_to(connect(server), line)
    assert reply.startswith("501 ") and f"names {host}, the unspecified address" in reply
    assert "behind NAT" not in reply
    assert "send your own address (127.0.0.1)" in reply and "passive mode" in reply


def test_the_unspecified_address_is_refused_even_where_foreign_addresses_are_allowed(
    make_server: Callable[..., RunningServer],
) -> None:
    # On Linux a connect to 0.0.0.0 reaches the server's own host: a bounce to itself.
    reply = reply_to(connect(make_server(allow_foreign_addresses=True)), "PORT 0,0,0,0,200,10")
    assert reply.startswith("501 ") and "the unspecified address" in reply, reply


def _logged_in_over_ipv6(make_server: Callable[..., RunningServer]) -> ftplib.FTP:
    """A session logged in over ::1 (skipped where the host has no IPv6 loopback)."""
    try:
        server = make_server(listen_address="::1")
    except OSError as error:
        pytest.skip(f"cannot listen on ::1 here: {error}")
    ftp = ftplib.FTP(timeout=10)
    ftp.connect("::1", server.port)
    ftp.login(USER, PASSWORD)
    return ftp


def test_eprt_naming_the_unspecified_ipv6_address_says_so(
    make_server: Callable[..., RunningServer],
) -> None:
    ftp = _logged_in_over_ipv6(make_server)
    reply = reply_to(ftp, "EPRT |2|::|51210|")
    assert reply.startswith("501 ") and "names ::, the unspecified address" in reply
    assert "behind NAT" not in reply and "send your own address (::1)" in reply


@pytest.mark.parametrize("named", ["fd00::2", "fe80::1", "2606:4700:4700::1111"])
def test_eprt_naming_another_ipv6_address_blames_several_addresses_not_nat(
    make_server: Callable[..., RunningServer], named: str
) -> None:
    # On IPv6 a host has temporary, unique local and link-local addresses; NAT66 is rare.
    ftp = _logged_in_over_ipv6(make_server)
    reply = reply_to(ftp, f"EPRT |2|{named}|51210|")
    assert reply.startswith(f"501 EPRT names {named}, but your connection comes from ::1")
    assert "several IPv6 addresses" in reply and "Name ::1, or use passive mode (EPSV)" in reply
    assert "behind NAT" not in reply


def test_active_mode_naming_a_public_address_is_a_plain_bounce_refusal(
    server: RunningServer,
) -> None:
    reply = reply_to(connect(server), "PORT 8,8,8,8,200,10")
    assert reply.startswith("501 ") and "behind NAT" not in reply and "own address" in reply


# -- the start-up report ----------------------------------------------------------------


def test_serve_prints_and_logs_set_up_warnings(tmp_path: Path) -> None:
    args = [
        "--port", "0", "--listen", "127.0.0.1",
        "--passive-ports", "1000-1009",
        "--masquerade-address", "10.0.0.5",
    ]  # fmt: skip
    with ketch_serve(args, tmp_path) as serving:
        summary = "".join(serving.stdout)
        assert "  passive  ports 1000-1009: 10 ports" in summary
        assert "masquerade_address 10.0.0.5" in summary
        warnings = [line for line in serving.stdout if line.startswith("  warning  ")]
        assert any("10 ports but max_connections allows 512" in w for w in warnings)
        assert any("below 1024" in w for w in warnings)
        assert any("10.0.0.5 is not a public address" in w for w in warnings)
        assert any("listens on 127.0.0.1 only" in w for w in warnings)
        logged = serving.wait_for("set-up: passive_ports has 10 ports")
        assert "WARNING" in logged
        assert summary.index("  warning") < summary.index("  try ")


def test_serve_with_a_sound_set_up_prints_no_warning(tmp_path: Path) -> None:
    with ketch_serve(["--port", "0", "--listen", "127.0.0.1"], tmp_path) as serving:
        # The summary's last line ("  try ...") has been read, and warnings come before it.
        assert not [line for line in serving.stdout if "warning" in line]
        # Stop it and read stderr to its end, so every line it logged is there to check.
        serving.signal(signal.SIGTERM)
        assert serving.wait_exit() == 0, serving.output()
        serving.wait_for("shutdown complete")
        assert not [line for line in serving.stderr if "set-up:" in line]


def test_reload_swaps_the_map_and_a_name_that_fails_keeps_the_old_one(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(masquerade_map={"127.0.0.2/32": "198.18.0.9"})
    config = server.server.config

    def reload_with(value: str) -> bool:
        changed = config.model_copy(update={"masquerade_map": {"127.0.0.2/32": value}})
        reloader = Reloader(server.server, lambda: changed, Path("ketch.toml"))
        return asyncio.run_coroutine_threadsafe(reloader.reload(), server.loop).result(10)

    ftp = connect(server, source="127.0.0.2")
    assert reload_with("198.18.0.10")
    assert parse_pasv_reply(reply_to(ftp, "PASV")).host == "198.18.0.10"
    assert not reload_with("no-such-host.invalid")
    assert parse_pasv_reply(reply_to(ftp, "PASV")).host == "198.18.0.10"
