"""Tests for parsing other servers' MLSD and LIST output."""

from __future__ import annotations

import calendar
import dataclasses
import math
import pickle
import stat
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import ketch.protocol
from ketch.protocol import remote_listing
from ketch.protocol.listing import FileFacts, format_list_line
from ketch.protocol.remote_listing import (
    MlsdSyntaxError,
    RemoteEntry,
    parse_list,
    parse_list_line,
    parse_mlsd,
    parse_mlsd_line,
)

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PURE_FTPD_MLSD = (
    "type=file;size=5;modify=20261121080000;UNIX.mode=0644;UNIX.uid=1000;"
    "UNIX.gid=1000;unique=803g1c2; a.txt"
)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def list_entry(line: str, now: datetime = NOW) -> RemoteEntry:
    entry = parse_list_line(line, now)
    assert entry is not None, line
    return entry


# --- RemoteEntry -----------------------------------------------------------------


def test_entry_defaults_are_empty() -> None:
    entry = RemoteEntry(name="x", kind="file", size=1, mtime=None, mtime_precision=None)
    assert entry.link_target is None
    assert entry.facts == {}
    assert entry.permissions is None
    assert not entry.is_self_or_parent


def test_entry_is_frozen() -> None:
    entry = RemoteEntry(name="x", kind="file", size=1, mtime=None, mtime_precision=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "facts", "expected"),
    [
        (".", {}, True),
        ("..", {}, True),
        ("...", {}, False),
        ("/home/user", {"type": "cdir"}, True),
        ("x", {"type": "PDir"}, True),
        ("x", {"type": "dir"}, False),
    ],
)
def test_is_self_or_parent(name: str, facts: dict[str, str], expected: bool) -> None:
    entry = RemoteEntry(name, "dir", None, None, None, facts=facts)
    assert entry.is_self_or_parent is expected


def test_names_are_exported_from_the_protocol_package() -> None:
    for name in remote_listing.__all__:
        assert getattr(ketch.protocol, name) is getattr(remote_listing, name)
        assert name in ketch.protocol.__all__


# --- MLSD ------------------------------------------------------------------------


def test_pure_ftpd_mlsd_line() -> None:
    entry = parse_mlsd_line(PURE_FTPD_MLSD)
    assert entry == RemoteEntry(
        name="a.txt",
        kind="file",
        size=5,
        mtime=at(2026, 11, 21, 8, 0, 0),
        mtime_precision="second",
        facts={
            "type": "file",
            "size": "5",
            "modify": "20261121080000",
            "unix.mode": "0644",
            "unix.uid": "1000",
            "unix.gid": "1000",
            "unique": "803g1c2",
        },
    )


def test_mlsd_fact_names_and_type_values_are_case_insensitive() -> None:
    entry = parse_mlsd_line("Type=FILE;Size=44242;Modify=19990217230400; character-sets")
    assert (entry.kind, entry.size, entry.mtime) == ("file", 44242, at(1999, 2, 17, 23, 4, 0))
    assert entry.facts["type"] == "FILE"


def test_mlsd_name_keeps_spaces_and_semicolons() -> None:
    entry = parse_mlsd_line("type=file;size=1;  two  spaces; and;semicolons ")
    assert entry.name == " two  spaces; and;semicolons "
    assert entry.size == 1


def test_mlsd_name_may_look_like_facts() -> None:
    assert parse_mlsd_line("type=file; size=9;x").name == "size=9;x"


def test_mlsd_line_without_facts_has_unknown_kind() -> None:
    entry = parse_mlsd_line(" lonely")
    assert (entry.name, entry.kind, entry.size, entry.mtime) == ("lonely", "unknown", None, None)
    assert entry.facts == {}


def test_mlsd_directory_size_comes_from_sizd() -> None:
    entry = parse_mlsd_line("type=dir;sizd=4096;modify=20240102030405; pub")
    assert (entry.kind, entry.size) == ("dir", 4096)


def test_mlsd_size_is_preferred_to_sizd() -> None:
    assert parse_mlsd_line("type=dir;sizd=1;size=2; d").size == 2


def test_mlsd_unix_symlink_with_target() -> None:
    entry = parse_mlsd_line("type=OS.unix=slink:/usr/lib/x;size=10;modify=20240102030405; lnk")
    assert (entry.kind, entry.link_target, entry.name) == ("link", "/usr/lib/x", "lnk")
    assert entry.facts["type"] == "OS.unix=slink:/usr/lib/x"


def test_mlsd_proftpd_symlink_without_target() -> None:
    entry = parse_mlsd_line("modify=20240102030405;perm=adfr;type=OS.unix=symlink; lnk")
    assert (entry.kind, entry.link_target, entry.permissions) == ("link", None, "adfr")


@pytest.mark.parametrize(
    ("type_fact", "kind"),
    [("cdir", "dir"), ("pdir", "dir"), ("OS.unix=chr-4/64", "other"), ("weird", "other")],
)
def test_mlsd_other_types(type_fact: str, kind: str) -> None:
    assert parse_mlsd_line(f"type={type_fact}; x").kind == kind


def test_mlsd_modify_fraction_is_dropped_to_whole_seconds() -> None:
    entry = parse_mlsd_line("type=file;modify=20240102030405.987; x")
    assert entry.mtime == at(2024, 1, 2, 3, 4, 5)
    assert entry.mtime_precision == "second"


@pytest.mark.parametrize("modify", ["2024", "20241302030405", "20240102030460", "2024010203040x"])
def test_mlsd_unreadable_modify_leaves_mtime_unknown(modify: str) -> None:
    entry = parse_mlsd_line(f"type=file;size=3;modify={modify}; x")
    assert (entry.mtime, entry.mtime_precision, entry.size) == (None, None, 3)
    assert entry.facts["modify"] == modify


@pytest.mark.parametrize("size", ["-5", "+5", "", "\u0665", "0x10", "1_000"])
def test_mlsd_unreadable_size_is_unknown(size: str) -> None:
    assert parse_mlsd_line(f"type=file;size={size}; x").size is None


def test_mlsd_missing_final_semicolon_is_tolerated() -> None:
    entry = parse_mlsd_line("type=file;size=7 x")
    assert (entry.name, entry.size) == ("x", 7)


def test_mlsd_line_terminator_is_removed() -> None:
    assert parse_mlsd_line("type=file; x\r\n").name == "x"


def test_entries_survive_pickling() -> None:
    entry = parse_mlsd_line(PURE_FTPD_MLSD)
    assert pickle.loads(pickle.dumps(entry)) == entry


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("type=file;size=5;a.txt", "no space"),
        ("type=file; ", "no name"),
        ("type=file;size; x", "'size' is not name=value"),
        ("=file; x", "'=file' is not name=value"),
        ("-rw-r--r-- 1 ftp ftp 5 Nov 21 08:00 a.txt", "is not name=value"),
    ],
)
def test_malformed_mlsd_lines_raise(line: str, message: str) -> None:
    with pytest.raises(MlsdSyntaxError, match=message):
        parse_mlsd_line(line)


def test_mlsd_syntax_error_is_a_value_error() -> None:
    assert issubclass(MlsdSyntaxError, ValueError)


def test_parse_mlsd_skips_cdir_pdir_and_blank_lines() -> None:
    text = (
        "Type=cdir;Modify=19990219183438; /iana/assignments\r\n"
        "Type=pdir;Modify=19990112030453; ..\r\n"
        "\r\n"
        "Type=dir;Modify=19990219073522; media-types\r\n"
        "Type=file;Size=1947;Modify=19990209215600; operating-system-names\r\n"
    )
    entries = parse_mlsd(text)
    assert [(e.name, e.kind, e.size) for e in entries] == [
        ("media-types", "dir", None),
        ("operating-system-names", "file", 1947),
    ]


def test_parse_mlsd_splits_only_on_line_feeds() -> None:
    entries = parse_mlsd("type=file; a\u2028b\x85c\x0cd\ntype=file; e")
    assert [e.name for e in entries] == ["a\u2028b\x85c\x0cd", "e"]


def test_parse_mlsd_of_nothing_is_empty() -> None:
    assert parse_mlsd("") == []


def test_parse_mlsd_rejects_list_output() -> None:
    with pytest.raises(MlsdSyntaxError):
        parse_mlsd("total 1\r\n-rw-r--r-- 1 ftp ftp 5 Nov 21 08:00 a.txt\r\n")


_FACT_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9.-]{0,10}", fullmatch=True)
_FACT_VALUES = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=";"), max_size=12
)
_LINE_TEXT = st.characters(blacklist_characters="\r\n")


@given(
    facts=st.dictionaries(_FACT_NAMES, _FACT_VALUES, max_size=6),
    name=st.text(_LINE_TEXT, min_size=1),
)
def test_mlsd_line_round_trip(facts: dict[str, str], name: str) -> None:
    assume(len({key.lower() for key in facts}) == len(facts))
    line = "".join(f"{key}={value};" for key, value in facts.items()) + " " + name
    entry = parse_mlsd_line(line)
    assert entry.name == name
    assert entry.facts == {key.lower(): value for key, value in facts.items()}


# --- LIST: Unix ls -l style ------------------------------------------------------


def test_vsftpd_recent_file() -> None:
    entry = list_entry("-rw-r--r--    1 0        0            1234 Nov 20 12:34 file.txt")
    assert entry == RemoteEntry(
        name="file.txt",
        kind="file",
        size=1234,
        mtime=at(2025, 11, 20, 12, 34),
        mtime_precision="minute",
        permissions="rw-r--r--",
    )


def test_vsftpd_old_directory() -> None:
    entry = list_entry("drwxr-xr-x    2 ftp      ftp          4096 Jan 01  2020 dir")
    assert entry == RemoteEntry(
        name="dir",
        kind="dir",
        size=4096,
        mtime=at(2020, 1, 1),
        mtime_precision="day",
        permissions="rwxr-xr-x",
    )


def test_pure_ftpd_numeric_owner_and_group() -> None:
    entry = list_entry("-rw-r--r--    1 1000       1000             5 Nov 21 08:00 a.txt")
    assert (entry.name, entry.kind, entry.size) == ("a.txt", "file", 5)
    assert (entry.mtime, entry.mtime_precision) == (at(2025, 11, 21, 8, 0), "minute")


def test_proftpd_lines() -> None:
    text = (
        "drwxr-xr-x   3 ftp      ftp          4096 Apr 12  2019 pub\r\n"
        "-rw-r--r--   1 ftp      ftp           112 Mar  5 09:41 readme.txt\r\n"
    )
    assert [(e.name, e.kind, e.size, e.mtime) for e in parse_list(text, NOW)] == [
        ("pub", "dir", 4096, at(2019, 4, 12)),
        ("readme.txt", "file", 112, at(2025, 3, 5, 9, 41)),
    ]


def test_group_may_be_missing() -> None:
    entry = list_entry("-rw-r--r-- 1 owner 1234 Jan 01 12:00 name")
    assert (entry.name, entry.size, entry.mtime) == ("name", 1234, at(2026, 1, 1, 12, 0))


def test_link_count_owner_and_group_may_all_be_missing() -> None:
    assert list_entry("-rw-r--r-- 77 Jan 01 12:00 name").size == 77


@pytest.mark.parametrize("marker", ["+", ".", "@"])
def test_acl_and_xattr_markers_after_the_mode(marker: str) -> None:
    entry = list_entry(f"-rw-r-----{marker} 1 root adm 10 Jan 01 12:00 log")
    assert (entry.name, entry.permissions) == ("log", "rw-r-----")


def test_special_permission_bits_are_kept() -> None:
    assert list_entry("-rwsr-xr-T 1 a b 1 Jan 01 12:00 x").permissions == "rwsr-xr-T"


def test_character_device_has_no_size() -> None:
    entry = list_entry("crw-rw---- 1 root tty 4, 64 Jan 1 12:00 tty0")
    assert (entry.name, entry.kind, entry.size) == ("tty0", "other", None)
    assert entry.mtime == at(2026, 1, 1, 12, 0)


def test_block_device_without_space_after_comma() -> None:
    entry = list_entry("brw-rw---- 1 root disk 8,0 Jan 1 12:00 sda")
    assert (entry.name, entry.kind, entry.size) == ("sda", "other", None)


@pytest.mark.parametrize(
    ("type_char", "kind"),
    [("-", "file"), ("d", "dir"), ("l", "link"), ("p", "other"), ("s", "other"), ("?", "other")],
)
def test_type_characters(type_char: str, kind: str) -> None:
    assert list_entry(f"{type_char}rw-r--r-- 1 a b 1 Jan 01 12:00 x").kind == kind


def test_name_with_spaces_keeps_leading_and_trailing_spaces() -> None:
    entry = list_entry("-rw-r--r--   1 ftp ftp 3 Jan 01 12:00   two  spaces  ")
    assert entry.name == "  two  spaces  "


def test_name_that_contains_a_date() -> None:
    entry = list_entry("-rw-r--r-- 1 a b 5 Jan 01 12:00 x 6 Feb 02 13:00 y")
    assert (entry.name, entry.size, entry.mtime) == ("x 6 Feb 02 13:00 y", 5, at(2026, 1, 1, 12))


def test_owner_and_group_that_look_like_numbers() -> None:
    entry = list_entry("-rw-r--r-- 1 12 34 56 Jan 01 12:00 f")
    assert (entry.name, entry.size) == ("f", 56)


def test_month_names_are_case_insensitive() -> None:
    assert list_entry("-rw-r--r-- 1 a b 5 JAN 01 2020 f").mtime == at(2020, 1, 1)


def test_symlink_splits_name_and_target() -> None:
    entry = list_entry("lrwxrwxrwx   1 root     root            7 Dec 31 23:00 bin -> usr/bin")
    assert (entry.name, entry.kind, entry.link_target) == ("bin", "link", "usr/bin")
    assert entry.mtime == at(2025, 12, 31, 23, 0)


def test_symlink_names_and_targets_with_spaces() -> None:
    entry = list_entry("lrwxrwxrwx 1 a b 9 Jan 01 12:00 my link -> my target -> more")
    assert (entry.name, entry.link_target) == ("my link", "my target -> more")


def test_symlink_without_target_shown() -> None:
    entry = list_entry("lrwxrwxrwx 1 a b 9 Jan 01 12:00 latest")
    assert (entry.name, entry.link_target) == ("latest", None)


def test_arrow_in_a_file_name_is_not_a_link() -> None:
    entry = list_entry("-rw-r--r-- 1 a b 9 Jan 01 12:00 a -> b")
    assert (entry.name, entry.link_target) == ("a -> b", None)


# --- LIST: year inference --------------------------------------------------------


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Dec 31 23:00", at(2025, 12, 31, 23, 0)),  # across the new year
        ("Jan 02 11:00", at(2026, 1, 2, 11, 0)),
        ("Jan 03 11:59", at(2026, 1, 3, 11, 59)),  # less than a day ahead: clock skew
        ("Jan 03 12:01", at(2025, 1, 3, 12, 1)),  # more than a day ahead: last year
        ("Jul 04 10:00", at(2025, 7, 4, 10, 0)),
        ("Feb 29 10:00", at(2024, 2, 29, 10, 0)),  # the last leap year
    ],
)
def test_year_of_recent_dates(date: str, expected: datetime) -> None:
    assert list_entry(f"-rw-r--r-- 1 a b 1 {date} x").mtime == expected


def test_date_just_after_new_year_seen_from_new_years_eve() -> None:
    entry = list_entry("-rw-r--r-- 1 a b 1 Jan 01 00:30 x", now=at(2025, 12, 31, 23, 0))
    assert entry.mtime == at(2026, 1, 1, 0, 30)


def test_naive_now_is_taken_as_utc() -> None:
    entry = list_entry("-rw-r--r-- 1 a b 1 Jan 03 11:59 x", now=datetime(2026, 1, 2, 12, 0))
    assert entry.mtime == at(2026, 1, 3, 11, 59)


def test_aware_now_is_converted_to_utc() -> None:
    # 03:00 at UTC+5 is 22:00 UTC the day before: a day later is Jan 1, 22:00 UTC.
    now = datetime(2026, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=5)))
    assert list_entry("-rw-r--r-- 1 a b 1 Jan 01 21:59 x", now=now).mtime == at(2026, 1, 1, 21, 59)
    assert list_entry("-rw-r--r-- 1 a b 1 Jan 01 22:01 x", now=now).mtime == at(2025, 1, 1, 22, 1)


def test_now_at_the_end_of_time_does_not_overflow() -> None:
    entry = list_entry("-rw-r--r-- 1 a b 1 Dec 31 10:00 x", now=datetime.max.replace(tzinfo=UTC))
    assert entry.mtime == at(9999, 12, 31, 10, 0)


# --- LIST: Windows / IIS DOS style ------------------------------------------------


def test_iis_directory() -> None:
    entry = list_entry("01-02-24  03:04PM       <DIR>          Folder name")
    assert entry == RemoteEntry(
        name="Folder name",
        kind="dir",
        size=None,
        mtime=at(2024, 1, 2, 15, 4),
        mtime_precision="minute",
    )


def test_iis_file() -> None:
    entry = list_entry("01-02-24  03:04PM              1234 file.txt")
    assert (entry.name, entry.kind, entry.size) == ("file.txt", "file", 1234)
    assert (entry.mtime, entry.permissions, entry.facts) == (at(2024, 1, 2, 15, 4), None, {})


def test_iis_four_digit_year_and_24_hour_clock() -> None:
    entry = list_entry("12-25-2023  15:04                 1,234,567 big file.iso")
    assert (entry.name, entry.size) == ("big file.iso", 1234567)
    assert entry.mtime == at(2023, 12, 25, 15, 4)


@pytest.mark.parametrize(
    ("clock", "expected"),
    [("12:00AM", (0, 0)), ("12:30PM", (12, 30)), ("01:05AM", (1, 5)), ("11:59PM", (23, 59))],
)
def test_iis_twelve_hour_clock(clock: str, expected: tuple[int, int]) -> None:
    entry = list_entry(f"06-15-24  {clock}  5 f")
    assert entry.mtime is not None
    assert (entry.mtime.hour, entry.mtime.minute) == expected


@pytest.mark.parametrize(("yy", "year"), [("68", 2068), ("69", 1969), ("99", 1999), ("00", 2000)])
def test_iis_two_digit_year_pivot(yy: str, year: int) -> None:
    assert list_entry(f"06-15-{yy}  10:00AM  5 f").mtime == at(year, 6, 15, 10, 0)


def test_iis_names_lose_leading_spaces_but_keep_trailing_ones() -> None:
    assert list_entry("01-02-24  03:04PM  5   padded  ").name == "padded  "


def test_iis_lowercase_dir_and_am_pm() -> None:
    entry = list_entry("01-02-24  03:04pm  <dir>  d")
    assert (entry.kind, entry.mtime) == ("dir", at(2024, 1, 2, 15, 4))


# --- LIST: ISO dates (GNU ls --time-style) ---------------------------------------


def test_long_iso_date_is_read_to_the_minute() -> None:
    entry = list_entry("-rw-r--r-- 1 u g 3 2026-10-02 10:15 iso.txt")
    assert (entry.name, entry.kind, entry.size) == ("iso.txt", "file", 3)
    assert (entry.mtime, entry.mtime_precision) == (at(2026, 10, 2, 10, 15), "minute")


def test_long_iso_directory_and_link() -> None:
    directory = list_entry("drwxr-xr-x 2 u g 4096 1999-12-31 23:59  spaced dir")
    assert (directory.name, directory.kind) == (" spaced dir", "dir")
    link = list_entry("lrwxrwxrwx 1 u g 7 2026-01-02 03:04 latest -> v1.2.3")
    assert (link.name, link.kind, link.link_target) == ("latest", "link", "v1.2.3")


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-10-02 10:15:30.123456789 +0200", at(2026, 10, 2, 8, 15, 30)),
        ("2026-10-02 01:15:30.000000000 +0530", at(2026, 10, 1, 19, 45, 30)),
        ("2026-12-31 22:00:00 -0300", at(2027, 1, 1, 1, 0, 0)),
    ],
)
def test_full_iso_time_is_read_to_the_second_in_its_zone(stamp: str, expected: datetime) -> None:
    entry = list_entry(f"-rw-r--r-- 1 u g 3 {stamp} full.txt")
    assert (entry.name, entry.mtime, entry.mtime_precision) == ("full.txt", expected, "second")


@pytest.mark.parametrize(
    "line",
    [
        "-rw-r--r-- 1 u g 3 2026-02-30 10:15 f",  # no such day
        "-rw-r--r-- 1 u g 3 2026-13-01 10:15 f",  # no such month
        "-rw-r--r-- 1 u g 3 2026-10-02 24:00 f",  # no such hour
        "-rw-r--r-- 1 u g 3 0001-01-01 00:00:00.0 +0100 f",  # before year 1 in UTC
        "-rw-r--r-- 1 u g 3 2026-10-02 10:15",  # no name
    ],
)
def test_impossible_iso_dates_are_not_entries(line: str) -> None:
    assert parse_list_line(line, NOW) is None


# --- LIST: lines that are not entries ---------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "total 123",
        "garbage",
        "-rw-r--r-- 1 a b x Jan 01 12:00 f",  # size not a number
        "-rw-r--r-- 1 a b 5 Jan 01 12:00",  # no name
        "-rw-r--r-- 1 a b 5 Jan 01 12:00 ",  # no name after the separator
        "-rw-r--r-- 1 a b 5 Foo 01 12:00 f",  # no such month
        "-rw-r--r-- 1 a b 5 Feb 30 12:00 f",  # no such day
        "-rw-r--r-- 1 a b 5 Feb 30  2020 f",
        "-rw-r--r-- 1 a b 5 Jan 01 24:00 f",  # no such hour
        "-rw-r--r-- 1 a b 5 Jan 01 12:60 f",
        "-rw-r--r-- 1 a b 5 Jan 01 212 f",  # neither a time nor a year
        "lrwxrwxrwx 1 a b 5 Jan 01 12:00  -> target",  # link without a name
        "-rw-r--r 1 a b 5 Jan 01 12:00 f",  # mode one letter short
        "13-02-24  03:04PM  5 f",  # no such month
        "01-02-24  13:04PM  5 f",  # 13 o'clock PM
        "01-02-24  24:00  5 f",
        "01-02-24  03:04PM  <FILE> f",
        "01-02-24  03:04PM  5",  # no name
    ],
)
def test_lines_that_are_not_entries_give_none(line: str) -> None:
    assert parse_list_line(line, NOW) is None


@given(st.text())
def test_parse_list_line_never_raises(line: str) -> None:
    entry = parse_list_line(line, NOW)
    assert entry is None or entry.name


@given(st.text(st.sampled_from("drwx-lcb+ 0123456789:,JanFebDc<DIR>AMP")))
def test_parse_list_line_never_raises_on_near_misses(tail: str) -> None:
    for line in ("-rw-r--r-- " + tail, "01-02-24  " + tail, tail):
        entry = parse_list_line(line, NOW)
        assert entry is None or entry.name


@pytest.mark.parametrize("filler", ["a ", "1 ", " ", "1,", "a"])
def test_long_garbage_lines_are_rejected_quickly(filler: str) -> None:
    # A regex that backtracked quadratically would take minutes here.
    assert parse_list_line("-rw-r--r-- " + filler * 100_000, NOW) is None


# --- parse_list ------------------------------------------------------------------


def test_parse_list_skips_total_dot_entries_and_blank_lines() -> None:
    text = (
        "total 12\r\n"
        "drwxr-xr-x    3 0        0            4096 Jan 01 10:00 .\r\n"
        "drwxr-xr-x    3 0        0            4096 Jan 01 10:00 ..\r\n"
        "-rw-r--r--    1 0        0               3 Jan 01 10:00 b\r\n"
        "\r\n"
        "-rw-r--r--    1 0        0               4 Jan 01 10:00 a\r\n"
    )
    assert [(e.name, e.size) for e in parse_list(text, NOW)] == [("b", 3), ("a", 4)]


def test_parse_list_accepts_bare_line_feeds_and_no_final_newline() -> None:
    text = "-rw-r--r-- 1 a b 1 Jan 01 10:00 x\n-rw-r--r-- 1 a b 2 Jan 01 10:00 y"
    assert [e.name for e in parse_list(text, NOW)] == ["x", "y"]


def test_parse_list_splits_only_on_line_feeds() -> None:
    entries = parse_list("-rw-r--r-- 1 a b 1 Jan 01 10:00 a\u2028b\x0bc\r\n", NOW)
    assert [e.name for e in entries] == ["a\u2028b\x0bc"]


def test_parse_list_keeps_the_lines_it_cannot_read_and_not_total_or_blank_ones() -> None:
    # A server speaking German: "insgesamt" for "total", "Okt" and "Mär" for months.
    text = (
        "insgesamt 12\r\n"
        "-rw-r--r-- 1 ftp ftp 3 2026-10-02 10:15 iso.txt\r\n"
        "-rw-r--r-- 1 ftp ftp 3 Okt  2 10:15 german.txt\r\n"
        "-rw-r--r-- 1 ftp ftp 3 M\u00e4r  2 10:15 maerz.txt\r\n"
        "-rw-r--r-- 1 ftp ftp 3 Oct  2 10:15 english.txt\r\n"
        "\r\n"
        "total 1.5M\r\n"
    )
    listing = parse_list(text, NOW)
    assert [entry.name for entry in listing] == ["iso.txt", "english.txt"]
    assert listing.unreadable == (
        "-rw-r--r-- 1 ftp ftp 3 Okt  2 10:15 german.txt",
        "-rw-r--r-- 1 ftp ftp 3 M\u00e4r  2 10:15 maerz.txt",
    )


def test_parse_mlsd_has_no_unreadable_lines() -> None:
    assert parse_mlsd("type=file;size=1; a\r\n").unreadable == ()


def test_parse_list_mixed_dos_listing() -> None:
    text = (
        "01-02-24  03:04PM       <DIR>          aspnet_client\r\n"
        "06-25-09  02:41PM                  689 iisstart.htm\r\n"
    )
    assert [(e.name, e.kind, e.size) for e in parse_list(text, NOW)] == [
        ("aspnet_client", "dir", None),
        ("iisstart.htm", "file", 689),
    ]


# --- Round trip with ketch's own LIST formatter -----------------------------------

_KINDS: tuple[Literal["file", "dir", "link", "other"], ...] = ("file", "dir", "link", "other")
_TYPE_BITS = {
    "file": [stat.S_IFREG, 0],
    "dir": [stat.S_IFDIR, 0],
    "link": [stat.S_IFLNK, 0],
    "other": [stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK, 0],
}
# ls prints four-digit years only, and the parser accepts nothing shorter.
_FIRST = calendar.timegm((1000, 1, 1, 0, 0, 0))
_LAST = calendar.timegm((9998, 12, 31, 23, 59, 59))
_RECENT = 180 * 86400
_SLACK = 86400
# Names may hold anything a listing line can: spaces anywhere (the parser takes
# exactly the one space ls puts before the name), " -> " outside links, and
# characters str.splitlines would split on.
_NAMES = st.builds(
    lambda padding, core: padding + core,
    st.sampled_from(["", " ", "  "]),  # make leading spaces common, not rare
    st.text(st.characters(blacklist_characters="\r\n/\x00"), min_size=1),
)
_OWNERS = st.sampled_from(["ftp", "0", "1000", "www-data", "nobody", "averylongownername"])


@st.composite
def _file_facts(draw: st.DrawFn) -> FileFacts:
    kind = draw(st.sampled_from(_KINDS))
    name = draw(_NAMES)
    target = None
    if kind == "link":
        # ls cannot escape " -> ", so a link name that contains it (or ends in
        # " ->", which makes one with the separator) cannot be told from the target.
        assume(" -> " not in name + " ")
        target = draw(st.none() | st.text(st.characters(blacklist_characters="\r\n\x00")))
    return FileFacts(
        name=name,
        kind=kind,
        size=draw(st.integers(0, 2**63)),
        mtime=draw(st.integers(_FIRST, _LAST)) + draw(st.sampled_from([0.0, 0.25, 0.5, 0.75])),
        mode=draw(st.sampled_from(_TYPE_BITS[kind])) | draw(st.integers(0, 0o7777)),
        nlink=draw(st.integers(0, 10**6)),
        owner=draw(_OWNERS),
        group=draw(_OWNERS),
        link_target=target,
    )


def _truncated(moment: datetime, precision: str | None) -> datetime:
    if precision == "minute":
        return moment.replace(second=0)
    assert precision == "day"
    return moment.replace(hour=0, minute=0, second=0)


@given(
    facts=_file_facts(),
    now_offset=st.one_of(st.integers(-_SLACK - 120, _RECENT + 120), st.integers(-(10**11), 10**11)),
)
def test_own_list_lines_parse_back(facts: FileFacts, now_offset: int) -> None:
    now = math.floor(facts.mtime) + now_offset
    assume(_FIRST + 366 * 86400 <= now <= _LAST)
    line = format_list_line(facts, now)
    entry = parse_list_line(line, EPOCH + timedelta(seconds=now))
    assert entry is not None, line
    assert (entry.name, entry.kind, entry.size) == (facts.name, facts.kind, facts.size)
    assert entry.link_target == (facts.link_target if facts.kind == "link" else None)
    recent = now - _RECENT <= facts.mtime <= now + _SLACK
    assert entry.mtime_precision == ("minute" if recent else "day")
    original = EPOCH + timedelta(seconds=math.floor(facts.mtime))
    assert entry.mtime == _truncated(original, entry.mtime_precision)
