"""Codecs for data-connection addresses: PORT/PASV (RFC 959) and EPRT/EPSV (RFC 2428).

These strings come straight from the network, so parsing is strict and every
failure is an AddressSyntaxError whose message can go into a 501 reply. A
lenient parser here would be how a server gets talked into connecting to a
host it never meant to.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "AddressSyntaxError",
    "HostPort",
    "UnsupportedFamilyError",
    "active_source_port",
    "address_facts",
    "address_family_number",
    "format_eprt_argument",
    "format_epsv_reply",
    "format_host_port",
    "format_pasv_reply",
    "format_port_argument",
    "is_ip_literal",
    "parse_eprt_argument",
    "parse_epsv_argument",
    "parse_epsv_reply",
    "parse_pasv_reply",
    "parse_port_argument",
    "plain_ip",
    "plain_network",
]

_DIGITS = frozenset("0123456789")
_PORT_FIELDS = (
    "host byte 1",
    "host byte 2",
    "host byte 3",
    "host byte 4",
    "port high byte",
    "port low byte",
)
# RFC 1123 §4.1.2.6: a client must scan a 227 reply for the six numbers, since
# servers differ in the text around them. The lookbehind anchors each attempt
# at the start of a digit run, which keeps the scan linear.
_SIX_NUMBERS = re.compile(r"(?<![0-9])" + r" *, *".join([r"([0-9]+)"] * 6))
# A delimiter is any ASCII 33..126 except a digit: [!-/] is 33..47, [:-~] 58..126.
_EPSV_IN_PARENS = re.compile(r"\(([!-/:-~])\1\1([0-9]+)\1\)")
_EPSV_BARE = re.compile(r"([!-/:-~])\1\1([0-9]+)\1")

_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressSyntaxError(ValueError):
    """A PORT/PASV/EPRT/EPSV string is malformed; the message says how (for 501)."""


class UnsupportedFamilyError(AddressSyntaxError):
    """EPRT/EPSV named a network protocol other than 1 (IPv4) or 2 (IPv6) (for 522)."""


@dataclass(frozen=True)
class HostPort:
    """An IP address in ipaddress's canonical text form, and a TCP port.

    Deliberately unvalidated: the server builds these from socket names, and
    the format functions check what they need.
    """

    host: str
    port: int


def _show(text: str) -> str:
    """Quote untrusted text for an error message, cut short so replies stay small."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _parse_number(text: str, maximum: int, what: str) -> int:
    """Parse an unsigned ASCII decimal, refusing anything int() alone would allow.

    int() accepts signs, underscores, surrounding whitespace and non-ASCII
    digits, and fails with a plain ValueError on very long input.
    """
    if not text:
        raise AddressSyntaxError(f"missing {what}")
    if text[0] in "+-":
        raise AddressSyntaxError(f"{what} must not have a sign: {_show(text)}")
    if not _DIGITS.issuperset(text):
        raise AddressSyntaxError(f"{what} is not a decimal number: {_show(text)}")
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(maximum)) or int(significant) > maximum:
        raise AddressSyntaxError(f"{what} {_show(text)} is out of range 0..{maximum}")
    return int(significant)


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0..65535")


def _host_port_from_numbers(numbers: list[int]) -> HostPort:
    host = ".".join(str(n) for n in numbers[:4])
    return HostPort(host, numbers[4] * 256 + numbers[5])


def parse_port_argument(argument: str) -> HostPort:
    """Parse a PORT argument "h1,h2,h3,h4,p1,p2"; spaces around numbers are tolerated."""
    fields = argument.split(",")
    if len(fields) != 6:
        raise AddressSyntaxError(
            f"expected 6 comma-separated numbers h1,h2,h3,h4,p1,p2, got {len(fields)}"
        )
    numbers = [
        _parse_number(field.strip(" \t"), 255, what)
        for field, what in zip(fields, _PORT_FIELDS, strict=True)
    ]
    return _host_port_from_numbers(numbers)


def _ipv4_for_port(host: str) -> ipaddress.IPv4Address:
    """The IPv4 address to put in PORT/PASV; IPv4-mapped IPv6 is unwrapped.

    A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d, which PASV
    can still describe.
    """
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            raise ValueError(f"PORT and PASV can only carry IPv4 addresses, not {host}")
        return ip.ipv4_mapped
    return ip


def format_port_argument(address: HostPort) -> str:
    """Format "h1,h2,h3,h4,p1,p2"; ValueError for IPv6 or an out-of-range port."""
    octets = _port_octets(address.host)
    _check_port(address.port)
    return f"{octets},{address.port >> 8},{address.port & 0xFF}"


@functools.lru_cache(maxsize=256)
def _port_octets(host: str) -> str:
    """The "h1,h2,h3,h4" of ``host``, cached: a server advertises few addresses, every PASV."""
    return ",".join(str(b) for b in _ipv4_for_port(host).packed)


def format_pasv_reply(address: HostPort) -> str:
    """The text of a 227 reply, in the form most clients expect."""
    return f"Entering Passive Mode ({format_port_argument(address)})."


def parse_pasv_reply(text: str) -> HostPort:
    """Find "h1,h2,h3,h4,p1,p2" anywhere in a 227 reply's text."""
    match = _SIX_NUMBERS.search(text)
    if match is None:
        raise AddressSyntaxError("no h1,h2,h3,h4,p1,p2 address found in the 227 reply")
    numbers = [
        _parse_number(group, 255, what)
        for group, what in zip(match.groups(), _PORT_FIELDS, strict=True)
    ]
    return _host_port_from_numbers(numbers)


def _parse_family(text: str) -> int:
    """Parse an RFC 2428 net-prt: 1 or 2, other numbers are unsupported."""
    if not text:
        raise AddressSyntaxError("missing network protocol")
    if text[0] in "+-":
        raise AddressSyntaxError(f"network protocol must not have a sign: {_show(text)}")
    if not _DIGITS.issuperset(text):
        raise AddressSyntaxError(f"network protocol is not a number: {_show(text)}")
    significant = text.lstrip("0")
    if significant not in ("1", "2"):
        raise UnsupportedFamilyError(f"network protocol {_show(text)} not supported, use (1,2)")
    return int(significant)


def _parse_host(text: str, family: int) -> _IPAddress:
    """Parse a literal address and check it belongs to ``family``."""
    if not text:
        raise AddressSyntaxError("missing network address")
    if "%" in text:
        raise AddressSyntaxError(f"IPv6 zone ids are not allowed: {_show(text)}")
    if not text.isascii():
        raise AddressSyntaxError(f"network address must be ASCII: {_show(text)}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise AddressSyntaxError(f"invalid network address {_show(text)}") from None
    if ip.version != (4 if family == 1 else 6):
        raise AddressSyntaxError(
            f"network protocol {family} does not match the IPv{ip.version} address {_show(text)}"
        )
    return ip


def _check_delimiter(delimiter: str) -> None:
    if not ("!" <= delimiter <= "~") or delimiter in _DIGITS:
        raise AddressSyntaxError(
            f"bad delimiter {_show(delimiter)}: must be ASCII 33..126 and not a digit"
        )


def parse_eprt_argument(argument: str) -> HostPort:
    """Parse "<d>proto<d>address<d>port<d>", e.g. "|2|::1|5282|"."""
    if not argument:
        raise AddressSyntaxError("missing EPRT argument")
    delimiter = argument[0]
    _check_delimiter(delimiter)
    if len(argument) < 2 or argument[-1] != delimiter:
        raise AddressSyntaxError(f"EPRT argument must end with the delimiter {delimiter!r}")
    fields = argument[1:-1].split(delimiter)
    if len(fields) != 3:
        raise AddressSyntaxError(
            f"expected 3 fields {delimiter}proto{delimiter}address{delimiter}port{delimiter}, "
            f"got {len(fields)}"
        )
    proto, host, port = fields
    family = _parse_family(proto)
    ip = _parse_host(host, family)
    return HostPort(str(ip), _parse_number(port, 65535, "port"))


def format_eprt_argument(address: HostPort) -> str:
    """Format "|1|h|p|" or "|2|h|p|"; ValueError for a bad host, zone id or port."""
    ip = ipaddress.ip_address(address.host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"IPv6 zone ids cannot be sent in EPRT: {address.host}")
    _check_port(address.port)
    return f"|{1 if ip.version == 4 else 2}|{ip}|{address.port}|"


def format_epsv_reply(port: int) -> str:
    """The text of a 229 reply; RFC 2428 sends only the port."""
    _check_port(port)
    return f"Entering Extended Passive Mode (|||{port}|)"


def parse_epsv_reply(text: str) -> int:
    """Find the port in a 229 reply, whatever delimiter the server chose."""
    match = _EPSV_IN_PARENS.search(text) or _EPSV_BARE.search(text)
    if match is None:
        raise AddressSyntaxError("no (|||port|) found in the 229 reply")
    return _parse_number(match.group(2), 65535, "port")


def parse_epsv_argument(argument: str) -> int | Literal["ALL"] | None:
    """Parse an EPSV argument: none, "ALL", or a network protocol number."""
    if argument == "":
        return None
    if argument.isascii() and argument.upper() == "ALL":
        return "ALL"
    return _parse_family(argument)


def address_family_number(host: str) -> int:
    """RFC 2428 network protocol number of a literal address: 1 (IPv4) or 2 (IPv6).

    Raises ValueError if ``host`` is not an IP address.
    """
    return 1 if ipaddress.ip_address(host).version == 4 else 2


def active_source_port(setting: str | int, control_port: int) -> int | None:
    """The source port active-mode connections try, or None for an ephemeral one.

    ``setting`` is the server's ``active_source_port``: "ephemeral", a port
    number, or "auto": control port - 1, RFC 959's default data port "L-1"
    (20 beside 21), which client-side firewalls may admit by source port.
    """
    if setting == "ephemeral":
        return None
    if setting == "auto":
        return control_port - 1 if control_port > 1 else None
    return int(setting)


def format_host_port(host: str, port: int) -> str:
    """``host:port`` for messages and logs, an IPv6 address in brackets: ``[::1]:21``.

    Unbracketed, ``::1:21`` reads as another IPv6 address (on the default port).
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip_literal(text: str) -> bool:
    """True for an IPv4 or IPv6 address written out; False for a host name (or nonsense)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def plain_ip(address: str) -> str:
    """The address as peers see it: IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4.

    A dual-stack socket reports IPv4 peers in mapped form, and a link-local
    address may carry a zone ("%eth0"); comparing, advertising (PASV) and
    logging all want the plain address. Text that is no address comes back as is.
    Cached: every connection and passive data connection asks, mostly for a few clients.
    """
    address = address.split("%", 1)[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def plain_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network as plain_ip's addresses fall in it: an IPv4-mapped one becomes IPv4.

    ``::ffff:10.0.0.0/104`` is ``10.0.0.0/8`` (the mapped prefix is 96 bits) and
    ``::ffff:0:0/96`` is ``0.0.0.0/0``. Kept mapped, it would hold no plain address: an
    IPv4Address is never in an IPv6Network. ValueError if ``text`` is no network.
    """
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        start = network.network_address.ipv4_mapped
        return ipaddress.IPv4Network(f"{start}/{network.prefixlen - 96}")
    return network


@functools.lru_cache(maxsize=1024)
def address_facts(host: str) -> tuple[str, bool, int]:
    """(plain IP, is loopback, RFC 2428 family number) of a connection's address.

    Cached: parsing costs more than the rest of setting up a session, and the
    sessions of one client share the address string instead of a copy each.
    ValueError if ``host`` is not an IP address.
    """
    ip = plain_ip(host)
    address = ipaddress.ip_address(ip)
    return ip, address.is_loopback, 1 if address.version == 4 else 2
