"""Values the client reads from reply texts: 257 paths, MDTM times, FEAT lists."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.reply_values import (
    mlst_facts_to_select,
    parse_feat,
    parse_mdtm_value,
    parse_mlst_feature,
    parse_quoted_path,
)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('"/" is the current directory.', "/"),
        ('"/home/alice" created', "/home/alice"),
        ('"/a ""quoted"" dir" is current directory.', '/a "quoted" dir'),
        ('MKD command successful: "/x y"', "/x y"),
        ('""', ""),
        ("no quotes at all", None),
        ('"unterminated', None),
    ],
)
def test_257_paths_are_unquoted_as_rfc_959_says(text: str, path: str | None) -> None:
    assert parse_quoted_path(text) == path


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=40))
def test_any_path_survives_quoting(path: str) -> None:
    quoted = '"' + path.replace('"', '""') + '" is the current directory.'
    assert parse_quoted_path(quoted) == path


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("20261121085313", datetime(2026, 11, 21, 8, 53, 13, tzinfo=UTC)),
        ("20261121085313.5", datetime(2026, 11, 21, 8, 53, 13, 500000, tzinfo=UTC)),
        ("20000101000000.123456789", datetime(2000, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
        ("File time 19991231235959 UTC", datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_mdtm_values_are_utc(text: str, moment: datetime) -> None:
    assert parse_mdtm_value(text) == moment


@pytest.mark.parametrize("text", ["", "2026112108531", "202611210853130", "20261341085313"])
def test_mdtm_garbage_gives_none_instead_of_a_wrong_time(text: str) -> None:
    assert parse_mdtm_value(text) is None


def test_feat_lines_become_upper_case_names_with_parameters() -> None:
    lines = [
        "Extensions supported:",
        " UTF8",
        " mlst type*;size*;modify*;",
        " REST STREAM",
        "",
        "End.",
    ]
    assert parse_feat(lines) == {"UTF8": "", "MLST": "type*;size*;modify*;", "REST": "STREAM"}


def test_a_single_line_feat_reply_lists_nothing() -> None:
    assert parse_feat(["No features"]) == {}


def test_the_mlst_feature_lists_facts_and_which_are_on() -> None:
    assert parse_mlst_feature("type;Size*; modify ;perm*;;") == [
        ("type", False),
        ("Size", True),
        ("modify", False),
        ("perm", True),
    ]


LISTING_FACTS = ("type", "size", "modify")


@pytest.mark.parametrize(
    ("feature", "selection"),
    [
        # RFC 3659 §7.9: only perm is on until the client selects the others.
        ("type;size;modify;perm*;", ["type", "size", "modify", "perm"]),
        ("type*;size;modify*;unique*;", ["type", "size", "modify", "unique"]),
        ("Type;SIZE*;Modify*;UNIX.mode*;", ["Type", "SIZE", "Modify", "UNIX.mode"]),  # as spelt
        ("size;perm*;", ["size", "perm"]),  # no type to ask for
        ("type*;size*;modify*;perm;", None),  # all on: nothing to send
        ("perm*;unique;", None),  # none of them offered
        ("", None),
    ],
)
def test_opts_mlst_turns_on_the_listing_facts_and_keeps_those_on(
    feature: str, selection: list[str] | None
) -> None:
    assert mlst_facts_to_select(feature, LISTING_FACTS) == selection
