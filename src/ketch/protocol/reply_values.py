"""Values a client reads out of reply texts: 257 paths, MDTM times, FEAT lines.

Servers phrase these replies differently around the value itself, so each
parser looks for the value the RFC defines and ignores the prose around it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = ["parse_feat", "parse_mdtm_value", "parse_quoted_path"]

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
