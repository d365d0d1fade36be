"""ftp:// and ftps:// URLs as the client's users write them, and ~/.netrc look-ups.

On one point this follows curl and lftp rather than RFC 1738: the path after
the host is taken relative to the login directory, and an absolute path is
written with a second slash (``ftp://host//etc/motd``) or as ``%2F``. Both
read the same here, so either habit works.

URLs and their error messages end up in logs and terminals, so neither
:meth:`FtpUrl.display`, the dataclass repr nor any error message shows the
password.
"""

from __future__ import annotations

import netrc
import re
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Literal
from urllib.parse import quote, unquote

__all__ = ["FtpUrl", "UrlError", "credentials_from_netrc", "parse_ftp_url"]

Scheme = Literal["ftp", "ftps"]

_FORM = "use ftp://[user[:password]@]host[:port]/path"
_DEFAULT_PORTS: dict[Scheme, int] = {"ftp": 21, "ftps": 990}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# CR and LF would end the FTP command early and start another; NUL cuts it short.
_UNSENDABLE = re.compile(r"[\r\n\x00]")
_HOST_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f/\\?#@\[\]%]")
# RFC 1738 ;type=a|i|d ends the path; "d" asks for a directory listing.
_TYPECODE = re.compile(r";type=([aid])\Z", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class UrlError(ValueError):
    """A URL or a .netrc file is unusable; the one-line message says what to fix."""


@dataclass(frozen=True)
class FtpUrl:
    """A parsed FTP URL.

    ``path`` is percent-decoded and relative to the login directory unless it
    starts with "/": ``ftp://h/dir/f`` gives "dir/f", ``ftp://h//etc/x`` and
    ``ftp://h/%2Fetc/x`` give "/etc/x", and ``ftp://h/`` and ``ftp://h`` give
    "" (the login directory itself). Bytes that are not UTF-8 are kept as
    surrogate escapes, as the rest of ketch keeps file names.
    ``is_directory`` is true when the URL names a directory: an empty path, a
    path ending in "/", or an RFC 1738 ``;type=d`` suffix.
    """

    scheme: Scheme
    host: str  # an IPv6 address without brackets
    port: int
    user: str | None
    password: str | None = field(repr=False)
    path: str
    is_directory: bool

    def display(self) -> str:
        """The URL with the password shown as "***", for logs and messages."""
        userinfo = ""
        if self.user is not None:
            secret = ":***" if self.password is not None else ""
            userinfo = f"{_quote(self.user, safe='')}{secret}@"
        host = f"[{self.host.replace('%', '%25')}]" if ":" in self.host else self.host
        port = "" if self.port == _DEFAULT_PORTS[self.scheme] else f":{self.port}"
        path = _quote(self.path, safe="/")
        if self.is_directory and path and not path.endswith("/"):
            path += "/"
        return f"{self.scheme}://{userinfo}{host}{port}/{path}"


def _quote(text: str, safe: str) -> str:
    """Percent-encode, restoring surrogate-escaped bytes; never raises."""
    try:
        return quote(text, safe=safe, errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return quote(text, safe=safe, errors="replace")


def _redacted(text: str) -> str:
    """``text`` with anything that may be a password masked, for error messages.

    The text may be malformed, so this errs towards masking too much: from
    the first ':' after "//" to the last '@'.
    """
    start = text.find("//") + 2 if "//" in text else 0
    at = text.rfind("@", start)
    colon = text.find(":", start, at) if at >= 0 else -1
    return text if colon < 0 else f"{text[: colon + 1]}***{text[at:]}"


def _show(text: str) -> str:
    """Quote text for an error message, password masked and cut short."""
    text = _redacted(text)
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _decode(text: str, what: str, *, secret: bool = False) -> str:
    """Percent-decode strictly; a secret is never echoed in the message."""
    shown = "" if secret else f" {_show(text)}"
    if _BAD_PERCENT.search(text):
        raise UrlError(f"bad percent-encoding in the {what}{shown}: write a literal '%' as %25")
    decoded = unquote(text, errors="surrogateescape")
    if _UNSENDABLE.search(decoded):
        raise UrlError(f"the {what}{shown} contains CR, LF or NUL, which FTP cannot send")
    return decoded


def _split_scheme(text: str) -> tuple[Scheme, str]:
    match = _SCHEME.match(text)
    if match is not None:
        scheme, rest = match[1].lower(), text[match.end() :]
        if scheme == "ftp":
            return "ftp", rest
        if scheme == "ftps":
            return "ftps", rest
    raise UrlError(f"not an FTP URL: {_show(text)} — {_FORM}")


def _split_userinfo(authority: str) -> tuple[str | None, str | None, str]:
    """User, password and "host[:port]"; the last '@' ends the user info.

    Splitting at the last '@' lets an unencoded '@' in a user name (an email
    address) through, as a host can never contain one.
    """
    userinfo, at, host_port = authority.rpartition("@")
    if not at:
        return None, None, authority
    user_text, colon, password_text = userinfo.partition(":")
    user = _decode(user_text, "user name")
    if not user:
        raise UrlError(f"empty user name before '@' — {_FORM}")
    password = _decode(password_text, "password", secret=True) if colon else None
    return user, password, host_port


def _parse_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise UrlError(f"bad port {_show(text)}: it must be a number from 1 to 65535")
    return int(text)


def _parse_ipv6(text: str) -> str:
    """Canonical text of a bracketed literal; a zone id is written "%25" (RFC 6874)."""
    try:
        return str(IPv6Address(unquote(text)))
    except ValueError:
        raise UrlError(f"bad IPv6 address {_show(text)} between '[' and ']'") from None


def _is_ipv6(text: str) -> bool:
    try:
        IPv6Address(text)
    except ValueError:
        return False
    return True


def _brackets_needed(host_port: str, scheme: Scheme, raw_path: str) -> UrlError:
    """The error for an IPv6 address without brackets, with the URL as it should be.

    "::1:2121" reads two ways: host ::1 on port 2121, or host ::1:2121 on the default
    port. Each reading that makes an address is offered, the user's path kept.
    """
    address, _, last = host_port.rpartition(":")
    whole = f"{scheme}://[{host_port}]/{raw_path}"
    if not (last.isascii() and last.isdigit() and 1 <= int(last) <= 65535 and _is_ipv6(address)):
        return UrlError(f"an IPv6 address needs brackets: {whole}")
    with_port = f"{scheme}://[{address}]:{last}/{raw_path}"
    if not _is_ipv6(host_port):  # "::1:34021": a group has at most 4 hex digits
        return UrlError(f"an IPv6 address needs brackets: {with_port}")
    return UrlError(
        f"an IPv6 address needs brackets: {with_port} (if {last} is the port) or {whole}"
    )


def _split_host_port(host_port: str, scheme: Scheme, raw_path: str) -> tuple[str, int]:
    """Host and port of ``host_port``; ``raw_path`` (after the '/') is for messages."""
    if host_port.startswith("["):
        inside, bracket, rest = host_port[1:].partition("]")
        if not bracket:
            raise UrlError(f"missing ']' after the IPv6 address {_show(host_port)}")
        host = _parse_ipv6(inside)
        if rest and not rest.startswith(":"):
            raise UrlError(f"unexpected {_show(rest)} after ']': write ftp://[2001:db8::1]:21/")
        port_text = rest[1:]
    else:
        host, _, port_text = host_port.partition(":")
        if ":" in port_text:
            raise _brackets_needed(host_port, scheme, raw_path)
        if not host:
            raise UrlError(f"missing host name — {_FORM}")
        if _HOST_FORBIDDEN.search(host):
            raise UrlError(f"bad host name {_show(host)} — {_FORM}")
    # An empty port ("host:") means the default, as RFC 3986 allows.
    port = _parse_port(port_text) if port_text else _DEFAULT_PORTS[scheme]
    return host, port


def _split_path(raw: str) -> tuple[str, bool]:
    """Decoded path and whether it names a directory; ``raw`` follows the host's "/"."""
    typecode = _TYPECODE.search(raw)
    listing = False
    if typecode is not None:
        if typecode[1].lower() == "a":  # silently binary instead would change the file's bytes
            raise UrlError(
                ";type=a asks for an ASCII transfer, which ketch does not make: it moves "
                "files byte for byte (TYPE I); drop ;type=a"
            )
        raw = raw[: typecode.start()]
        listing = typecode[1].lower() == "d"
    path = _decode(raw, "path")
    return path, listing or path == "" or path.endswith("/")


def parse_ftp_url(text: str) -> FtpUrl:
    """Parse ``ftp://[user[:password]@]host[:port]/path`` (or ftps://); see FtpUrl.

    Raises UrlError with a one-line message saying what is wrong.
    """
    text = text.strip()
    scheme, rest = _split_scheme(text)
    if "?" in rest or "#" in rest:
        raise UrlError("FTP URLs have no query or fragment: write '?' as %3F and '#' as %23")
    authority, _, raw_path = rest.partition("/")
    user, password, host_port = _split_userinfo(authority)
    try:
        host, port = _split_host_port(host_port, scheme, raw_path)
    except UrlError:
        if user is None and "@" in raw_path:
            # Most likely "user:pass/word@host": the '/' ended the host part early,
            # and the message above would show part of the password.
            raise UrlError(
                "bad host or port before the first '/' (a '/' in a user name or password"
                " must be written %2F)"
            ) from None
        raise
    path, is_directory = _split_path(raw_path)
    return FtpUrl(scheme, host, port, user, password, path, is_directory)


def _netrc_problem(error: netrc.NetrcParseError, netrc_path: str | None) -> str:
    """A one-line message for a bad .netrc; quoted tokens might be passwords, so hide them."""
    where = error.filename or netrc_path or "~/.netrc"
    if error.lineno is not None:
        where = f"{where}, line {error.lineno}"
    return f"{where}: {_QUOTED.sub('(hidden)', error.msg)}"


def _entry_for(parsed: netrc.netrc, host: str) -> tuple[str, str, str] | None:
    """The host's entry, matched case-insensitively as host names are; else "default"."""
    wanted = host.lower()
    for machine, entry in parsed.hosts.items():
        if machine != "default" and machine.lower() == wanted:
            return entry
    return parsed.hosts.get("default")


def credentials_from_netrc(host: str, netrc_path: str | None = None) -> tuple[str, str] | None:
    """(login, password) for ``host`` from a .netrc file (default ~/.netrc), or None.

    None when ~/.netrc does not exist or has neither an entry for the host
    nor a "default" entry, or the entry has no login. A missing password
    gives "". Raises UrlError for a file that cannot be read or parsed, for
    a ``netrc_path`` named but missing (a typo must not log in anonymously),
    and (as the stdlib checks for ~/.netrc only) for one other users can read.
    """
    try:
        # Passing None, not the expanded path, keeps the stdlib's permission check.
        parsed = netrc.netrc(netrc_path)
    except FileNotFoundError:
        if netrc_path is not None:
            raise UrlError(f"cannot read {netrc_path}: no such file") from None
        return None
    except netrc.NetrcParseError as error:
        raise UrlError(_netrc_problem(error, netrc_path)) from None
    except OSError as error:
        where = error.filename or netrc_path or "~/.netrc"
        raise UrlError(f"cannot read {where}: {error.strerror}") from None
    entry = _entry_for(parsed, host)
    if entry is None or not entry[0]:
        return None
    login, _account, password = entry
    return login, password
