"""MLST/MLSD fact lines (RFC 3659 §7), OPTS MLST selection, time-vals, and the HASH/RANG helpers."""

from __future__ import annotations

import calendar
import hashlib
import stat
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.hashes import (
    ByteRange,
    RangeRefused,
    XCommandArgument,
    hash_feature,
    hash_reply,
    lookup_algorithm,
    new_digest,
    parse_rang,
    resolve_range,
    split_x_argument,
    x_range,
)
from ketch.protocol.mlsx import (
    FACT_NAMES,
    Access,
    MlsxEntry,
    fact_line,
    format_mlsd,
    mlst_feature,
    mlst_reply_lines,
    opts_mlst_reply,
    parse_time_val,
    select_facts,
)
from ketch.protocol.remote_listing import parse_mlsd, parse_mlsd_line

EVERYTHING = Access(True, True, True, True, True, True, True, True)
READ_ONLY = Access(list=True, read=True)
MTIME = calendar.timegm((2024, 1, 31, 23, 59, 58))


def entry(
    name: str = "a.txt",
    kind: str = "file",
    mode: int = stat.S_IFREG | 0o644,
    target: str | None = None,
    size: int = 1234,
) -> MlsxEntry:
    return MlsxEntry(name, kind, size, MTIME + 0.75, mode, 0x803, 0x1F2E, target)  # type: ignore[arg-type]


# -- facts -------------------------------------------------------------------------


def test_file_line_has_every_fact_in_order() -> None:
    assert fact_line(entry(), FACT_NAMES, EVERYTHING) == (
        "type=file;size=1234;modify=20240131235958;perm=adfrw;unique=803g1f2e;UNIX.mode=0644;"
    )


def test_directory_has_no_size_and_directory_perm_letters() -> None:
    line = fact_line(entry("d", "dir", stat.S_IFDIR | 0o755), FACT_NAMES, EVERYTHING)
    assert line == "type=dir;modify=20240131235958;perm=cdeflmp;unique=803g1f2e;UNIX.mode=0755;"


def test_perm_letters_follow_the_account_not_the_mode_bits() -> None:
    assert fact_line(entry(), ("perm",), READ_ONLY) == "perm=r;"
    directory = entry("d", "dir", stat.S_IFDIR | 0o777)
    assert fact_line(directory, ("perm",), READ_ONLY) == "perm=el;"
    assert fact_line(directory, ("perm",), Access(write=True, mkdir=True)) == "perm=cm;"


def test_symlink_is_a_link_with_its_target_when_the_target_is_a_valid_value() -> None:
    link = entry("l", "link", stat.S_IFLNK | 0o777, target="docs/readme.md")
    assert fact_line(link, ("type", "size"), EVERYTHING) == "type=OS.unix=slink:docs/readme.md;"
    hidden = entry("l", "link", stat.S_IFLNK | 0o777, target=None)
    assert fact_line(hidden, ("type",), EVERYTHING) == "type=OS.unix=slink;"
    spaced = entry("l", "link", stat.S_IFLNK | 0o777, target="a b;c")
    assert fact_line(spaced, ("type",), EVERYTHING) == "type=OS.unix=slink;"


def test_special_files_get_os_specific_types_and_may_only_be_deleted_or_renamed() -> None:
    fifo = entry("p", "other", stat.S_IFIFO | 0o600)
    assert fact_line(fifo, ("type", "perm"), EVERYTHING) == "type=OS.unix=fifo;perm=df;"
    assert fact_line(fifo, ("perm",), READ_ONLY) == "perm=;"
    data = format_mlsd([fifo], ("perm",), Access(delete=True)).decode()
    assert data == "perm=d; p\r\n"


def test_the_home_is_never_said_to_be_deletable_or_renamable() -> None:
    home = entry("/", "dir", stat.S_IFDIR | 0o755)
    assert fact_line(home, ("perm",), EVERYTHING) == "perm=celmp;"
    assert fact_line(home, ("perm",), READ_ONLY) == "perm=el;"
    cdir = format_mlsd([], ("perm",), EVERYTHING, listed=home).decode()
    assert cdir == "perm=celmp; .\r\n"


def test_mlst_reply_has_one_fact_line_starting_with_a_space() -> None:
    lines = mlst_reply_lines(entry(), "/dir/a.txt", ("type", "size"), EVERYTHING)
    assert lines == ["Listing /dir/a.txt", " type=file;size=1234; /dir/a.txt", "End"]


def test_mlst_reply_cannot_be_split_by_line_breaks_in_a_name() -> None:
    lines = mlst_reply_lines(entry("x\r\ny"), "/x\r\ny", ("type",), EVERYTHING)
    assert all("\n" not in line and "\r" not in line for line in lines)


# -- MLSD payload ----------------------------------------------------------------------


def test_mlsd_payload_starts_with_cdir_and_matches_fact_line() -> None:
    listed = entry("ignored", "dir", stat.S_IFDIR | 0o755)
    entries = [entry("a.txt"), entry("b c.txt", size=0), entry("d", "dir", stat.S_IFDIR | 0o700)]
    data = format_mlsd(entries, FACT_NAMES, EVERYTHING, listed=listed).decode()
    lines = data.split("\r\n")
    assert lines[-1] == "" and lines[0].startswith("type=cdir;") and lines[0].endswith(" .")
    for line, item in zip(lines[1:-1], entries, strict=True):
        assert line == f"{fact_line(item, FACT_NAMES, EVERYTHING)} {item.name}"


def test_mlsd_payload_is_read_back_by_ketchs_own_parser() -> None:
    entries = [entry("a.txt"), entry("d", "dir", stat.S_IFDIR | 0o755), entry("x;y z")]
    parsed = parse_mlsd(format_mlsd(entries, FACT_NAMES, EVERYTHING, listed=entries[1]).decode())
    assert [(p.name, p.kind, p.size) for p in parsed] == [
        ("a.txt", "file", 1234), ("d", "dir", None), ("x;y z", "file", 1234),
    ]  # fmt: skip
    assert parsed[0].mtime is not None and parsed[0].mtime.timestamp() == MTIME


def test_empty_directory_without_cdir_is_empty() -> None:
    assert format_mlsd([], FACT_NAMES, EVERYTHING) == b""


def test_mlsd_keeps_non_utf8_names_as_their_bytes() -> None:
    name = b"\xff\xfe.bin".decode("utf-8", "surrogateescape")
    data = format_mlsd([entry(name)], ("type",), EVERYTHING)
    assert data == b"type=file; \xff\xfe.bin\r\n"


def test_ten_thousand_entries_are_all_formatted_in_order() -> None:
    # Speed is measured in bench/, not here: this checks the large listing is complete and exact.
    entries = [entry(f"file{i:05d}.dat", size=i) for i in range(10_000)]
    data = format_mlsd(entries, FACT_NAMES, EVERYTHING)
    assert data.endswith(b"\r\n")
    lines = data.decode().split("\r\n")[:-1]
    assert len(lines) == 10_000
    for i, line in enumerate(lines):
        assert line == (
            f"type=file;size={i};modify=20240131235958;perm=adfrw;unique=803g1f2e;UNIX.mode=0644;"
            f" file{i:05d}.dat"
        )


names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                min_size=1, max_size=40).filter(lambda n: n.strip(" ") == n and n)  # fmt: skip


@given(name=names, size=st.integers(0, 2**63), mtime=st.integers(0, 253402300799))
def test_any_file_line_parses_back(name: str, size: int, mtime: int) -> None:
    item = MlsxEntry(name, "file", size, float(mtime), stat.S_IFREG | 0o600, 1, 2)
    parsed = parse_mlsd_line(f"{fact_line(item, FACT_NAMES, EVERYTHING)} {name}")
    assert parsed.name == name and parsed.size == size and parsed.kind == "file"
    assert parsed.mtime is not None and parsed.mtime.timestamp() == mtime


# -- selection ---------------------------------------------------------------------


def test_select_facts_ignores_unknown_and_case_and_keeps_canonical_order() -> None:
    assert select_facts("SIZE;bogus;Type;unix.MODE;") == ("type", "size", "UNIX.mode")
    assert select_facts("") == ()


def test_feature_line_marks_selected_facts() -> None:
    assert mlst_feature(FACT_NAMES) == "MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;"
    assert mlst_feature(("size",)) == "MLST type;size*;modify;perm;unique;UNIX.mode;"


def test_opts_reply_lists_the_selection() -> None:
    assert opts_mlst_reply(("type", "size")) == "MLST OPTS type;size;"
    assert opts_mlst_reply(()) == "MLST OPTS"


def test_unselected_facts_are_left_out() -> None:
    assert fact_line(entry(), ("size", "unique"), EVERYTHING) == "size=1234;unique=803g1f2e;"


# -- time-vals (MFMT) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240131235958", float(MTIME)),
        ("19700101000000", 0.0),
        ("20240229120000.5", calendar.timegm((2024, 2, 29, 12, 0, 0)) + 0.5),
    ],
)
def test_parse_time_val(text: str, expected: float) -> None:
    assert parse_time_val(text) == expected


@pytest.mark.parametrize(
    "text", ["2024013123595", "20230229000000", "20241301000000", "20240101250000", "x" * 14, ""]
)
def test_parse_time_val_refuses_impossible_times(text: str) -> None:
    assert parse_time_val(text) is None


# -- hashes and ranges -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reference"),
    [("SHA-256", "sha256"), ("SHA-1", "sha1"), ("MD5", "md5")],
)
def test_digests_match_hashlib(name: str, reference: str) -> None:
    digest = new_digest(name)
    digest.update(b"hello ")
    digest.update(b"world")
    assert digest.hexdigest() == hashlib.new(reference, b"hello world").hexdigest()


def test_crc32_is_eight_hex_digits_of_zlib_crc32() -> None:
    digest = new_digest("CRC32")
    digest.update(b"33")  # CRC32 0x0a6216d9: the leading zero must be kept
    assert digest.hexdigest() == "0a6216d9" == format(zlib.crc32(b"33"), "08x")


def test_algorithm_names_are_case_insensitive_with_common_spellings() -> None:
    assert lookup_algorithm("sha256") == lookup_algorithm("Sha-256") == "SHA-256"
    assert lookup_algorithm("crc-32") == "CRC32"
    assert lookup_algorithm("CRC-37") is None


def test_hash_feature_marks_the_selected_algorithm() -> None:
    assert hash_feature("SHA-256") == "HASH SHA-256*;SHA-1;MD5;CRC32"
    assert hash_feature("MD5") == "HASH SHA-256;SHA-1;MD5*;CRC32"


def test_rang_end_is_inclusive_and_1_0_resets() -> None:
    assert parse_rang("0 49") == ByteRange(0, 49)
    assert parse_rang("0 0") == ByteRange(0, 0)  # the first byte, not a reset
    assert parse_rang("1 0") is None


@pytest.mark.parametrize("argument", ["5 4", "1", "a b", "-1 5", "0 1 2"])
def test_rang_refuses_bad_ranges(argument: str) -> None:
    with pytest.raises(RangeRefused):
        parse_rang(argument)


def test_resolve_range_cuts_the_end_and_refuses_a_start_past_the_end() -> None:
    assert resolve_range(None, 100) == (0, 100)
    assert resolve_range(ByteRange(10, 19), 100) == (10, 10)
    assert resolve_range(ByteRange(90, 500), 100) == (90, 10)
    assert resolve_range(None, 0) == (0, 0)
    with pytest.raises(RangeRefused, match="100 bytes"):
        resolve_range(ByteRange(100, 200), 100)


def test_hash_reply_range_is_inclusive() -> None:
    assert hash_reply("SHA-1", 0, 100, "ab", "f.txt") == "SHA-1 0-99 ab f.txt"
    assert hash_reply("SHA-1", 0, 0, "ab", "empty") == "SHA-1 0-0 ab empty"


def test_x_argument_readings_try_the_whole_path_first() -> None:
    assert split_x_argument("a b 0 10") == [
        XCommandArgument("a b 0 10"), XCommandArgument("a b", 0, 10),
    ]  # fmt: skip
    assert split_x_argument('"a b" 5 10')[1] == XCommandArgument("a b", 5, 10)
    assert split_x_argument("file 10") == [XCommandArgument("file 10")]
    # An end of 0 means the end of the file (mod_digest), so a start above it is fine.
    assert split_x_argument("file 20 0")[1] == XCommandArgument("file", 20, 0)
    whole, backwards = split_x_argument("file 10 5")
    assert whole == XCommandArgument("file 10 5")  # a file of that name is hashed whole
    assert backwards.path == "file" and "after the end" in (backwards.refusal or "")
    # Numbers meant as a range but wrong: refused if "file" is the file, not a name's tail.
    for wrong in ("file -1 3", "file 0 +5", "file 0 " + "9" * 21):
        whole, bad = split_x_argument(wrong)
        assert whole == XCommandArgument(wrong)
        assert bad.path == "file" and "not two whole numbers" in (bad.refusal or "")


def test_x_range_end_is_exclusive_and_must_fit() -> None:
    assert x_range(XCommandArgument("f", 0, 10), 100) == (0, 10)
    assert x_range(XCommandArgument("f"), 100) == (0, 100)
    assert x_range(XCommandArgument("f", 20, 0), 100) == (20, 80)  # end 0: to the end
    with pytest.raises(RangeRefused):
        x_range(XCommandArgument("f", 0, 101), 100)


kinds = st.sampled_from(
    [
        ("file", stat.S_IFREG | 0o644),
        ("dir", stat.S_IFDIR | 0o755),
        ("link", stat.S_IFLNK | 0o777),
        ("other", stat.S_IFIFO | 0o600),
    ]
)
mtimes = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**40), 2**40).map(float)
)


@given(
    items=st.lists(st.tuples(names, kinds, mtimes, st.integers(0, 2**40)), max_size=8),
    selected=st.sets(st.sampled_from(FACT_NAMES)),
)
def test_mlsd_lines_equal_fact_line_for_every_selection(
    items: list[tuple[str, tuple[str, int], float, int]], selected: set[str]
) -> None:
    chosen = tuple(name for name in FACT_NAMES if name in selected)
    entries = [
        MlsxEntry(name, kind, size, mtime, mode, 7, 9, "t")  # type: ignore[arg-type]
        for name, (kind, mode), mtime, size in items
    ]
    for facts in (chosen, FACT_NAMES):  # the generic path and the fast one
        expected = "".join(f"{fact_line(e, facts, READ_ONLY)} {e.name}\r\n" for e in entries)
        assert format_mlsd(entries, facts, READ_ONLY).decode() == expected


def test_mlsd_files_on_other_devices_keep_their_own_unique_fact() -> None:
    # The fast path makes a file's perm and device text once per device: a bind-mounted
    # file from another device must not take its neighbours' device.
    entries = [
        MlsxEntry(f"f{i}", "file", i, 0.0, stat.S_IFREG | mode, dev, 100 + i)
        for i, (dev, mode) in enumerate([(7, 0o644), (8, 0o600), (7, 0o600), (8, 0o644)])
    ]
    expected = "".join(f"{fact_line(e, FACT_NAMES, READ_ONLY)} {e.name}\r\n" for e in entries)
    data = format_mlsd(entries, FACT_NAMES, READ_ONLY).decode()
    assert data == expected
    assert "unique=8g65;" in data and "unique=7g66;" in data
