"""Tests for FTP URL parsing and .netrc look-ups."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.client.url import FtpUrl, UrlError, credentials_from_netrc, parse_ftp_url

SCHEMES: tuple[Literal["ftp", "ftps"], ...] = ("ftp", "ftps")
FORM = "use ftp://[user[:password]@]host[:port]/path"


def url(
    path: str = "",
    *,
    scheme: Literal["ftp", "ftps"] = "ftp",
    host: str = "h",
    port: int = 21,
    user: str | None = None,
    password: str | None = None,
    is_directory: bool | None = None,
) -> FtpUrl:
    if is_directory is None:
        is_directory = path == "" or path.endswith("/")
    return FtpUrl(scheme, host, port, user, password, path, is_directory)


# --- paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ftp://h", url("")),
        ("ftp://h/", url("")),
        ("ftp://h/file.txt", url("file.txt")),
        ("ftp://h/dir/f", url("dir/f")),
        ("ftp://h/dir/", url("dir/")),
        ("ftp://h//etc/x", url("/etc/x")),
        ("ftp://h/%2Fetc/x", url("/etc/x")),
        ("ftp://h//", url("/")),
        ("ftp://h/a%20b/c%25d", url("a b/c%d")),
        ("ftp://h/a%2fb", url("a/b")),
        ("ftp://h/café", url("café")),
        ("ftp://h/caf%C3%A9", url("café")),
    ],
)
def test_paths_are_relative_to_the_login_directory(text: str, expected: FtpUrl) -> None:
    assert parse_ftp_url(text) == expected


def test_non_utf8_bytes_become_surrogate_escapes() -> None:
    assert parse_ftp_url("ftp://h/caf%E9").path == "caf\udce9"


@pytest.mark.parametrize(
    ("text", "path", "is_directory"),
    [
        ("ftp://h/f.bin;type=i", "f.bin", False),
        ("ftp://h/pub;type=d", "pub", True),
        ("ftp://h/pub/;type=d", "pub/", True),
        ("ftp://h/odd;type=x", "odd;type=x", False),  # not a typecode: part of the name
        ("ftp://h/a;type=i/b", "a;type=i/b", False),
    ],
)
def test_rfc1738_typecode_is_stripped(text: str, path: str, is_directory: bool) -> None:
    parsed = parse_ftp_url(text)
    assert (parsed.path, parsed.is_directory) == (path, is_directory)


def test_an_ascii_typecode_is_refused_not_ignored() -> None:
    with pytest.raises(UrlError, match=r";type=a asks for an ASCII transfer.*drop ;type=a"):
        parse_ftp_url("ftp://h/f.txt;TYPE=A")


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_ftp_url("  ftp://h/x \n") == url("x")


# --- scheme, host and port ---------------------------------------------------------


def test_ftps_defaults_to_port_990() -> None:
    assert parse_ftp_url("ftps://h/x") == url("x", scheme="ftps", port=990)


def test_scheme_is_case_insensitive() -> None:
    assert parse_ftp_url("FTP://h/").scheme == "ftp"
    assert parse_ftp_url("Ftps://h/").scheme == "ftps"


def test_explicit_port() -> None:
    assert parse_ftp_url("ftp://example.org:2121/pub/").port == 2121
    assert parse_ftp_url("ftps://example.org:21/").port == 21


def test_empty_port_means_the_default() -> None:
    assert parse_ftp_url("ftp://h:/x").port == 21


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("ftp://[::1]/", "::1", 21),
        ("ftp://[::1]:2121/x", "::1", 2121),
        ("ftp://[2001:DB8:0::1]", "2001:db8::1", 21),
        ("ftp://[::ffff:192.0.2.1]/", "::ffff:c000:201", 21),
        ("ftp://[fe80::1%25eth0]:21/", "fe80::1%eth0", 21),
    ],
)
def test_ipv6_literals(text: str, host: str, port: int) -> None:
    parsed = parse_ftp_url(text)
    assert (parsed.host, parsed.port) == (host, port)


def test_ipv4_and_names_are_kept_as_written() -> None:
    assert parse_ftp_url("ftp://192.0.2.7/").host == "192.0.2.7"
    assert parse_ftp_url("ftp://Files.Example.ORG/").host == "Files.Example.ORG"


# --- credentials -------------------------------------------------------------------


def test_user_and_password() -> None:
    parsed = parse_ftp_url("ftp://alice:s3cret@h/x")
    assert (parsed.user, parsed.password) == ("alice", "s3cret")


def test_user_without_password() -> None:
    parsed = parse_ftp_url("ftp://alice@h/x")
    assert (parsed.user, parsed.password) == ("alice", None)


def test_empty_password_is_not_no_password() -> None:
    assert parse_ftp_url("ftp://alice:@h/").password == ""


def test_no_credentials() -> None:
    parsed = parse_ftp_url("ftp://h/")
    assert (parsed.user, parsed.password) == (None, None)


def test_credentials_are_percent_decoded() -> None:
    parsed = parse_ftp_url("ftp://me%40example.org:p%3Ass%40w%2Fd%25@h/")
    assert (parsed.user, parsed.password) == ("me@example.org", "p:ss@w/d%")


def test_unencoded_at_sign_in_user_name_is_accepted() -> None:
    parsed = parse_ftp_url("ftp://me@example.org:pw@h/x")
    assert (parsed.user, parsed.password, parsed.host) == ("me@example.org", "pw", "h")


def test_password_may_contain_a_colon_unencoded() -> None:
    assert parse_ftp_url("ftp://u:a:b@h/").password == "a:b"


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://x", f"not an FTP URL: 'http://x' — {FORM}"),
        ("ftp:/h/x", "not an FTP URL"),
        ("ftp:h", "not an FTP URL"),
        ("h/x", "not an FTP URL"),
        ("", "not an FTP URL"),
        ("sftp://h/", "not an FTP URL"),
        ("ftp://", "missing host name"),
        ("ftp:///x", "missing host name"),
        ("ftp://u@/x", "missing host name"),
        ("ftp://h:abc/", "bad port 'abc': it must be a number from 1 to 65535"),
        ("ftp://h:0/", "bad port '0'"),
        ("ftp://h:65536/", "bad port '65536'"),
        ("ftp://h:-1/", "bad port '-1'"),
        ("ftp://h:\uff12\uff11/", "bad port"),  # fullwidth digits
        ("ftp://::1/", "an IPv6 address needs brackets: ftp://[::1]/"),
        # The last group may be the port: ::1:34021 is no address, ::1:21 is one.
        (
            "ftp://::1:34021/a.txt",
            "an IPv6 address needs brackets: ftp://[::1]:34021/a.txt",
        ),
        (
            "ftps://2001:db8::7:21/d/",
            "needs brackets: ftps://[2001:db8::7]:21/d/ (if 21 is the port) "
            "or ftps://[2001:db8::7:21]/d/",
        ),
        ("ftp://fe80::1:zz/x", "needs brackets: ftp://[fe80::1:zz]/x"),
        ("ftp://[::1/", "missing ']'"),
        ("ftp://[zz]/", "bad IPv6 address 'zz'"),
        ("ftp://[192.0.2.1]/", "bad IPv6 address"),
        ("ftp://[::1]x/", "unexpected 'x' after ']'"),
        ("ftp://[::1]:/x", None),
        ("ftp://h h/", "bad host name 'h h'"),
        ("ftp://h%41/", "bad host name"),
        ("ftp://:pw@h/", "empty user name"),
        ("ftp://h/a%2", "bad percent-encoding in the path 'a%2': write a literal '%' as %25"),
        ("ftp://h/100%", "bad percent-encoding"),
        ("ftp://u%zz@h/", "bad percent-encoding in the user name"),
        ("ftp://h/a%0D%0ADELE%20x", "contains CR, LF or NUL"),
        ("ftp://h/a%00", "contains CR, LF or NUL"),
        ("ftp://u%0A@h/", "the user name 'u%0A' contains CR, LF or NUL"),
        ("ftp://h/a?b", "write '?' as %3F and '#' as %23"),
        ("ftp://h/a#b", "write '?' as %3F and '#' as %23"),
        ("ftp://u:pass/word@h/", "a '/' in a user name or password must be written %2F"),
    ],
)
def test_bad_urls_say_what_is_wrong(text: str, message: str | None) -> None:
    if message is None:  # valid after all: an empty port after brackets
        assert parse_ftp_url(text).port == 21
        return
    with pytest.raises(UrlError) as caught:
        parse_ftp_url(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_url_error_is_a_value_error() -> None:
    assert issubclass(UrlError, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "http://u:s3cret@h/",
        "ftp://u:s3cret@h:bad/",
        "ftp://u:s3cret@[::1/",
        "ftp://u:s3cret@h h/",
        "ftp://u:s3cr%et@h/",
        "ftp://u:s3cret%0d@h/",
        "ftp://u:s3cret@h/a%zz",
        "ftp://u:s3/cret@h/",
        "ftp://u:s3cret@h/?",
    ],
)
def test_error_messages_never_show_the_password(text: str) -> None:
    with pytest.raises(UrlError) as caught:
        parse_ftp_url(text)
    assert "s3" not in str(caught.value)
    assert "cret" not in str(caught.value)


def test_long_urls_are_cut_short_in_messages() -> None:
    with pytest.raises(UrlError) as caught:
        parse_ftp_url("gopher://" + "x" * 1000)
    assert len(str(caught.value)) < 200


# --- display and repr ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ftp://alice:s3cret@h/x", "ftp://alice:***@h/x"),
        ("ftp://alice:@h/x", "ftp://alice:***@h/x"),
        ("ftp://alice@h/x", "ftp://alice@h/x"),
        ("ftp://h", "ftp://h/"),
        ("ftp://h:21/", "ftp://h/"),
        ("ftp://h:2121/a%20b", "ftp://h:2121/a%20b"),
        ("ftps://h:990/", "ftps://h/"),
        ("ftp://h//etc/x", "ftp://h//etc/x"),
        ("ftp://h/%2Fetc/x", "ftp://h//etc/x"),
        ("ftp://h/pub;type=d", "ftp://h/pub/"),
        ("ftp://me%40x.org:pw@[2001:db8::1]:2121/", "ftp://me%40x.org:***@[2001:db8::1]:2121/"),
        ("ftp://[fe80::1%25eth0]/", "ftp://[fe80::1%25eth0]/"),
        ("ftp://h/caf%E9%3F", "ftp://h/caf%E9%3F"),
    ],
)
def test_display_hides_the_password(text: str, shown: str) -> None:
    assert parse_ftp_url(text).display() == shown


def test_display_of_a_name_that_is_not_text() -> None:
    assert url("a\ud800b").display() == "ftp://h/a%3Fb"


def test_repr_hides_the_password() -> None:
    parsed = parse_ftp_url("ftp://alice:s3cret@h/x")
    assert "s3cret" not in repr(parsed)
    assert "alice" in repr(parsed)


def test_url_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_ftp_url("ftp://h/").path = "x"  # type: ignore[misc]


# Lone surrogates other than surrogate escapes stand for no byte and cannot round-trip.
_TEXT_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00") | (
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
)
_NAME_TEXT = st.text(_TEXT_CHARS, min_size=1)
_HOSTS = st.sampled_from(["h", "ftp.example.org", "192.0.2.1", "::1", "2001:db8::7", "fe80::1%en0"])


@given(
    scheme=st.sampled_from(SCHEMES),
    host=_HOSTS,
    port=st.integers(1, 65535),
    user=st.none() | _NAME_TEXT,
    path=st.text(_TEXT_CHARS),
)
def test_display_parses_back(
    scheme: Literal["ftp", "ftps"], host: str, port: int, user: str | None, path: str
) -> None:
    original = url(path, scheme=scheme, host=host, port=port, user=user)
    assert parse_ftp_url(original.display()) == original


# --- .netrc ------------------------------------------------------------------------


def netrc_file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "netrc"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return str(path)


def test_netrc_entry_for_the_host(tmp_path: Path) -> None:
    path = netrc_file(
        tmp_path,
        "machine other login bob password b0b\n"
        "machine ftp.example.org login alice password s3cret\n",
    )
    assert credentials_from_netrc("ftp.example.org", path) == ("alice", "s3cret")


def test_netrc_host_names_match_case_insensitively(tmp_path: Path) -> None:
    path = netrc_file(tmp_path, "machine FTP.Example.org login alice password s3cret\n")
    assert credentials_from_netrc("ftp.example.ORG", path) == ("alice", "s3cret")


def test_netrc_default_entry_is_used_for_other_hosts(tmp_path: Path) -> None:
    path = netrc_file(
        tmp_path, "default login anonymous password guest@\nmachine h login alice password pw\n"
    )
    assert credentials_from_netrc("elsewhere", path) == ("anonymous", "guest@")
    assert credentials_from_netrc("h", path) == ("alice", "pw")


def test_netrc_without_matching_entry(tmp_path: Path) -> None:
    path = netrc_file(tmp_path, "machine h login alice password pw\n")
    assert credentials_from_netrc("other", path) is None


def test_netrc_entry_without_login_gives_nothing(tmp_path: Path) -> None:
    path = netrc_file(tmp_path, "machine h password pw\n")
    assert credentials_from_netrc("h", path) is None


def test_netrc_entry_without_password_gives_empty_password(tmp_path: Path) -> None:
    path = netrc_file(tmp_path, "machine h login alice\n")
    assert credentials_from_netrc("h", path) == ("alice", "")


def test_netrc_ipv6_host(tmp_path: Path) -> None:
    path = netrc_file(tmp_path, "machine ::1 login alice password pw\n")
    assert credentials_from_netrc(parse_ftp_url("ftp://[::1]/").host, path) == ("alice", "pw")


def test_a_named_netrc_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    # --netrc-file with a typo must not quietly log in as anonymous (~/.netrc may be absent).
    with pytest.raises(UrlError, match=r"cannot read .*absent: no such file"):
        credentials_from_netrc("h", str(tmp_path / "absent"))


def test_malformed_netrc_names_file_and_line_but_not_the_secret(tmp_path: Path) -> None:
    path = netrc_file(tmp_path, "machine a login b password c\nmachine h login alice s3cret pw\n")
    with pytest.raises(UrlError) as caught:
        credentials_from_netrc("h", path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line 2: bad follower token")
    assert "s3cret" not in message


def test_unreadable_netrc_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UrlError, match="cannot read"):
        credentials_from_netrc("h", str(tmp_path))  # a directory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_default_netrc_is_read_from_home(home: Path) -> None:
    netrc_file(home, "machine h login alice password pw\n")
    (home / "netrc").rename(home / ".netrc")
    assert credentials_from_netrc("h") == ("alice", "pw")


def test_missing_default_netrc_gives_nothing(home: Path) -> None:
    assert credentials_from_netrc("h") is None


@pytest.mark.skipif(os.name != "posix", reason="the stdlib checks permissions on POSIX only")
def test_default_netrc_readable_by_others_is_refused(home: Path) -> None:
    netrc_file(home, "machine h login alice password pw\n", mode=0o644)
    (home / "netrc").rename(home / ".netrc")
    with pytest.raises(UrlError, match="too permissive"):
        credentials_from_netrc("h")
