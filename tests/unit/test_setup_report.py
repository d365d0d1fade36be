"""The start-up report of the data-connection set-up: what it says, and what it warns about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ketch.config import PortRange, load_config
from ketch.server.setup_report import setup_report
from ketch.server.workers import split_ports


def report(*, host: str = "0.0.0.0", port: int = 2121, workers: int = 1, **settings: Any) -> Any:
    config = load_config(None, {"port": port, "workers": workers, **settings})
    slices = split_ports(config.passive_ports, workers) if workers > 1 else []
    return setup_report(
        config, host=host, port=port, slices=slices, resolved={"ftp.example.com": "10.0.0.7"}
    )


def warned(result: Any, *words: str) -> bool:
    return any(all(word in warning for word in words) for warning in result.warnings)


def test_defaults_give_no_warning_and_describe_range_advertising_and_source() -> None:
    result = report()
    assert result.warnings == []
    text = "\n".join(result.lines)
    assert "50000-50999: 1000 ports" in text and "512 sessions" in text
    assert "local address (no masquerade_address)" in text
    assert "source port auto (2120 when permitted" in text
    assert all(line.startswith("  ") for line in result.lines)


def test_no_anonymous_access_and_no_accounts_is_warned(tmp_path: Path) -> None:
    result = report(anonymous={"enabled": False})
    assert warned(result, "nobody can log in", "--user NAME:PASSWORD", "[[users]]")
    user = {"name": "alice", "password_hash": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA"}
    accounts = [{**user, "home": str(tmp_path)}]
    assert not report(anonymous={"enabled": False}, users=accounts).warnings


def test_masquerade_and_map_are_shown_most_specific_first_with_resolved_names() -> None:
    result = report(
        masquerade_address="ftp.example.com",
        masquerade_map={"10.0.0.0/8": "10.0.0.1", "10.1.0.0/16": "10.1.0.1"},
    )
    text = "\n".join(result.lines)
    assert "masquerade_address ftp.example.com (10.0.0.7)" in text
    assert "resolve again at most every 300 s" in text
    assert text.index("10.1.0.0/16 get 10.1.0.1") < text.index("10.0.0.0/8 get 10.0.0.1")


def test_range_smaller_than_max_connections_is_warned() -> None:
    result = report(passive_ports="50000-50099")
    assert warned(result, "100 ports", "max_connections", "512", "widen passive_ports")
    assert not report(passive_ports="50000-50099", max_connections=100).warnings


def test_workers_compare_their_slice_and_warn_below_the_minimum() -> None:
    result = report(passive_ports="50000-50029", workers=2, max_connections=10)
    assert warned(result, "15 ports per worker", "fewer workers")
    assert not warned(result, "max_connections")
    result = report(passive_ports="50000-50999", workers=4, max_connections=300)
    assert warned(result, "worker's slice", "250 ports", "300 sessions")
    assert "4 worker slices of 250+" in "\n".join(result.lines)


def test_range_below_1024_is_warned() -> None:
    assert warned(report(passive_ports="1000-2999", max_connections=10), "below 1024")


def test_range_holding_the_control_port_is_warned() -> None:
    result = report(passive_ports="2000-2999", port=2100, active_source_port="ephemeral")
    assert warned(result, "control port 2100", "move the range")


def test_range_holding_the_implicit_ftps_port_is_warned() -> None:
    # (A real one needs a certificate, which the report does not look at.)
    config = load_config(None, {"passive_ports": "900-2000"})
    config = config.model_copy(update={"implicit_tls_port": 990})
    result = setup_report(config, host="::", port=2121)
    assert warned(result, "implicit FTPS port 990")


def test_active_source_port_inside_the_range_is_warned() -> None:
    assert warned(report(passive_ports="2000-2999", port=3000), "active source port 2999")
    assert warned(report(active_source_port=50010), "active source port 50010")
    assert not warned(report(active_source_port="ephemeral"), "active source port")


def test_foreign_addresses_allowed_are_warned() -> None:
    """FXP is a risk of its own (RFC 2577): the log and `ketch config check` say so."""
    assert warned(report(allow_foreign_addresses=True), "allow_foreign_addresses", "RFC 2577")
    assert not warned(report(), "allow_foreign_addresses")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("masquerade_address", "192.168.1.10"),
        ("masquerade_address", "ftp.example.com"),  # resolves to 10.0.0.7
        ("tls_masquerade_address", "10.0.0.8"),
    ],
)
def test_private_masquerade_address_is_warned(key: str, value: str) -> None:
    assert warned(report(**{key: value}), key, "not a public address")


def test_public_masquerade_address_is_not_warned() -> None:
    assert not report(masquerade_address="1.1.1.1").warnings


def test_overlapping_map_networks_are_warned_naming_the_winner() -> None:
    result = report(masquerade_map={"10.0.0.0/8": "10.0.0.1", "10.1.0.0/16": "10.1.0.1"})
    assert warned(result, "10.1.0.0/16 and 10.0.0.0/8 overlap", "get 10.1.0.1")
    assert not report(
        masquerade_map={"10.0.0.0/16": "a.example", "10.1.0.0/16": "b.example"}
    ).warnings


def test_masquerade_on_a_loopback_only_server_is_warned() -> None:
    result = report(host="127.0.0.1", masquerade_address="1.1.1.1")
    assert warned(result, "listens on 127.0.0.1 only", "no effect")


@pytest.mark.parametrize(
    ("settings", "keys"),
    [
        ({"masquerade_address": "203.0.113.5"}, "masquerade_address has"),
        ({"masquerade_map": {"10.0.0.0/8": "10.0.0.1"}}, "masquerade_map has"),
        (
            {"masquerade_address": "203.0.113.5", "tls_masquerade_address": "203.0.113.6"},
            "masquerade_address and tls_masquerade_address have",
        ),
    ],
)
def test_masquerade_on_an_ipv6_only_server_is_warned(settings: dict[str, Any], keys: str) -> None:
    # Over IPv6 PASV is refused (522): nothing ever advertises the masquerade address.
    result = report(host="2001:db8::5", **settings)
    assert warned(result, "listens on the IPv6 address 2001:db8::5 only", keys, "no effect")
    assert not warned(report(host="::", **settings), "no effect")  # IPv4 clients too
    assert not report(host="2001:db8::5").warnings


def test_private_listen_address_with_a_public_host_name_and_no_masquerade_is_warned() -> None:
    result = report(host="192.168.1.10", host_names=["ftp.example.org"])
    assert warned(
        result, "192.168.1.10", "ftp.example.org", 'masquerade_address = "ftp.example.org"'
    )
    assert not report(host="192.168.1.10", host_names=["ftp.local"]).warnings
    fixed = report(
        host="192.168.1.10", host_names=["ftp.example.org"], masquerade_address="1.1.1.1"
    )
    assert not fixed.warnings


def test_slices_passed_by_the_caller_are_what_the_report_uses() -> None:
    config = load_config(None, {"passive_ports": "50000-50999", "max_connections": 100})
    slices = [PortRange(50000, 50049), PortRange(50050, 50999)]
    result = setup_report(config, host="::", port=21, slices=slices)
    assert warned(result, "50 ports but max_connections allows 100")
