"""Small address helpers shared by the listener and the data channels."""

from __future__ import annotations

import ipaddress

__all__ = ["plain_ip"]


def plain_ip(address: str) -> str:
    """The address as peers see it: IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4.

    A dual-stack listener reports IPv4 clients in mapped form; comparing,
    advertising (PASV) and logging all want the plain IPv4 address.
    """
    address = address.split("%", 1)[0]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)
