"""``ketch firewall``'s model and renderers: every format opens what the server really uses.

The rules are checked by nft and iptables-restore in
tests/integration/test_firewall_rules.py; here, that each format names the
right ports, families and helper, whatever the configuration says.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from ketch.config import load_config
from ketch.tools.firewall import FORMATS, FirewallError, FirewallPlan, plan_for, render
from ketch.tools.firewall_formats import LARGE_RANGE

# A well-formed argon2id hash (nobody logs in here).
HASH = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA"


def plan(
    tmp_path: Path, *, ssh_port: int | None = 22, helper: bool = False, **keys: Any
) -> FirewallPlan:
    config = load_config(overrides={"root": str(tmp_path), **keys})
    return plan_for(config, ssh_port=ssh_port, conntrack_helper=helper)


def live(text: str) -> list[str]:
    """The lines that take effect: neither blank nor a comment."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def has_live(text: str, pattern: str) -> bool:
    return any(re.search(pattern, line) for line in live(text))


# -- the model -----------------------------------------------------------------------------


def test_plan_takes_ports_and_families_from_the_configuration(tmp_path: Path) -> None:
    facts = plan(tmp_path, port=21, passive_ports="40000-40099")
    assert facts.control_port == 21
    assert (facts.passive_ports.low, facts.passive_ports.high) == (40000, 40099)
    assert facts.active_source_port == 20 and facts.active_source_auto
    assert facts.families == ("ipv4", "ipv6")  # unset listen_address: every address
    assert facts.listen_address is None and facts.implicit_tls_port is None


@pytest.mark.parametrize(
    ("listen", "families", "specific"),
    [
        ("0.0.0.0", ("ipv4",), None),
        ("::", ("ipv4", "ipv6"), None),  # dual-stack listener
        ("198.18.0.5", ("ipv4",), "198.18.0.5"),
        ("2001:db8::5", ("ipv6",), "2001:db8::5"),
    ],
)
def test_listen_address_decides_families_and_address(
    tmp_path: Path, listen: str, families: tuple[str, ...], specific: str | None
) -> None:
    facts = plan(tmp_path, listen_address=listen)
    assert facts.families == families
    assert facts.listen_address == specific


@pytest.mark.parametrize(
    ("setting", "expected"), [("auto", 2120), ("ephemeral", None), (2000, 2000)]
)
def test_active_source_port_follows_the_setting(
    tmp_path: Path, setting: Any, expected: int | None
) -> None:
    assert plan(tmp_path, active_source_port=setting).active_source_port == expected


def test_workers_split_the_range_but_the_whole_range_is_opened(tmp_path: Path) -> None:
    facts = plan(tmp_path, workers=2, passive_ports="50000-50099")
    assert [str(part) for part in facts.worker_slices] == ["50000-50049", "50050-50099"]
    for name in ("nftables", "iptables", "ufw"):
        text = render(facts, name)
        assert "50000-50049" in text and "50050-50099" in text, name
    assert has_live(render(facts, "nftables"), r"tcp dport 50000-50099 accept")


def test_random_control_port_is_refused_with_a_way_out(tmp_path: Path) -> None:
    with pytest.raises(FirewallError, match=r"port = 0.*--port"):
        plan(tmp_path, port=0)


def test_unknown_format_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(FirewallError) as caught:
        render(plan(tmp_path), "pf")
    assert all(name in str(caught.value) for name in FORMATS)


# -- every format --------------------------------------------------------------------------

# How each format writes the control port 2121 and the passive range 50000-50999.
_CONTROL = {
    "nftables": r"^tcp dport 2121 accept",
    "iptables": r"^-A INPUT -p tcp --dport 2121 .*-j ACCEPT$",
    "ufw": r"^ufw allow 2121/tcp ",
    "firewalld": r"^firewall-cmd --permanent --add-port=2121/tcp$",
    "docker-compose": r'^- "2121:2121"$',
    "kubernetes": r"^port: 2121$",
}
_PASSIVE = {
    "nftables": r"^tcp dport 50000-50999 accept",
    "iptables": r"^-A INPUT -p tcp --dport 50000:50999 .*-j ACCEPT$",
    "ufw": r"^ufw allow 50000:50999/tcp ",
    "firewalld": r"^firewall-cmd --permanent --add-port=50000-50999/tcp$",
    "docker-compose": r'^- "50000-50999:50000-50999"$',
    "kubernetes": r"^port: 50999$",
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_opens_control_port_and_passive_range(tmp_path: Path, name: str) -> None:
    text = render(plan(tmp_path), name)
    assert has_live(text, _CONTROL[name]), text
    assert has_live(text, _PASSIVE[name]), text
    assert "passive_ports 50000-50999" in text  # the comment saying why


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_follows_a_changed_configuration(tmp_path: Path, name: str) -> None:
    text = render(plan(tmp_path, port=21, passive_ports="40000-40009"), name)
    assert not has_live(text, r"2121|50000"), text
    assert has_live(text, r"\b21\b") and has_live(text, r"4000[0-9]")


def test_implicit_ftps_port_comes_from_the_configuration(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    issued = trustme.CA().issue_cert("ftp.example.com")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    tls = {"tls_certificate": str(certificate), "tls_key": str(key)}
    assert plan(tmp_path, implicit_tls_port=990, **tls).implicit_tls_port == 990
    assert plan(tmp_path, implicit_tls_port=990, **tls).server_ports == (2121, 990)
    with pytest.raises(FirewallError, match=r"implicit_tls_port = 0.*990"):
        plan(tmp_path, implicit_tls_port=0, **tls)


@pytest.mark.parametrize("name", FORMATS)
def test_implicit_ftps_port_is_opened_when_configured(tmp_path: Path, name: str) -> None:
    facts = dataclasses.replace(plan(tmp_path), implicit_tls_port=990)
    assert has_live(render(facts, name), r"\b990\b")
    assert not has_live(render(plan(tmp_path), name), r"\b990\b")


@pytest.mark.parametrize("name", ["nftables", "iptables", "ufw", "firewalld"])
def test_ssh_stays_open_unless_told_otherwise(tmp_path: Path, name: str) -> None:
    assert has_live(render(plan(tmp_path), name), r"\b22\b|service=ssh")
    assert has_live(render(plan(tmp_path, ssh_port=2222), name), r"\b2222\b")
    assert not has_live(render(plan(tmp_path, ssh_port=None), name), r"\b22\b|ssh")


def test_masquerade_address_is_named_for_the_nat_in_front(tmp_path: Path) -> None:
    text = render(plan(tmp_path, masquerade_address="203.0.113.5"), "nftables")
    assert "masquerade_address 203.0.113.5" in text
    assert "masquerade_address is not set" in render(plan(tmp_path), "nftables")
    # FTPS sessions and mapped client networks are told other addresses: said too.
    both = plan(
        tmp_path,
        masquerade_address="203.0.113.5",
        tls_masquerade_address="198.51.100.7",
        masquerade_map={"10.0.0.0/8": "10.0.0.1"},
    )
    said = comments(render(both, "nftables"))
    assert "tls_masquerade_address 198.51.100.7" in said
    assert "Clients in the networks of masquerade_map" in said
    assert "masquerade_map" not in comments(render(plan(tmp_path), "nftables"))


@pytest.mark.parametrize("name", ["nftables", "iptables", "ufw", "firewalld"])
def test_an_ipv6_only_server_is_not_told_to_set_masquerade_address(
    tmp_path: Path, name: str
) -> None:
    # Over IPv6 PASV is refused: no client is ever told the masquerade address.
    family = {"iptables": ("ipv6",)}.get(name, ())
    said = comments(render(plan(tmp_path, listen_address="2001:db8::5"), name, *family))
    assert "set masquerade_address" not in said and "masquerade_address makes" not in said
    assert "clients use EPSV" in said and "no address to masquerade" in said
    assert "let TCP 2121 and 50000-50999 through" in said
    masqueraded = plan(tmp_path, listen_address="2001:db8::5", masquerade_address="203.0.113.5")
    assert "masquerade settings have no effect" in comments(render(masqueraded, name, *family))


def comments(text: str) -> str:
    """The comment lines of ``text`` as one line of prose (wrapping undone)."""
    return " ".join(
        line.strip().lstrip("#").strip() for line in text.splitlines() if line.strip()[:1] == "#"
    )


@pytest.mark.parametrize("name", ["nftables", "iptables", "ufw", "firewalld"])
def test_other_services_named_with_allow_port_stay_open(tmp_path: Path, name: str) -> None:
    config = load_config(overrides={"root": str(tmp_path)})
    facts = plan_for(config, other_ports=[443, 80, 22])
    assert facts.other_ports == (80, 443)  # SSH is open already: not twice
    text = render(facts, name)
    assert has_live(text, r"\b80\b") and has_live(text, r"\b443\b")
    assert not has_live(render(plan(tmp_path), name), r"\b(80|443)\b")


@pytest.mark.parametrize("name", ["nftables", "iptables"])
def test_drop_policy_files_say_they_close_every_other_service(tmp_path: Path, name: str) -> None:
    said = comments(render(plan(tmp_path), name))
    assert "a web or mail server here is cut off too" in said
    assert "--allow-port PORT" in said


# -- nftables ------------------------------------------------------------------------------


def test_nftables_defines_its_own_table_idempotently(tmp_path: Path) -> None:
    lines = live(render(plan(tmp_path), "nftables"))
    # Create-then-delete before the definition: loading twice replaces, never duplicates.
    assert lines[:3] == ["table inet ketch", "delete table inet ketch", "table inet ketch {"]
    assert "type filter hook input priority filter; policy drop;" in lines
    assert "type filter hook output priority filter; policy accept;" in lines
    for rule in (
        'iif "lo" accept',
        "ct state invalid drop",
        "ct state established,related accept",
        "meta l4proto { icmp, ipv6-icmp } accept",
    ):
        assert rule in lines
    assert lines.index("ct state invalid drop") < lines.index("ct state established,related accept")


def test_nftables_output_chain_accepts_active_mode_from_l_minus_1(tmp_path: Path) -> None:
    text = render(plan(tmp_path, port=21), "nftables")
    assert has_live(text, r"^tcp sport 20 ct state new accept")
    assert "output policy" in text and "drop" in text
    ephemeral = render(plan(tmp_path, active_source_port="ephemeral"), "nftables")
    assert has_live(ephemeral, r"^tcp dport 1024-65535 ct state new accept")


def test_nftables_helper_is_attached_to_the_control_port_only_when_asked(tmp_path: Path) -> None:
    helper_lines = [
        r"^ct helper ftp-standard \{$",
        r'^type "ftp" protocol tcp$',
        r'^tcp dport 21 ct helper set "ftp-standard"$',
        r"hook prerouting",
    ]
    with_helper = render(plan(tmp_path, port=21, helper=True), "nftables")
    without = render(plan(tmp_path, port=21), "nftables")
    for pattern in helper_lines:
        assert has_live(with_helper, pattern), pattern
        assert not has_live(without, pattern), pattern
        # Without the flag the same lines are there, commented out, to copy.
        assert re.search(pattern.replace("^", r"^\s*#\s*", 1), without, re.MULTILINE), pattern
    for text in (with_helper, without):
        assert "4.7" in text and "wiki.nftables.org" in text and "FTPS" in text


@pytest.mark.parametrize(
    ("listen", "rule"),
    [
        ("0.0.0.0", r"^meta nfproto ipv4 tcp dport 50000-50999 accept"),
        ("198.18.0.5", r"^ip daddr 198.18.0.5 tcp dport 50000-50999 accept"),
        ("2001:db8::5", r"^ip6 daddr 2001:db8::5 tcp dport 50000-50999 accept"),
        ("::", r"^tcp dport 50000-50999 accept"),
    ],
)
def test_nftables_rules_match_the_listen_address(tmp_path: Path, listen: str, rule: str) -> None:
    assert has_live(render(plan(tmp_path, listen_address=listen), "nftables"), rule)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("nftables", r'^ip6 daddr fe80::1 iifname "eth0" tcp dport 50000-50999 accept'),
        ("nftables", r'^ip6 saddr fe80::1 oifname "eth0" tcp sport 2120 ct state new accept'),
        ("iptables", r"^-A INPUT -d fe80::1 -i eth0 -p tcp --dport 50000:50999 "),
        ("iptables", r"^-A OUTPUT -s fe80::1 -o eth0 -p tcp --sport 2120 "),
        ("ufw", r"^ufw allow in on eth0 proto tcp to fe80::1 port 50000:50999 "),
        ("firewalld", r'destination address="fe80::1" port port="50000-50999"'),
    ],
)
def test_a_zone_in_the_listen_address_becomes_the_interface_the_rules_match(
    tmp_path: Path, name: str, rule: str
) -> None:
    # No rule syntax takes "fe80::1%eth0": nft -c refused the file, and so would the rest.
    family = ("ipv6",) if name == "iptables" else ()
    text = render(plan(tmp_path, listen_address="fe80::1%eth0"), name, *family)
    assert has_live(text, rule), text
    assert not has_live(text, "%"), text
    if name == "firewalld":  # rich rules cannot name an interface: the zone must hold it
        assert "--get-zone-of-interface=eth0" in text


@pytest.mark.parametrize(("zone", "said"), [("2", "by number"), ("a;b", "not an interface")])
def test_a_zone_no_rule_can_name_is_refused(tmp_path: Path, zone: str, said: str) -> None:
    with pytest.raises(FirewallError, match=said):
        plan(tmp_path, listen_address=f"fe80::1%{zone}")


# -- iptables ------------------------------------------------------------------------------


def test_iptables_is_a_restore_file_with_filter_table(tmp_path: Path) -> None:
    lines = live(render(plan(tmp_path), "iptables"))
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert ":INPUT DROP [0:0]" in lines and ":OUTPUT ACCEPT [0:0]" in lines
    assert "-A INPUT -p icmp -j ACCEPT" in lines
    assert "-A INPUT -m conntrack --ctstate INVALID -j DROP" in lines


def test_iptables_helper_goes_into_the_raw_table_only_when_asked(tmp_path: Path) -> None:
    with_helper = live(render(plan(tmp_path, port=21, helper=True), "iptables"))
    assert with_helper[0] == "*raw"
    assert any(
        re.search(r"^-A PREROUTING -p tcp --dport 21 .*-j CT --helper ftp$", line)
        for line in with_helper
    )
    assert with_helper.count("COMMIT") == 2
    without = render(plan(tmp_path, port=21), "iptables")
    assert "*raw" not in live(without) and "# *raw" in without


def test_iptables_ipv6_file_for_a_server_listening_on_ipv6(tmp_path: Path) -> None:
    facts = plan(tmp_path, listen_address="::")
    v4, v6 = render(facts, "iptables", "ipv4"), render(facts, "iptables", "ipv6")
    assert "ip6tables-restore --test" in v6 and "--family ipv6" in v4
    assert has_live(v6, r"^-A INPUT -p ipv6-icmp -j ACCEPT$")
    assert not has_live(v6, r"-p icmp\b")
    assert has_live(v6, _PASSIVE["iptables"])


def test_iptables_refuses_a_family_the_server_does_not_listen_on(tmp_path: Path) -> None:
    with pytest.raises(FirewallError, match="ipv6"):
        render(plan(tmp_path, listen_address="0.0.0.0"), "iptables", "ipv6")
    text = render(plan(tmp_path, listen_address="0.0.0.0"), "iptables", "ipv4")
    assert "--family ipv6" not in text


def test_iptables_rules_match_a_specific_address(tmp_path: Path) -> None:
    text = render(plan(tmp_path, listen_address="198.18.0.5"), "iptables")
    assert has_live(text, r"^-A INPUT -d 198.18.0.5 -p tcp --dport 50000:50999 ")
    assert has_live(text, r"^-A OUTPUT -s 198.18.0.5 -p tcp --sport 2120 ")


# -- ufw and firewalld ---------------------------------------------------------------------


def test_ufw_script_allows_ports_and_enables(tmp_path: Path) -> None:
    text = render(plan(tmp_path, listen_address="198.18.0.5"), "ufw")
    assert text.startswith("#!/bin/sh\n")
    assert has_live(text, r"^ufw allow proto tcp to 198.18.0.5 port 50000:50999 ")
    assert has_live(text, r"^ufw --force enable$")


def test_firewalld_script_adds_ports_permanently_then_reloads(tmp_path: Path) -> None:
    lines = live(render(plan(tmp_path), "firewalld"))
    assert lines[-1] == "firewall-cmd --reload"
    assert all(line.startswith("firewall-cmd --permanent") for line in lines[1:-1])


def test_firewalld_helper_uses_the_ftp_service_on_port_21(tmp_path: Path) -> None:
    assert has_live(
        render(plan(tmp_path, port=21, helper=True), "firewalld"),
        r"^firewall-cmd --permanent --add-service=ftp$",
    )
    other = render(plan(tmp_path, port=2121, helper=True), "firewalld")
    assert has_live(other, r"--helper=ftp --add-port=2121/tcp")
    assert has_live(other, r"--service=ketch-ftp --add-helper=ftp")


# -- containers ----------------------------------------------------------------------------


def test_docker_compose_publishes_the_range_one_to_one_and_warns(tmp_path: Path) -> None:
    text = render(plan(tmp_path, masquerade_address="203.0.113.5"), "docker-compose")
    assert live(text)[0] == "services:"
    assert "docker-proxy" in text and "network_mode: host" in text
    assert "203.0.113.5" in text and "host's public address" in text
    assert "WARNING" in text
    assert "WARNING" not in render(plan(tmp_path, passive_ports="50000-50009"), "docker-compose")


def test_docker_compose_mounts_the_config_the_served_directories_and_the_tls_files(
    tmp_path: Path,
) -> None:
    import yaml  # test extras

    from ketch.tools.certificates import write_certificate

    (tmp_path / "srv" / "pub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    files = write_certificate(tmp_path / "certs", ["ftp.example.com"])
    config_file = tmp_path / "ketch.toml"
    config_file.write_text(
        f'root = "srv"\ntls_certificate = "{files.certificate}"\ntls_key = "{files.key}"\n'
        '[anonymous]\nhome = "srv/pub"\n'
        f'[[users]]\nname = "bob"\npassword_hash = "{HASH}"\nhome = "{tmp_path}/elsewhere"\n'
    )
    config = load_config(config_file)
    text = render(plan_for(config, config_file=config_file), "docker-compose")
    service = yaml.safe_load(text)["services"]["ketch"]
    assert service["command"] == ["ketch", "serve", "--config", str(config_file)]
    assert service["volumes"] == [
        f"{config_file}:{config_file}:ro",
        f"{tmp_path}/srv:{tmp_path}/srv",  # the anonymous home inside it: once
        f"{tmp_path}/elsewhere:{tmp_path}/elsewhere",
        f"{files.certificate}:{files.certificate}:ro",
        f"{files.key}:{files.key}:ro",
    ]


def test_kubernetes_service_lists_every_passive_port(tmp_path: Path) -> None:
    text = render(plan(tmp_path, passive_ports="50000-50019"), "kubernetes")
    ports = [int(match) for match in re.findall(r"^\s+port: (\d+)$", text, re.MULTILINE)]
    assert ports == [2121, *range(50000, 50020)]
    target_ports = re.findall(r"^\s+targetPort: (\d+)$", text, re.MULTILINE)
    assert [int(port) for port in target_ports] == ports  # numbers kept: PASV names them
    names = re.findall(r"^\s+- name: (\S+)$", text, re.MULTILINE)
    assert len(set(names)) == len(names) == len(ports)
    assert all(len(name) <= 15 for name in names)  # Kubernetes port-name limit
    for line in ("externalTrafficPolicy: Local", "sessionAffinity: ClientIP", "kind: Service"):
        assert has_live(text, "^" + line + "$")
    assert "LoadBalancer" in text and "masquerade_address" in text
    assert "WARNING" not in text


def test_kubernetes_warns_about_a_large_range(tmp_path: Path) -> None:
    text = render(plan(tmp_path, passive_ports=f"50000-{50000 + LARGE_RANGE}"), "kubernetes")
    assert "WARNING" in text and 'passive_ports = "50000-50019"' in text
    assert len(re.findall(r"^\s+port: 5\d{4}$", text, re.MULTILINE)) == LARGE_RANGE + 1


@pytest.mark.parametrize("name", ["docker-compose", "kubernetes"])
def test_container_outputs_are_yaml(tmp_path: Path, name: str) -> None:
    import yaml  # test extras

    document = yaml.safe_load(render(plan(tmp_path, passive_ports="50000-50004"), name))
    if name == "docker-compose":
        assert document["services"]["ketch"]["ports"] == ["2121:2121", "50000-50004:50000-50004"]
    else:
        assert [port["port"] for port in document["spec"]["ports"]] == [2121, *range(50000, 50005)]
