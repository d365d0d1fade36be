"""log_field and echoed: what a client chose cannot forge a log field, a line or terminal output."""

from __future__ import annotations

import pytest

from ketch.server.client_text import echoed, log_field, without_controls


@pytest.mark.parametrize("plain", ["alice", "/pub/a.txt", "/dir/café.txt", "x-y_z.1"])
def test_plain_text_is_logged_as_it_is(plain: str) -> None:
    assert log_field(plain) == plain


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("evil user=admin result=ok", '"evil user=admin result=ok"'),
        ("\x1b[2Jevil\x08", '"\\x1b[2Jevil\\x08"'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        ("two\nlines\r", '"two\\x0alines\\x0d"'),
        ("caf\udce9", '"caf\\udce9"'),  # an undecodable byte (surrogateescape)
        ("a=b", '"a=b"'),
        ("", '""'),
    ],
)
def test_other_text_is_quoted_with_escapes(text: str, logged: str) -> None:
    assert log_field(text) == logged


def test_no_name_yet_is_a_dash() -> None:
    assert log_field(None) == "-"


def test_an_echo_keeps_printable_text_and_escapes_the_rest() -> None:
    assert echoed("alice smith") == "alice smith"
    assert echoed("\x1b[2Jevil") == '"\\x1b[2Jevil"'


@pytest.mark.parametrize(
    "name",
    ["/a b/c.txt", '/say "hi"', "/back\\slash", "/dir/café.txt", "/nbsp\xa0x", "/raw\udcff"],
)
def test_a_reply_keeps_names_without_control_characters_as_they_are(name: str) -> None:
    # Bytes that are not UTF-8 (surrogates) go back as sent: RFC 2640, and the README.
    assert without_controls(name) == name


def test_a_reply_writes_control_characters_as_hex() -> None:
    assert without_controls("/a b\x1b[2J") == "/a b\\x1b[2J"
    assert without_controls("x\x00\x7f\x9b\ty") == "x\\x00\\x7f\\x9b\\x09y"
    assert without_controls("line one\nline two") == "line one\nline two"  # reply layout
