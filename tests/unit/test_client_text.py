"""log_field and echoed: what a client chose cannot forge a log field, a line or terminal output."""

from __future__ import annotations

import pytest

from ketch.server.client_text import echoed, log_field


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
