"""PORT, EPRT, PASV, EPSV: preparing the next data connection (RFC 959, RFC 2428, RFC 2577)."""

from __future__ import annotations

import ipaddress
import logging
import os

from ketch.protocol.addresses import (
    AddressSyntaxError,
    HostPort,
    UnsupportedFamilyError,
    active_source_port,
    format_epsv_reply,
    format_pasv_reply,
    parse_eprt_argument,
    parse_epsv_argument,
    parse_port_argument,
    plain_ip,
)
from ketch.server import port20_helper
from ketch.server.command_table import Argument, command
from ketch.server.data_offers import ActiveOffer, PassiveOffer
from ketch.server.passive_ports import PassiveListenerFailed, PassivePortsExhausted
from ketch.server.session import Session

log = logging.getLogger("ketch.server")


# -- active -----------------------------------------------------------------


@command(
    "PORT",
    argument=Argument.REQUIRED,
    help="PORT h1,h2,h3,h4,p1,p2: the server connects to you (active mode)",
)
async def port(session: Session, argument: str) -> None:
    session.last_active_command = session.command_line
    if session.peer_family == 2:
        await session.reply(522, "PORT cannot describe an IPv6 address: use EPRT (or EPSV).")
        return
    try:
        target = parse_port_argument(argument)
    except AddressSyntaxError as error:
        await session.reply(501, f"Bad PORT argument: {error}.")
        return
    await _prepare_active(session, "PORT", target)


@command(
    "EPRT",
    argument=Argument.REQUIRED,
    feature="EPRT",
    help="EPRT |family|address|port|: the server connects to you (active mode, IPv4 or IPv6)",
)
async def extended_port(session: Session, argument: str) -> None:
    session.last_active_command = session.command_line
    # RFC 2428 §2: 522 names the protocols the server can use, here only the control
    # connection's: data connections are made from its local address.
    unsupported = f"Network protocol not supported, use ({session.peer_family})"
    try:
        target = parse_eprt_argument(argument)
    except UnsupportedFamilyError:
        await session.reply(522, unsupported)
        return
    except AddressSyntaxError as error:
        await session.reply(501, f"Bad EPRT argument: {error}.")
        return
    if (2 if ":" in target.host else 1) != session.peer_family:
        await session.reply(522, unsupported)
        return
    await _prepare_active(session, "EPRT", target)


async def _prepare_active(session: Session, verb: str, target: HostPort) -> None:
    if not session.state.data_setup_allowed(verb):
        await session.reply(501, f"{verb} is refused after EPSV ALL: use EPSV.")
        return
    if refused := _active_refusal(session, verb, target):
        code, refusal = refused
        session.context.counters["active_refused"] += 1
        log.warning(
            "refused %s to %s port %d from client=%s: %s",
            verb,
            target.host,
            target.port,
            session.peer_ip,
            refusal,
        )
        await session.reply(code, refusal)
        return
    source_port, required = _active_source(session)
    session.replace_offer(
        ActiveOffer(
            target,
            local_ip=session.local_ip,
            source_port=source_port,
            source_port_required=required,
            mode=verb,
            timeout=session.config.data_connect_timeout,
        )
    )
    await session.reply(
        200, f"{verb} accepted: the server will connect to {target.host} port {target.port}."
    )


def _active_source(session: Session) -> tuple[int | None, bool]:
    """The source port for active connections (None: ephemeral), and whether it is required."""
    setting = session.config.active_source_port
    return active_source_port(setting, session.local_port), setting not in ("auto", "ephemeral")


def effective_source_port(session: Session) -> str:
    """The source port active connections will come from: a number, or "ephemeral".

    "auto" falls back to an ephemeral port when the server may not bind L-1
    (below 1024, not root, and no port-20 helper serving it).
    """
    port, required = _active_source(session)
    if port is None:
        return "ephemeral"
    helper = port20_helper.installed()
    may_bind = port >= 1024 or os.geteuid() == 0 or (helper is not None and helper.serves(port))
    return str(port) if may_bind or required else "ephemeral"


def _active_refusal(session: Session, verb: str, target: HostPort) -> tuple[int, str] | None:
    """RFC 2577 bounce protection: only the client's own address, only unprivileged ports.

    The reply code and text of a refusal: 504 for a privileged port, as RFC 2577 §3
    suggests; 501 for an address (clients read it as "use passive mode").
    """
    target_ip = plain_ip(target.host)
    foreign = target_ip != session.peer_ip
    # The unspecified address is never allowed: Linux connects it to the server's own host.
    if foreign and (not session.config.allow_foreign_addresses or _is_unspecified(target_ip)):
        return 501, _why_not_there(session, verb, target.host)
    if target.port < 1024:
        return 504, (
            f"Refusing to connect to port {target.port}: ports below 1024 are privileged "
            "(RFC 2577); listen on a port of 1024 or more, or use passive mode"
        )
    return None


def _why_not_there(session: Session, verb: str, host: str) -> str:
    """The refusal text for an active-mode address other than the client's own."""
    address = _address_or_none(host)
    if _is_unspecified(host):
        return (
            f"{verb} names {host}, the unspecified address, which is no host to connect to: "
            f"send your own address ({session.peer_ip}), or use passive mode (PASV/EPSV)"
        )
    if address is not None and address.version == 6 and ":" in session.peer_ip:
        # NAT66 is rare: an IPv6 host has several addresses (temporary ones for privacy,
        # unique local, link-local), and the client named another than it connects from.
        return (
            f"{verb} names {host}, but your connection comes from {session.peer_ip}: your "
            "host has several IPv6 addresses and the server connects back only to the one "
            f"you connect from. Name {session.peer_ip}, or use passive mode (EPSV)"
        )
    # Not is_private: it misses 100.64.0.0/10 (RFC 6598, carrier-grade NAT) on Python 3.11.
    if address is not None and not address.is_global and not address.is_loopback:
        # Shared contract C4: the client names the address it has behind a NAT,
        # and the server sees the NAT's. The real cause deserves the message.
        return (
            f"{verb} names {host}, but your connection comes from "
            f"{session.peer_ip}: you appear to be behind NAT, so the server cannot "
            "connect to you. Use passive mode (PASV/EPSV)"
        )
    return (
        f"Refusing to connect to {host}: active mode may only connect back to your "
        f"own address ({session.peer_ip}); use passive mode (PASV/EPSV)"
    )


def _is_unspecified(host: str) -> bool:
    address = _address_or_none(host)
    return address is not None and address.is_unspecified


def _address_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(plain_ip(host))
    except ValueError:
        return None


# -- passive ----------------------------------------------------------------


@command(
    "PASV", argument=Argument.NONE, help="PASV: the server listens and you connect (passive mode)"
)
async def passive(session: Session, _: str) -> None:
    if not session.state.data_setup_allowed("PASV"):
        await _passive_reply(session, 501, "PASV is refused after EPSV ALL: use EPSV.")
        return
    if session.peer_family == 2:
        # Permanent (as PORT's 522), not 425: trying again later cannot help.
        await _passive_reply(session, 522, "PASV cannot describe an IPv6 address: use EPSV.")
        return
    offer = await _open_passive(
        session, "PASV", advertised=await _advertised_address(session), masquerade=True
    )
    if offer is not None:
        reply = format_pasv_reply(HostPort(offer.advertised, offer.port))
        await _passive_reply(session, 227, reply)


@command(
    "EPSV",
    feature="EPSV",
    help="EPSV [1|2|ALL]: passive mode for IPv4 and IPv6; ALL refuses other data commands",
)
async def extended_passive(session: Session, argument: str) -> None:
    # RFC 2428 §3: the wrong family gets 522 naming the one this connection uses.
    unsupported = f"Network protocol not supported, use ({session.peer_family})"
    try:
        family = parse_epsv_argument(argument)
    except UnsupportedFamilyError:
        await _passive_reply(session, 522, unsupported)
        return
    except AddressSyntaxError as error:
        await _passive_reply(session, 501, f"Bad EPSV argument: {error}.")
        return
    if family == "ALL":
        session.state.epsv_all = True
        await _passive_reply(
            session, 200, "EPSV ALL accepted: from now on only EPSV sets up data connections."
        )
        return
    if family is not None and family != session.peer_family:
        await _passive_reply(session, 522, unsupported)
        return
    # EPSV carries no address; the listener's own address is what the log names.
    offer = await _open_passive(session, "EPSV", advertised=session.local_ip)
    if offer is not None:
        await _passive_reply(session, 229, format_epsv_reply(offer.port))


async def _passive_reply(session: Session, code: int, text: str) -> None:
    """Reply to PASV/EPSV, remembering the line for SITE NATINFO (shared contract C2)."""
    session.last_passive_reply = f"{code} {text}"
    await session.reply(code, text)


async def _open_passive(
    session: Session, verb: str, *, advertised: str, masquerade: bool = False
) -> PassiveOffer | None:
    """A passive offer (``masquerade``: PASV's, whose address masquerading chose)."""
    session.replace_offer(None)  # free our previous port before taking another
    pool = session.context.passive_ports
    counters = session.context.counters

    def expired() -> None:
        counters["passive_expired"] += 1  # SITE NATINFO's passive-expired

    try:
        offer = PassiveOffer(
            pool,
            session.local_ip,
            client_ip=session.peer_ip,
            mode=verb,
            timeout=session.config.data_connect_timeout,
            advertised=advertised,
            on_expiry=expired,
            masquerade=session.context.masquerade if masquerade else None,
            tls=session.control_is_tls,
        )
    except PassivePortsExhausted as error:
        counters["passive_exhausted"] += 1
        log.warning("passive port range exhausted: %s (client=%s)", error, session.peer_ip)
        await _passive_reply(session, 425, f"Cannot open passive connection: {error}.")
        return None
    except PassiveListenerFailed as error:
        log.warning("%s failed: %s (client=%s)", verb, error.__cause__, session.peer_ip)
        await _passive_reply(session, 425, f"Cannot open passive connection: {error}.")
        return None
    session.data_offer = offer
    return offer


async def _advertised_address(session: Session) -> str:
    """The address a PASV reply names (masquerade_map, masquerade_address, or the local one)."""
    context = session.context
    advertised = await context.masquerade.advertised(
        session.peer_ip, session.local_ip, tls=session.control_is_tls
    )
    if warning := context.private_advertisements.check(advertised, session.peer_ip):
        log.warning("%s", warning)
    return advertised
