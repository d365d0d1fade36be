"""Tests for the PORT / PASV / EPRT / EPSV codecs."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.protocol.addresses import (
    AddressSyntaxError,
    HostPort,
    UnsupportedFamilyError,
    address_family_number,
    format_eprt_argument,
    format_epsv_reply,
    format_host_port,
    format_pasv_reply,
    format_port_argument,
    parse_eprt_argument,
    parse_epsv_argument,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_port_argument,
    plain_ip,
)

# --- PORT --------------------------------------------------------------------


def test_port_argument_parses_host_and_port() -> None:
    assert parse_port_argument("192,168,1,2,7,138") == HostPort("192.168.1.2", 7 * 256 + 138)


def test_port_argument_tolerates_spaces_around_numbers() -> None:
    assert parse_port_argument(" 10, 0 ,0,1 , 0,21 ") == HostPort("10.0.0.1", 21)


def test_port_zero_is_allowed_syntactically() -> None:
    assert parse_port_argument("127,0,0,1,0,0") == HostPort("127.0.0.1", 0)


def test_port_argument_leading_zeros_are_decimal() -> None:
    assert parse_port_argument("010,0,0,1,0,021") == HostPort("10.0.0.1", 21)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("1,2,3,4,5", "got 5"),
        ("1,2,3,4,5,6,7", "got 7"),
        ("", "got 1"),
        ("1,2,3,4,5,", "missing port low byte"),
        ("1,2,x,4,5,6", "host byte 3 is not a decimal number"),
        ("256,2,3,4,5,6", "host byte 1 '256' is out of range 0..255"),
        ("1,2,3,4,256,6", "port high byte '256' is out of range"),
        ("1,2,3,4,5,300", "port low byte '300' is out of range"),
        ("+1,2,3,4,5,6", "host byte 1 must not have a sign"),
        ("1,2,3,-4,5,6", "host byte 4 must not have a sign"),
        ("1,2,3,4,5,6.0", "port low byte is not a decimal number"),
        ("1,2,3,4,5,1_0", "not a decimal number"),
        ("1,2,3,\u0664,5,6", "host byte 4 is not a decimal number"),
        ("1,2,3,4,5,6 7", "not a decimal number"),
    ],
)
def test_bad_port_argument_is_rejected_with_a_specific_message(argument: str, message: str) -> None:
    with pytest.raises(AddressSyntaxError, match=message):
        parse_port_argument(argument)


def test_huge_number_in_port_argument_is_a_syntax_error_not_a_crash() -> None:
    with pytest.raises(AddressSyntaxError, match="out of range"):
        parse_port_argument("1,2,3,4,5," + "9" * 10000)


def test_format_port_argument() -> None:
    assert format_port_argument(HostPort("192.168.1.2", 1930)) == "192,168,1,2,7,138"


def test_format_port_argument_unwraps_ipv4_mapped_ipv6() -> None:
    assert format_port_argument(HostPort("::ffff:10.0.0.1", 21)) == "10,0,0,1,0,21"


def test_format_port_argument_rejects_ipv6() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        format_port_argument(HostPort("::1", 21))


@pytest.mark.parametrize("port", [-1, 65536])
def test_format_port_argument_rejects_out_of_range_port(port: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_port_argument(HostPort("10.0.0.1", port))


# --- PASV --------------------------------------------------------------------


def test_format_pasv_reply() -> None:
    assert format_pasv_reply(HostPort("10.1.2.3", 50000)) == (
        "Entering Passive Mode (10,1,2,3,195,80)."
    )


@pytest.mark.parametrize(
    "text",
    [
        "Entering Passive Mode (10,1,2,3,195,80).",
        "Entering Passive Mode 10,1,2,3,195,80",
        "=10,1,2,3,195,80",
        "227 ok (10, 1, 2, 3, 195, 80)",
        "Passive mode 1 2 3 on 10,1,2,3,195,80 then 9,9",
    ],
)
def test_pasv_reply_numbers_are_found_anywhere(text: str) -> None:
    assert parse_pasv_reply(text) == HostPort("10.1.2.3", 50000)


def test_pasv_reply_without_six_numbers_is_rejected() -> None:
    with pytest.raises(AddressSyntaxError, match="no h1,h2,h3,h4,p1,p2"):
        parse_pasv_reply("Entering Passive Mode (10,1,2,3,195).")


def test_pasv_reply_with_octet_over_255_is_rejected() -> None:
    with pytest.raises(AddressSyntaxError, match="host byte 1 '300'"):
        parse_pasv_reply("Entering Passive Mode (300,1,2,3,4,5)")


# --- EPRT --------------------------------------------------------------------


def test_eprt_ipv4() -> None:
    assert parse_eprt_argument("|1|132.235.1.2|6275|") == HostPort("132.235.1.2", 6275)


def test_eprt_ipv6() -> None:
    assert parse_eprt_argument("|2|1080::8:800:200C:417A|5282|") == HostPort(
        "1080::8:800:200c:417a", 5282
    )


def test_eprt_ipv6_is_returned_in_compressed_form() -> None:
    assert parse_eprt_argument("|2|0:0:0:0:0:0:0:1|21|").host == "::1"


@pytest.mark.parametrize("delimiter", ["!", "#", "~", "/", ":", "a"])
def test_eprt_accepts_any_non_digit_printable_delimiter(delimiter: str) -> None:
    argument = f"{delimiter}1{delimiter}10.0.0.1{delimiter}21{delimiter}"
    assert parse_eprt_argument(argument) == HostPort("10.0.0.1", 21)


def test_eprt_port_zero_is_allowed_syntactically() -> None:
    assert parse_eprt_argument("|1|10.0.0.1|0|") == HostPort("10.0.0.1", 0)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("", "missing EPRT argument"),
        ("1|1|10.0.0.1|21|", "bad delimiter"),
        (" |1|10.0.0.1|21|", "bad delimiter"),
        ("\x7f1\x7f10.0.0.1\x7f21\x7f", "bad delimiter"),
        ("\u00a61\u00a610.0.0.1\u00a621\u00a6", "bad delimiter"),
        ("|", "must end with the delimiter"),
        ("|1|10.0.0.1|21", "must end with the delimiter"),
        ("|1|10.0.0.1!21!", "must end with the delimiter"),
        ("|1|10.0.0.1!21|", "expected 3 fields"),
        ("|1|10.0.0.1|21|x|", "expected 3 fields"),
        ("||10.0.0.1|21|", "missing network protocol"),
        ("|1||21|", "missing network address"),
        ("|1|10.0.0.1||", "missing port"),
        ("|x|10.0.0.1|21|", "network protocol is not a number"),
        ("|+1|10.0.0.1|21|", "network protocol must not have a sign"),
        ("|1|10.0.0.256|21|", "invalid network address"),
        ("|1|010.0.0.1|21|", "invalid network address"),
        ("|1|example.com|21|", "invalid network address"),
        ("|1|::1|21|", "network protocol 1 does not match the IPv6 address"),
        ("|2|10.0.0.1|21|", "network protocol 2 does not match the IPv4 address"),
        ("|2|fe80::1%eth0|21|", "zone ids are not allowed"),
        ("|1|10.0.0.1|65536|", "out of range 0..65535"),
        ("|1|10.0.0.1|-1|", "port must not have a sign"),
        ("|1|10.0.0.1| 21|", "port is not a decimal number"),
        ("|1|\u0661.0.0.1|21|", "must be ASCII"),
    ],
)
def test_bad_eprt_argument_is_rejected_with_a_specific_message(argument: str, message: str) -> None:
    with pytest.raises(AddressSyntaxError, match=message) as caught:
        parse_eprt_argument(argument)
    assert type(caught.value) is AddressSyntaxError


@pytest.mark.parametrize("family", ["3", "0", "99", "10"])
def test_eprt_unknown_network_protocol_is_unsupported(family: str) -> None:
    with pytest.raises(UnsupportedFamilyError, match="use \\(1,2\\)"):
        parse_eprt_argument(f"|{family}|10.0.0.1|21|")


def test_format_eprt_argument_ipv4() -> None:
    assert format_eprt_argument(HostPort("132.235.1.2", 6275)) == "|1|132.235.1.2|6275|"


def test_format_eprt_argument_ipv6_uses_compressed_form() -> None:
    assert format_eprt_argument(HostPort("0:0::1", 5282)) == "|2|::1|5282|"


def test_format_eprt_argument_rejects_zone_id() -> None:
    with pytest.raises(ValueError, match="zone"):
        format_eprt_argument(HostPort("fe80::1%eth0", 21))


def test_format_eprt_argument_rejects_hostname() -> None:
    with pytest.raises(ValueError):
        format_eprt_argument(HostPort("localhost", 21))


# --- EPSV --------------------------------------------------------------------


def test_format_epsv_reply() -> None:
    assert format_epsv_reply(6446) == "Entering Extended Passive Mode (|||6446|)"


def test_format_epsv_reply_rejects_out_of_range_port() -> None:
    with pytest.raises(ValueError):
        format_epsv_reply(70000)


@pytest.mark.parametrize(
    "text",
    [
        "Entering Extended Passive Mode (|||6446|)",
        "Entering Extended Passive Mode (!!!6446!)",
        "EPSV ok (###6446#).",
        "Entering Extended Passive Mode |||6446|",
    ],
)
def test_epsv_reply_port_is_found_with_any_delimiter(text: str) -> None:
    assert parse_epsv_reply(text) == 6446


@pytest.mark.parametrize(
    "text",
    [
        "Entering Extended Passive Mode (||6446|)",
        "Entering Extended Passive Mode (|!|6446|)",
        "Entering Extended Passive Mode (|||6446!)",
        "Entering Extended Passive Mode (111644611)",
        "Entering Extended Passive Mode",
    ],
)
def test_epsv_reply_without_a_port_field_is_rejected(text: str) -> None:
    with pytest.raises(AddressSyntaxError, match=r"no \(\|\|\|port\|\)"):
        parse_epsv_reply(text)


def test_epsv_reply_port_out_of_range_is_rejected() -> None:
    with pytest.raises(AddressSyntaxError, match="out of range"):
        parse_epsv_reply("(|||65536|)")


@pytest.mark.parametrize(
    ("argument", "expected"),
    [("", None), ("ALL", "ALL"), ("all", "ALL"), ("aLl", "ALL"), ("1", 1), ("2", 2)],
)
def test_epsv_argument(argument: str, expected: int | str | None) -> None:
    assert parse_epsv_argument(argument) == expected


@pytest.mark.parametrize("argument", ["0", "3", "99", "1" * 5000])
def test_epsv_argument_other_number_is_unsupported(argument: str) -> None:
    with pytest.raises(UnsupportedFamilyError):
        parse_epsv_argument(argument)


@pytest.mark.parametrize("argument", ["x", "ALL ", " 1", "-1", "+2", "1.0", "\u0661", "A LL"])
def test_epsv_argument_junk_is_a_syntax_error(argument: str) -> None:
    with pytest.raises(AddressSyntaxError) as caught:
        parse_epsv_argument(argument)
    assert type(caught.value) is AddressSyntaxError


# --- family ------------------------------------------------------------------


def test_address_family_number() -> None:
    assert address_family_number("10.0.0.1") == 1
    assert address_family_number("::1") == 2
    assert address_family_number("::ffff:10.0.0.1") == 2


def test_address_family_number_rejects_non_addresses() -> None:
    with pytest.raises(ValueError):
        address_family_number("example.com")


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", "127.0.0.1:21"), ("::1", "[::1]:21"), ("ftp.example.org", "ftp.example.org:21")],
)
def test_format_host_port_brackets_ipv6_so_the_port_is_not_read_as_a_group(
    host: str, expected: str
) -> None:
    assert format_host_port(host, 21) == expected


# --- properties --------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(host=ipv4, port=ports)
def test_port_round_trip(host: str, port: int) -> None:
    address = HostPort(host, port)
    assert parse_port_argument(format_port_argument(address)) == address


@given(host=ipv4, port=ports)
def test_pasv_round_trip(host: str, port: int) -> None:
    address = HostPort(host, port)
    assert parse_pasv_reply(format_pasv_reply(address)) == address


@given(host=st.one_of(ipv4, ipv6), port=ports)
def test_eprt_round_trip(host: str, port: int) -> None:
    address = HostPort(host, port)
    assert parse_eprt_argument(format_eprt_argument(address)) == address


@given(host=ipv6, port=ports, delimiter=st.sampled_from("!#$/|~"))
def test_eprt_parses_other_delimiters_like_the_default(
    host: str, port: int, delimiter: str
) -> None:
    argument = format_eprt_argument(HostPort(host, port)).replace("|", delimiter)
    assert parse_eprt_argument(argument) == HostPort(host, port)


@given(port=ports)
def test_epsv_round_trip(port: int) -> None:
    assert parse_epsv_reply(format_epsv_reply(port)) == port


@given(host=st.ip_addresses().map(str))
def test_family_number_agrees_with_ipaddress(host: str) -> None:
    assert address_family_number(host) == (1 if ipaddress.ip_address(host).version == 4 else 2)


PARSERS: list[Callable[[str], object]] = [
    parse_port_argument,
    parse_pasv_reply,
    parse_eprt_argument,
    parse_epsv_reply,
    parse_epsv_argument,
]
# Text made mostly of the characters these formats use, so the parsers get
# past their first checks instead of failing on the first character.
address_like_text = st.text(alphabet="0123456789,.|:!%+-() abcdefALx\u0661", max_size=50)


@given(text=st.one_of(st.text(), address_like_text))
def test_parsers_raise_only_address_syntax_errors(text: str) -> None:
    for parse in PARSERS:
        with contextlib.suppress(AddressSyntaxError):
            parse(text)


@given(
    fields=st.lists(
        st.sampled_from(["1", "2", "3", "", "x", "::1", "10.0.0.1", "21", "+1"]), max_size=5
    ),
    delimiter=st.sampled_from("|!1 "),
)
def test_eprt_parser_raises_only_address_syntax_errors_on_near_misses(
    fields: list[str], delimiter: str
) -> None:
    argument = delimiter + delimiter.join(fields) + delimiter
    try:
        address = parse_eprt_argument(argument)
    except AddressSyntaxError:
        return
    # Anything accepted must be a real address and port.
    assert ipaddress.ip_address(address.host)
    assert 0 <= address.port <= 65535


@pytest.mark.parametrize(
    ("address", "plain"),
    [
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("ftp.example.com", "ftp.example.com"),
    ],
)
def test_plain_ip_gives_the_form_peers_compare_and_advertise(address: str, plain: str) -> None:
    assert plain_ip(address) == plain
