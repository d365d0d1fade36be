"""Format and parse FTP replies (RFC 959 §4.2).

Formatting lives here so the server can never emit a malformed reply: raw CR
or LF in text cannot leak onto the wire and a multi-line body cannot end early.
The parser is for the client library and for tests that talk to the server.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ketch.protocol.commands import decode_argument, encode_text

__all__ = ["Reply", "ReplyParser", "ReplySyntaxError", "format_reply"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CODE_LINE = re.compile(rb"([1-5][0-9][0-9])([ -]|\Z)")
# Any line a client might take for the start of a reply line.
_LOOKS_LIKE_CODE = re.compile(r"[0-9]{3}")


class ReplySyntaxError(ValueError):
    """The peer sent something that is not a valid FTP reply."""


@dataclass(frozen=True)
class Reply:
    """A complete reply: a code and one or more lines of text."""

    code: int
    lines: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_code(self.code)
        if not self.lines:
            raise ValueError("a reply has at least one line")

    @property
    def text(self) -> str:
        """All lines joined with "\\n", for messages and for scanning (e.g. 227)."""
        return "\n".join(self.lines)


def _check_code(code: int) -> None:
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise ValueError(f"reply code must be an int in 100..599, not {code!r}")


def _split_lines(text: str | Sequence[str]) -> list[str]:
    """Flatten text into lines, splitting on any CR, LF or CRLF inside them."""
    pieces = [text] if isinstance(text, str) else list(text)
    lines = [line for piece in pieces for line in _LINE_BREAK.split(piece)]
    return lines or [""]


def format_reply(code: int, text: str | Sequence[str]) -> bytes:
    """Encode a reply for the wire, using the multi-line form when needed.

    Middle lines that start with three digits get a leading space: a client
    scanning for the end line ("211 ...") must not be able to stop early.
    """
    _check_code(code)
    if isinstance(text, str) and "\n" not in text and "\r" not in text:
        return encode_text(f"{code} {text}\r\n")  # the common one-line reply, without a split
    lines = _split_lines(text)
    if len(lines) == 1:
        return encode_text(f"{code} {lines[0]}\r\n")
    out = [f"{code}-{lines[0]}\r\n"]
    for line in lines[1:-1]:
        if _LOOKS_LIKE_CODE.match(line):
            line = " " + line
        out.append(line + "\r\n")
    out.append(f"{code} {lines[-1]}\r\n")
    return encode_text("".join(out))


class ReplyParser:
    """Incremental reply parser; any chunking of a stream gives the same replies.

    Accepts CRLF or bare LF. Middle lines of a multi-line reply are kept
    verbatim (servers indent or prefix them in different ways).
    """

    def __init__(self, max_line_length: int = 65536) -> None:
        self._limit = max_line_length
        self._buffer = bytearray()
        self._code: int | None = None  # set while inside a multi-line reply
        self._end_prefix = b""
        self._lines: list[str] = []
        # Replies completed before a syntax error, handed out by the next feed.
        self._ready: list[Reply] = []
        # After an over-long line has been reported, the rest of it is skipped
        # up to its newline, so that how the stream is cut cannot matter.
        self._skipping = False

    @property
    def pending(self) -> bool:
        """True while part of a reply has been received but not completed."""
        return bool(self._buffer) or self._code is not None

    def feed(self, data: bytes) -> list[Reply]:
        """Consume ``data`` and return the replies it completes.

        Raises ReplySyntaxError for a malformed line; that line is dropped and
        replies completed earlier are returned by the next call.
        """
        self._buffer += data
        ready = self._ready
        while True:
            newline = self._buffer.find(b"\n")
            if self._skipping:
                if newline < 0:
                    self._buffer.clear()
                    break
                del self._buffer[: newline + 1]
                self._skipping = False
                continue
            if newline < 0:
                # limit + 1: the line's CR may arrive before its LF.
                if len(self._buffer) > self._limit + 1:
                    self._buffer.clear()
                    self._skipping = True
                    raise ReplySyntaxError(f"reply line longer than {self._limit} bytes")
                break
            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._limit:
                raise ReplySyntaxError(f"reply line longer than {self._limit} bytes")
            reply = self._take_line(line)
            if reply is not None:
                ready.append(reply)
        self._ready = []
        return ready

    def _take_line(self, line: bytes) -> Reply | None:
        """Advance the state machine by one line; return a finished reply."""
        if self._code is not None:
            if line.startswith(self._end_prefix) or line == self._end_prefix[:3]:
                self._lines.append(decode_argument(line[4:]))
                reply = Reply(self._code, tuple(self._lines))
                self._code = None
                self._lines = []
                return reply
            self._lines.append(decode_argument(line))
            return None
        match = _CODE_LINE.match(line)
        if match is None:
            shown = decode_argument(line[:40])
            raise ReplySyntaxError(f"expected a reply code (100..599) at line start: {shown!r}")
        code = int(match.group(1))
        text = decode_argument(line[4:])
        if match.group(2) == b"-":
            self._code = code
            self._end_prefix = match.group(1) + b" "
            self._lines = [text]
            return None
        # A bare "200" without text is out of spec but harmless to accept.
        return Reply(code, (text,))
