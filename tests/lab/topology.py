"""Small networks of namespaces: hosts and routers joined by virtual wires and switches.

A scenario builds only what it needs, typically a client, a router and a
server, so building takes a fraction of a second. Each host is a
:class:`netns.NetNamespace` made by the ``make_netns`` fixture, so everything
is torn down when the test ends, also on failure; veth peers and bridges go
away with their namespaces.

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking space), which no real
network uses: the client's LAN is 198.18.1.0/24, the "internet" 198.18.2.0/24
and the server's LAN 198.18.3.0/24.

The nftables rulesets below are what the middleboxes of the real world do:
masquerading (a home router), port forwards (a server behind NAT), stateful
filters that drop new inbound connections (a client's firewall), and the FTP
conntrack helper that rewrites PORT/EPRT for active mode through NAT.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from netns import NetNamespace

__all__ = [
    "Host",
    "Lab",
    "Switch",
    "conntrack_helper_ruleset",
    "inbound_filter_ruleset",
    "masquerade_ruleset",
    "port_forward_ruleset",
]


class Host:
    """One machine of the lab: a namespace, its interfaces and its routes."""

    def __init__(self, ns: NetNamespace, label: str) -> None:
        self.ns = ns
        self.label = label
        self._interface_numbers = itertools.count()

    def next_interface_name(self) -> str:
        # Names only need to be unique inside the namespace.
        return f"eth{next(self._interface_numbers)}"

    def configure(self, interface: str, address: str) -> None:
        """Give ``interface`` an address (CIDR, e.g. "198.18.1.10/24") and bring it up."""
        self.ns.run_checked(["ip", "addr", "add", address, "dev", interface])
        self.ns.run_checked(["ip", "link", "set", interface, "up"])

    def default_route(self, via: str) -> None:
        self.ns.run_checked(["ip", "route", "add", "default", "via", via])

    def enable_forwarding(self) -> None:
        # Per namespace: a new one starts with forwarding off, like a fresh host.
        self.ns.run_checked(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])

    def nft(self, ruleset: str) -> None:
        self.ns.nft(ruleset)


class Switch:
    """A bridge inside a router's namespace: the router's LAN, with room for more hosts."""

    def __init__(self, router: Host, bridge: str) -> None:
        self.router = router
        self.bridge = bridge


class Lab:
    """Builds hosts, routers, wires and switches for one test."""

    def __init__(self, make_netns: Callable[[str], NetNamespace]) -> None:
        self._make_netns = make_netns

    def host(self, label: str) -> Host:
        return Host(self._make_netns(label), label)

    def router(self, label: str) -> Host:
        router = self.host(label)
        router.enable_forwarding()
        return router

    def wire(self, a: Host, a_address: str, b: Host, b_address: str) -> tuple[str, str]:
        """Join two hosts with a veth pair; return the interface names on ``a`` and ``b``."""
        a_interface, b_interface = a.next_interface_name(), b.next_interface_name()
        a.ns.run_checked(
            ["ip", "link", "add", a_interface, "type", "veth",
             "peer", "name", b_interface, "netns", b.ns.name]
        )  # fmt: skip
        a.configure(a_interface, a_address)
        b.configure(b_interface, b_address)
        return a_interface, b_interface

    def switch(self, router: Host, address: str) -> Switch:
        """A LAN behind ``router``, which takes ``address`` on it."""
        bridge = router.next_interface_name().replace("eth", "br")
        router.ns.run_checked(["ip", "link", "add", bridge, "type", "bridge"])
        # A switch works at layer 2: with br_netfilter (built into some kernels) bridged
        # packets would also go through the router's IP forward rules and be filtered.
        router.ns.run_checked(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"])
        router.configure(bridge, address)
        return Switch(router, bridge)

    def plug(self, switch: Switch, host: Host, address: str) -> str:
        """Connect ``host`` to the switch with ``address``; return its interface name."""
        router = switch.router
        port, interface = router.next_interface_name(), host.next_interface_name()
        router.ns.run_checked(
            ["ip", "link", "add", port, "type", "veth",
             "peer", "name", interface, "netns", host.ns.name]
        )  # fmt: skip
        router.ns.run_checked(["ip", "link", "set", port, "master", switch.bridge])
        router.ns.run_checked(["ip", "link", "set", port, "up"])
        host.configure(interface, address)
        return interface


# -- middleboxes ---------------------------------------------------------------


def masquerade_ruleset(outside_interface: str) -> str:
    """Source NAT for everything leaving through ``outside_interface`` (a home router)."""
    return f"""
table ip lab_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{outside_interface}" masquerade
    }}
}}
"""


def port_forward_ruleset(public_ip: str, ports: Iterable[str], private_ip: str) -> str:
    """Destination NAT: connections to ``public_ip`` on ``ports`` go to ``private_ip``.

    ``ports`` are nftables port expressions ("21", "50000-50009"). Anything
    else addressed to the server's LAN from outside is dropped in forward, as
    a router that only forwards what it was told to.
    """
    port_set = ", ".join(ports)
    return f"""
table ip lab_forward {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {public_ip} tcp dport {{ {port_set} }} dnat to {private_ip}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        ct status dnat accept
        ip daddr {private_ip} drop
    }}
}}
"""


def inbound_filter_ruleset(admit: str | None = None) -> str:
    """A host firewall: replies and loopback pass, new inbound connections are dropped.

    ``admit`` is an nftables match for new connections that may come in
    anyway (e.g. "tcp sport 20"). Dropped, not rejected, as most firewalls
    do: the other side sees a timeout, not a refusal.
    """
    admitted = f"{admit} accept" if admit else ""
    return f"""
table inet lab_filter {{
    chain input {{
        type filter hook input priority filter; policy drop;
        iif lo accept
        ct state established,related accept
        {admitted}
    }}
}}
"""


def conntrack_helper_ruleset(control_port: int) -> str:
    """Attach the kernel's FTP helper to control connections to ``control_port``.

    Since Linux 4.7 helpers are not attached automatically; a router that NATs
    needs this so nf_nat_ftp rewrites the address in PORT/EPRT (plaintext
    only) and lets the server's connection back in as a related connection.
    """
    return f"""
table inet lab_helper {{
    ct helper ftp-standard {{
        type "ftp" protocol tcp;
    }}
    chain prerouting {{
        type filter hook prerouting priority filter; policy accept;
        tcp dport {control_port} ct helper set "ftp-standard"
    }}
}}
"""
