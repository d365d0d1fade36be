"""FTP over TLS (RFC 4217, on RFC 2228's security commands), with no I/O.

Rules of this module:

* It decides what AUTH, PBSZ, PROT and CCC answer, and whether the
  ``tls_required`` policy lets a login, a PROT C or a transfer go ahead. It never
  touches a socket: the server upgrades connections, this says when.
* Every refusal says what went wrong and what the client should send.

Theory of operation. A control connection starts in the clear (explicit
FTPS) or already under TLS (implicit FTPS, ``ftps://``)::

    clear --AUTH TLS--> TLS control --PBSZ 0--> buffer size set --PROT P--> data protected

AUTH resets the login (RFC 4217 §4: USER must follow). PBSZ must come after
AUTH and before PROT (RFC 4217 §8-9). PROT C / P choose clear or protected
data connections; S and E (RFC 2228's safe and confidential levels) have no
meaning for TLS and are refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from ketch.protocol.session_state import TRANSFER_COMMANDS

__all__ = [
    "AuthMechanism",
    "Reply",
    "TlsPolicy",
    "TlsState",
    "auth_reply",
    "command_refusal",
    "login_refusal",
    "parse_auth",
    "pbsz_reply",
    "prot_refusal",
    "prot_reply",
    "transfer_refusal",
]

#: ``tls_required`` in the configuration: who must use TLS.
TlsPolicy = Literal["off", "control", "all"]

Reply = tuple[int, str]


class AuthMechanism(enum.Enum):
    """What ``AUTH <mechanism>`` asked for, and the data protection it implies."""

    TLS = "TLS"
    #: The draft before RFC 4217 (and vsftpd, pure-ftpd) used ``AUTH SSL`` and
    #: ``AUTH TLS-P`` for "protect the data connections too", ``TLS-C`` for "control only".
    TLS_C = "TLS-C"
    SSL = "SSL"
    TLS_P = "TLS-P"

    @property
    def implied_protection(self) -> str:
        return "P" if self in (AuthMechanism.SSL, AuthMechanism.TLS_P) else "C"


@dataclass(slots=True)  # one per session: no __dict__ each
class TlsState:
    """The security facts of one control connection, beside its login state."""

    #: The control connection runs over TLS (after AUTH, or implicit FTPS from the start).
    control: bool = False
    #: PBSZ was accepted (RFC 4217 §8: required before PROT).
    buffer_size_set: bool = False
    #: "C" (clear) or "P" (private): how the next data connections are made.
    protection: str = "C"
    #: What AUTH secured the control connection with; None in the clear, or on the
    #: implicit port (where TLS came with the connection).
    mechanism: AuthMechanism | None = None

    @classmethod
    def implicit(cls) -> TlsState:
        """Implicit FTPS: TLS from the first byte, and data protected as ``ftps://`` clients expect.

        curl and lftp send PBSZ 0 and PROT P anyway; assuming them covers clients that do not.
        """
        return cls(control=True, buffer_size_set=True, protection="P")

    def secured(self, mechanism: AuthMechanism) -> None:
        """The control connection is now under TLS after ``AUTH``."""
        self.control = True
        self.buffer_size_set = False
        self.protection = mechanism.implied_protection
        self.mechanism = mechanism

    def reinitialize(self) -> None:
        """REIN: PBSZ and PROT as they were once the control connection was secured.

        RFC 959 resets "all parameters ... to the default settings": PROT to RFC 2228's
        Clear (or what the AUTH mechanism implied), and PBSZ, which has no default, to
        unset. On the implicit port that is PBSZ 0 and PROT P, as at the start. The
        control connection's TLS stays: taking it down is CCC's (RFC 4217 §5), and
        this server refuses CCC.
        """
        if self.mechanism is not None:
            self.secured(self.mechanism)
        elif self.control:
            self.buffer_size_set, self.protection = True, "P"


def parse_auth(argument: str) -> AuthMechanism | None:
    """The mechanism ``AUTH`` names (case-insensitive), or None for one we do not offer."""
    try:
        return AuthMechanism(argument.strip().upper())
    except ValueError:
        return None


def auth_reply(
    state: TlsState, argument: str, *, configured: bool
) -> tuple[Reply, AuthMechanism | None]:
    """The reply to AUTH and, when it is 234, the mechanism to start TLS with."""
    if not configured:
        return (
            502,
            "TLS is not configured on this server; connect without TLS, "
            "or ask the admin to set tls_certificate and tls_key.",
        ), None
    if state.control:
        return (503, "The control connection already runs over TLS; send USER to log in."), None
    mechanism = parse_auth(argument)
    if mechanism is None:
        shown = argument.strip()[:20]
        return (504, f"AUTH {shown!r} is not supported; send AUTH TLS."), None
    return (234, f"AUTH {mechanism.value} accepted: start the TLS handshake."), mechanism


def pbsz_reply(state: TlsState, argument: str) -> Reply:
    """RFC 4217 §8: TLS has no buffer size, so any PBSZ is answered ``PBSZ=0``."""
    if not state.control:
        return 503, "PBSZ needs a TLS control connection: send AUTH TLS first."
    text = argument.strip()
    if not (text.isascii() and text.isdigit()):
        return 501, "PBSZ needs a whole number: send PBSZ 0."
    state.buffer_size_set = True
    if int(text) != 0:
        return 200, "PBSZ=0"  # RFC 4217 §8: the server tells the client the size it uses
    return 200, "PBSZ 0 accepted."


def prot_reply(state: TlsState, argument: str) -> Reply:
    """RFC 4217 §9 / RFC 2228: PROT C or P; S and E mean nothing under TLS."""
    if not state.control:
        return 503, "PROT needs a TLS control connection: send AUTH TLS, then PBSZ 0, then PROT P."
    level = argument.strip().upper()
    # RFC 4217 §9 wants PBSZ before any PROT; practice: Python's ftplib sends PROT C
    # alone (prot_c), and clearing protection needs nothing negotiated, so only P insists.
    if level != "C" and not state.buffer_size_set:
        return 503, "Send PBSZ 0 before PROT (RFC 4217)."
    if level == "C":
        state.protection = "C"
        return 200, "PROT C accepted: data connections are not encrypted."
    if level == "P":
        state.protection = "P"
        return 200, "PROT P accepted: data connections are encrypted with TLS."
    if level in ("S", "E"):
        return 536, f"PROT {level} is not supported with TLS; send PROT P (or PROT C)."
    return 504, f"Unknown protection level {argument.strip()[:10]!r}; send PROT P or PROT C."


def login_refusal(policy: TlsPolicy, state: TlsState) -> str | None:
    """Why USER/PASS may not be sent yet under ``tls_required``, or None."""
    if policy == "off" or state.control:
        return None
    return "This server requires TLS: send AUTH TLS before USER (use ftps:// or --ftps)."


def transfer_refusal(policy: TlsPolicy, state: TlsState) -> str | None:
    """RFC 4217 §9: the 521 text for a clear data connection under ``tls_required = "all"``."""
    if policy != "all" or state.protection == "P":
        return None
    return (
        "This server requires encrypted data connections: send PBSZ 0 and PROT P "
        "before transferring (curl --ssl-reqd, lftp ftp:ssl-protect-data)."
    )


def prot_refusal(policy: TlsPolicy, state: TlsState, argument: str) -> str | None:
    """The 534 text for ``PROT C`` under ``tls_required = "all"``, or None.

    RFC 2228 (PROT): a level the server "is not willing to accept" gets 534 (536 is for
    one the mechanism cannot give, as S and E under TLS). Without TLS on the control
    connection PROT gets its 503 instead, which says to send AUTH TLS first.
    """
    if policy != "all" or not state.control or argument.strip().upper() != "C":
        return None
    return (
        "PROT C refused: this server requires encrypted data connections; "
        "send PROT P (after PBSZ 0)."
    )


def command_refusal(
    policy: TlsPolicy, state: TlsState, verb: str, argument: str = ""
) -> Reply | None:
    """The reply that refuses ``verb`` under ``tls_required``, or None to go ahead."""
    if verb in ("USER", "PASS") and (text := login_refusal(policy, state)):
        return 530, text
    if verb == "PROT" and (text := prot_refusal(policy, state, argument)):
        return 534, text
    if verb in TRANSFER_COMMANDS and (text := transfer_refusal(policy, state)):
        return 521, text
    return None
