"""Tests for reply formatting and the incremental reply parser."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.replies import Reply, ReplyParser, ReplySyntaxError, format_reply

# --- format_reply ------------------------------------------------------------


def test_single_line_reply() -> None:
    assert format_reply(220, "ready") == b"220 ready\r\n"


def test_text_with_newlines_becomes_a_multi_line_reply() -> None:
    assert format_reply(211, "First\nmiddle\nLast") == b"211-First\r\nmiddle\r\n211 Last\r\n"


def test_sequence_of_lines_becomes_a_multi_line_reply() -> None:
    assert format_reply(214, ["Commands:", " USER PASS", "Done"]) == (
        b"214-Commands:\r\n USER PASS\r\n214 Done\r\n"
    )


def test_two_lines_have_no_middle() -> None:
    assert format_reply(211, ["a", "b"]) == b"211-a\r\n211 b\r\n"


def test_single_element_sequence_is_a_single_line_reply() -> None:
    assert format_reply(200, ["ok"]) == b"200 ok\r\n"


def test_middle_line_starting_with_three_digits_is_indented() -> None:
    assert format_reply(211, ["a", "211 trap", "123abc", "12x", "12", "b"]) == (
        b"211-a\r\n 211 trap\r\n 123abc\r\n12x\r\n12\r\n211 b\r\n"
    )


def test_middle_line_with_non_ascii_digits_is_not_indented() -> None:
    # Only ASCII digits can be mistaken for a reply code.
    assert format_reply(211, ["a", "\u0661\u0662\u0663", "b"]).split(b"\r\n")[1] == (
        "\u0661\u0662\u0663".encode()
    )


@pytest.mark.parametrize("text", ["a\r\nb", "a\rb", "a\nb"])
def test_cr_and_lf_inside_text_are_never_emitted_raw(text: str) -> None:
    assert format_reply(200, text) == b"200-a\r\n200 b\r\n"


def test_cr_lf_inside_sequence_elements_split_them() -> None:
    assert format_reply(200, ["a\rb", "c"]) == b"200-a\r\nb\r\n200 c\r\n"


def test_empty_text_gives_code_and_space() -> None:
    assert format_reply(200, "") == b"200 \r\n"
    assert format_reply(200, []) == b"200 \r\n"


def test_reply_text_is_utf8_with_escaped_bytes_restored() -> None:
    assert format_reply(550, "caf\u00e9 caf\udce9") == "550 caf\u00e9 caf".encode() + b"\xe9\r\n"


@pytest.mark.parametrize("code", [99, 600, 0, -220, 1000])
def test_code_outside_100_to_599_is_rejected(code: int) -> None:
    with pytest.raises(ValueError):
        format_reply(code, "x")


def test_reply_with_stray_surrogate_is_still_encoded() -> None:
    assert format_reply(500, "bad \ud800") == "500 bad \ufffd\r\n".encode()


def test_reply_boundary_codes_are_accepted() -> None:
    assert format_reply(100, "a").startswith(b"100 ")
    assert format_reply(599, "a").startswith(b"599 ")


# --- Reply -------------------------------------------------------------------


def test_reply_text_joins_lines_with_newline() -> None:
    assert Reply(211, ("a", "b", "c")).text == "a\nb\nc"


def test_reply_needs_at_least_one_line() -> None:
    with pytest.raises(ValueError):
        Reply(200, ())


def test_reply_code_is_validated() -> None:
    with pytest.raises(ValueError):
        Reply(700, ("x",))


# --- ReplyParser ---------------------------------------------------------------


def test_parser_reads_a_single_line_reply() -> None:
    assert ReplyParser().feed(b"220 Service ready\r\n") == [Reply(220, ("Service ready",))]


def test_parser_reads_a_multi_line_reply() -> None:
    data = b"211-Features:\r\n MDTM\r\n SIZE\r\n211 End\r\n"
    assert ReplyParser().feed(data) == [Reply(211, ("Features:", " MDTM", " SIZE", "End"))]


def test_multi_line_reply_only_ends_at_same_code_and_space() -> None:
    data = b"211-a\r\n200 not the end\r\n211-still not\r\n211 end\r\n"
    assert ReplyParser().feed(data) == [
        Reply(211, ("a", "200 not the end", "211-still not", "end"))
    ]


def test_parser_accepts_bare_lf() -> None:
    assert ReplyParser().feed(b"200-a\nb\n200 c\n") == [Reply(200, ("a", "b", "c"))]


def test_parser_waits_for_the_end_of_a_multi_line_reply() -> None:
    parser = ReplyParser()
    assert parser.feed(b"211-a\r\nb\r\n") == []
    assert parser.feed(b"211 c\r\n") == [Reply(211, ("a", "b", "c"))]


def test_parser_handles_byte_by_byte_chunks() -> None:
    data = b"150 go\r\n226-done\r\n x\r\n226 bye\r\n"
    parser = ReplyParser()
    replies = [r for i in range(len(data)) for r in parser.feed(data[i : i + 1])]
    assert replies == [Reply(150, ("go",)), Reply(226, ("done", " x", "bye"))]


def test_parser_accepts_code_without_text() -> None:
    assert ReplyParser().feed(b"200\r\n") == [Reply(200, ("",))]


def test_parser_ends_multi_line_reply_on_bare_code() -> None:
    assert ReplyParser().feed(b"211-a\r\n211\r\n") == [Reply(211, ("a", ""))]


def test_parser_decodes_invalid_utf8_losslessly() -> None:
    assert ReplyParser().feed(b"550 caf\xe9\r\n") == [Reply(550, ("caf\udce9",))]


@pytest.mark.parametrize(
    "line", [b"hello\r\n", b"20 short\r\n", b"2000 long\r\n", b"600 bad\r\n", b"099 x\r\n"]
)
def test_line_without_a_reply_code_raises(line: bytes) -> None:
    with pytest.raises(ReplySyntaxError):
        ReplyParser().feed(line)


def test_replies_before_a_syntax_error_are_returned_by_the_next_feed() -> None:
    parser = ReplyParser()
    with pytest.raises(ReplySyntaxError):
        parser.feed(b"200 ok\r\ngarbage\r\n")
    assert parser.feed(b"221 bye\r\n") == [Reply(200, ("ok",)), Reply(221, ("bye",))]


def test_endless_reply_line_raises_instead_of_growing() -> None:
    parser = ReplyParser(max_line_length=100)
    with pytest.raises(ReplySyntaxError):
        parser.feed(b"200 " + b"x" * 200)


# --- properties --------------------------------------------------------------

codes = st.integers(100, 599)
one_line = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20
)
line_lists = st.lists(one_line, min_size=1, max_size=6)


def expected_lines(lines: list[str]) -> tuple[str, ...]:
    """What the parser should return: middle lines that look like codes are indented."""
    if len(lines) == 1:
        return tuple(lines)
    middle = [
        " " + line if len(line) >= 3 and all(c in "0123456789" for c in line[:3]) else line
        for line in lines[1:-1]
    ]
    return (lines[0], *middle, lines[-1])


@given(code=codes, lines=line_lists)
def test_parse_of_format_gives_back_the_reply(code: int, lines: list[str]) -> None:
    assert ReplyParser().feed(format_reply(code, lines)) == [Reply(code, expected_lines(lines))]


@given(code=codes, raw=st.binary(max_size=40))
def test_formatted_reply_has_no_stray_line_breaks(code: int, raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    data = format_reply(code, text)
    assert data.endswith(b"\r\n")
    # Every LF is part of a CRLF and every CR is followed by LF.
    assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    assert len(ReplyParser().feed(data)) == 1


@given(
    replies=st.lists(st.tuples(codes, line_lists), min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_parser_gives_the_same_replies_for_any_chunking(
    replies: list[tuple[int, list[str]]], cuts: list[int]
) -> None:
    data = b"".join(format_reply(code, lines) for code, lines in replies)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    parser = ReplyParser()
    chunked = [r for a, b in itertools.pairwise(bounds) for r in parser.feed(data[a:b])]
    assert chunked == [Reply(code, expected_lines(lines)) for code, lines in replies]


def _replies(parser: ReplyParser, pieces: list[bytes]) -> list[Reply]:
    """Feed pieces, going on after each ReplySyntaxError as documented."""
    replies: list[Reply] = []
    for piece in [*pieces, b""]:
        data = piece
        while True:
            try:
                replies.extend(parser.feed(data))
                break
            except ReplySyntaxError:
                data = b""
    return replies


def test_the_rest_of_an_over_long_line_is_skipped_however_the_stream_is_cut() -> None:
    stream = b"200-first\r\n" + b"x" * 14 + b"\r\n200 end\r\n"
    whole = _replies(ReplyParser(10), [stream])
    cut = _replies(ReplyParser(10), [stream[:23], stream[23:]])
    assert whole == cut == [Reply(200, ("first", "end"))]


def test_a_line_of_exactly_the_limit_survives_a_read_between_cr_and_lf() -> None:
    assert _replies(ReplyParser(6), [b"200 ok\r", b"\n"]) == [Reply(200, ("ok",))]
