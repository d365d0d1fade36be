"""File hashes over FTP: HASH and OPTS HASH (draft-bryan-ftpext-hash-02), RANG, and XCRC & co.

Pure parts only: algorithm names, argument parsing, byte ranges and reply
texts. Reading the file is the server's job (in a thread, in chunks).

Ranges. The drafts count both ends inclusively: ``RANG 0 49`` selects the
first 50 bytes and ``HASH`` answers ``213 SHA-256 0-49 <hex> <path>``, so a
whole 100-byte file is ``0-99``. An empty file has no last byte; it is
reported as ``0-0`` because the draft's grammar wants end >= start. ``RANG 1
0`` resets the range (draft-bryan-ftp-range §3); any other start after end is
refused with 501 and also resets it.

The X commands (``XCRC``, ``XMD5``, ``XSHA1``, ``XSHA256``) follow ProFTPD's
mod_digest, the common reference: ``XMD5 <path> [<start> <end>]`` with the end
*exclusive* (``XMD5 f 0 100`` hashes 100 bytes) and a bare ``250 <hex>`` reply.
A single number after the path is taken as part of the path (mod_digest
refuses that form, because servers disagree on what the number means).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "ByteRange",
    "Digest",
    "RangeRefused",
    "XCommandArgument",
    "hash_feature",
    "hash_reply",
    "lookup_algorithm",
    "new_digest",
    "parse_rang",
    "resolve_range",
    "split_x_argument",
    "x_range",
]

#: Names as FEAT and OPTS HASH show them (the IANA "Hash Function Textual Names"
#: where there is one; CRC32 has none and is written as FileZilla and Serv-U do).
ALGORITHMS: tuple[str, ...] = ("SHA-256", "SHA-1", "MD5", "CRC32")
DEFAULT_ALGORITHM = "SHA-256"
_ALIASES = {
    "SHA-256": "SHA-256", "SHA256": "SHA-256",
    "SHA-1": "SHA-1", "SHA1": "SHA-1", "SHA": "SHA-1",
    "MD5": "MD5",
    "CRC32": "CRC32", "CRC-32": "CRC32", "CRC": "CRC32",
}  # fmt: skip
_NUMBER = re.compile(r"[0-9]{1,20}")
# What a client meant as a number, right or wrong: "-1", "+5", 30 digits.
_SIGNED = re.compile(r"[-+]?[0-9]+")


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class _Crc32:
    """zlib.crc32 behind hashlib's interface; hex is 8 digits, like ``cksfv`` prints."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        return f"{self._value:08x}"


def new_digest(algorithm: str) -> Digest:
    """A fresh hash object for one of :data:`ALGORITHMS`."""
    if algorithm == "CRC32":
        return _Crc32()
    name = {"SHA-256": "sha256", "SHA-1": "sha1", "MD5": "md5"}[algorithm]
    # usedforsecurity=False: MD5 and SHA-1 check integrity here; FIPS builds allow that.
    return hashlib.new(name, usedforsecurity=False)


def lookup_algorithm(name: str) -> str | None:
    """The canonical name for ``name`` (case-insensitive, common spellings), or None."""
    return _ALIASES.get(name.strip().upper())


def hash_feature(selected: str) -> str:
    """The FEAT line: ``HASH SHA-256*;SHA-1;MD5;CRC32`` (``*``: the selected one)."""
    return "HASH " + ";".join(f"{name}{'*' if name == selected else ''}" for name in ALGORITHMS)


# -- ranges -------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a file, both included (RANG's convention)."""

    start: int
    end: int


class RangeRefused(ValueError):
    """A RANG argument or a range that does not fit the file; the text is the reply."""


def parse_rang(argument: str) -> ByteRange | None:
    """The range ``RANG <start> <end>`` selects; None for the reset ``RANG 1 0``.

    Raises RangeRefused (reply 501) for anything else that is not two numbers
    with start <= end.
    """
    words = argument.split()
    if len(words) != 2 or not all(_NUMBER.fullmatch(word) for word in words):
        raise RangeRefused(
            "RANG needs two byte offsets: RANG <start> <end> (end included); RANG 1 0 resets."
        )
    start, end = int(words[0]), int(words[1])
    if (start, end) == (1, 0):
        return None
    if start > end:
        raise RangeRefused(
            f"RANG start {start} is after end {end}; the range is reset to the whole file."
        )
    return ByteRange(start, end)


def resolve_range(requested: ByteRange | None, size: int) -> tuple[int, int]:
    """``(offset, length)`` to hash in a file of ``size`` bytes.

    An end beyond the file is cut to the file's end, as RETR would (the
    reply then shows the range actually hashed); a start beyond it is
    refused with the file's size, so the client can ask again.
    """
    if requested is None:
        return 0, size
    if requested.start >= size and not (requested.start == 0 and size == 0):
        raise RangeRefused(
            f"Range start {requested.start} is beyond the end of the file ({size} bytes); "
            f"send RANG with a start below {size}, or RANG 1 0 for the whole file."
        )
    end = min(requested.end, size - 1)
    return requested.start, max(end - requested.start + 1, 0)


def hash_reply(algorithm: str, offset: int, length: int, hexdigest: str, path: str) -> str:
    """The 213 text: ``SHA-256 0-99 <hex> <path>`` (inclusive end; ``0-0`` when empty)."""
    end = offset + length - 1 if length else offset
    return f"{algorithm} {offset}-{end} {hexdigest} {path}"


# -- XCRC, XMD5, XSHA1, XSHA256 -------------------------------------------------------


@dataclass(frozen=True)
class XCommandArgument:
    """One way to read an X command's argument: a path and maybe a range (end exclusive)."""

    path: str
    start: int = 0
    end: int | None = None
    #: Why the range is unusable, when the numbers are there but wrong: the 501 to send
    #: if this reading is the one that names a file.
    refusal: str | None = None


def _unquote(path: str) -> str:
    """``"name with spaces"`` as some clients send it for the X commands."""
    if len(path) >= 2 and path[0] == path[-1] == '"':
        return path[1:-1]
    return path


def split_x_argument(argument: str) -> list[XCommandArgument]:
    """The readings of ``<path> [<start> <end>]``, most literal first.

    A path may itself contain spaces and digits, so the whole argument as
    one path comes first; the server uses the first reading that names a
    file. Numbers that are there but wrong give a reading with a ``refusal``.
    """
    readings = [XCommandArgument(_unquote(argument))]
    words = argument.rsplit(" ", 2)
    if len(words) == 3 and all(_SIGNED.fullmatch(word) for word in words[1:]):
        path = _unquote(words[0])
        if not all(_NUMBER.fullmatch(word) for word in words[1:]):
            refusal = (
                f"The range {words[1]} {words[2]} is not two whole numbers of 0 or more "
                "(at most 20 digits); send <path> <start> <end>, e.g. 0 1024."
            )
            readings.append(XCommandArgument(path, refusal=refusal))
            return readings
        start, end = int(words[1]), int(words[2])
        if start > end and end != 0:  # an end of 0 means the end of the file (x_range)
            refusal = (
                f"The start {start} is after the end {end}; send <path> <start> <end> "
                "with the end not included, e.g. 0 1024 for the first KiB."
            )
            readings.append(XCommandArgument(path, refusal=refusal))
            return readings
        readings.append(XCommandArgument(path, start, end))
    return readings


def x_range(reading: XCommandArgument, size: int) -> tuple[int, int]:
    """``(offset, length)`` for an X command on a file of ``size`` bytes.

    The end 0 (or none) means the end of the file. A range reaching past the
    end is refused, as mod_digest does: a client asking for bytes that are not
    there is checking a different file than it thinks.
    """
    end = size if not reading.end else reading.end
    if reading.start > size or end > size:
        raise RangeRefused(
            f"The range {reading.start}-{end} reaches past the end of the file ({size} bytes); "
            f"give an end of {size} or less."
        )
    return reading.start, end - reading.start
