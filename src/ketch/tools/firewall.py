"""What a firewall must let through for a ketch server, and that as rules.

An FTP server needs more than its control port open: passive data connections
arrive on a second port the server picks from ``passive_ports``, and active
ones leave from port L-1. Admins get this wrong more often than anything else
about FTP ("login works, LIST hangs"), so ``ketch firewall`` derives the whole
set from the same configuration the server runs with.

This module is pure: ``plan_for`` turns a ``ServerConfig`` into a
``FirewallPlan`` (the facts: ports, address families, helper or not), and one
renderer per format turns the plan into a commented file. Nothing here touches
the network or the machine's rules; the netfilter renderers live in
``firewall_netfilter``, the others in ``firewall_formats``.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ketch.protocol.addresses import active_source_port

if TYPE_CHECKING:
    from pathlib import Path

    from ketch.config import PortRange, ServerConfig

__all__ = [
    "FAMILIES",
    "FORMATS",
    "Family",
    "FirewallError",
    "FirewallPlan",
    "plan_for",
    "render",
]

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")

#: Where the kernel ≥ 4.7 change to conntrack helpers is explained.
HELPER_DOCS = (
    "https://wiki.nftables.org/wiki-nftables/index.php/Conntrack_helpers",
    "https://home.regit.org/netfilter-en/secure-use-of-helpers/",
)


class FirewallError(ValueError):
    """The configuration cannot be turned into rules; the text says why and what to do."""


@dataclass(frozen=True)
class FirewallPlan:
    """The facts every format needs: what must be reachable, from where, and why."""

    control_port: int
    #: Implicit FTPS (TLS from the first byte), when configured.
    implicit_tls_port: int | None
    passive_ports: PortRange
    #: Each worker's slice of ``passive_ports`` when there are several workers.
    worker_slices: tuple[PortRange, ...]
    #: Source port of active-mode connections; None: an ephemeral port.
    active_source_port: int | None
    #: True for ``active_source_port = "auto"``: L-1 when the server may bind it.
    active_source_auto: bool
    #: The one address the server listens on, without a zone; None: every address.
    listen_address: str | None
    ipv4: bool
    ipv6: bool
    masquerade_address: str | None
    #: The SSH port to keep open so applying the rules does not lock the admin out.
    ssh_port: int | None
    conntrack_helper: bool
    #: What FTPS sessions advertise instead (tls_masquerade_address), if set.
    tls_masquerade_address: str | None = None
    #: Whether masquerade_map names addresses for some client networks.
    masquerade_map: bool = False
    #: Other TCP services of the host to keep open (--allow-port): the nftables and
    #: iptables files drop every new inbound connection they do not name.
    other_ports: tuple[int, ...] = ()
    #: The configuration file, if any, and what the server reads besides: the served
    #: directories (writable) and the TLS files (read-only), for a container to mount.
    config_file: Path | None = None
    served_directories: tuple[Path, ...] = ()
    tls_files: tuple[Path, ...] = ()
    #: The interface a link-local listen_address is on (its zone, "fe80::1%eth0"): rules
    #: match the address there, as no rule syntax takes "%eth0" in an address.
    listen_interface: str | None = None

    @property
    def families(self) -> tuple[Family, ...]:
        """The address families the server listens on."""
        return tuple(family for family in FAMILIES if getattr(self, family))

    @property
    def server_ports(self) -> tuple[int, ...]:
        """Ports clients connect to for a session: control, then implicit FTPS."""
        if self.implicit_tls_port is None:
            return (self.control_port,)
        return (self.control_port, self.implicit_tls_port)

    @property
    def listen_shown(self) -> str | None:
        """listen_address as the configuration writes it, zone and all, for comments."""
        if self.listen_address is None or self.listen_interface is None:
            return self.listen_address
        return f"{self.listen_address}%{self.listen_interface}"

    def listen_address_for(self, family: Family) -> str | None:
        """The specific address to match for ``family``, or None for any address."""
        if self.listen_address is None:
            return None
        version = ipaddress.ip_address(self.listen_address).version
        return self.listen_address if version == (4 if family == "ipv4" else 6) else None


def plan_for(
    config: ServerConfig,
    *,
    config_file: Path | None = None,
    ssh_port: int | None = 22,
    conntrack_helper: bool = False,
    other_ports: Sequence[int] = (),
) -> FirewallPlan:
    """What a server with ``config`` needs open; FirewallError when it cannot be said."""
    # Imported here so that the command line, which needs only FORMATS, starts fast.
    from ketch.server.workers import split_ports

    if config.port == 0:
        raise FirewallError(
            "port = 0 makes the server pick a random free port at start-up, so no rule can "
            "name it; set port (e.g. 21) in the configuration or pass --port"
        )
    if config.implicit_tls_port == 0:
        raise FirewallError(
            "implicit_tls_port = 0 makes the server pick a random free port at start-up, so "
            "no rule can name it; set implicit_tls_port (990 by convention)"
        )
    listen = config.listen_address
    ipv4 = ipv6 = True
    specific: str | None = None
    interface = None
    if listen is not None:
        bare, _, zone = listen.partition("%")
        address = ipaddress.ip_address(bare)
        interface = _interface_of(listen, zone) if zone else None
        if address.is_unspecified:
            # "::" is dual-stack (the listener clears IPV6_V6ONLY); "0.0.0.0" is IPv4 only.
            ipv6 = address.version == 6
        else:
            specific = str(address)
            ipv4, ipv6 = address.version == 4, address.version == 6
    active = active_source_port(config.active_source_port, config.port)
    slices = split_ports(config.passive_ports, config.workers) if config.workers > 1 else []
    return FirewallPlan(
        control_port=config.port,
        implicit_tls_port=config.implicit_tls_port,
        passive_ports=config.passive_ports,
        worker_slices=tuple(slices),
        active_source_port=active,
        active_source_auto=config.active_source_port == "auto",
        listen_address=specific,
        ipv4=ipv4,
        ipv6=ipv6,
        masquerade_address=config.masquerade_address,
        ssh_port=ssh_port,
        conntrack_helper=conntrack_helper,
        tls_masquerade_address=config.tls_masquerade_address,
        masquerade_map=bool(config.masquerade_map),
        other_ports=tuple(sorted(set(other_ports) - {ssh_port})),
        config_file=config_file.resolve() if config_file else None,
        served_directories=_served_directories(config),
        tls_files=tuple(path for path in (config.tls_certificate, config.tls_key) if path),
        listen_interface=interface,
    )


# Linux interface names: up to 15 characters; these are the ones safe in every format
# (the ufw and firewalld outputs are shell scripts).
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _interface_of(listen: str, zone: str) -> str:
    """The interface a listen address's zone names; FirewallError if no rule can name it."""
    if zone.isdigit():
        raise FirewallError(
            f"listen_address {listen} names its zone by number; write the interface's "
            f"name instead (e.g. {listen.partition('%')[0]}%eth0) so the rules can match it"
        )
    if not _INTERFACE_NAME.fullmatch(zone):
        raise FirewallError(
            f"listen_address {listen}: {zone!r} is not an interface name the rules can "
            "carry (letters, digits, '_', '.', '-'; at most 15)"
        )
    return zone


def _served_directories(config: ServerConfig) -> tuple[Path, ...]:
    """The root and every home outside it, each once."""
    homes = [config.root, config.anonymous.home, *(user.home for user in config.users)]
    found: list[Path] = []
    for home in homes:
        if home is not None and not any(home.is_relative_to(other) for other in found):
            found = [other for other in found if not other.is_relative_to(home)] + [home]
    return tuple(found)


# -- explanations shared by every format ----------------------------------------------
# Each returns lines without a comment marker; a renderer prefixes its own ("# ").

_WIDTH = 82


def explain_passive(plan: FirewallPlan) -> list[str]:
    """Why the passive range is open: the rule admins most often miss."""
    ports = plan.passive_ports
    lines = [
        "Passive mode (PASV/EPSV, what almost every client uses): for each listing or",
        "transfer the client opens a second connection to a port the server picks from",
        f"passive_ports {ports}. Closed, the login works but LIST and RETR hang.",
        f"{ports.size} ports = at most {ports.size} simultaneous passive transfers.",
    ]
    if plan.worker_slices:
        slices = ", ".join(str(part) for part in plan.worker_slices)
        lines += textwrap.wrap(
            f"With workers = {len(plan.worker_slices)} each worker uses a slice of it "
            f"({slices}); together they are the whole range.",
            width=_WIDTH,
        )
    return lines


def explain_established() -> list[str]:
    return [
        "Packets of connections already accepted (the control connection, data",
        "connections in progress, active-mode connections the server opened) and",
        "connections conntrack marks as related (ICMP errors; FTP data connections",
        "when the FTP conntrack helper is attached to the control port).",
    ]


def explain_active(
    plan: FirewallPlan,
    outbound: str = "These rules change nothing while the output policy is accept; "
    "they matter if you set it to drop.",
) -> list[str]:
    """Why active mode needs nothing inbound; ``outbound`` says what the format does outbound."""
    if plan.active_source_port is None:
        source = "an ephemeral source port"
    else:
        source = f"source port {plan.active_source_port}"
        if plan.active_source_auto:
            source += " (control port - 1; an ephemeral one when the server may not bind it)"
    return textwrap.wrap(
        f"Active mode (PORT/EPRT): the server connects out to the client, from {source}. "
        f"Replies come back as established traffic, so nothing inbound is needed. {outbound}",
        width=_WIDTH,
    )


def explain_helper(plan: FirewallPlan) -> list[str]:
    """Why the FTP conntrack helper is optional here, and how it must be attached."""
    lines = [
        "FTP conntrack helper: reads PASV/PORT replies on the control connection and marks",
        "the data connection RELATED (with NAT it also rewrites the address in them).",
        "Optional here: the passive range is opened explicitly, EPSV carries no address,",
    ]
    if not plan.ipv4:
        lines.append("and PASV, whose reply names one, is refused over IPv6.")
    elif plan.masquerade_address:
        lines.append(f"and PASV already advertises masquerade_address {plan.masquerade_address}.")
    else:
        lines.append("and behind NAT masquerade_address makes PASV advertise the public address.")
    lines += [
        "It cannot read FTPS (TLS) control connections at all. Since Linux 4.7 helpers are",
        "no longer attached automatically (net.netfilter.nf_conntrack_helper = 0): they",
        "must be attached explicitly to the control port. See",
        *(f"  {link}" for link in HELPER_DOCS),
    ]
    return lines


def explain_masquerade(plan: FirewallPlan) -> list[str]:
    """What the NAT router in front, if any, must do for this configuration."""
    ports = ", ".join(str(port) for port in plan.server_ports)
    forward = f"forward TCP {ports} and {plan.passive_ports} to this host"
    if not plan.ipv4:
        return wrap(_ipv6_only_advice(plan, ports))
    if plan.masquerade_address:
        text = (
            f"PASV advertises masquerade_address {plan.masquerade_address}: the NAT router "
            f"in front must {forward}, to the same port numbers."
        )
    else:
        text = (
            "masquerade_address is not set: PASV advertises the address the client "
            "connected to. Behind NAT that is a private address; set masquerade_address "
            f"to the public one and {forward}."
        )
    if plan.tls_masquerade_address:
        text += (
            f" FTPS sessions advertise tls_masquerade_address {plan.tls_masquerade_address}: "
            "its router must forward the same ports."
        )
    if plan.masquerade_map:
        text += (
            " Clients in the networks of masquerade_map are told the address the map "
            "gives for theirs instead."
        )
    return wrap(text)


def _ipv6_only_advice(plan: FirewallPlan, ports: str) -> str:
    """What to do in front of a server with IPv6 clients only: PASV and NAT do not arise."""
    text = (
        f"The server listens on {plan.listen_shown} only, an IPv6 address: clients use "
        "EPSV, which names no address (PASV cannot describe an IPv6 one and is refused), "
        "so there is no address to masquerade. A firewall in front must let TCP "
        f"{ports} and {plan.passive_ports} through to this host."
    )
    if plan.masquerade_address or plan.tls_masquerade_address or plan.masquerade_map:
        text += " The masquerade settings have no effect here."
    return text


def explain_header(plan: FirewallPlan, title: str, usage: list[str]) -> list[str]:
    """The opening of every file: what it is, how to use it, what the NAT in front must do."""
    return [
        f"{title}: what a ketch FTP server with this configuration needs open.",
        "Generated by `ketch firewall`; generate it again after changing port,",
        "passive_ports, listen_address, active_source_port or workers.",
        "",
        *usage,
        "",
        *explain_masquerade(plan),
    ]


def wrap(text: str) -> list[str]:
    """``text`` as lines short enough for a comment block."""
    return textwrap.wrap(text, width=_WIDTH)


def comment_block(lines: list[str], marker: str = "#", indent: str = "") -> list[str]:
    """``lines`` as comment lines."""
    return [f"{indent}{marker} {line}".rstrip() for line in lines]


# -- formats -------------------------------------------------------------------------------

Renderer = Callable[[FirewallPlan, Family], str]


def _renderers() -> dict[str, Renderer]:
    # Imported here: the renderer modules import this one for the plan and texts.
    from ketch.tools import firewall_formats, firewall_netfilter

    return {
        "nftables": firewall_netfilter.render_nftables,
        "iptables": firewall_netfilter.render_iptables,
        "ufw": firewall_formats.render_ufw,
        "firewalld": firewall_formats.render_firewalld,
        "docker-compose": firewall_formats.render_docker_compose,
        "kubernetes": firewall_formats.render_kubernetes,
    }


#: The formats ``render`` knows, in the order ``--help`` lists them.
FORMATS: tuple[str, ...] = (
    "nftables",
    "iptables",
    "ufw",
    "firewalld",
    "docker-compose",
    "kubernetes",
)


def render(plan: FirewallPlan, format_name: str, family: Family = "ipv4") -> str:
    """The rules for ``plan`` in ``format_name``; ``family`` only matters for iptables."""
    renderers = _renderers()
    if format_name not in renderers:
        raise FirewallError(f"unknown format {format_name!r}; choose one of {', '.join(FORMATS)}")
    if format_name == "iptables" and not getattr(plan, family):
        raise FirewallError(
            f"this configuration does not listen on {family} "
            f"(listen_address = {plan.listen_shown or '0.0.0.0'}), so there is nothing "
            f"to open for it; leave out --family {family}"
        )
    return renderers[format_name](plan, family)
