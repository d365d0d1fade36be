"""Text a client chose (user names, paths, host names), made safe to log or echo back.

Log lines are ``key=value`` fields, read by people on a terminal and by
scripts (fail2ban, log shippers). A user name such as ``"x result=ok"`` or a
path with an escape sequence or a line break in it must not forge a field, a
line, or terminal output (CWE-117). Values that need it are quoted, with
backslash escapes for quotes, backslashes and anything unprintable; the rest,
non-ASCII names included, are logged as they are.

Replies are made safe as a whole (``without_controls``, applied to every
reply the session sends): paths in 550, 257 and 250 texts come from the
client, and a terminal escape in one must not reach the client's terminal.
"""

from __future__ import annotations

import re

__all__ = ["echoed", "log_field", "without_controls"]

_QUOTED = frozenset(' "\\=')
# C0 controls but the line breaks, DEL and C1 controls: what a terminal acts on. CR and LF
# are left to the reply's formatting, which turns them into line breaks of its own.
_CONTROLS = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def log_field(text: str | None) -> str:
    """``text`` as one log field: itself when plain, else quoted with escapes."""
    if text is None:
        return "-"
    if text and text.isprintable() and _QUOTED.isdisjoint(text):
        return text
    return '"' + "".join(_escaped(char) for char in text) + '"'


def echoed(text: str) -> str:
    """``text`` for a reply that repeats it: itself when printable, else quoted with escapes,
    so a reply never carries control characters (a terminal escape, a NUL) back."""
    return text if text.isprintable() else log_field(text)


def _escaped(char: str) -> str:
    if char in '"\\':
        return "\\" + char
    if char == " " or char.isprintable():
        return char
    code = ord(char)  # control characters, and surrogates standing for undecodable bytes
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def without_controls(text: str) -> str:
    """``text`` with each control character written as ``\\xNN``, the rest unchanged.

    Unlike ``echoed``, nothing else changes: a name that is not UTF-8 (its bytes kept
    as surrogates) goes back as the very bytes the client sent, as RFC 2640 wants, and
    printable names, with spaces, quotes and backslashes, stay as they are. Only a name
    holding control characters looks different, and such a name cannot be shown as it is.
    """
    if text.isprintable():  # the common case, in C
        return text
    return _CONTROLS.sub(_hex_escape, text)


def _hex_escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"
