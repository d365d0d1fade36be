"""Tests for LIST / NLST / MDTM formatting."""

from __future__ import annotations

import calendar
import os
import stat
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.commands import encode_text
from ketch.protocol.listing import (
    FileFacts,
    format_list_line,
    format_listing,
    format_mdtm,
    format_name_list,
    format_nlst_line,
)

FILE_MODE = stat.S_IFREG | 0o644
DIR_MODE = stat.S_IFDIR | 0o755
LINK_MODE = stat.S_IFLNK | 0o777
DAY = 86400.0
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


MTIME = utc(2023, 11, 21, 8, 17, 0)
NOW = MTIME + 3600


def facts(name: str = "name", **overrides: object) -> FileFacts:
    values: dict[str, object] = {
        "name": name,
        "kind": "file",
        "size": 1234,
        "mtime": MTIME,
        "mode": FILE_MODE,
    }
    values.update(overrides)
    return FileFacts(**values)  # type: ignore[arg-type]


# --- LIST lines --------------------------------------------------------------


def test_recent_file_line_matches_ls_layout() -> None:
    assert format_list_line(facts(), NOW) == (
        "-rw-r--r--   1 ftp      ftp          1234 Nov 21 08:17 name"
    )


def test_old_file_shows_year_right_aligned_in_time_field() -> None:
    assert format_list_line(facts(), NOW + 400 * DAY) == (
        "-rw-r--r--   1 ftp      ftp          1234 Nov 21  2023 name"
    )


def test_single_digit_day_is_padded_to_two_columns() -> None:
    line = format_list_line(facts(mtime=utc(2024, 3, 5, 9, 4, 0)), utc(2024, 3, 6, 0, 0, 0))
    assert line.endswith(" Mar  5 09:04 name")


def test_file_exactly_180_days_old_still_shows_time() -> None:
    assert "Nov 21 08:17" in format_list_line(facts(), MTIME + 180 * DAY)


def test_file_older_than_180_days_shows_year() -> None:
    assert "Nov 21  2023" in format_list_line(facts(), MTIME + 180 * DAY + 1)


def test_file_less_than_a_day_in_the_future_shows_time() -> None:
    assert "Nov 21 08:17" in format_list_line(facts(), MTIME - DAY + 1)


def test_file_more_than_a_day_in_the_future_shows_year() -> None:
    assert "Nov 21  2023" in format_list_line(facts(), MTIME - DAY - 1)


def test_directory_line() -> None:
    line = format_list_line(facts("pub", kind="dir", mode=DIR_MODE, size=4096, nlink=3), NOW)
    assert line == "drwxr-xr-x   3 ftp      ftp          4096 Nov 21 08:17 pub"


def test_symlink_line_shows_target() -> None:
    line = format_list_line(
        facts("latest", kind="link", mode=LINK_MODE, size=9, link_target="v1.2.3"), NOW
    )
    assert line == "lrwxrwxrwx   1 ftp      ftp             9 Nov 21 08:17 latest -> v1.2.3"


def test_symlink_without_known_target_shows_name_only() -> None:
    line = format_list_line(facts("latest", kind="link", mode=LINK_MODE), NOW)
    assert line.endswith(" latest")


def test_link_target_is_ignored_for_non_links() -> None:
    assert format_list_line(facts(link_target="x"), NOW).endswith(" name")


def test_mode_without_type_bits_takes_type_from_kind() -> None:
    line = format_list_line(facts(kind="dir", mode=0o750), NOW)
    assert line.startswith("drwxr-x--- ")


def test_special_permission_bits_are_shown() -> None:
    line = format_list_line(facts(mode=stat.S_IFREG | 0o4755), NOW)
    assert line.startswith("-rwsr-xr-x ")


def test_long_owner_group_and_size_widen_columns_but_stay_separated() -> None:
    line = format_list_line(
        facts(owner="averylongowner", group="staffgroup", size=12345678901, nlink=1234), NOW
    )
    assert line == ("-rw-r--r-- 1234 averylongowner staffgroup 12345678901 Nov 21 08:17 name")


def test_name_with_spaces_is_kept_verbatim() -> None:
    assert format_list_line(facts("  two  spaces "), NOW).endswith(" 08:17   two  spaces ")


def test_cr_and_lf_in_names_cannot_break_the_listing() -> None:
    line = format_list_line(facts("a\r\nb", kind="link", link_target="c\nd"), NOW)
    assert line.endswith(" a??b -> c?d")
    assert format_nlst_line(facts("x\ny")) == "x?y"


def test_all_month_names_are_english_abbreviations() -> None:
    months = [
        format_list_line(facts(mtime=utc(2023, month, 15, 12, 0, 0)), NOW).split()[5]
        for month in range(1, 13)
    ]
    assert months == MONTHS


@pytest.fixture
def far_east_timezone() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Etc/GMT-14"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.mark.usefixtures("far_east_timezone")
def test_times_are_utc_whatever_the_local_timezone() -> None:
    assert " Nov 21 08:17 " in format_list_line(facts(), NOW)
    assert format_mdtm(MTIME) == "20231121081700"


def test_absurd_mtimes_do_not_raise() -> None:
    for mtime in (float("nan"), float("inf"), -float("inf"), 1e300, -1e300):
        assert format_list_line(facts(mtime=mtime), NOW).endswith(" name")
        assert len(format_mdtm(mtime)) == 14


# --- NLST and whole listings -------------------------------------------------


def test_nlst_line_is_just_the_name() -> None:
    assert format_nlst_line(facts("report.pdf", size=99)) == "report.pdf"


def test_listing_terminates_every_line_with_crlf() -> None:
    data = format_listing([facts("a"), facts("b")], NOW)
    assert data == (
        b"-rw-r--r--   1 ftp      ftp          1234 Nov 21 08:17 a\r\n"
        b"-rw-r--r--   1 ftp      ftp          1234 Nov 21 08:17 b\r\n"
    )


def test_names_only_listing() -> None:
    assert format_listing([facts("a"), facts("b c")], NOW, names_only=True) == b"a\r\nb c\r\n"


def test_empty_listing_is_empty_bytes() -> None:
    assert format_listing([], NOW) == b""
    assert format_listing(iter([]), NOW, names_only=True) == b""


def test_listing_restores_non_utf8_name_bytes() -> None:
    name = b"caf\xe9 \xc3\xa9".decode("utf-8", "surrogateescape")
    assert format_listing([facts(name)], NOW, names_only=True) == b"caf\xe9 \xc3\xa9\r\n"
    assert format_listing([facts(name)], NOW).endswith(b" caf\xe9 \xc3\xa9\r\n")


def test_name_list_is_the_names_only_listing() -> None:
    names = ["a", "b c", "x\ry", "caf\udce9"]
    expected = format_listing([facts(name) for name in names], NOW, names_only=True)
    assert format_name_list(names) == expected == b"a\r\nb c\r\nx?y\r\ncaf\xe9\r\n"
    assert format_name_list([]) == b""


def test_listing_accepts_a_generator() -> None:
    data = format_listing((facts(str(i)) for i in range(3)), NOW, names_only=True)
    assert data == b"0\r\n1\r\n2\r\n"


@pytest.mark.parametrize("sign", [-1, 1], ids=["six-months-ago", "a-day-ahead"])
def test_entries_in_the_minute_of_the_recent_boundary_each_get_their_own_date(sign: int) -> None:
    # The listing shares date text between entries of one minute; in the minute
    # holding a boundary, entries on either side must still show time vs year as ls does.
    now = NOW + 30  # the boundaries fall mid-minute
    boundary = now - 180 * DAY if sign < 0 else now + DAY
    entries = [facts(f"f{i}", mtime=boundary + offset) for i, offset in enumerate((-1, 1, -1))]
    lines = [format_list_line(entry, now) + "\r\n" for entry in entries]
    assert format_listing(entries, now) == encode_text("".join(lines))
    assert lines[0].split()[7] != lines[1].split()[7]  # one shows a year, the other a time


def test_ten_thousand_entries_are_all_listed_exactly_in_order() -> None:
    # Speed is measured in bench/, not here: the shared-parts fast path must stay exact.
    entries = [
        facts(f"file-{i:05d}.dat", size=i * 37, mtime=MTIME - i * 3600.0) for i in range(10_000)
    ]
    data = format_listing(entries, NOW)
    assert data == encode_text("".join(f"{format_list_line(e, NOW)}\r\n" for e in entries))


# --- MDTM --------------------------------------------------------------------


def test_mdtm_format() -> None:
    assert format_mdtm(utc(2001, 2, 3, 4, 5, 6)) == "20010203040506"


def test_mdtm_drops_fractions_of_a_second() -> None:
    assert format_mdtm(utc(2001, 2, 3, 4, 5, 6) + 0.999) == "20010203040506"


def test_mdtm_of_the_epoch() -> None:
    assert format_mdtm(0) == "19700101000000"


# --- properties --------------------------------------------------------------

plain_names = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]),
    min_size=1,
    max_size=30,
)


@given(
    name=plain_names,
    size=st.integers(0, 10**15),
    mtime=st.floats(0, 4e9),
    now=st.floats(0, 4e9),
)
def test_list_line_splits_like_ls_output(name: str, size: int, mtime: float, now: float) -> None:
    fields = format_list_line(facts(name, size=size, mtime=mtime), now).split(maxsplit=8)
    assert fields[0] == "-rw-r--r--"
    assert fields[4] == str(size)
    assert fields[5] in MONTHS
    assert fields[8] == name


@given(
    name=st.text(),
    kind=st.sampled_from(["file", "dir", "link", "other"]),
    size=st.integers(0, 2**64),
    mtime=st.floats(),
    mode=st.integers(0, 0o177777),
    now=st.floats(0, 4e9),
    target=st.none() | st.text(),
)
def test_list_line_never_raises_and_stays_one_line(
    name: str, kind: str, size: int, mtime: float, mode: int, now: float, target: str | None
) -> None:
    entry = facts(name, kind=kind, size=size, mtime=mtime, mode=mode, link_target=target)
    data = format_listing([entry, entry], now)
    assert data.count(b"\n") == 2
    assert data.count(b"\r") == 2


@given(
    entries=st.lists(
        st.builds(
            FileFacts,
            name=st.text(max_size=8),
            kind=st.sampled_from(["file", "dir", "link", "other"]),
            size=st.integers(0, 2**64),
            # Few distinct minutes, so entries share (and reuse) the worked-out date text.
            mtime=st.sampled_from([0.0, 59.0, 60.0, MTIME, MTIME + 30, NOW - 180 * DAY])
            | st.floats(),
            mode=st.sampled_from([FILE_MODE, DIR_MODE, LINK_MODE, 0o644]),
            nlink=st.integers(0, 10**4),
            owner=st.sampled_from(["ftp", "a-long-owner-name"]),
            group=st.sampled_from(["ftp", "g"]),
            link_target=st.none() | st.text(max_size=8),
        ),
        max_size=20,
    ),
    now=st.sampled_from([NOW, NOW + 400 * DAY]) | st.floats(0, 4e9),
)
def test_listing_is_its_lines_joined(entries: list[FileFacts], now: float) -> None:
    lines = [format_list_line(entry, now) + "\r\n" for entry in entries]
    assert format_listing(entries, now) == encode_text("".join(lines))


@given(st.floats(0, 253402300799))
def test_mdtm_matches_gmtime(mtime: float) -> None:
    assert format_mdtm(mtime) == time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))
