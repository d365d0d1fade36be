"""What ``ketch doctor`` observes of a server, and the names of its judgements: plain data.

doctor_probe.py fills these in over the network; doctor.py and
doctor_advice.py turn them into a diagnosis.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from ketch.client.errors import FtpError
from ketch.protocol.addresses import (
    AddressSyntaxError,
    HostPort,
    parse_epsv_reply,
    parse_pasv_reply,
    plain_ip,
)

__all__ = [
    "ACTIVE_MODES",
    "MODES",
    "PASSIVE_MODES",
    "SETUP_SUCCESS",
    "Attempt",
    "ModeName",
    "ModeResult",
    "Observations",
    "Problem",
    "ServerFacts",
    "Step",
    "is_global",
    "reply_code",
    "verb_of",
]

ModeName = Literal["EPSV", "PASV", "PASV-fixup", "EPRT", "PORT"]
Problem = Literal[
    "timeout",
    "private-address",
    "rewritten",
    "outside-range",
    "refused",
    "refused-by-server",
    "busy",
    "unreachable",
    "server-setup",
    "error",
    "not-applicable",  # not tried: PASV and PORT cannot describe an IPv6 address
]
PASSIVE_MODES: tuple[ModeName, ...] = ("EPSV", "PASV", "PASV-fixup")
ACTIVE_MODES: tuple[ModeName, ...] = ("EPRT", "PORT")
MODES: tuple[ModeName, ...] = PASSIVE_MODES + ACTIVE_MODES

SETUP_SUCCESS = {"EPSV": 229, "PASV": 227, "PASV-fixup": 227, "EPRT": 200, "PORT": 200}


@dataclass(frozen=True)
class Step:
    """One step before the data connections (resolve, connect, login, natinfo), for people."""

    name: str
    ok: bool
    text: str


@dataclass(frozen=True)
class Attempt:
    """What the client saw of one mode's try, and what the server says it saw."""

    mode: ModeName
    sent: str | None = None  # the EPSV/PASV/EPRT/PORT line, as sent
    reply: str | None = None  # its reply as received: "227 Entering Passive Mode (...)."
    connected_to: str | None = None  # host:port of the data connection (made or tried)
    failure: str | None = None  # None when the listing came through; else what went wrong
    cause: str = ""  # "timeout", "refused" or "unreachable" when the TCP connect failed so
    transfer_reply: str | None = None  # the error reply to LIST, when it got one
    listed_bytes: int = 0
    server_saw: str | None = None  # NATINFO's last-passive-reply / last-active-command after it
    skipped: str = ""  # why the mode was not tried at all (PASV and PORT over IPv6)

    @property
    def advertised(self) -> HostPort | None:
        """The address and port a passive reply announced (EPSV: no address, ``host`` "")."""
        reply = self.reply
        if reply is None or self.mode in ACTIVE_MODES:
            return None
        try:
            if reply_code(reply) == 229:
                return HostPort("", parse_epsv_reply(reply[4:]))
            if reply_code(reply) == 227:
                return parse_pasv_reply(reply[4:])
        except AddressSyntaxError:
            return None
        return None


@dataclass(frozen=True)
class ServerFacts:
    """What ``SITE NATINFO`` told (C2); None where the server said ``none``."""

    client_address: str | None = None
    server_address: str | None = None
    passive_ports: tuple[int, int] | None = None
    masquerade_address: str | None = None
    active_source_port: str | None = None

    @classmethod
    def from_natinfo(cls, facts: dict[str, str | None]) -> ServerFacts:
        return cls(
            client_address=facts.get("client-address"),
            server_address=facts.get("server-address"),
            passive_ports=_port_range(facts.get("passive-ports")),
            masquerade_address=facts.get("masquerade-address"),
            active_source_port=facts.get("active-source-port"),
        )


@dataclass(frozen=True)
class Observations:
    """Everything the probe learnt, before any judgement."""

    url: str  # without credentials
    host: str  # as the URL names it
    server_ip: str | None  # the control connection's far end; None if never connected
    server_port: int
    client_address: str | None  # the control connection's local address
    natinfo: ServerFacts | None = None
    natinfo_reply: str = ""  # the reply to SITE NATINFO when it gave no facts
    attempts: tuple[Attempt, ...] = ()
    fatal: FtpError | None = None  # resolving, connecting or logging in failed
    fatal_step: Literal["", "resolve", "connect", "login"] = ""
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class ModeResult:
    """One mode judged: the ``modes`` entries of the --json output."""

    works: bool
    problem: Problem | None
    detail: str

    @property
    def applies(self) -> bool:
        """False for a mode that was not tried (and so neither works nor fails)."""
        return self.problem != "not-applicable"


def reply_code(reply: str | None) -> int | None:
    if reply is None or len(reply) < 3 or not reply[:3].isdigit():
        return None
    return int(reply[:3])


def _port_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, dash, high = text.partition("-")
    if not (low.strip().isdigit() and (not dash or high.strip().isdigit())):
        return None
    first = int(low)
    return first, int(high) if dash else first


def is_global(address: str) -> bool:
    """Whether ``address`` is reachable across the internet (ipaddress's ``is_global``)."""
    try:
        return ipaddress.ip_address(plain_ip(address)).is_global
    except ValueError:
        return False


def verb_of(mode: ModeName) -> str:
    """The command a mode sends: PASV-fixup is PASV, connecting elsewhere."""
    return "PASV" if mode == "PASV-fixup" else mode
