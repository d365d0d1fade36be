"""Turn the bytes of an FTP control connection into command events.

The reader is sans-IO: the server hands it whatever ``recv`` returned and gets
back complete commands. Keeping framing, Telnet stripping and the line-length
guard here means they can be tested exhaustively without sockets, and any
chunking of the same stream gives the same events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Command",
    "CommandLineReader",
    "LineTooLong",
    "decode_argument",
    "encode_text",
]

# Telnet (RFC 854) bytes that FTP clients may put on the control connection.
_IAC = 0xFF
_IAC_BYTE = b"\xff"
_WILL, _DONT = 251, 254  # WILL, WONT, DO, DONT are 251..254 and carry an option byte
_SB, _SE = 250, 240  # a subnegotiation: IAC SB <option> <bytes> IAC SE (RFC 855)

# Telnet parser states.
_DATA = 0
_AFTER_IAC = 1
_OPTION = 2
_SUBNEGOTIATION = 3  # inside IAC SB ... IAC SE: nothing of it is command text
_SUBNEGOTIATION_IAC = 4  # an IAC inside it: SE ends it, anything else does not

# Lone surrogates that 'surrogateescape' cannot turn back into a byte.
_STRAY_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def decode_argument(raw: bytes) -> str:
    """Decode protocol bytes as UTF-8 (RFC 2640) without ever failing.

    Paths on POSIX are bytes, not text; 'surrogateescape' keeps every invalid
    byte as a lone surrogate so :func:`encode_text` can restore it exactly.
    """
    return raw.decode("utf-8", "surrogateescape")


def encode_text(text: str) -> bytes:
    """Encode text for the wire; the inverse of :func:`decode_argument`.

    Never raises: a surrogate that did not come from 'surrogateescape' (and so
    has no original byte) is replaced by U+FFFD instead of aborting a reply.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _STRAY_SURROGATE.sub("\ufffd", text).encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Command:
    """One command line from the client.

    ``verb`` is upper-cased so dispatch is case-insensitive; ``argument`` keeps
    its spaces verbatim because file names may begin or end with them.
    """

    verb: str
    argument: str
    # The line after Telnet stripping, without its terminator; for logging.
    raw: bytes


@dataclass(frozen=True)
class LineTooLong:
    """The client sent a line longer than the limit; it was discarded.

    Reported once per offending line, as soon as the limit is passed, so the
    server can answer 500 without waiting for (or buffering) the rest.
    """

    limit: int


def parse_command_line(line: bytes) -> Command:
    """Split one already-framed line (no terminator) into verb and argument."""
    verb, sep, argument = line.partition(b" ")
    # bytes.upper() only touches ASCII letters. str.upper() would map U+017F
    # (long s) to "S" and U+0131 (dotless i) to "I", turning bogus verbs into
    # real ones that slipped past the server's ASCII checks.
    return Command(
        verb=decode_argument(verb.upper()),
        argument=decode_argument(argument) if sep else "",
        raw=line,
    )


class CommandLineReader:
    """Incremental parser for the control connection's command stream.

    Lines end with CRLF or a bare LF (RFC 1123 §4.1.2.2 asks servers to accept
    both). Memory stays bounded by the line limit whatever the client sends.
    """

    __slots__ = ("_discarding", "_limit", "_line", "_telnet")  # one per session

    def __init__(self, max_line_length: int = 4096) -> None:
        if max_line_length < 1:
            raise ValueError("max_line_length must be at least 1")
        self._limit = max_line_length
        self._line = bytearray()
        self._telnet = _DATA
        # True after an over-long line until its LF has been skipped.
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held while waiting for its line end."""
        return len(self._line)

    def feed(self, data: bytes) -> list[Command | LineTooLong]:
        """Consume ``data`` and return the events it completes, in order."""
        events: list[Command | LineTooLong] = []
        clean = self._strip_telnet(data)
        limit = self._limit
        line = self._line
        pos = 0
        end = len(clean)
        while pos < end:
            newline = clean.find(b"\n", pos)
            if self._discarding:
                if newline < 0:
                    break
                self._discarding = False
                pos = newline + 1
                continue
            if newline < 0:
                self._hold_partial(clean, pos, events)
                break
            # A CR just before the LF belongs to the terminator. It is either in
            # this chunk or, if the LF starts the chunk, at the end of the buffer.
            stop = newline
            cr_in_buffer = False
            if newline > pos:
                if clean[newline - 1] == 0x0D:
                    stop -= 1
            elif line.endswith(b"\r"):
                cr_in_buffer = True
            # Measure before joining so an over-long line is never copied.
            if len(line) - cr_in_buffer + stop - pos > limit:
                events.append(LineTooLong(limit))
            elif not line:
                # The usual case, a whole line in this chunk: no copy through the buffer.
                events.append(parse_command_line(clean[pos:stop]))
            else:
                line += clean[pos:stop]
                if cr_in_buffer:
                    del line[-1]
                events.append(parse_command_line(bytes(line)))
            line.clear()
            pos = newline + 1
        return events

    def _hold_partial(self, clean: bytes, pos: int, events: list[Command | LineTooLong]) -> None:
        """Buffer an unterminated tail, or report it at once if it cannot fit.

        One byte over the limit is tolerated only when it is a CR, since that
        CR may turn out to be half of the CRLF terminator.
        """
        tail_length = len(clean) - pos
        total = len(self._line) + tail_length
        limit = self._limit
        if total > limit + 1 or (total == limit + 1 and clean[-1] != 0x0D):
            events.append(LineTooLong(limit))
            self._line.clear()
            self._discarding = True
        else:
            self._line += clean[pos:]

    def _strip_telnet(self, data: bytes) -> bytes:
        """Remove Telnet commands, keeping state across calls for split sequences."""
        state = self._telnet
        if state == _DATA and _IAC_BYTE not in data:
            return data  # the common case: no copying at all
        out = bytearray()
        pos = 0
        end = len(data)
        while pos < end:
            if state == _DATA:
                iac = data.find(_IAC_BYTE, pos)
                if iac < 0:
                    out += data[pos:]
                    break
                out += data[pos:iac]
                pos = iac + 1
                state = _AFTER_IAC
            elif state == _AFTER_IAC:
                byte = data[pos]
                pos += 1
                if byte == _IAC:
                    out.append(_IAC)  # IAC IAC is an escaped literal 0xFF
                    state = _DATA
                elif _WILL <= byte <= _DONT:
                    state = _OPTION
                elif byte == _SB:
                    state = _SUBNEGOTIATION
                else:
                    state = _DATA  # two-byte command such as IP or DM
            elif state == _OPTION:
                pos += 1  # the option byte of WILL/WONT/DO/DONT
                state = _DATA
            else:  # skip a subnegotiation up to IAC SE
                if state == _SUBNEGOTIATION_IAC:
                    state = _DATA if data[pos] == _SE else _SUBNEGOTIATION
                    pos += 1
                    continue
                iac = data.find(_IAC_BYTE, pos)
                if iac < 0:
                    break
                pos = iac + 1
                state = _SUBNEGOTIATION_IAC
        self._telnet = state
        return bytes(out)
