"""What each configuration key allows, in words, and the checks several keys share.

``RULES`` holds one sentence per key. The models in ``ketch.config_models``
validate with it and ``ketch.config`` quotes it whenever pydantic itself
rejects a value (wrong type, out of range), so every message says what would
have been accepted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ketch.server.auth import ANONYMOUS_NAMES, PERMISSION_WORDS, parse_permissions

__all__ = [
    "DIRECTORY_RULE",
    "NUL_IN_PATH",
    "RULES",
    "ends_in_a_number",
    "existing_directory",
    "expand_home",
    "is_hostname",
    "permission_words",
    "reject_empty_path",
]


# -- what each key allows ------------------------------------------------------
# One sentence per key, used whenever pydantic itself rejects a value (wrong
# type, out of range) so every message says what would have been accepted.

DIRECTORY_RULE = "must be the path of an existing directory"
PERMISSIONS_RULE = "must be a list of permission words: " + ", ".join(PERMISSION_WORDS)
SECONDS_RULE = "must be a number of seconds greater than 0"
RATE_RULE = "must be a whole number of bytes per second, 0 or more (0 means unlimited)"

RULES: dict[str, str] = {
    "listen_address": (
        "must be an IP address such as '0.0.0.0' or '::'; leave it out to listen on all addresses"
    ),
    "port": "must be a whole number from 0 to 65535 (0 picks any free port)",
    "root": DIRECTORY_RULE,
    "banner": "must be text without control characters (line breaks are allowed)",
    "host_names": (
        "must be a list of host names or IP addresses such as ['ftp.example.com']; "
        "leave it empty to accept any name in HOST"
    ),
    "passive_ports": "each port must be between 1 and 65535, written 'LOW-HIGH' with LOW <= HIGH",
    "masquerade_address": "must be an IP address or a host name such as 'ftp.example.com'",
    "tls_masquerade_address": (
        "must be an IP address or a host name such as 'ftps.example.com'; "
        "leave it out to use masquerade_address for TLS sessions too"
    ),
    "masquerade_refresh": "must be a number of seconds greater than 0 (how often names resolve)",
    "masquerade_map": (
        "must be a [masquerade_map] table of IPv4 networks and addresses, "
        'such as "198.18.3.0/24" = "198.18.3.2" (an IPv4 address or a host name)'
    ),
    "active_source_port": "must be 'auto', 'ephemeral' or a port number from 1 to 65535",
    "allow_foreign_addresses": "must be true or false",
    "max_connections": "must be a whole number, at least 1",
    "max_connections_per_ip": "must be a whole number, at least 1",
    "idle_timeout": SECONDS_RULE,
    "data_connect_timeout": SECONDS_RULE,
    "data_stall_timeout": SECONDS_RULE,
    "atomic_uploads": "must be true or false",
    "max_upload_size": "must be a whole number of bytes, 0 or more (0 means no limit)",
    "listing_cache": "must be true or false",
    "login_cache_seconds": "must be a number of seconds, 0 or more (0 checks every login)",
    "login_failure_delay": "must be a number of seconds, 0 or more",
    "login_failure_delay_max": (
        "must be a number of seconds, 0 or more (never less than login_failure_delay is used)"
    ),
    "ban_after_failures": "must be a whole number, 0 or more (0 turns banning off)",
    "ban_window": SECONDS_RULE,
    "ban_duration": SECONDS_RULE,
    "ban_exempt": "must be a list of IP networks such as '192.0.2.0/24' or '2001:db8::/32'",
    "max_sessions_per_user": "must be a whole number, 0 or more (0 means no limit)",
    "command_rate": "must be a number of commands per second, 0 or more (0 turns the limit off)",
    "command_burst": "must be a whole number, at least 1",
    "command_flood_timeout": SECONDS_RULE,
    "line_timeout": SECONDS_RULE,
    "max_line_length": "must be a whole number from 512 to 65536",
    "anonymous": "must be an [anonymous] table with the keys enabled, home and permissions",
    "anonymous.enabled": (
        "must be true or false; leave it out to allow anonymous logins only while no "
        "accounts are configured"
    ),
    "anonymous.home": DIRECTORY_RULE + "; leave it out to use root",
    "anonymous.permissions": PERMISSIONS_RULE,
    "anonymous.download_rate": RATE_RULE,
    "anonymous.upload_rate": RATE_RULE,
    "anonymous.max_sessions": "must be a whole number, 0 or more (0 means no limit)",
    "users": "must be a list of [[users]] tables, each with name, password_hash and home",
    "users.name": (
        "must be a name without spaces or control characters, other than "
        + " and ".join(repr(name) for name in sorted(ANONYMOUS_NAMES))
    ),
    "users.password_hash": (
        "must be an argon2 hash starting with '$argon2'; create one with `ketch user hash`"
    ),
    "users.home": DIRECTORY_RULE,
    "users.permissions": PERMISSIONS_RULE,
    "users.quota_bytes": "must be a whole number of bytes, 0 or more (0 means no quota)",
    "users.quota_files": "must be a whole number of files, 0 or more (0 means no quota)",
    "users.download_rate": RATE_RULE,
    "users.upload_rate": RATE_RULE,
    "users.max_sessions": (
        "must be a whole number, 0 or more (0 means no limit); "
        "leave it out to use max_sessions_per_user"
    ),
    "log_level": "must be one of 'debug', 'info', 'warning', 'error'",
    "run_as": (
        "must be the name of a system user such as 'ftp' (no spaces); "
        "leave it out to keep the user the server is started as"
    ),
    "shutdown_grace": "must be a number of seconds, 0 or more",
    "workers": "must be a whole number from 1 to 64 (the number of server processes)",
    "event_loop": "must be 'auto' (uvloop when installed), 'asyncio' or 'uvloop'",
    "tls_certificate": (
        "must be the path of a PEM certificate file (with its chain); "
        "create one with `ketch cert --host NAME`"
    ),
    "tls_key": "must be the path of the certificate's PEM private key file",
    "tls_required": "must be 'off', 'control' (logins need AUTH TLS) or 'all' (data too)",
    "tls_require_session_reuse": "must be true or false",
    "implicit_tls_port": (
        "must be a port number from 0 to 65535 (990 by convention; 0 picks any free port); "
        "leave it out to have no implicit FTPS port"
    ),
}


# -- shared checks -------------------------------------------------------------


def reject_empty_path(value: Any) -> Any:
    """Path("") silently means the current directory; an empty setting is a mistake."""
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"is empty; {DIRECTORY_RULE}")
    return value


#: No file name can hold a NUL byte: the operating system would read it as the end.
NUL_IN_PATH = "the path holds a NUL byte (\\x00), which no file name can contain; remove it"


def expand_home(path: Path) -> Path:
    """``path`` with a leading ``~`` or ``~NAME`` expanded, or ValueError saying why not.

    Every path setting passes here first, so a NUL byte is refused here too: later,
    os calls would raise "embedded null byte" or, in is_dir(), quietly answer False.
    """
    if "\0" in str(path):
        raise ValueError(NUL_IN_PATH)
    try:
        return path.expanduser()
    except RuntimeError:  # "Could not determine home directory."
        name = str(path).partition(os.sep)[0].removeprefix("~")
        if not name:
            raise ValueError(
                "'~' has no home directory to stand for (HOME is not set); write the full path"
            ) from None
        raise ValueError(
            f"no such user for '~{name}'; write the full path, "
            "or ~NAME with the name of an existing user"
        ) from None


def existing_directory(path: Path) -> Path:
    """``path`` made absolute, or ValueError saying why it cannot be served."""
    path = expand_home(path)
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as error:  # e.g. permission denied on a parent
        raise ValueError(
            f"cannot be checked ({os.strerror(error.errno or 0)}); "
            "choose a directory the server can reach"
        ) from None
    if not exists:
        raise ValueError("no such directory; create it or choose an existing directory")
    if not is_dir:
        raise ValueError("is not a directory; choose a directory")
    return path.resolve()


def permission_words(words: list[str]) -> list[str]:
    parse_permissions(words)  # its ValueError already lists the allowed words
    return words


def ends_in_a_number(text: str) -> bool:
    """Whether the last label is a number (decimal, or hex as '0x7f'), as no top-level
    domain is (RFC 1123 2.1): the resolver reads such a name as a shortened IPv4
    address, so '203.0.113' would quietly mean 203.0.0.113."""
    last = text.removesuffix(".").rpartition(".")[2]
    return re.fullmatch(r"[0-9]+|0[xX][0-9A-Fa-f]*", last) is not None


def is_hostname(text: str) -> bool:
    """RFC 1123 host name syntax; whether it resolves is checked at start-up."""
    name = text[:-1] if text.endswith(".") else text
    label = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
    return (
        0 < len(name) <= 253
        and all(label.fullmatch(part) for part in name.split("."))
        and not ends_in_a_number(name)
    )
