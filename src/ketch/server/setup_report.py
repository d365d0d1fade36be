"""The data-connection part of the start-up summary, and the set-up warnings.

Most FTP trouble is data connections that cannot be made, and most of that
is a configuration that contradicts itself or the network: a passive range
too small for the sessions allowed, a range the control port sits in, a
masquerade address nobody outside can reach. Saying so at start-up, in the
admin's terms (the keys to change), is cheaper than a user's bug report.
The warnings (also one about logins nobody can make) are the ones `ketch serve`,
`ketch config check` and a reload share. Pure: the caller prints the lines and
logs the warnings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ketch.config import PortRange, ServerConfig
from ketch.protocol.addresses import active_source_port, is_ip_literal

__all__ = ["MIN_WORKER_SLICE", "SetupReport", "setup_report"]

#: Fewer passive ports per worker than this, and a few busy clients exhaust one
#: worker while others idle: the kernel spreads connections without asking.
MIN_WORKER_SLICE = 20
# Width of a summary line's label ("passive  "), as the rest of the summary has it.
_LABEL_WIDTH = 9


@dataclass(frozen=True)
class SetupReport:
    """Summary lines (already indented and labelled) and warnings (one sentence each)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def setup_report(
    config: ServerConfig,
    *,
    host: str,
    port: int,
    slices: Sequence[PortRange] = (),
    resolved: Mapping[str, str] | None = None,
) -> SetupReport:
    """Describe how data connections are made; warn about what contradicts itself.

    ``host``/``port`` are what the control socket is bound to, ``slices`` the
    workers' passive slices (none: one process), ``resolved`` the addresses
    configured host names resolved to (name -> IPv4), where known.
    """
    resolved = resolved or {}
    report = SetupReport()
    _logins(config, report)
    _passive(config, port, slices, report)
    _advertised(config, host, resolved, report)
    _active(config, port, report)
    return report


def _logins(config: ServerConfig, report: SetupReport) -> None:
    if not config.users and not config.anonymous_enabled():
        report.warnings.append(
            "nobody can log in: anonymous access is off and there are no accounts; "
            "add --user NAME:PASSWORD or a [[users]] entry, or allow anonymous access"
        )


def _line(report: SetupReport, label: str, text: str) -> None:
    report.lines.append(f"  {label:<{_LABEL_WIDTH}}{text}")


def _passive(
    config: ServerConfig, port: int, slices: Sequence[PortRange], report: SetupReport
) -> None:
    ports = config.passive_ports
    sessions = config.max_connections
    if len(slices) > 1:
        smallest = min(piece.size for piece in slices)
        share = f" in {len(slices)} worker slices of {smallest}+"
        per_process = " per worker"
    else:
        smallest, share, per_process = ports.size, "", ""
    _line(
        report,
        "passive",
        f"ports {ports}: {ports.size} ports{share}, one per simultaneous passive transfer, "
        f"for up to {sessions} sessions{per_process} (max_connections); each listener is "
        "bound to the address its client connected to",
    )
    if smallest < sessions:
        per = "a worker's slice of passive_ports" if len(slices) > 1 else "passive_ports"
        report.warnings.append(
            f"{per} has {smallest} ports but max_connections allows {sessions} sessions per "
            f"process: beyond {smallest} simultaneous passive transfers PASV/EPSV get 425; "
            "widen passive_ports or lower max_connections"
        )
    if len(slices) > 1 and smallest < MIN_WORKER_SLICE:
        report.warnings.append(
            f"passive_ports {ports} split between {len(slices)} workers leaves {smallest} ports "
            f"per worker (fewer than {MIN_WORKER_SLICE}): a few busy clients exhaust one "
            "worker while others have free ports; widen passive_ports or use fewer workers"
        )
    if ports.low < 1024:
        report.warnings.append(
            f"passive_ports {ports} includes ports below 1024, which need root to bind and "
            "belong to well-known services; use ports from 1024 up, e.g. 50000-50999"
        )
    control_ports = [("control port", port), ("implicit FTPS port", config.implicit_tls_port)]
    for name, number in control_ports:
        if number is not None and number in ports:
            report.warnings.append(
                f"passive_ports {ports} includes the {name} {number}, which PASV can never "
                "use and a firewall rule for the range would expose twice; move the range off it"
            )


def _advertised(
    config: ServerConfig, host: str, resolved: Mapping[str, str], report: SetupReport
) -> None:
    def shown(value: str) -> str:
        ip = resolved.get(value)
        return f"{value} ({ip})" if ip and ip != value else value

    masquerade, tls_masquerade = config.masquerade_address, config.tls_masquerade_address
    if masquerade is None:
        text = "the control connection's local address (no masquerade_address)"
    else:
        text = f"masquerade_address {shown(masquerade)}"
    if tls_masquerade is not None:
        text += f"; TLS sessions {shown(tls_masquerade)}"
    _line(report, "address", f"PASV advertises {text} to non-loopback clients")
    if any(not is_ip_literal(value) for value in _configured_addresses(config)):
        _line(
            report,
            "",
            f"host names resolve again at most every {config.masquerade_refresh:g} s",
        )
    networks = sorted(
        (ipaddress.IPv4Network(network) for network in config.masquerade_map),
        key=lambda network: (network.prefixlen, int(network.network_address)),
        reverse=True,
    )
    for network in networks:
        _line(report, "", f"clients in {network} get {shown(config.masquerade_map[str(network)])}")

    for key, value in (
        ("masquerade_address", masquerade),
        ("tls_masquerade_address", tls_masquerade),
    ):
        ip = resolved.get(value, value) if value is not None else None
        if ip is not None and is_ip_literal(ip) and not ipaddress.ip_address(ip).is_global:
            report.warnings.append(
                f"{key} {shown(value or ip)} is not a public address, so clients on the "
                "internet cannot reach it; set it to the address they reach the server at, "
                "and use masquerade_map for networks that need a private one"
            )
    for inner, outer in _overlaps(networks):
        report.warnings.append(
            f"masquerade_map networks {inner} and {outer} overlap: clients in {inner} get "
            f"{config.masquerade_map[str(inner)]} (the longest prefix wins); remove one if "
            "that is not what you meant"
        )
    public_names = [name for name in config.host_names if _looks_public(name)]
    if public_names and masquerade is None and is_ip_literal(host):
        bound = ipaddress.ip_address(host)
        if bound.is_private and not bound.is_loopback and bound.version == 4:
            report.warnings.append(
                f"the server listens on the private address {host} but is known as "
                f"{public_names[0]} (host_names): if clients reach it through NAT, PASV "
                f"tells them {host}, which they cannot reach; set masquerade_address = "
                f'"{public_names[0]}" (EPSV clients are not affected)'
            )
    masquerading = masquerade is not None or tls_masquerade is not None
    if masquerading and is_ip_literal(host) and ipaddress.ip_address(host).is_loopback:
        report.warnings.append(
            f"the server listens on {host} only, so every client is local and is told the "
            "local address: masquerade_address has no effect; set listen_address to an "
            "address remote clients reach, or leave it out"
        )
    elif _ipv6_only(host) and (unused := _masquerade_keys(config)):
        have = "has" if len(unused) == 1 else "have"
        report.warnings.append(
            f"the server listens on the IPv6 address {host} only, where clients use EPSV "
            "(PASV cannot describe an IPv6 address and is refused), so nothing is "
            f"masqueraded: {' and '.join(unused)} {have} no effect; listen on an IPv4 address "
            'too (listen_address = "::" is both) if IPv4 clients behind NAT need it, or '
            "leave it out"
        )


def _ipv6_only(host: str) -> bool:
    """Whether a server listening on ``host`` has IPv6 clients only: PASV never answers.

    "::" is dual-stack (IPv4 clients come mapped), and loopback has a warning of its own.
    """
    if not is_ip_literal(host):
        return False
    address = ipaddress.ip_address(host)
    return address.version == 6 and not address.is_unspecified and not address.is_loopback


def _masquerade_keys(config: ServerConfig) -> list[str]:
    """The masquerade settings that are set."""
    keys = ("masquerade_address", "tls_masquerade_address", "masquerade_map")
    return [key for key in keys if getattr(config, key)]


def _active(config: ServerConfig, port: int, report: SetupReport) -> None:
    source = config.active_source_port
    if source == "auto":
        fixed = active_source_port(source, port)
        text = f"auto ({fixed} when permitted, else ephemeral)"
    elif source == "ephemeral":
        text, fixed = "ephemeral", None
    else:
        text, fixed = str(source), source
    safety = (
        "foreign addresses allowed (unsafe)"
        if config.allow_foreign_addresses
        else "connects only back to the client"
    )
    _line(report, "active", f"source port {text}; {safety}")
    if config.allow_foreign_addresses:
        report.warnings.append(
            "allow_foreign_addresses = true: PORT/EPRT may name any address (FXP), so any "
            "logged-in user can make this server connect to and send files to third hosts "
            "(the FTP bounce attack, RFC 2577); set it to false unless you need "
            "server-to-server transfers between servers you trust"
        )
    if fixed is not None and fixed in config.passive_ports:
        report.warnings.append(
            f"the active source port {fixed} lies inside passive_ports {config.passive_ports}, "
            "so active transfers and passive listeners compete for it; move the range or "
            "set active_source_port"
        )


def _configured_addresses(config: ServerConfig) -> list[str]:
    values = [config.masquerade_address, config.tls_masquerade_address]
    return [value for value in values if value is not None] + list(config.masquerade_map.values())


def _overlaps(
    networks: Sequence[ipaddress.IPv4Network],
) -> list[tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]]:
    """(more specific, containing) pairs among ``networks``."""
    return [
        (inner, outer)
        for inner in networks
        for outer in networks
        if inner != outer and inner.subnet_of(outer)
    ]


def _looks_public(name: str) -> bool:
    """A name or address outsiders may use: not an IP literal that is private, not local."""
    if is_ip_literal(name):
        return ipaddress.ip_address(name).is_global
    return "." in name and not name.lower().endswith((".local", ".localdomain", ".lan"))
