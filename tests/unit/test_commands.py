"""Tests for command-line framing, Telnet stripping and argument decoding."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.commands import (
    Command,
    CommandLineReader,
    LineTooLong,
    decode_argument,
    encode_text,
)

IAC = b"\xff"


def feed_all(reader: CommandLineReader, *chunks: bytes) -> list[Command | LineTooLong]:
    events: list[Command | LineTooLong] = []
    for chunk in chunks:
        events.extend(reader.feed(chunk))
    return events


def only_command(data: bytes) -> Command:
    events = CommandLineReader().feed(data)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, Command)
    return event


# --- framing -----------------------------------------------------------------


def test_crlf_line_splits_into_verb_and_argument() -> None:
    assert only_command(b"RETR file.txt\r\n") == Command("RETR", "file.txt", b"RETR file.txt")


def test_bare_lf_also_ends_a_line() -> None:
    assert only_command(b"NOOP\n") == Command("NOOP", "", b"NOOP")


def test_verb_is_upper_cased() -> None:
    assert only_command(b"rEtR x\r\n").verb == "RETR"


def test_argument_keeps_case() -> None:
    assert only_command(b"cwd MixedCase\r\n").argument == "MixedCase"


def test_argument_keeps_leading_and_trailing_spaces() -> None:
    # Only the single separator space after the verb is removed.
    assert only_command(b"STOR  a b  \r\n").argument == " a b  "


def test_verb_followed_by_space_only_has_empty_argument() -> None:
    assert only_command(b"CWD \r\n") == Command("CWD", "", b"CWD ")


def test_empty_line_gives_empty_verb() -> None:
    assert only_command(b"\r\n") == Command("", "", b"")


def test_line_starting_with_space_has_empty_verb() -> None:
    assert only_command(b" x\r\n") == Command("", "x", b" x")


def test_lone_cr_inside_a_line_is_data() -> None:
    assert only_command(b"STOR a\rb\r\n").argument == "a\rb"


def test_only_the_cr_right_before_lf_is_part_of_the_terminator() -> None:
    assert only_command(b"STOR a\r\r\n").argument == "a\r"


def test_cr_and_lf_split_across_feeds_still_terminate() -> None:
    reader = CommandLineReader()
    assert reader.feed(b"USER bob\r") == []
    assert reader.feed(b"\n") == [Command("USER", "bob", b"USER bob")]
    assert reader.buffered == 0


def test_partial_line_is_buffered_until_its_line_end() -> None:
    reader = CommandLineReader()
    assert reader.feed(b"PASS sec") == []
    assert reader.buffered == 8
    assert reader.feed(b"ret\r\nNO") == [Command("PASS", "secret", b"PASS secret")]
    assert reader.buffered == 2


def test_several_lines_in_one_feed_come_out_in_order() -> None:
    events = CommandLineReader().feed(b"USER a\r\nPASS b\nSYST\r\n")
    assert [e.verb for e in events if isinstance(e, Command)] == ["USER", "PASS", "SYST"]


def test_unterminated_data_produces_no_event() -> None:
    assert CommandLineReader().feed(b"QUIT") == []


# --- Telnet ------------------------------------------------------------------


def test_iac_iac_is_a_literal_ff_byte() -> None:
    command = only_command(b"RETR a" + IAC + IAC + b"b\r\n")
    assert command.raw == b"RETR a\xffb"
    assert encode_text(command.argument) == b"a\xffb"


@pytest.mark.parametrize("negotiation", [251, 252, 253, 254])
def test_option_negotiation_is_removed_with_its_option_byte(negotiation: int) -> None:
    data = b"NO" + IAC + bytes([negotiation, 1]) + b"OP\r\n"
    assert only_command(data) == Command("NOOP", "", b"NOOP")


def test_interrupt_and_data_mark_before_abor_are_removed() -> None:
    assert only_command(IAC + b"\xf4" + IAC + b"\xf2ABOR\r\n") == Command("ABOR", "", b"ABOR")


def test_negotiation_option_byte_that_is_lf_does_not_end_the_line() -> None:
    assert only_command(b"NO" + IAC + b"\xfd\nOP\r\n").verb == "NOOP"


def test_a_subnegotiation_is_removed_whole_even_with_an_escaped_iac_or_a_line_end() -> None:
    # IAC SB <option> ... IAC SE (RFC 855): a terminal type such as "xterm\n" is not text.
    data = IAC + b"\xfa\x18\x00xt\r\n" + IAC + IAC + b"m" + IAC + b"\xf0NOOP\r\n"
    assert only_command(data) == Command("NOOP", "", b"NOOP")
    events = feed_all(CommandLineReader(), *(data[i : i + 1] for i in range(len(data))))
    assert events == [Command("NOOP", "", b"NOOP")]


def test_telnet_sequences_split_across_feeds_are_handled() -> None:
    data = IAC + b"\xf4" + IAC + b"\xf2AB" + IAC + b"\xfb\x03OR " + IAC + IAC + b"\r\n"
    events = feed_all(CommandLineReader(), *(data[i : i + 1] for i in range(len(data))))
    assert events == [Command("ABOR", "\udcff", b"ABOR \xff")]


def test_telnet_bytes_do_not_count_towards_the_line_limit() -> None:
    reader = CommandLineReader(max_line_length=4)
    assert reader.feed(b"NO" + IAC + b"\xf1" + IAC + b"\xfd\x01OP\n") == [
        Command("NOOP", "", b"NOOP")
    ]


# --- decoding ----------------------------------------------------------------


def test_utf8_argument_is_decoded() -> None:
    assert only_command("CWD Ünïcødé 日本\r\n".encode()).argument == "Ünïcødé 日本"


def test_invalid_utf8_argument_survives_a_round_trip() -> None:
    command = only_command(b"RETR caf\xe9\r\n")
    assert command.argument == "caf\udce9"
    assert encode_text(command.argument) == b"caf\xe9"


def test_non_ascii_verb_is_not_case_folded_into_an_ascii_verb() -> None:
    # str.upper() would turn U+017F (long s) into "S" and make this "STOR".
    command = only_command("\u017ftor x\r\n".encode())
    assert command.verb == "\u017fTOR"
    assert command.verb != "STOR"


def test_verb_with_invalid_utf8_is_kept_without_raising() -> None:
    assert only_command(b"\x80\xfeab x\r\n").verb == "\udc80\udcfeAB"


def test_encode_text_replaces_surrogates_that_did_not_come_from_bytes() -> None:
    assert encode_text("a\ud800b") == "a\ufffdb".encode()


def test_encode_text_keeps_escaped_bytes_when_a_stray_surrogate_is_present() -> None:
    assert encode_text("\udce9\ud800") == b"\xe9" + "\ufffd".encode()


# --- line length -------------------------------------------------------------


def test_line_exactly_at_the_limit_is_accepted() -> None:
    reader = CommandLineReader(max_line_length=10)
    assert reader.feed(b"RETR 12345\r\n") == [Command("RETR", "12345", b"RETR 12345")]


def test_line_at_the_limit_with_crlf_split_across_feeds_is_accepted() -> None:
    reader = CommandLineReader(max_line_length=10)
    assert reader.feed(b"RETR 12345\r") == []
    assert reader.buffered == 11
    assert reader.feed(b"\n") == [Command("RETR", "12345", b"RETR 12345")]


def test_line_over_limit_reports_once_and_next_line_parses() -> None:
    reader = CommandLineReader(max_line_length=10)
    assert reader.feed(b"RETR 123456\r\nNOOP\r\n") == [
        LineTooLong(10),
        Command("NOOP", "", b"NOOP"),
    ]


def test_over_limit_is_reported_before_the_line_end_arrives() -> None:
    reader = CommandLineReader(max_line_length=10)
    assert reader.feed(b"RETR 1234567") == [LineTooLong(10)]
    assert reader.buffered == 0
    assert reader.feed(b"89" * 100) == []
    assert reader.feed(b"0\r\nPWD\r\n") == [Command("PWD", "", b"PWD")]


def test_one_byte_over_the_limit_that_is_not_cr_is_reported_at_once() -> None:
    reader = CommandLineReader(max_line_length=10)
    assert reader.feed(b"RETR 12345") == []
    assert reader.feed(b"6") == [LineTooLong(10)]


def test_cr_after_full_line_followed_by_data_is_too_long() -> None:
    reader = CommandLineReader(max_line_length=10)
    assert reader.feed(b"RETR 12345\r") == []
    assert reader.feed(b"x\nPWD\n") == [LineTooLong(10), Command("PWD", "", b"PWD")]


def test_client_that_never_sends_lf_cannot_grow_the_buffer() -> None:
    reader = CommandLineReader(max_line_length=100)
    events: list[Command | LineTooLong] = []
    for _ in range(1000):
        events.extend(reader.feed(b"A" * 1000))
        assert reader.buffered <= 101
    assert events == [LineTooLong(100)]


def test_each_over_long_line_is_reported_separately() -> None:
    reader = CommandLineReader(max_line_length=3)
    assert reader.feed(b"ABCD\nEFGH\nOK\n") == [
        LineTooLong(3),
        LineTooLong(3),
        Command("OK", "", b"OK"),
    ]


def test_limit_below_one_is_rejected() -> None:
    with pytest.raises(ValueError):
        CommandLineReader(max_line_length=0)


# --- properties --------------------------------------------------------------

# Bytes weighted towards the interesting ones: terminators, IAC and Telnet commands.
interesting_bytes = st.lists(
    st.one_of(
        st.sampled_from([b"\r", b"\n", b"\r\n", IAC, b"\xfb", b"\xf4", b"\xff\xff", b" "]),
        st.binary(max_size=8),
    ),
    max_size=40,
).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, data_strategy: st.SearchStrategy[bytes]) -> tuple[bytes, list[bytes]]:
    data = draw(data_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(
    sample=chunked(st.one_of(interesting_bytes, st.binary(max_size=200))),
    limit=st.integers(1, 20),
)
def test_any_chunking_gives_the_same_events_and_never_raises(
    sample: tuple[bytes, list[bytes]], limit: int
) -> None:
    data, chunks = sample
    whole = CommandLineReader(limit).feed(data)
    reader = CommandLineReader(limit)
    pieces = []
    for chunk in chunks:
        pieces.extend(reader.feed(chunk))
        assert reader.buffered <= limit + 1
    assert pieces == whole


line_body = st.binary(max_size=30).filter(
    lambda b: b"\n" not in b and b"\xff" not in b and not b.endswith(b"\r")
)


@given(
    lines=st.lists(st.tuples(line_body, st.sampled_from([b"\n", b"\r\n"])), max_size=10),
    limit=st.integers(1, 25),
)
def test_events_match_a_simple_model_of_the_line_protocol(
    lines: list[tuple[bytes, bytes]], limit: int
) -> None:
    events = CommandLineReader(limit).feed(b"".join(body + end for body, end in lines))
    expected: list[Command | LineTooLong] = []
    for body, _ in lines:
        if len(body) > limit:
            expected.append(LineTooLong(limit))
        else:
            verb, _, argument = body.partition(b" ")
            expected.append(Command(decode_argument(verb.upper()), decode_argument(argument), body))
    assert events == expected


@given(st.binary())
def test_encode_text_inverts_decode_argument_for_any_bytes(raw: bytes) -> None:
    assert encode_text(decode_argument(raw)) == raw


@given(st.text())
def test_encode_text_never_raises_and_round_trips_ordinary_text(text: str) -> None:
    assert decode_argument(encode_text(text)) == text
