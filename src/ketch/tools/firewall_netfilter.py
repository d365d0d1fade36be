"""``ketch firewall`` for netfilter itself: an ``nft -f`` file and an ``iptables-restore`` file.

Both drop by default on input and accept what ``FirewallPlan`` lists, each
rule under a comment saying why. The nftables file owns one table
(``inet ketch``, both families) and replaces only that table when loaded
again; an iptables-restore file can only replace whole tables, one family
per file, which its header says.
"""

from __future__ import annotations

from ketch.tools.firewall import (
    Family,
    FirewallPlan,
    comment_block,
    explain_active,
    explain_established,
    explain_header,
    explain_helper,
    explain_passive,
    wrap,
)

__all__ = ["render_iptables", "render_nftables"]

_HELPER_OBJECT = "ftp-standard"
_ICMP_WHY = [
    "ICMP and ICMPv6: error reports and path MTU discovery (a TCP transfer can stall",
    "without them); IPv6 neighbour discovery is ICMPv6 too.",
]
_INVALID_WHY = ["Packets conntrack cannot place in any connection: never legitimate."]


def _ssh_why(plan: FirewallPlan) -> list[str]:
    return [
        f"SSH on port {plan.ssh_port}, so loading this file does not lock you out",
        "(--ssh-port N for another port, --no-ssh to leave it out).",
    ]


_OTHER_WHY = ["Other services of this host (--allow-port)."]
#: What to say about the input chain's drop policy, in both files.
_DROP_WHY = (
    "New inbound connections this file does not name are dropped: it is the host's whole "
    "inbound policy, so a web or mail server here is cut off too unless its ports are "
    "named with --allow-port PORT (repeatable) when generating the file."
)


def _implicit_why(port: int) -> list[str]:
    return [f"Implicit FTPS on port {port}: a control connection that is TLS from the first byte."]


# -- nftables ---------------------------------------------------------------------------


def _nft_match(plan: FirewallPlan, direction: str) -> str:
    """Address match prefix for the server's own address ("daddr" in, "saddr" out)."""
    if plan.listen_address is not None:
        family = "ip" if plan.ipv4 else "ip6"
        match = f"{family} {direction} {plan.listen_address} "
        if plan.listen_interface is not None:  # a link-local address: on its link only
            which = "iifname" if direction == "daddr" else "oifname"
            match += f'{which} "{plan.listen_interface}" '
        return match
    if not plan.ipv6:
        return "meta nfproto ipv4 "
    return ""


def _nft_helper(plan: FirewallPlan) -> list[str]:
    """The explicit helper object and its prerouting attachment, commented out unless asked."""
    body = [
        f"ct helper {_HELPER_OBJECT} {{",
        '    type "ftp" protocol tcp',
        "}",
        "",
        "chain prerouting {",
        "    type filter hook prerouting priority filter; policy accept;",
        f'    tcp dport {plan.control_port} ct helper set "{_HELPER_OBJECT}"',
        "}",
    ]
    lines = comment_block(explain_helper(plan), indent="    ")
    if plan.conntrack_helper:
        return [*lines, *(f"    {line}".rstrip() for line in body), ""]
    lines.append("    # Not enabled; `ketch firewall --conntrack-helper` prints it uncommented:")
    return [*lines, *(f"    # {line}".rstrip() for line in body), ""]


def render_nftables(plan: FirewallPlan, family: Family = "ipv4") -> str:
    """A self-contained, idempotent ``nft -f`` file defining ``table inet ketch``."""
    del family  # one inet table covers IPv4 and IPv6
    inbound = _nft_match(plan, "daddr")
    outbound = _nft_match(plan, "saddr")
    input_rules = [
        "    # Loopback: local clients and tools.",
        '    iif "lo" accept',
        *comment_block(_INVALID_WHY, indent="    "),
        "    ct state invalid drop",
        *comment_block(explain_established(), indent="    "),
        "    ct state established,related accept",
        *comment_block(_ICMP_WHY, indent="    "),
        "    meta l4proto { icmp, ipv6-icmp } accept",
    ]
    if plan.ssh_port is not None:
        input_rules += [
            *comment_block(_ssh_why(plan), indent="    "),
            f'    tcp dport {plan.ssh_port} accept comment "ssh"',
        ]
    if plan.other_ports:
        ports = ", ".join(map(str, plan.other_ports))
        input_rules += [
            *comment_block(_OTHER_WHY, indent="    "),
            f'    tcp dport {{ {ports} }} accept comment "other services"',
        ]
    input_rules += [
        "    # FTP control connection: commands and replies.",
        f'    {inbound}tcp dport {plan.control_port} accept comment "ketch: FTP control"',
    ]
    if plan.implicit_tls_port is not None:
        input_rules += [
            *comment_block(_implicit_why(plan.implicit_tls_port), indent="    "),
            f"    {inbound}tcp dport {plan.implicit_tls_port} accept"
            ' comment "ketch: implicit FTPS"',
        ]
    passive = plan.passive_ports
    input_rules += [
        *comment_block(explain_passive(plan), indent="    "),
        f"    {inbound}tcp dport {passive.low}-{passive.high} accept"
        ' comment "ketch: passive data connections"',
    ]
    if plan.active_source_port is None:
        # The source port is unknown; the client's port is 1024 or above (RFC 2577 check).
        active_match = "tcp dport 1024-65535"
    else:
        active_match = f"tcp sport {plan.active_source_port}"
    output_rules = [
        *comment_block(explain_active(plan), indent="    "),
        '    oif "lo" accept',
        "    ct state established,related accept",
        f"    {outbound}{active_match} ct state new accept"
        ' comment "ketch: active data connections"',
    ]
    loading = wrap(
        "Check it with `nft -c -f FILE`, load it with `nft -f FILE` (as root). Loading it "
        "again replaces the table, so it can be loaded any number of times. Only the table "
        '"inet ketch" (IPv4 and IPv6) is touched; your other tables stay. Every table\'s '
        "input chain sees each packet and a drop in any of them is final: an accept in "
        "another table does not get past this one's policy drop, nor the other way round. "
        + _DROP_WHY
    )
    lines = [
        "#!/usr/sbin/nft -f",
        *comment_block(explain_header(plan, "nftables rules", loading)),
        "",
        "# Create the table if it is missing, then delete it: the definition below then",
        "# starts from nothing, on the first load and on every later one.",
        "table inet ketch",
        "delete table inet ketch",
        "",
        "table inet ketch {",
        *_nft_helper(plan),
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        "",
        *(f"    {rule}" for rule in input_rules),
        "    }",
        "",
        "    chain output {",
        "        type filter hook output priority filter; policy accept;",
        "",
        *(f"    {rule}" for rule in output_rules),
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


# -- iptables ---------------------------------------------------------------------------


def _ipt_rule(chain: str, *parts: str, comment: str | None = None, target: str = "ACCEPT") -> str:
    words = ["-A", chain, *(part for part in parts if part)]
    if comment:
        words += ["-m", "comment", "--comment", f'"{comment}"']
    return " ".join([*words, "-j", target])


def render_iptables(plan: FirewallPlan, family: Family = "ipv4") -> str:
    """An ``iptables-restore`` (IPv4) or ``ip6tables-restore`` (IPv6) file."""
    program = "iptables-restore" if family == "ipv4" else "ip6tables-restore"
    address = plan.listen_address_for(family)
    inbound = f"-d {address}" if address else ""
    outbound = f"-s {address}" if address else ""
    if address and plan.listen_interface is not None:  # a link-local address: its link only
        inbound += f" -i {plan.listen_interface}"
        outbound += f" -o {plan.listen_interface}"
    icmp = "icmp" if family == "ipv4" else "ipv6-icmp"
    passive = plan.passive_ports
    other = "ipv6" if family == "ipv4" else "ipv4"
    loading = [
        f"For {program} ({'IPv4' if family == 'ipv4' else 'IPv6'}): check it with",
        f"`{program} --test FILE`, load it with `{program} FILE` (as root).",
        "It REPLACES the filter table"
        + (" and the raw table" if plan.conntrack_helper else "")
        + ": every rule of every chain there is flushed first",
        "(FORWARD keeps its policy but loses its rules). On a host with rules of its own",
        "(Docker, fail2ban, a router) copy the -A lines into your rules instead.",
        *wrap(_DROP_WHY),
        "Debian's iptables-persistent loads /etc/iptables/rules.v4 and rules.v6 at boot.",
    ]
    if getattr(plan, other):
        loading += wrap(
            f"The server also listens on {other}: `ketch firewall --format iptables "
            f"--family {other}` prints that file."
        )
    title = f"{program} rules"
    lines = [*comment_block(explain_header(plan, title, loading)), ""]

    helper = [
        "*raw",
        ":PREROUTING ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        _ipt_rule(
            "PREROUTING",
            f"-p tcp --dport {plan.control_port}",
            comment="ketch: FTP conntrack helper",
            target="CT --helper ftp",
        ),
        "COMMIT",
    ]
    lines += comment_block(explain_helper(plan))
    if plan.conntrack_helper:
        lines += helper
    else:
        lines.append("# Not enabled; `ketch firewall --conntrack-helper` prints it uncommented:")
        lines += comment_block(helper)
    lines += [
        "",
        "*filter",
        ":INPUT DROP [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "# Loopback: local clients and tools.",
        _ipt_rule("INPUT", "-i lo"),
        *comment_block(_INVALID_WHY),
        _ipt_rule("INPUT", "-m conntrack --ctstate INVALID", target="DROP"),
        *comment_block(explain_established()),
        _ipt_rule("INPUT", "-m conntrack --ctstate ESTABLISHED,RELATED"),
        *comment_block(_ICMP_WHY),
        _ipt_rule("INPUT", f"-p {icmp}"),
    ]
    if plan.ssh_port is not None:
        lines += [
            *comment_block(_ssh_why(plan)),
            _ipt_rule("INPUT", f"-p tcp --dport {plan.ssh_port}", comment="ssh"),
        ]
    if plan.other_ports:
        lines += comment_block(_OTHER_WHY)
        lines += [
            _ipt_rule("INPUT", f"-p tcp --dport {port}", comment="other service")
            for port in plan.other_ports
        ]
    lines += [
        "# FTP control connection: commands and replies.",
        _ipt_rule(
            "INPUT", inbound, f"-p tcp --dport {plan.control_port}", comment="ketch: FTP control"
        ),
    ]
    if plan.implicit_tls_port is not None:
        lines += [
            *comment_block(_implicit_why(plan.implicit_tls_port)),
            _ipt_rule(
                "INPUT",
                inbound,
                f"-p tcp --dport {plan.implicit_tls_port}",
                comment="ketch: implicit FTPS",
            ),
        ]
    lines += [
        *comment_block(explain_passive(plan)),
        _ipt_rule(
            "INPUT",
            inbound,
            f"-p tcp --dport {passive.low}:{passive.high}",
            comment="ketch: passive data connections",
        ),
    ]
    if plan.active_source_port is None:
        active_match = "-p tcp --dport 1024:65535"
    else:
        active_match = f"-p tcp --sport {plan.active_source_port}"
    lines += [
        *comment_block(explain_active(plan)),
        _ipt_rule("OUTPUT", "-o lo"),
        _ipt_rule("OUTPUT", "-m conntrack --ctstate ESTABLISHED,RELATED"),
        _ipt_rule(
            "OUTPUT",
            outbound,
            active_match,
            "-m conntrack --ctstate NEW",
            comment="ketch: active data connections",
        ),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"
