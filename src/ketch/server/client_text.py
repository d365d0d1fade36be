"""Text a client chose (user names, paths, host names), made safe to log or echo back.

Log lines are ``key=value`` fields, read by people on a terminal and by
scripts (fail2ban, log shippers). A user name such as ``"x result=ok"`` or a
path with an escape sequence or a line break in it must not forge a field, a
line, or terminal output (CWE-117). Values that need it are quoted, with
backslash escapes for quotes, backslashes and anything unprintable; the rest,
non-ASCII names included, are logged as they are.
"""

from __future__ import annotations

__all__ = ["echoed", "log_field"]

_QUOTED = frozenset(' "\\=')


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
