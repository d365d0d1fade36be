"""``ketch firewall`` output as the real tools take it: nft, iptables-restore, FTP itself.

Every ruleset is checked and loaded inside a network namespace the test
creates (and deletes), never on the host's own tables. The last tests put the
generated rules on a server's namespace, joined to a client's by a veth pair,
and check that FTP works through them in passive and active mode while a
port the server did not ask for stays closed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from netns import NetNamespace, unavailable_reason

KETCH = [sys.executable, "-m", "ketch"]
SERVER_IP, CLIENT_IP = "198.18.250.1", "198.18.250.2"
PORT, PASSIVE = 2121, "50000-50009"
CLOSED_PORT = 40000  # something listens there, but the rules do not open it


def ketch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KETCH, *args], capture_output=True, text=True, timeout=60)


def rules(tmp_path: Path, *args: str) -> Path:
    """``ketch firewall ARGS`` written to a file, as an admin would save it."""
    result = ketch("firewall", *args)
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"rules-{len(list(tmp_path.glob('rules-*')))}"
    path.write_text(result.stdout)
    return path


@pytest.fixture
def make_netns() -> Iterator[Callable[[str], NetNamespace]]:
    """Namespaces deleted after the test; skip (fail under CI as root) without the tools."""
    reason = unavailable_reason()
    for program in ("iptables-restore", "ip6tables-restore", "iptables-save", "curl"):
        if reason is None and shutil.which(program) is None:
            reason = f"{program} is not installed; `make test` installs it (iptables, curl)"
    if reason is not None:
        if os.environ.get("CI") and os.geteuid() == 0:
            pytest.fail(reason)  # make test installs the tools; missing ones are a defect
        pytest.skip(reason)
    with ExitStack() as stack:
        yield lambda label: stack.enter_context(NetNamespace(label))


def checked(ns: NetNamespace, *args: str) -> str:
    result = ns.run(list(args))
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


# -- the tools accept the files ------------------------------------------------------------

HELPER = pytest.mark.parametrize("helper", [[], ["--conntrack-helper"]], ids=["plain", "helper"])


@HELPER
def test_nft_check_accepts_the_nftables_output(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path, helper: list[str]
) -> None:
    path = rules(tmp_path, "--format", "nftables", *helper)
    checked(make_netns("fwcheck"), "nft", "-c", "-f", str(path))


@HELPER
@pytest.mark.parametrize(
    "config",
    [
        [],
        ["--port", "21", "--passive-ports", "40000-40099", "--listen", "198.18.0.5"],
        ["--listen", "2001:db8::5", "--active-source-port", "ephemeral", "--no-ssh"],
        ["--allow-port", "443", "--allow-port", "80"],
        ["--listen", "fe80::1%eth0"],  # nft refused "fe80::1%eth0" in a rule
    ],
    ids=["default", "ipv4-address", "ipv6-address", "other-services", "link-local"],
)
def test_nftables_output_loads_twice_and_shows_the_passive_range(
    make_netns: Callable[[str], NetNamespace],
    tmp_path: Path,
    helper: list[str],
    config: list[str],
) -> None:
    path = rules(tmp_path, "--format", "nftables", *helper, *config)
    ns = make_netns("fwload")
    checked(ns, "nft", "-f", str(path))
    checked(ns, "nft", "-f", str(path))  # idempotent: replaces, never fails or duplicates
    ruleset = checked(ns, "nft", "list", "ruleset")
    assert ruleset.count("table inet ketch") == 1
    passive = "40000-40099" if "40000-40099" in config else "50000-50999"
    assert ruleset.count(f"tcp dport {passive} accept") == 1, ruleset
    assert "policy drop" in ruleset
    assert ('ct helper set "ftp-standard"' in ruleset) == bool(helper)
    assert ("tcp dport { 80, 443 } accept" in ruleset) == ("--allow-port" in config)


@HELPER
def test_iptables_restore_accepts_the_iptables_output(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path, helper: list[str]
) -> None:
    path = rules(
        tmp_path, "--format", "iptables", "--family", "ipv4", "--allow-port", "8080", *helper
    )
    ns = make_netns("fwipt")
    checked(ns, "iptables-restore", "--test", str(path))
    checked(ns, "iptables-restore", str(path))
    checked(ns, "iptables-restore", str(path))
    saved = checked(ns, "iptables-save")
    assert saved.count("--dport 50000:50999") == 1, saved
    assert saved.count("--dport 8080") == 1, saved
    assert ("CT --helper ftp" in saved) == bool(helper)


@HELPER
def test_ip6tables_restore_accepts_the_ipv6_output(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path, helper: list[str]
) -> None:
    path = rules(tmp_path, "--format", "iptables", "--family", "ipv6", "--listen", "::", *helper)
    ns = make_netns("fwip6")
    checked(ns, "ip6tables-restore", "--test", str(path))
    checked(ns, "ip6tables-restore", str(path))
    saved = checked(ns, "ip6tables-save")
    assert "--dport 50000:50999" in saved and "ipv6-icmp" in saved, saved


def test_ip6tables_restore_accepts_a_link_local_listen_address(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path
) -> None:
    args = ["--format", "iptables", "--family", "ipv6", "--listen", "fe80::1%eth0"]
    ns = make_netns("fwip6ll")
    checked(ns, "ip6tables-restore", "--test", str(rules(tmp_path, *args)))


# -- the rules work for FTP ----------------------------------------------------------------


def _load(ns: NetNamespace, format_name: str, path: Path) -> None:
    if format_name == "nftables":
        checked(ns, "nft", "-f", str(path))
    else:
        checked(ns, "iptables-restore", str(path))


def _server_and_client(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path, format_name: str, *extra: str
) -> tuple[NetNamespace, NetNamespace]:
    """A server namespace with the generated rules and ketch serving, and a client joined to it."""
    server, client = make_netns("fwsrv"), make_netns("fwcli")
    veth = ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0"]
    checked(server, *veth, "netns", client.name)
    for ns, address in ((server, SERVER_IP), (client, CLIENT_IP)):
        checked(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        checked(ns, "ip", "link", "set", "eth0", "up")
    served = tmp_path / "served"
    served.mkdir()
    (served / "hello.txt").write_text("hello through the firewall\n")
    flags = ["--port", str(PORT), "--passive-ports", PASSIVE, "--listen", SERVER_IP]
    family = ["--family", "ipv4"] if format_name == "iptables" else []
    _load(server, format_name, rules(tmp_path, "--format", format_name, *family, *flags, *extra))
    server.start([*KETCH, "serve", "--root", str(served), *flags], tmp_path / "server.log")
    server.wait_for_port(SERVER_IP, PORT)
    return server, client


def _download_works(client: NetNamespace, tmp_path: Path, *mode: str) -> None:
    url = f"ftp://{SERVER_IP}:{PORT}/hello.txt"
    result = client.run(["curl", "-sS", "--max-time", "10", *mode, url], timeout=30)
    server_log = (tmp_path / "server.log").read_text()
    assert result.returncode == 0, f"{mode}: {result.stderr}\n{server_log}"
    assert result.stdout == "hello through the firewall\n"


@pytest.mark.parametrize("format_name", ["nftables", "iptables"])
def test_generated_rules_let_ftp_through_and_keep_other_ports_closed(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path, format_name: str
) -> None:
    server, client = _server_and_client(make_netns, tmp_path, format_name)
    listener = f"import socket,time\ns=socket.create_server(('{SERVER_IP}', {CLOSED_PORT}))\n"
    server.start([sys.executable, "-c", listener + "time.sleep(120)"], tmp_path / "closed.log")
    server.wait_for_port(SERVER_IP, CLOSED_PORT)  # from inside: the rules accept loopback

    for mode in ([], ["--disable-epsv"], ["--ftp-port", CLIENT_IP]):  # EPSV, PASV, EPRT
        _download_works(client, tmp_path, *mode)
    probe = client.run(
        ["curl", "-sS", "--connect-timeout", "1", f"telnet://{SERVER_IP}:{CLOSED_PORT}"],
        timeout=30,
    )
    assert probe.returncode == 28, probe  # 28: timed out, the SYN was dropped


def test_conntrack_helper_alone_admits_passive_data_connections(
    make_netns: Callable[[str], NetNamespace], tmp_path: Path
) -> None:
    """With the passive-range rule deleted, only the attached helper can let data through."""
    server, client = _server_and_client(make_netns, tmp_path, "nftables", "--conntrack-helper")
    listing = checked(server, "nft", "-a", "list", "chain", "inet", "ketch", "input")
    handles = [
        line.rsplit("# handle ", 1)[1]
        for line in listing.splitlines()
        if "passive data connections" in line
    ]
    assert len(handles) == 1, listing
    checked(server, "nft", "delete", "rule", "inet", "ketch", "input", "handle", handles[0])
    for mode in ([], ["--disable-epsv"]):  # EPSV, PASV: both read by the helper
        _download_works(client, tmp_path, *mode)


# -- the command line ----------------------------------------------------------------------


def test_unknown_format_is_refused_with_the_valid_ones() -> None:
    result = ketch("firewall", "--format", "pf")
    assert result.returncode == 2
    for name in ("nftables", "iptables", "ufw", "firewalld", "docker-compose", "kubernetes"):
        assert name in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "ufw", "--family", "ipv6"], ["--family", "iptables"]),
        (["--format", "nftables", "--no-ssh", "--ssh-port", "2222"], ["--no-ssh"]),
        (["--format", "kubernetes", "--allow-port", "80"], ["--allow-port", "kubernetes"]),
    ],
)
def test_contradictory_options_are_usage_errors(args: list[str], words: list[str]) -> None:
    result = ketch("firewall", *args)
    assert result.returncode == 2 and all(word in result.stderr for word in words)


def test_config_file_and_flags_decide_the_rules(tmp_path: Path) -> None:
    config = tmp_path / "ketch.toml"
    config.write_text('port = 21\npassive_ports = "40000-40049"\nactive_source_port = "auto"\n')
    result = ketch("firewall", "--config", str(config), "--format", "nftables")
    assert result.returncode == 0, result.stderr
    assert (
        "tcp dport 21 accept" in result.stdout and "tcp dport 40000-40049 accept" in result.stdout
    )
    assert "tcp sport 20 ct state new accept" in result.stdout
    overridden = ketch(
        "firewall",
        "--config",
        str(config),
        "--format",
        "nftables",
        "--passive-ports",
        "41000-41009",
    )
    assert "tcp dport 41000-41009 accept" in overridden.stdout


def test_unusable_configuration_is_one_clear_line(tmp_path: Path) -> None:
    result = ketch("firewall", "--format", "nftables", "--port", "0")
    assert result.returncode == 1
    assert "port = 0" in result.stderr and "Traceback" not in result.stderr
    config = tmp_path / "ketch.toml"
    config.write_text('passive_ports = "60000-50000"\n')
    bad = ketch("firewall", "--config", str(config), "--format", "ufw")
    assert bad.returncode == 1 and "passive_ports" in bad.stderr and bad.stdout == ""


def test_iptables_without_family_points_to_the_ipv6_file() -> None:
    result = ketch("firewall", "--format", "iptables")
    assert result.returncode == 0
    assert result.stdout.lstrip().startswith("#") and "*filter" in result.stdout
    assert "--family ipv6" in result.stderr  # on stderr: the file on stdout stays loadable
    only_v4 = ketch("firewall", "--format", "iptables", "--listen", "0.0.0.0")
    assert only_v4.stderr == ""
