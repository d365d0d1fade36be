"""``ketch doctor``'s judgement: which data-connection modes work, why the others fail.

The probe (doctor_probe.py) tries each mode once and records what it saw;
everything here is a pure function of those observations, so every verdict
can be tested without a network. The order of reasoning:

1. Each attempt gets a ``problem``: the server refused the set-up command
   (5xx), a middlebox rewrote the exchange, PASV advertised a private address,
   the port lies outside the server's announced range, or the TCP connection
   timed out, was refused or had no route. The first that applies wins: it
   is the one closest to the cause.
2. ``SITE NATINFO`` (ketch's servers only) tells the address the server sees
   and the exact PASV reply and PORT line it sent and received; a difference
   from what the client got or sent means something in between rewrote it.
3. The verdict says in plain words what works, what does not and why; the
   fixes are split between the client's user and the server's admin
   (doctor_advice.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ketch.protocol.addresses import (
    AddressSyntaxError,
    format_host_port,
    parse_eprt_argument,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_port_argument,
    plain_ip,
)
from ketch.tools.doctor_advice import Advice, advise, advise_after_failure
from ketch.tools.doctor_facts import (
    ACTIVE_MODES,
    MODES,
    PASSIVE_MODES,
    SETUP_SUCCESS,
    Attempt,
    ModeName,
    ModeResult,
    Observations,
    Problem,
    ServerFacts,
    is_global,
    reply_code,
    verb_of,
)

__all__ = [
    "ACTIVE_MODES",
    "MODES",
    "PASSIVE_MODES",
    "Attempt",
    "Diagnosis",
    "ModeName",
    "ModeResult",
    "Observations",
    "Problem",
    "ServerFacts",
    "diagnose",
    "judge",
    "rewrite_of",
]

_TCP_CAUSES: dict[str, Problem] = {
    "timeout": "timeout",
    "refused": "refused",
    "unreachable": "unreachable",
}


@dataclass(frozen=True)
class Diagnosis:
    """What ketch doctor concludes; ``as_json`` is its --json output."""

    observations: Observations
    modes: dict[ModeName, ModeResult]
    rewrites: list[str]
    behind_nat: bool | None
    verdict: str
    client_fixes: list[str] = field(default_factory=list)
    server_fixes: list[str] = field(default_factory=list)

    @property
    def server(self) -> str | None:
        ip = self.observations.server_ip
        return None if ip is None else format_host_port(ip, self.observations.server_port)

    @property
    def any_works(self) -> bool:
        return any(result.works for result in self.modes.values())

    def as_json(self) -> dict[str, object]:
        """The one JSON object of ``ketch doctor --json`` (contract C6)."""
        facts = self.observations.natinfo
        return {
            "url": self.observations.url,
            "server": self.server,
            "client_address": self.observations.client_address,
            "server_sees": facts.client_address if facts else None,
            "behind_nat": self.behind_nat,
            "modes": {
                name: {"works": r.works, "problem": r.problem, "detail": r.detail}
                for name, r in self.modes.items()
            },
            "rewrites": list(self.rewrites),
            "verdict": self.verdict,
            "fixes": {"client": list(self.client_fixes), "server": list(self.server_fixes)},
        }


# -- one attempt -----------------------------------------------------------------------


def judge(attempt: Attempt, observations: Observations) -> ModeResult:
    """Whether the mode works, and if not the problem closest to the cause."""
    facts = observations.natinfo
    if attempt.skipped:
        # Not "error": nothing failed, and the verdict does not count it as a failure.
        return ModeResult(False, "not-applicable", attempt.skipped)
    if attempt.failure is None:
        detail = (
            f"{attempt.reply}; data via {attempt.connected_to}; "
            f"LIST gave {attempt.listed_bytes} bytes"
        )
        return ModeResult(True, None, detail)
    problem = _problem(attempt, observations.server_ip or "", facts)
    return ModeResult(False, problem, _failure_detail(attempt, problem, facts))


def _problem(attempt: Attempt, server_ip: str, facts: ServerFacts | None) -> Problem:
    code = reply_code(attempt.reply)
    if code is None:
        return "error"
    if code >= 500:
        return "refused-by-server"
    if attempt.mode in PASSIVE_MODES and 400 <= code < 500 and code != 421:
        return "busy"  # 425 "all passive ports are busy": a passing state of the server
    if code != SETUP_SUCCESS[attempt.mode]:
        return "error"
    transfer_code = reply_code(attempt.transfer_reply)
    if transfer_code is not None and transfer_code != 425:
        return "error"  # the data connection was not the problem: LIST itself was refused
    if rewrite_of(attempt) is not None:
        return "rewritten"
    advertised = attempt.advertised
    if (
        attempt.mode == "PASV"
        and advertised is not None
        and _private_elsewhere(advertised.host, server_ip)
    ):
        return "private-address"
    if advertised is not None and _outside(advertised.port, facts):
        return "outside-range"
    if attempt.cause in _TCP_CAUSES:
        return _TCP_CAUSES[attempt.cause]
    if attempt.mode in ACTIVE_MODES and transfer_code == 425:
        return _active_425_cause(attempt.transfer_reply or "")
    return "error"


def _active_425_cause(reply: str) -> Problem:
    """Why the server could not connect back, from its 425 text (wordings differ)."""
    text = reply.lower()
    if "source port" in text or "active_source_port" in text:
        return "server-setup"  # ketch: its own source port could not be bound
    if "refused" in text:
        return "refused"
    if "no answer" in text or "timed out" in text or "timeout" in text:
        return "timeout"
    return "unreachable"


def _failure_detail(attempt: Attempt, problem: Problem, facts: ServerFacts | None) -> str:
    advertised = attempt.advertised
    where = attempt.connected_to
    if where is None and advertised is not None:
        where = format_host_port(advertised.host, advertised.port)
    if problem == "refused-by-server":
        return f"the server refused {attempt.sent}: {attempt.reply}"
    if problem == "busy":
        return f"the server could not set up {attempt.sent} just now: {attempt.reply}"
    if problem == "rewritten":
        return f"{rewrite_of(attempt)}; then: {attempt.failure}"
    if problem == "private-address" and advertised is not None:
        return (
            f"{attempt.reply} advertises {advertised.host}, a private address other than the "
            f"server's; connecting to {where}: {attempt.failure}"
        )
    if problem == "outside-range" and advertised is not None and facts is not None:
        low, high = facts.passive_ports or (0, 0)
        return (
            f"{attempt.reply} advertises port {advertised.port}, outside the server's "
            f"passive ports {low}-{high}; {attempt.failure}"
        )
    return f"{attempt.reply or attempt.sent or attempt.mode}; {attempt.failure}"


def rewrite_of(attempt: Attempt) -> str | None:
    """How the set-up exchange was changed in transit, or None when it arrived as sent.

    Compared only when the set-up succeeded: after a refusal the server's
    record may still be the previous attempt's.
    """
    seen, reply, sent = attempt.server_saw, attempt.reply, attempt.sent
    if seen is None or reply is None or sent is None:
        return None
    if reply_code(reply) != SETUP_SUCCESS[attempt.mode]:
        return None
    if attempt.mode in ACTIVE_MODES:
        if seen.split(" ", 1)[0].upper() != sent.split(" ", 1)[0].upper():
            return None
        if _same_active(sent, seen):
            return None
        return (
            f"{attempt.mode} was rewritten between client and server: sent {sent!r}, "
            f"server received {seen!r}"
        )
    if reply_code(seen) != reply_code(reply) or _same_passive(reply, seen):
        return None
    return (
        f"the {verb_of(attempt.mode)} reply was rewritten between server and client: server sent "
        f"{seen!r}, client received {reply!r}"
    )


def _same_active(sent: str, seen: str) -> bool:
    verb, _, argument = sent.partition(" ")
    parse = parse_eprt_argument if verb.upper() == "EPRT" else parse_port_argument
    try:
        return parse(argument.strip()) == parse(seen.partition(" ")[2].strip())
    except AddressSyntaxError:
        return " ".join(sent.split()) == " ".join(seen.split())


def _same_passive(reply: str, seen: str) -> bool:
    try:
        if reply_code(reply) == 229:
            return parse_epsv_reply(reply[4:]) == parse_epsv_reply(seen[4:])
        return parse_pasv_reply(reply[4:]) == parse_pasv_reply(seen[4:])
    except AddressSyntaxError:
        return " ".join(reply.split()) == " ".join(seen.split())


def _private_elsewhere(advertised: str, server_ip: str) -> bool:
    """A PASV address that is not global and not the server's own cannot be reached from here.

    (If the server's address is global, a non-global advertised one differs from it.)
    """
    return plain_ip(advertised) != plain_ip(server_ip) and not is_global(advertised)


def _outside(port: int, facts: ServerFacts | None) -> bool:
    if facts is None or facts.passive_ports is None:
        return False
    low, high = facts.passive_ports
    return not low <= port <= high


# -- the whole picture -------------------------------------------------------------------


def diagnose(observations: Observations) -> Diagnosis:
    """Judge every attempt, then say what it means and what to do."""
    facts = observations.natinfo
    behind_nat: bool | None = None
    if facts is not None and facts.client_address and observations.client_address:
        behind_nat = plain_ip(facts.client_address) != plain_ip(observations.client_address)
    if observations.fatal is not None:
        advice = advise_after_failure(observations, observations.fatal)
        return Diagnosis(observations, {}, [], behind_nat, *_unpack(advice))
    modes = {attempt.mode: judge(attempt, observations) for attempt in observations.attempts}
    found = {a.mode: text for a in observations.attempts if (text := rewrite_of(a)) is not None}
    rewrites = list(found.values())
    advice = advise(observations, modes, behind_nat, list(found))
    return Diagnosis(observations, modes, rewrites, behind_nat, *_unpack(advice))


# -- small helpers -----------------------------------------------------------------------


def _unpack(advice: Advice) -> tuple[str, list[str], list[str]]:
    return advice.verdict, advice.client_fixes, advice.server_fixes
