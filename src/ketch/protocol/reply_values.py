"""Values a client reads out of reply texts: 257 paths, MDTM times, FEAT lines, hashes.

Servers phrase these replies differently around the value itself, so each
parser looks for the value the RFC defines and ignores the prose around it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "HASH_PREFERENCE",
    "X_HASH_COMMANDS",
    "HashMethod",
    "choose_hash_method",
    "mlst_facts_to_select",
    "parse_feat",
    "parse_hash_feature",
    "parse_hash_reply",
    "parse_mdtm_value",
    "parse_mlst_feature",
    "parse_natinfo",
    "parse_quoted_path",
    "parse_x_hash_reply",
]

# RFC 3659 §2.3: YYYYMMDDHHMMSS with optional fractions of a second.
_TIME_VAL = re.compile(r"(?<![0-9])([0-9]{14})(?:\.([0-9]{1,9}))?(?![0-9])")


def parse_quoted_path(text: str) -> str | None:
    """The path in a 257 reply: RFC 959 quotes it and doubles inner quotes."""
    start = text.find('"')
    if start < 0:
        return None
    path = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == '"':
            if text[index + 1 : index + 2] == '"':
                path.append('"')
                index += 2
                continue
            return "".join(path)
        path.append(char)
        index += 1
    return None  # no closing quote


def parse_mdtm_value(text: str) -> datetime | None:
    """The UTC time in a 213 MDTM reply (or an MLSD ``modify`` fact), or None."""
    match = _TIME_VAL.search(text)
    if match is None:
        return None
    digits, fraction = match.groups()
    try:
        moment = datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment


def parse_feat(lines: Iterable[str]) -> dict[str, str]:
    """FEAT's feature lines as {NAME: parameters}; the first and last lines are prose.

    RFC 2389 says feature lines start with a space; names are case-insensitive,
    so they are upper-cased here.
    """
    lines = list(lines)
    features: dict[str, str] = {}
    for line in lines[1:-1]:
        entry = line.strip()
        if not entry:
            continue
        name, _, parameters = entry.partition(" ")
        features[name.upper()] = parameters.strip()
    return features


def parse_natinfo(lines: Iterable[str]) -> dict[str, str | None]:
    """ketch's ``SITE NATINFO`` facts as {key: value}; a value of ``none`` becomes None.

    The reply is multi-line: prose first and last, and between them one
    `` key: value`` per line (keys lower-case; a value may hold colons, as in
    ``server-address: 198.18.3.2:21``). Lines that are no fact are skipped,
    so a server that words its prose differently still parses.
    """
    lines = list(lines)
    facts: dict[str, str | None] = {}
    for line in lines[1:-1]:
        key, colon, value = line.strip().partition(":")
        if not colon or not key or " " in key:
            continue
        value = value.strip()
        facts[key.lower()] = None if value.lower() == "none" else value
    return facts


# -- file hashes: HASH (draft-bryan-ftpext-hash) and the older X commands ---------------

HASH_PREFERENCE = ("SHA-256", "SHA-1", "MD5", "CRC32")
"""Algorithms ketch computes locally (ketch.protocol.hashes), best first."""

X_HASH_COMMANDS = {
    "SHA-256": "XSHA256",
    "SHA-1": "XSHA1",
    "MD5": "XMD5",
    "CRC32": "XCRC",
}
"""Before HASH, servers (ProFTPD mod_digest, Serv-U, ...) offered one command per algorithm."""

_HEX_DIGITS = {"SHA-256": 64, "SHA-1": 40, "MD5": 32}
_HEX = re.compile(r"[0-9A-Fa-f]+")
_RANGE = re.compile(r"[0-9]+-[0-9]*")


@dataclass(frozen=True)
class HashMethod:
    """How to ask a server for a file's hash: ``command`` is HASH or an X command."""

    command: str
    algorithm: str  # as HASH names it: SHA-256, SHA-1, MD5, CRC32


def parse_hash_feature(parameters: str) -> tuple[list[str], str | None]:
    """FEAT's ``HASH SHA-256*;SHA-1;MD5`` parameters: the algorithms, and the selected one (*)."""
    algorithms: list[str] = []
    selected = None
    for item in parameters.split(";"):
        name = item.strip().upper()
        if name.endswith("*"):
            name = name[:-1].strip()
            selected = name
        if name:
            algorithms.append(name)
    return algorithms, selected


def parse_mlst_feature(parameters: str) -> list[tuple[str, bool]]:
    """FEAT's ``MLST type*;size*;modify;perm*;`` parameters: each fact as the server spells
    it, and whether MLSD sends it now (the "*", RFC 3659 §7.8)."""
    facts = []
    for item in parameters.split(";"):
        name = item.strip()
        enabled = name.endswith("*")
        name = name.removesuffix("*").strip()
        if name:
            facts.append((name, enabled))
    return facts


def mlst_facts_to_select(parameters: str, wanted: Iterable[str]) -> list[str] | None:
    """The facts for ``OPTS MLST`` that turn on every ``wanted`` fact FEAT's ``parameters``
    offer, keeping those already on; None when nothing needs turning on.

    A fact listed without "*" is off until the client selects it (RFC 3659 §7.9), and
    OPTS MLST replaces the whole selection, so the ones on stay in it. Names compare
    case-insensitively and are sent as the server spells them.
    """
    wanted_names = {name.lower() for name in wanted}
    offered = parse_mlst_feature(parameters)
    if all(enabled for name, enabled in offered if name.lower() in wanted_names):
        return None
    return [name for name, enabled in offered if enabled or name.lower() in wanted_names]


def choose_hash_method(
    features: Mapping[str, str], algorithm: str | None = None
) -> HashMethod | None:
    """The best way the FEAT ``features`` offer to hash a file (with ``algorithm``, if given).

    HASH comes first; X commands count only when FEAT lists them. None: no way.
    """
    wanted = [algorithm.upper()] if algorithm else list(HASH_PREFERENCE)
    if "HASH" in features:
        offered, _selected = parse_hash_feature(features["HASH"])
        for name in wanted:
            if name in offered:
                return HashMethod("HASH", name)
    for name in wanted:
        command = X_HASH_COMMANDS.get(name)
        if command is not None and command in features:
            return HashMethod(command, name)
    return None


def _normal_digest(token: str, algorithm: str) -> str | None:
    """``token`` as a lower-case hex digest of ``algorithm``, or None if it cannot be one."""
    if not _HEX.fullmatch(token):
        return None
    if algorithm == "CRC32":  # some servers drop leading zeros
        return token.lower().rjust(8, "0") if len(token) <= 8 else None
    expected = _HEX_DIGITS.get(algorithm)
    if expected is not None and len(token) != expected:
        return None
    return token.lower()


def parse_hash_reply(text: str, algorithm: str) -> str | None:
    """The digest in a 213 HASH reply: ``SHA-256 0-49 <hex> <path>``, or None.

    The path may hold spaces, so the digest is the token after the algorithm
    and the byte range, not the last one.
    """
    tokens = text.split()
    if len(tokens) < 2 or tokens[0].upper() != algorithm:
        return None
    index = 2 if _RANGE.fullmatch(tokens[1]) else 1
    return _normal_digest(tokens[index], algorithm) if index < len(tokens) else None


def parse_x_hash_reply(text: str, algorithm: str) -> str | None:
    """The digest in a 250 XSHA256/XSHA1/XMD5/XCRC reply: its first hex token of the right size.

    Servers differ in what surrounds it (just the digest, or the path first).
    """
    for token in text.split():
        digest = _normal_digest(token, algorithm)
        if digest is not None:
            return digest
    return None
