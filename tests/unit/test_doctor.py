"""ketch doctor's judgement from synthetic observations: problems, verdicts, fixes.

Each test builds what the probe would have seen in one situation (NAT in
front of the client, a firewall, a server advertising a private address, a
middlebox rewriting PORT or PASV, ...) and checks what a user reads: the
problem per mode, the verdict's key words and the fixes for each side.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from ketch.client.errors import ConnectFailed, LoginFailed
from ketch.protocol.reply_values import parse_natinfo
from ketch.tools.doctor import MODES, Attempt, Diagnosis, Observations, ServerFacts, diagnose
from ketch.tools.doctor_facts import ModeName

CLIENT = "198.18.1.10"
SEEN_BEHIND_NAT = "198.18.2.1"
SERVER = "198.18.3.2"
NATINFO_LINES = (
    "Data-connection facts as this server sees them:",
    " client-address: 198.18.2.1",
    " server-address: 198.18.3.2:21",
    " last-passive-reply: 227 Entering Passive Mode (198,18,3,2,195,80).",
    " last-active-command: PORT 198,18,2,1,200,10",
    " masquerade-address: none",
    " passive-ports: 50000-50999",
    " active-source-port: 20",
    " passive-expired: 0",
    "End.",
)

EPSV_OK = Attempt(
    "EPSV",
    sent="EPSV",
    reply="229 Entering Extended Passive Mode (|||50007|)",
    connected_to=f"{SERVER}:50007",
    listed_bytes=120,
)
PASV_OK = Attempt(
    "PASV",
    sent="PASV",
    reply="227 Entering Passive Mode (198,18,3,2,195,80).",
    connected_to=f"{SERVER}:50000",
    listed_bytes=120,
)
FIXUP_OK = Attempt(
    "PASV-fixup",
    sent="PASV",
    reply="227 Entering Passive Mode (198,18,3,2,195,81).",
    connected_to=f"{SERVER}:50001",
    listed_bytes=120,
)
EPRT_OK = Attempt(
    "EPRT",
    sent=f"EPRT |1|{CLIENT}|40000|",
    reply="200 EPRT accepted.",
    connected_to=f"{SERVER}:20",
    listed_bytes=120,
)
PORT_OK = Attempt(
    "PORT",
    sent="PORT 198,18,1,10,156,65",
    reply="200 PORT accepted.",
    connected_to=f"{SERVER}:20",
    listed_bytes=120,
)


def natinfo(seen: str = CLIENT, ports: tuple[int, int] | None = (50000, 50999)) -> ServerFacts:
    return ServerFacts(client_address=seen, server_address=f"{SERVER}:21", passive_ports=ports)


def observe(
    *attempts: Attempt,
    facts: ServerFacts | None = None,
    server: str = SERVER,
    client: str = CLIENT,
) -> Diagnosis:
    given = {attempt.mode: attempt for attempt in attempts}
    defaults: dict[ModeName, Attempt] = {
        "EPSV": EPSV_OK,
        "PASV": PASV_OK,
        "PASV-fixup": FIXUP_OK,
        "EPRT": EPRT_OK,
        "PORT": PORT_OK,
    }
    return diagnose(
        Observations(
            url=f"ftp://{server}:21/",
            host=server,
            server_ip=server,
            server_port=21,
            client_address=client,
            natinfo=facts,
            attempts=tuple(given.get(mode, defaults[mode]) for mode in MODES),
        )
    )


def problems(diagnosis: Diagnosis) -> dict[str, str | None]:
    return {name: result.problem for name, result in diagnosis.modes.items()}


def active_refused_behind_nat(verb: ModeName, sent: str) -> Attempt:
    return Attempt(
        verb,
        sent=sent,
        # What ketch's server sends (server/commands/data_setup.py, shared contract C4).
        reply=f"501 {verb} names {CLIENT}, but your connection comes from {SEEN_BEHIND_NAT}: "
        "you appear to be behind NAT, so the server cannot connect to you. "
        "Use passive mode (PASV/EPSV)",
        failure="the server refused active mode",
    )


# -- SITE NATINFO ------------------------------------------------------------------------


def test_natinfo_facts_are_read_from_the_contract_layout() -> None:
    facts = parse_natinfo(NATINFO_LINES)
    assert facts["client-address"] == "198.18.2.1"
    assert facts["server-address"] == "198.18.3.2:21"  # the colon inside the value stays
    assert facts["last-passive-reply"] == "227 Entering Passive Mode (198,18,3,2,195,80)."
    assert facts["last-active-command"] == "PORT 198,18,2,1,200,10"
    assert facts["masquerade-address"] is None  # "none"
    assert facts["passive-ports"] == "50000-50999"
    server = ServerFacts.from_natinfo(facts)
    assert server.passive_ports == (50000, 50999)
    assert server.client_address == SEEN_BEHIND_NAT


_KEYS = st.from_regex(r"[a-z][a-z-]{0,20}", fullmatch=True)
_VALUES = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=10))
def test_natinfo_facts_survive_the_servers_layout(facts: dict[str, str]) -> None:
    lines = ["Data-connection facts as this server sees them:"]
    lines += [f" {key}: {value}" for key, value in facts.items()]
    lines.append("End.")
    expected = {key: None if value.lower() == "none" else value for key, value in facts.items()}
    assert parse_natinfo(lines) == expected


def test_a_reply_without_facts_parses_to_nothing() -> None:
    assert parse_natinfo(["Unknown SITE command."]) == {}
    assert parse_natinfo(["SITE commands:", " CHMOD <octal mode> <path>", "End."]) == {}


# -- verdicts ----------------------------------------------------------------------------


def test_everything_working_needs_no_fix() -> None:
    diagnosis = observe(facts=natinfo())
    assert diagnosis.any_works
    assert all(result.works for result in diagnosis.modes.values())
    assert set(problems(diagnosis).values()) == {None}
    assert diagnosis.behind_nat is False
    assert "Every data-connection mode works" in diagnosis.verdict
    assert diagnosis.client_fixes == [] and diagnosis.server_fixes == []


def test_a_client_behind_nat_is_told_to_use_passive_mode() -> None:
    diagnosis = observe(
        active_refused_behind_nat("EPRT", f"EPRT |1|{CLIENT}|40000|"),
        active_refused_behind_nat("PORT", "PORT 198,18,1,10,156,65"),
        facts=natinfo(seen=SEEN_BEHIND_NAT),
    )
    assert diagnosis.behind_nat is True
    assert problems(diagnosis)["EPRT"] == problems(diagnosis)["PORT"] == "refused-by-server"
    verdict = diagnosis.verdict
    assert verdict.startswith("Passive mode works (EPSV, PASV, PASV-fixup); active mode fails")
    assert f"behind NAT (your address {CLIENT}, the server sees {SEEN_BEHIND_NAT})" in verdict
    assert "Use passive mode" in verdict
    assert any("--passive" in fix for fix in diagnosis.client_fixes)
    assert any("--active-address" in fix for fix in diagnosis.client_fixes)
    assert diagnosis.as_json()["server_sees"] == SEEN_BEHIND_NAT


def test_active_timeouts_without_nat_blame_a_firewall() -> None:
    timed_out = {
        verb: Attempt(
            verb,
            sent=line,
            reply=f"200 {verb} accepted.",
            connected_to=f"{CLIENT}:40000",
            failure="active mode: the server did not connect back within 5 s",
            cause="timeout",
        )
        for verb, line in (
            ("EPRT", f"EPRT |1|{CLIENT}|40000|"),
            ("PORT", "PORT 198,18,1,10,156,64"),
        )
    }
    diagnosis = observe(*timed_out.values(), facts=natinfo())
    assert problems(diagnosis)["EPRT"] == problems(diagnosis)["PORT"] == "timeout"
    assert diagnosis.behind_nat is False
    assert "firewall" in diagnosis.verdict
    assert "NAT" not in diagnosis.verdict
    assert any("inbound TCP connections from 198.18.3.2" in fix for fix in diagnosis.client_fixes)
    assert any("from port 20 (active_source_port)" in fix for fix in diagnosis.server_fixes)


def test_a_server_out_of_passive_ports_is_told_as_busy_with_the_range_to_widen() -> None:
    # What ketch's server sends (server/passive_ports.py) when the range is used up.
    reply = (
        "425 Cannot open passive connection: all 1000 passive ports (50000-50999) are busy; "
        "try again shortly, or ask the admin to widen passive_ports."
    )
    busy = [
        Attempt(mode, sent=verb, reply=reply, failure=f"the server answered {reply}")
        for mode, verb in (("EPSV", "EPSV"), ("PASV", "PASV"), ("PASV-fixup", "PASV"))
    ]
    diagnosis = observe(*busy, facts=natinfo())
    assert {problems(diagnosis)[mode] for mode in ("EPSV", "PASV", "PASV-fixup")} == {"busy"}
    assert diagnosis.modes["EPSV"].detail.count("425") == 1  # said once, not twice
    assert "no passive port free just now" in diagnosis.verdict
    assert diagnosis.verdict.count("425 Cannot open") == 1
    assert "Use active mode" in diagnosis.verdict
    assert any(
        "Widen the server's passive_ports range (50000-50999)" in fix
        for fix in diagnosis.server_fixes
    )


def test_only_a_passive_set_up_refused_for_now_is_busy() -> None:
    closing = Attempt("EPSV", sent="EPSV", reply="421 Server shutting down.", failure="421")
    active = Attempt(
        "EPRT", sent=f"EPRT |1|{CLIENT}|40000|", reply="425 Cannot do that now.", failure="425"
    )
    found = problems(observe(closing, active, facts=natinfo()))
    assert found["EPSV"] != "busy" and found["EPRT"] != "busy"


def test_when_only_plain_pasv_works_the_verdict_names_the_options_not_the_default() -> None:
    # A proxy forwards the control port and the address the server names, nothing else:
    # EPSV and PASV-fixup connect to the proxy's address and time out.
    def timing_out(mode: ModeName, sent: str, reply: str) -> Attempt:
        return Attempt(mode, sent=sent, reply=reply, failure="timed out", cause="timeout")

    epsv = timing_out("EPSV", "EPSV", "229 Entering Extended Passive Mode (|||50007|)")
    fixup = timing_out("PASV-fixup", "PASV", "227 Entering Passive Mode (198,18,3,2,195,81).")
    eprt = timing_out("EPRT", f"EPRT |1|{CLIENT}|40000|", "200 EPRT accepted.")
    port = timing_out("PORT", "PORT 198,18,1,10,156,65", "200 PORT accepted.")
    diagnosis = observe(epsv, fixup, eprt, port, facts=natinfo())
    assert diagnosis.modes["PASV"].works and not diagnosis.modes["EPSV"].works
    assert "--no-epsv --trust-pasv-address" in diagnosis.verdict
    assert "(the default)" not in diagnosis.verdict
    assert any("--no-epsv --trust-pasv-address" in fix for fix in diagnosis.client_fixes)


def test_a_private_pasv_address_is_named_and_masquerade_address_suggested() -> None:
    strict = Attempt(
        "PASV",
        sent="PASV",
        reply="227 Entering Passive Mode (10,0,0,5,195,80).",
        connected_to="10.0.0.5:50000",
        failure="passive data connection to 10.0.0.5:50000 timed out",
        cause="timeout",
    )
    epsv_denied = Attempt(
        "EPSV", sent="EPSV", reply="550 Permission denied.", failure="the server refused"
    )
    diagnosis = observe(strict, epsv_denied)  # no NATINFO: another server
    assert problems(diagnosis)["PASV"] == "private-address"
    assert problems(diagnosis)["EPSV"] == "refused-by-server"
    assert diagnosis.modes["PASV-fixup"].works
    assert "10.0.0.5" in diagnosis.modes["PASV"].detail
    assert "Plain PASV fails (private-address)" in diagnosis.verdict
    assert "does not offer SITE NATINFO" in diagnosis.verdict
    assert diagnosis.behind_nat is None
    assert diagnosis.as_json()["server_sees"] is None
    assert any(f'masquerade_address = "{SERVER}"' in fix for fix in diagnosis.server_fixes)
    assert any("Allow EPSV" in fix for fix in diagnosis.server_fixes)
    assert any("--trust-pasv-address" in fix for fix in diagnosis.client_fixes)


def masqueraded(host: str) -> Attempt:
    """A PASV whose 227 names ``host`` (not SERVER, which the client used) and times out."""
    return Attempt(
        "PASV",
        sent="PASV",
        reply=f"227 Entering Passive Mode ({host.replace('.', ',')},195,80).",
        connected_to=f"{host}:50000",
        failure=f"passive data connection to {host}:50000 timed out",
        cause="timeout",
    )


def test_a_masquerade_address_wrong_for_this_client_is_not_blamed_on_a_firewall() -> None:
    # A LAN client of a server behind NAT without hairpinning: the public address times
    # out, but PASV-fixup (and EPSV) reach the same ports: the firewall is open.
    facts = dataclasses.replace(natinfo(), masquerade_address="81.2.69.160")
    diagnosis = observe(masqueraded("81.2.69.160"), facts=facts)
    assert diagnosis.modes["PASV-fixup"].works
    assert not any("firewall" in fix for fix in diagnosis.server_fixes)
    (fix,) = [fix for fix in diagnosis.server_fixes if "masquerade_map" in fix]
    assert f'"198.18.1.0/24" = "{SERVER}"' in fix
    assert not any("Set masquerade_address" in fix for fix in diagnosis.server_fixes)


def test_a_rewritten_or_private_masquerade_keeps_its_own_advice() -> None:
    facts = dataclasses.replace(natinfo(), masquerade_address="81.2.69.160")
    rewritten = dataclasses.replace(
        masqueraded("192.0.2.9"), server_saw="227 Entering Passive Mode (81,2,69,160,195,80)."
    )
    diagnosis = observe(rewritten, facts=facts)
    assert any("rewrites passive replies" in fix for fix in diagnosis.server_fixes)
    assert not any("suits clients outside the NAT" in fix for fix in diagnosis.server_fixes)
    # A masquerade address nobody can reach: set a reachable one (not a map entry).
    unreachable = dataclasses.replace(natinfo(), masquerade_address="10.0.0.9")
    diagnosis = observe(masqueraded("10.0.0.9"), facts=unreachable)
    assert any(f'masquerade_address = "{SERVER}"' in fix for fix in diagnosis.server_fixes)
    assert not any("suits clients outside the NAT" in fix for fix in diagnosis.server_fixes)
    # It is the configured value that is wrong, and the fix says to correct it.
    assert any(
        "10.0.0.9, the masquerade address set for this client" in fix
        for fix in diagnosis.server_fixes
    )


def facts_at(server: str, seen: str, masquerade: str | None) -> ServerFacts:
    """NATINFO of a server at ``server`` that sees its client at ``seen``."""
    return ServerFacts(
        client_address=seen,
        server_address=f"{server}:21",
        passive_ports=(50000, 50999),
        masquerade_address=masquerade,
    )


def test_a_map_entry_giving_loopback_clients_a_bad_address_is_named() -> None:
    # [masquerade_map] "127.0.0.0/8" = "198.51.100.7": the local client is told an address
    # it cannot reach. masquerade_address = "127.0.0.1" would tell every client that.
    facts = facts_at("127.0.0.1", "127.0.0.1", "198.51.100.7")
    diagnosis = observe(
        masqueraded("198.51.100.7"), facts=facts, server="127.0.0.1", client="127.0.0.1"
    )
    assert problems(diagnosis)["PASV"] == "private-address"
    assert not any("masquerade_address =" in fix for fix in diagnosis.server_fixes)
    (fix,) = [fix for fix in diagnosis.server_fixes if "198.51.100.7" in fix]
    assert "[masquerade_map] entry whose network holds 127.0.0.1" in fix
    assert "remove that entry" in fix


def test_a_server_on_a_private_address_is_not_given_it_as_masquerade_address() -> None:
    # A LAN server with a wrong masquerade_address: correct that value, and for this
    # client's network map the LAN address; never masquerade_address = a LAN address.
    server, client = "192.168.1.10", "192.168.1.20"
    entry = f'[masquerade_map] "192.168.1.0/24" = "{server}"'
    configured = facts_at(server, client, "10.9.9.9")
    diagnosis = observe(masqueraded("10.9.9.9"), facts=configured, server=server, client=client)
    assert not any("masquerade_address =" in fix for fix in diagnosis.server_fixes)
    (fix,) = [fix for fix in diagnosis.server_fixes if "10.9.9.9" in fix]
    assert "the masquerade address set for this client" in fix and "correct it" in fix
    assert entry in fix
    # Nothing configured (a container's own address goes out): the same map entry.
    unset = facts_at(server, client, None)
    diagnosis = observe(masqueraded("172.17.0.2"), facts=unset, server=server, client=client)
    assert not any("masquerade_address =" in fix for fix in diagnosis.server_fixes)
    assert any(entry in fix for fix in diagnosis.server_fixes)


PUBLIC_SERVER, STALE_PUBLIC, PUBLIC_CLIENT = "81.2.69.142", "81.2.69.160", "2.125.160.216"


def test_a_stale_public_masquerade_address_is_blamed_not_a_firewall() -> None:
    # EPSV and PASV to the server's own address reach the passive ports; PASV to the
    # public address the server advertises times out: that address is out of date.
    facts = facts_at(PUBLIC_SERVER, PUBLIC_CLIENT, STALE_PUBLIC)
    diagnosis = observe(
        masqueraded(STALE_PUBLIC), facts=facts, server=PUBLIC_SERVER, client=PUBLIC_CLIENT
    )
    assert problems(diagnosis)["PASV"] == "timeout" and diagnosis.modes["PASV-fixup"].works
    assert not any("firewall" in fix for fix in diagnosis.server_fixes)
    (fix,) = [fix for fix in diagnosis.server_fixes if STALE_PUBLIC in fix]
    assert f"{STALE_PUBLIC} is an out-of-date masquerade address" in fix
    assert f'masquerade_address = "{PUBLIC_SERVER}"' in fix
    # ketch's client replaces only private PASV addresses, never a public one.
    assert "Plain PASV fails (timeout)" in diagnosis.verdict
    assert "as ketch" not in diagnosis.verdict and "as curl does" in diagnosis.verdict


def test_when_only_a_public_pasv_address_fixed_up_works_ketch_is_not_said_to_do_it() -> None:
    facts = facts_at(PUBLIC_SERVER, PUBLIC_CLIENT, STALE_PUBLIC)
    epsv_denied = Attempt(
        "EPSV", sent="EPSV", reply="500 Unknown command.", failure="the server refused"
    )
    timed_out = [
        Attempt(
            verb,
            sent=f"{verb} ...",
            reply=f"200 {verb} accepted.",
            failure="active mode: the server did not connect back within 5 s",
            cause="timeout",
        )
        for verb in ("EPRT", "PORT")
    ]
    diagnosis = observe(
        masqueraded(STALE_PUBLIC),
        epsv_denied,
        *timed_out,
        facts=facts,
        server=PUBLIC_SERVER,
        client=PUBLIC_CLIENT,
    )
    assert diagnosis.verdict.startswith("Passive mode works (PASV-fixup)")
    assert "(the default)" not in diagnosis.verdict and "--no-epsv" not in diagnosis.verdict
    assert "ketch's client cannot use passive mode here" in diagnosis.verdict
    assert not any("ketch's default" in fix for fix in diagnosis.client_fixes)
    assert any(
        "--ftp-skip-pasv-ip" in fix and "ketch's client replaces only private" in fix
        for fix in diagnosis.client_fixes
    )
    assert any("out-of-date masquerade address" in fix for fix in diagnosis.server_fixes)


def test_a_pasv_reply_rewritten_on_the_way_is_reported() -> None:
    rewritten = Attempt(
        "PASV",
        sent="PASV",
        reply="227 Entering Passive Mode (192,0,2,9,195,80).",
        connected_to="192.0.2.9:50000",
        failure="passive data connection to 192.0.2.9:50000 timed out",
        cause="timeout",
        server_saw="227 Entering Passive Mode (198,18,3,2,195,80).",
    )
    diagnosis = observe(rewritten, facts=natinfo())
    assert problems(diagnosis)["PASV"] == "rewritten"
    assert diagnosis.rewrites == [
        "the PASV reply was rewritten between server and client: server sent "
        "'227 Entering Passive Mode (198,18,3,2,195,80).', client received "
        "'227 Entering Passive Mode (192,0,2,9,195,80).'"
    ]
    assert "PASV replies were rewritten on the way" in diagnosis.verdict
    assert any("FTP ALG" in fix for fix in diagnosis.server_fixes)


def test_a_port_rewritten_by_a_nat_helper_is_informative_when_active_works() -> None:
    helped = Attempt(
        "PORT",
        sent="PORT 198,18,1,10,200,10",
        reply="200 PORT accepted.",
        connected_to=f"{SERVER}:20",
        listed_bytes=120,
        server_saw="PORT 198,18,2,1,200,10",
    )
    diagnosis = observe(helped, facts=natinfo(seen=SEEN_BEHIND_NAT))
    assert diagnosis.modes["PORT"].works and diagnosis.modes["PORT"].problem is None
    assert diagnosis.rewrites == [
        "PORT was rewritten between client and server: sent 'PORT 198,18,1,10,200,10', "
        "server received 'PORT 198,18,2,1,200,10'"
    ]
    assert "PORT commands were rewritten on the way" in diagnosis.verdict
    assert "lets active mode work through your NAT" in diagnosis.verdict


def test_the_same_port_written_differently_is_no_rewrite() -> None:
    same = Attempt(
        "PORT",
        sent="PORT 198,18,1,10,200,10",
        reply="200 PORT accepted.",
        connected_to=f"{SERVER}:20",
        server_saw="PORT 198,018,001,010,200,010",
    )
    assert observe(same, facts=natinfo()).rewrites == []


def test_a_passive_port_outside_the_announced_range_is_flagged() -> None:
    outside = Attempt(
        "EPSV",
        sent="EPSV",
        reply="229 Entering Extended Passive Mode (|||61000|)",
        connected_to=f"{SERVER}:61000",
        failure=f"passive data connection to {SERVER}:61000 timed out",
        cause="timeout",
    )
    diagnosis = observe(outside, facts=natinfo())
    assert problems(diagnosis)["EPSV"] == "outside-range"
    assert "61000" in diagnosis.modes["EPSV"].detail
    assert "50000-50999" in diagnosis.modes["EPSV"].detail


def test_when_nothing_works_passive_firewall_and_exit_reasons_are_given() -> None:
    def passive_timeout(mode: ModeName, reply: str, port: int) -> Attempt:
        return Attempt(
            mode,
            sent=mode if mode == "EPSV" else "PASV",
            reply=reply,
            connected_to=f"{SERVER}:{port}",
            failure=f"passive data connection to {SERVER}:{port} timed out",
            cause="timeout",
        )

    diagnosis = observe(
        passive_timeout("EPSV", "229 Entering Extended Passive Mode (|||50007|)", 50007),
        passive_timeout("PASV", "227 Entering Passive Mode (198,18,3,2,195,80).", 50000),
        passive_timeout("PASV-fixup", "227 Entering Passive Mode (198,18,3,2,195,81).", 50001),
        active_refused_behind_nat("EPRT", f"EPRT |1|{CLIENT}|40000|"),
        active_refused_behind_nat("PORT", "PORT 198,18,1,10,156,65"),
        facts=natinfo(seen=SEEN_BEHIND_NAT),
    )
    assert not diagnosis.any_works
    assert set(problems(diagnosis).values()) == {"timeout", "refused-by-server"}
    verdict = diagnosis.verdict
    assert verdict.startswith("No data connection can be made")
    assert "firewall" in verdict and "NAT" in verdict
    assert any(
        "50000-50999" in fix and "ketch firewall --format nftables" in fix
        for fix in diagnosis.server_fixes
    )


def test_passive_refused_at_tcp_level_and_no_route_are_told_apart() -> None:
    refused = Attempt(
        "EPSV",
        sent="EPSV",
        reply="229 Entering Extended Passive Mode (|||50007|)",
        connected_to=f"{SERVER}:50007",
        failure="connection refused",
        cause="refused",
    )
    no_route = Attempt(
        "PASV-fixup",
        sent="PASV",
        reply="227 Entering Passive Mode (198,18,3,2,195,81).",
        connected_to=f"{SERVER}:50001",
        failure="no route",
        cause="unreachable",
    )
    assert problems(observe(refused, no_route)) == {
        "EPSV": "refused",
        "PASV": None,
        "PASV-fixup": "unreachable",
        "EPRT": None,
        "PORT": None,
    }


def test_a_server_425_after_an_active_attempt_is_classified_from_its_text() -> None:
    def refused_back(text: str) -> Attempt:
        return Attempt(
            "PORT",
            sent="PORT 198,18,1,10,156,65",
            reply="200 PORT accepted.",
            failure="active mode: the server could not connect back",
            transfer_reply=text,
        )

    refused = refused_back(
        "425 Cannot open data connection: could not connect (Connection refused)"
    )
    silent = refused_back("425 Cannot open data connection: no answer within 30 s")
    vague = refused_back("425 Failed to establish connection.")
    assert observe(refused).modes["PORT"].problem == "refused"
    assert observe(silent).modes["PORT"].problem == "timeout"
    assert observe(vague).modes["PORT"].problem == "unreachable"


def test_a_server_that_cannot_bind_its_active_source_port_is_told_so_not_the_client() -> None:
    # ketch's 425 when active_source_port names a port it may not bind (server/data_offers.py).
    said = (
        "425 Cannot open data connection: cannot use source port 20 for active mode "
        "(Permission denied); the admin should change active_source_port"
    )
    cannot_bind = {
        verb: Attempt(
            verb,
            sent=line,
            reply=f"200 {verb} accepted.",
            failure="active mode: the server could not connect back",
            transfer_reply=said,
        )
        for verb, line in (
            ("EPRT", f"EPRT |1|{CLIENT}|40000|"),
            ("PORT", "PORT 198,18,1,10,156,65"),
        )
    }
    diagnosis = observe(*cannot_bind.values(), facts=natinfo())
    assert problems(diagnosis)["EPRT"] == problems(diagnosis)["PORT"] == "server-setup"
    assert "the server cannot open its side" in diagnosis.verdict
    assert said in diagnosis.verdict
    assert not any("firewall" in fix for fix in diagnosis.client_fixes)
    assert any('active_source_port = "auto"' in fix for fix in diagnosis.server_fixes)
    # Behind NAT too, this side has nothing to forward for it.
    behind = observe(*cannot_bind.values(), facts=natinfo(seen=SEEN_BEHIND_NAT))
    assert behind.behind_nat
    assert not any("forward a port range" in fix for fix in behind.client_fixes)


def test_a_listing_the_server_refuses_is_not_blamed_on_the_data_connection() -> None:
    refused_listing = {
        mode: Attempt(
            mode,
            sent=base.sent,
            reply=base.reply,
            failure="LIST failed: 550 No such directory.",
            transfer_reply="550 No such directory.",
        )
        for mode, base in (
            ("EPSV", EPSV_OK),
            ("PASV", PASV_OK),
            ("PASV-fixup", FIXUP_OK),
            ("EPRT", EPRT_OK),
            ("PORT", PORT_OK),
        )
    }
    diagnosis = observe(*refused_listing.values(), facts=natinfo())
    assert set(problems(diagnosis).values()) == {"error"}
    assert diagnosis.verdict.startswith(
        "No listing came through because the server refused LIST itself (550 No such directory.)"
    )


def test_a_failed_connection_gives_a_verdict_and_fixes_but_no_modes() -> None:
    failed = ConnectFailed(
        "cannot connect to 198.18.3.2:21: Connection refused",
        "check that an FTP server runs there and that the port is right",
    )
    diagnosis = diagnose(
        Observations(
            url="ftp://198.18.3.2:21/",
            host=SERVER,
            server_ip=None,
            server_port=21,
            client_address=None,
            fatal=failed,
            fatal_step="connect",
        )
    )
    assert diagnosis.modes == {} and not diagnosis.any_works
    assert "Connection refused" in diagnosis.verdict
    assert diagnosis.client_fixes == [
        "Check that an FTP server runs there and that the port is right."
    ]
    assert any("listens on port 21" in fix for fix in diagnosis.server_fixes)
    as_json = diagnosis.as_json()
    assert as_json["server"] is None and as_json["modes"] == {}


def test_a_refused_login_asks_for_the_right_credentials() -> None:
    refused = LoginFailed("login as 'alice' refused by h: 530 Login incorrect.", "check it")
    diagnosis = diagnose(
        Observations(
            url="ftp://h:21/",
            host="h",
            server_ip=SERVER,
            server_port=21,
            client_address=CLIENT,
            fatal=refused,
            fatal_step="login",
        )
    )
    assert any("-u" in fix for fix in diagnosis.client_fixes)
    assert diagnosis.server_fixes == []


def test_without_natinfo_a_private_client_of_a_public_server_is_probably_behind_nat() -> None:
    public_server = "9.9.9.9"
    refused = Attempt(
        "PORT",
        sent="PORT 10,0,0,7,156,65",
        reply="500 Illegal PORT command.",
        failure="the server refused active mode",
    )
    diagnosis = diagnose(
        Observations(
            url=f"ftp://{public_server}:21/",
            host=public_server,
            server_ip=public_server,
            server_port=21,
            client_address="10.0.0.7",
            attempts=(EPSV_OK, refused),
        )
    )
    assert diagnosis.behind_nat is None
    assert "your address 10.0.0.7 is private, so you are probably behind NAT" in diagnosis.verdict
    assert "does not offer SITE NATINFO" in diagnosis.verdict
