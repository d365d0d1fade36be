"""AUTH, PBSZ, PROT, CCC: FTP over TLS (RFC 4217 on RFC 2228).

What each answers is decided in :mod:`ketch.protocol.security`; this module
does the I/O: the TLS handshake on the control connection after ``234``.
"""

from __future__ import annotations

import logging
import ssl

from ketch.protocol.extension_state import ExtensionState
from ketch.protocol.security import auth_reply, pbsz_reply, prot_reply
from ketch.server.command_table import Argument, FeatureLine, command
from ketch.server.session import Session

log = logging.getLogger("ketch.server")


def _with_tls(line: str) -> FeatureLine:
    """A FEAT line shown only when this server has a certificate (RFC 4217 §6)."""

    def feature(session: Session) -> str | None:
        return line if session.context.tls is not None else None

    return feature


@command(
    "AUTH",
    argument=Argument.REQUIRED,
    needs_login=False,
    feature=_with_tls("AUTH TLS"),
    help="AUTH TLS: encrypt the control connection (then USER, PASS, PBSZ 0, PROT P)",
)
async def authenticate(session: Session, argument: str) -> None:
    tls = session.context.tls
    (code, text), mechanism = auth_reply(session.tls, argument, configured=tls is not None)
    await session.reply(code, text)
    if mechanism is None or tls is None:
        return
    # RFC 4217 §4: a login made before AUTH does not carry over; USER must follow.
    session.log_out()
    session.replace_offer(None)
    session.state.reset()
    # Nor do choices made in the clear, where anyone on the path could have injected
    # them (a RANG would make a later HASH cover one byte). HOST stays: RFC 7151 §3.1
    # has it sent before AUTH, so the right certificate can be chosen.
    session.extensions = ExtensionState(host_name=session.extensions.host_name)
    try:
        await session.start_tls(tls.context)
    except (ssl.SSLError, OSError, ConnectionError) as error:
        session.context.counters["tls_handshake_failed"] += 1
        log.info(
            "TLS handshake on the control connection failed client=%s: %s", session.peer_ip, error
        )
        session.closing = True
        return
    session.tls.secured(mechanism)
    session.context.counters["tls_control"] += 1
    log.debug(
        "control connection secured client=%s version=%s",
        session.peer_ip,
        session.stream.get_extra_info("ssl_object").version(),
    )


@command(
    "PBSZ",
    argument=Argument.REQUIRED,
    needs_login=False,
    feature=_with_tls("PBSZ"),
    help="PBSZ 0: required by RFC 4217 before PROT",
)
async def protection_buffer_size(session: Session, argument: str) -> None:
    await session.reply(*pbsz_reply(session.tls, argument))


@command(
    "PROT",
    argument=Argument.REQUIRED,
    needs_login=False,
    feature=_with_tls("PROT"),
    help="PROT P|C: encrypt data connections (P) or not (C)",
)
async def data_protection(session: Session, argument: str) -> None:
    await session.reply(*prot_reply(session.tls, argument))


@command("CCC", argument=Argument.NONE, needs_login=False, help="CCC: not supported")
async def clear_command_channel(session: Session, _: str) -> None:
    if not session.tls.control:
        await session.reply(533, "CCC needs a TLS control connection, and this one is clear.")
        return
    # Clearing the control channel would expose every later command (and make the
    # connection hijackable); its only use, NAT helpers reading PORT, has better answers.
    await session.reply(
        534,
        "CCC refused: this server keeps the control connection encrypted; "
        "use passive mode (EPSV/PASV) if a firewall needs to see data ports.",
    )
