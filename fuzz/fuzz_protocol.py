"""atheris (libFuzzer) target for ketch's sans-IO protocol layer.

Everything here parses bytes that come straight from the network, so it must
never fail in a way its docstrings do not promise. Each input picks one
parser and feeds it the rest of the input:

    byte 0   which target (see TARGETS)
    byte 1   a seed for how the stream is cut into chunks (streaming targets),
             or part of "now" (LIST)
    byte 2   a size parameter: the line limit, or part of "now"
    rest     the payload

Only the exceptions the docstrings promise are caught; anything else, and any
broken invariant (an AssertionError), is a finding. The streaming parsers must
give the same result however the stream is cut, and the command-line reader
must agree with a small reference model written here.

Run it with `make fuzz`, or directly:
    .venv/bin/python fuzz/fuzz_protocol.py -max_total_time=60 fuzz/corpus-generated fuzz/corpus
Reproduce a finding with: .venv/bin/python fuzz/fuzz_protocol.py fuzz/crashes/crash-...
"""

from __future__ import annotations

import ipaddress
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports():
    from ketch.protocol import (
        AddressSyntaxError,
        AsciiDecoder,
        AsciiEncoder,
        Command,
        CommandLineReader,
        HostPort,
        LineTooLong,
        MlsdSyntaxError,
        RemoteEntry,
        Reply,
        ReplyParser,
        ReplySyntaxError,
        decode_argument,
        format_eprt_argument,
        format_epsv_reply,
        format_pasv_reply,
        format_port_argument,
        format_reply,
        parse_eprt_argument,
        parse_epsv_argument,
        parse_epsv_reply,
        parse_feat,
        parse_list,
        parse_list_line,
        parse_mdtm_value,
        parse_mlsd,
        parse_mlsd_line,
        parse_pasv_reply,
        parse_port_argument,
        parse_quoted_path,
    )

_KINDS = frozenset({"file", "dir", "link", "other"})
_PRECISIONS = frozenset({"second", "minute", "day"})


# -- helpers -----------------------------------------------------------------------


def chunks(payload: bytes, seed: int) -> list[bytes]:
    """Cut ``payload`` at points chosen by ``seed``; seed 0 means one byte at a time."""
    if seed == 0:
        return [payload[i : i + 1] for i in range(len(payload))]
    rng = random.Random(seed)
    pieces = []
    position = 0
    while position < len(payload):
        size = rng.choice((0, 1, 1, 2, 3, 5, 8, 13, 64, 512))
        pieces.append(payload[position : position + size])
        position += size
    return pieces


def as_text(payload: bytes, how: int) -> str:
    """Text to hand a parser: as the server decodes it, or any code points at all."""
    if how % 3 == 0:
        return decode_argument(payload)  # UTF-8 with surrogateescape, as on the wire
    if how % 3 == 1:
        return payload.decode("latin-1")
    # UTF-16 with lone surrogates allowed: every code point, paired or not.
    return payload[: len(payload) // 2 * 2].decode("utf-16-le", "surrogatepass")


# -- the command-line reader, against a reference model --------------------------------


def reference_strip_telnet(data: bytes) -> bytes:
    """RFC 854 commands removed: IAC IAC is a 0xFF byte, WILL..DONT take an option byte."""
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte != 0xFF:
            out.append(byte)
            i += 1
        elif i + 1 < len(data) and data[i + 1] == 0xFF:
            out.append(0xFF)
            i += 2
        elif i + 1 < len(data) and 251 <= data[i + 1] <= 254:
            i += 3
        else:
            i += 2
    return bytes(out)


def reference_events(data: bytes, limit: int) -> list[Command | LineTooLong]:
    """What CommandLineReader's docstrings say it returns for this whole stream."""
    *lines, tail = reference_strip_telnet(data).split(b"\n")
    events: list[Command | LineTooLong] = []
    for line in lines:
        line = line.removesuffix(b"\r")
        if len(line) > limit:
            events.append(LineTooLong(limit))
            continue
        verb, space, argument = line.partition(b" ")
        events.append(
            Command(
                verb=decode_argument(verb.upper()),
                argument=decode_argument(argument) if space else "",
                raw=line,
            )
        )
    # An unfinished line is reported as soon as it cannot fit; a final CR may
    # still be half of the CRLF, so it gets one byte of grace.
    if len(tail) > limit + 1 or (len(tail) == limit + 1 and not tail.endswith(b"\r")):
        events.append(LineTooLong(limit))
    return events


def feed_reader(pieces: list[bytes], limit: int) -> list[Command | LineTooLong]:
    reader = CommandLineReader(limit)
    events: list[Command | LineTooLong] = []
    for piece in pieces:
        events.extend(reader.feed(piece))
        assert reader.buffered <= limit + 1, (reader.buffered, limit)
    return events


def fuzz_command_reader(seed: int, size: int, payload: bytes) -> None:
    limit = size + 1
    whole = feed_reader([payload], limit)
    expected = reference_events(payload, limit)
    assert whole == expected, f"reader and model disagree:\n{whole}\n{expected}"
    assert feed_reader(chunks(payload, seed), limit) == whole, "chunking changed the events"
    for event in whole:
        if isinstance(event, Command):
            assert b"\n" not in event.raw and len(event.raw) <= limit, event
            assert " " not in event.verb, event


# -- the reply parser -----------------------------------------------------------------


def feed_replies(pieces: list[bytes], limit: int) -> tuple[list[Reply], int]:
    """Replies and the number of ReplySyntaxErrors, going on after each as documented."""
    parser = ReplyParser(limit)
    replies: list[Reply] = []
    errors = 0
    for piece in [*pieces, b""]:  # the last, empty feed collects replies held back
        data = piece
        while True:
            try:
                replies.extend(parser.feed(data))
                break
            except ReplySyntaxError:
                errors += 1
                data = b""  # the bad line is dropped; the rest of the buffer stays
    return replies, errors


def fuzz_reply_parser(seed: int, size: int, payload: bytes) -> None:
    limit = 65536 if size == 0 else size * 4
    whole, _ = feed_replies([payload], limit)
    for reply in whole:
        assert 100 <= reply.code <= 599 and reply.lines, reply
    cut, _ = feed_replies(chunks(payload, seed), limit)
    assert cut == whole, f"chunking changed the replies:\n{cut}\n{whole}"


def fuzz_reply_round_trip(seed: int, size: int, payload: bytes) -> None:
    """format_reply can never emit something that parses as another reply."""
    code = 100 + (seed * 256 + size) % 500
    text = as_text(payload, seed)
    wire = format_reply(code, text)
    body = wire.removesuffix(b"\r\n")
    assert wire.endswith(b"\r\n") and b"\r" not in body.replace(b"\r\n", b""), wire
    assert b"\n" not in body.replace(b"\r\n", b""), wire
    replies = ReplyParser(len(wire) + 1).feed(wire)
    assert len(replies) == 1 and replies[0].code == code, (wire, replies)
    expected_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert len(replies[0].lines) == len(expected_lines), (wire, replies)
    if not any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        first, last = replies[0].lines[0], replies[0].lines[-1]
        assert (first, last) == (expected_lines[0], expected_lines[-1]), (wire, replies)


# -- address codecs -------------------------------------------------------------------


def fuzz_port(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, seed)
    try:
        address = parse_port_argument(text)
    except AddressSyntaxError:
        return
    check_host_port(address, ipv4=True)
    assert parse_port_argument(format_port_argument(address)) == address
    assert parse_pasv_reply(format_pasv_reply(address)) == address


def fuzz_eprt(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, seed)
    try:
        address = parse_eprt_argument(text)
    except AddressSyntaxError:  # UnsupportedFamilyError is one too
        return
    check_host_port(address, ipv4=None)
    assert parse_eprt_argument(format_eprt_argument(address)) == address


def fuzz_pasv_reply(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, seed)
    try:
        address = parse_pasv_reply(text)
    except AddressSyntaxError:
        return
    check_host_port(address, ipv4=True)
    assert parse_pasv_reply(format_pasv_reply(address)) == address


def fuzz_epsv_reply(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, seed)
    try:
        port = parse_epsv_reply(text)
    except AddressSyntaxError:
        return
    assert isinstance(port, int) and 0 <= port <= 65535, port
    assert parse_epsv_reply(format_epsv_reply(port)) == port


def fuzz_epsv_argument(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, seed)
    try:
        value = parse_epsv_argument(text)
    except AddressSyntaxError:
        return
    assert value in (None, "ALL", 1, 2), value


def check_host_port(address: HostPort, *, ipv4: bool | None) -> None:
    ip = ipaddress.ip_address(address.host)
    assert str(ip) == address.host, f"host not in canonical form: {address}"
    if ipv4:
        assert ip.version == 4, address
    assert isinstance(address.port, int) and 0 <= address.port <= 65535, address


# -- listings -------------------------------------------------------------------------


def now_from(seed: int, size: int) -> datetime:
    if seed == 255:
        return datetime.max
    if seed == 254:
        return datetime.min.replace(tzinfo=UTC)
    year = 1 + (seed * 257 + size) % 9999
    moment = datetime(year, size % 12 + 1, seed % 28 + 1, size % 24, seed % 60)
    return moment if size & 0x80 else moment.replace(tzinfo=UTC)


def check_entry(entry: RemoteEntry) -> None:
    assert entry.name, entry
    assert entry.kind in _KINDS, entry
    assert entry.size is None or (isinstance(entry.size, int) and entry.size >= 0), entry
    assert (entry.mtime is None) == (entry.mtime_precision is None), entry
    assert entry.mtime_precision is None or entry.mtime_precision in _PRECISIONS, entry
    if entry.mtime is not None:
        assert entry.mtime.utcoffset() is not None and not entry.mtime.utcoffset(), entry


def fuzz_list(seed: int, size: int, payload: bytes) -> None:
    now = now_from(seed, size)
    text = as_text(payload, size)
    entries = parse_list(text, now)
    for entry in entries:
        check_entry(entry)
        assert entry.mtime is not None, entry
        assert not entry.is_self_or_parent, entry
    # A line's CR belongs to its CRLF terminator, as parse_list reads it.
    singles = [parse_list_line(line.removesuffix("\r"), now) for line in text.split("\n")]
    kept = [entry for entry in singles if entry is not None and not entry.is_self_or_parent]
    assert kept == entries, "parse_list differs from parse_list_line line by line"


def fuzz_mlsd(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, size)
    for line in text.split("\n"):
        try:
            entry = parse_mlsd_line(line)
        except MlsdSyntaxError:
            continue
        check_entry(entry)
        assert " " + entry.name in line, (line, entry)
        assert all(name == name.lower() for name in entry.facts), entry
    try:
        entries = parse_mlsd(text)
    except MlsdSyntaxError:
        return
    for entry in entries:
        check_entry(entry)
        assert not entry.is_self_or_parent, entry


# -- small reply values and TYPE A conversion ----------------------------------------------


def fuzz_reply_values(seed: int, size: int, payload: bytes) -> None:
    text = as_text(payload, seed)
    path = parse_quoted_path(text)
    assert path is None or '"' + path.replace('"', '""') + '"' in text, (text, path)
    moment = parse_mdtm_value(text)
    assert moment is None or moment.tzinfo is UTC, moment
    for name in parse_feat(text.split("\n")):
        assert name == name.upper(), name


def fuzz_ascii(seed: int, size: int, payload: bytes) -> None:
    pieces = chunks(payload, seed)
    encoder, decoder = AsciiEncoder(), AsciiDecoder()
    encoded = b"".join(encoder.convert(piece) for piece in pieces) + encoder.flush()
    assert encoded == AsciiEncoder().convert(payload), "chunking changed the encoding"
    decoded = b"".join(decoder.convert(piece) for piece in chunks(encoded, size)) + decoder.flush()
    assert decoded == payload.replace(b"\r\n", b"\n"), "decode(encode(x)) lost bytes"
    whole = AsciiDecoder()
    at_once = whole.convert(payload) + whole.flush()
    decoder = AsciiDecoder()
    cut = b"".join(decoder.convert(piece) for piece in pieces) + decoder.flush()
    assert cut == at_once, "chunking changed the decoding"


TARGETS: list[Callable[[int, int, bytes], None]] = [
    fuzz_command_reader,
    fuzz_reply_parser,
    fuzz_reply_round_trip,
    fuzz_port,
    fuzz_eprt,
    fuzz_pasv_reply,
    fuzz_epsv_reply,
    fuzz_epsv_argument,
    fuzz_list,
    fuzz_mlsd,
    fuzz_reply_values,
    fuzz_ascii,
]


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    TARGETS[data[0] % len(TARGETS)](data[1], data[2], data[3:])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
