"""Validated, immutable server configuration: loading and explaining problems.

Everything the server may be told is checked once, at start-up: a bad value
must stop the server with a message naming the key, the value and what is
allowed, not surface later as an odd failure in the middle of a session.
The settings come from a TOML file and/or command-line overrides; the models
in ``ketch.config_models`` do the checking and ``ConfigError`` rewrites
pydantic's reports into one plain line per problem.
"""

from __future__ import annotations

import difflib
import errno
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ketch.config_models import AnonymousConfig, PortRange, ServerConfig, UserConfig
from ketch.config_rules import RULES

__all__ = [
    "FLAGS",
    "RULES",
    "AnonymousConfig",
    "ConfigError",
    "Origins",
    "PortRange",
    "ServerConfig",
    "UserConfig",
    "load_config",
    "read_toml",
]

# Values that must never be echoed: people paste passwords into them. Under users,
# only the text of the keys below is shown (a password may sit in a misspelt key, a
# bare string or a [users] table); anywhere, no value of a key named like a secret.
_SHOWN_USER_KEYS = frozenset(UserConfig.model_fields) - {"password_hash"}
_SECRET_NAME = re.compile(
    r"(?:^|[_-])(?:pass|passwd|password|passphrase|hash|secret|token|credentials?)(?:$|[_-])",
    re.IGNORECASE,
)
_NOT_SHOWN = "(not shown)"


class ConfigError(Exception):
    """The configuration is unusable; ``str(error)`` has one line per problem."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# -- where a setting came from ---------------------------------------------------

#: The `ketch serve` flag of each key that has one (`ketch firewall` takes some of them,
#: spelt the same): a problem with a setting given on the command line names its flag.
FLAGS: dict[str, str] = {
    "root": "--root",
    "port": "--port",
    "listen_address": "--listen",
    "passive_ports": "--passive-ports",
    "masquerade_address": "--masquerade-address",
    "active_source_port": "--active-source-port",
    "allow_foreign_addresses": "--allow-foreign-addresses",
    "log_level": "--log-level",
    "run_as": "--run-as",
    "workers": "--workers",
    "event_loop": "--event-loop",
    "tls_certificate": "--tls-certificate",
    "tls_key": "--tls-key",
    "tls_required": "--tls-required",
    "implicit_tls_port": "--implicit-tls-port",
}


@dataclass(frozen=True)
class Origins:
    """Where the settings came from, so that a problem says where to fix it: a setting
    from the file is prefixed by the file's name, one from the command line by
    "command line" and named by its flag, as are the settings its advice names that the
    file does not set."""

    path: Path | None = None
    #: Keys given on the command line (load_config's overrides).
    given: frozenset[str] = frozenset()
    #: Keys the file sets.
    in_file: frozenset[str] = frozenset()
    #: The flags the given keys came from (empty: a caller that passes keys, not flags).
    flags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: ServerConfig, path: Path | None, given: Collection[str]) -> Origins:
        """The origins of ``config``'s settings, loaded from ``path`` with the flags ``given``."""
        given = frozenset(given)
        return cls(path, given, frozenset(config.model_fields_set) - given, FLAGS)

    def source(self, key: str | int) -> str:
        if key in self.given:
            return "command line"
        return str(self.path) if self.path is not None else "configuration"

    def named(self, message: str, *, from_command_line: bool) -> str:
        """``message`` with the settings it names written as flags: those given on the
        command line, and (in a problem with one) those the file does not set either."""
        for key, flag in self.flags.items():
            # Keys without "_" (root, port) are ordinary words too: left alone.
            by_flag = key in self.given or (from_command_line and key not in self.in_file)
            if by_flag and "_" in key:
                message = re.sub(rf"(?<![\w.-]){key} = ", f"{flag} ", message)
                message = re.sub(rf"(?<![\w.-]){key}(?![\w-])", flag, message)
        return message

    def locate(self, message: str) -> str:
        """A start-up problem whose message starts with its setting ("run_as = 'x': ...",
        "passive_ports 900-999 starts ..."), prefixed by where that setting came from."""
        match = re.match(r"[a-z_]+", message)
        key = match[0] if match and match[0] in ServerConfig.model_fields else ""
        from_command_line = key in self.given
        named = self.named(message, from_command_line=from_command_line)
        if from_command_line or self.path is not None:
            return f"{self.source(key)}: {named}"
        return named


# -- loading -------------------------------------------------------------------


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Read ``path`` (TOML) if given, apply ``overrides`` on top, and validate.

    Relative paths in the file are relative to the file's directory, so a
    configuration means the same wherever the server is started from;
    relative paths in ``overrides`` (command-line flags) are relative to the
    current directory, as a shell user expects. Every key in ``overrides`` is
    applied as given, so callers leave out flags the user did not pass.
    ``flags`` (``FLAGS``, from the command line) names each override by its flag
    in the problems, where a library caller's overrides are named by key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
        _anchor_paths(data, Path(os.path.abspath(path)).parent)
    origins = Origins(path, frozenset(overrides or ()), frozenset(data), flags or {})
    data.update(overrides or {})
    try:
        return ServerConfig.model_validate(data)
    except ValidationError as error:

        def key_of(detail: ErrorDetails) -> str | int:
            if detail["loc"]:
                return detail["loc"][0]
            # A check of the whole configuration names its key (tls_required, say).
            named = str((detail.get("ctx") or {}).get("key", ""))
            return re.split(r"[.\[]", named, maxsplit=1)[0]

        problems = [
            _describe(detail, origins.source(key_of(detail)), origins)
            for detail in error.errors(include_url=False)
        ]
        raise ConfigError(problems) from None


def with_values(config: ServerConfig, values: Mapping[str, Any], source: str) -> ServerConfig:
    """``config`` with ``values`` set, validated again as a whole.

    Raises ConfigError (one line per problem, as load_config's) when they do not
    hold together, e.g. quotas with ``workers`` kept above 1 by a reload.
    """
    try:
        return ServerConfig.model_validate({**config.model_dump(), **values})
    except ValidationError as error:
        raise ConfigError(
            [_describe(detail, source) for detail in error.errors(include_url=False)]
        ) from None


def read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML as read, unchecked; ConfigError (one line) if it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read the configuration file ({os.strerror(error.errno or 0)}); "
            + _unreadable_advice(error)
        ) from None
    try:
        # utf-8-sig: a byte-order mark (as Windows editors write) is dropped, not an error.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (bad byte at offset {error.start}); save the file as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(_toml_problem(path, text, str(error))) from None


def _toml_problem(path: Path, text: str, message: str) -> str:
    """tomllib's complaint as one line naming the file and line, and what to do."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match is None:
        return f"{path}: invalid TOML: {message}; fix the syntax"
    reason, number = message[: match.start()], int(match[1])
    if reason.startswith(("Cannot overwrite a value", "Cannot declare")):
        # tomllib says neither which key nor where it was first: the lines do.
        twice = _given_twice(text.splitlines(), number)
        if twice is not None:
            return f"{path}:{number}: {twice}"
    where = f"{path}:{number}: invalid TOML at column {match[2]}"
    return f"{where}: {reason}; fix the syntax on that line"


# A TOML key as written (bare, quoted, dotted), and a table header.
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_KEY_LINE = re.compile(rf"\s*({_DOTTED_KEY})\s*=")
_HEADER_LINE = re.compile(rf"\s*(\[\[?)\s*({_DOTTED_KEY})\s*\]")


def _plain_key(written: str) -> str:
    """A key as TOML means it: ' "name" . a' -> 'name.a'; a part that is no bare key quoted."""
    parts = re.findall(_KEY_PART, written)
    plain = (part[1:-1] if part[0] in "\"'" else part for part in parts)
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in plain)


def _header(line: str) -> str | None:
    """A table header line as "[anonymous]" or "[[users]]"; None for another line."""
    match = _HEADER_LINE.match(line)
    if match is None:
        return None
    brackets = match[1]
    return f"{brackets}{_plain_key(match[2])}{brackets.replace('[', ']')}"


def _given_twice(lines: list[str], number: int) -> str | None:
    """What line ``number`` (1-based) gives a second time, and what to do; None if unclear."""
    line = lines[number - 1] if 0 < number <= len(lines) else ""
    header = _header(line)
    if header is not None:
        return _table_twice(lines, number, header)
    key = _KEY_LINE.match(line)
    if key is None:
        return None
    name = _plain_key(key[1])
    start = max((i for i in range(number - 1) if _header(lines[i])), default=-1)
    table = f" in {_header(lines[start])}" if start >= 0 else ""
    section = range(start + 1, number - 1)
    if (earlier := _earlier_key(lines, section, name.__eq__)) is not None:
        return f"{name} is set twice{table} (also on line {earlier}); remove one of them"
    for parent in (name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)):
        if (earlier := _earlier_key(lines, section, parent.__eq__)) is not None:
            return (
                f"{name} needs {parent} to be a table, but line {earlier} sets {parent} to a "
                f"value{table}; rename or remove one of them"
            )
    return f"{name} is set twice{table}; remove one of them"


def _earlier_key(lines: list[str], section: range, wanted: Callable[[str], bool]) -> int | None:
    """The number of the first line in ``section`` (indices) setting a key ``wanted`` likes."""
    for index in section:
        match = _KEY_LINE.match(lines[index])
        if match is not None and wanted(_plain_key(match[1])):
            return index + 1
    return None


def _table_twice(lines: list[str], number: int, header: str) -> str:
    name = header.strip("[]")
    before = range(number - 1)
    if header.startswith("[["):
        return f"{header} follows a value or table named {name}; rename or remove one of them"
    if (earlier := next((i + 1 for i in before if _header(lines[i]) == header), None)) is None:
        # Not a header: a dotted key (anonymous.enabled = ...) made the table, or a value.
        if (earlier := _earlier_key(lines, before, name.__eq__)) is not None:
            return (
                f"[{name}] names a table, but {name} is set to a value on line {earlier}; "
                "rename or remove one of them"
            )
        earlier = _earlier_key(lines, before, lambda key: key.startswith(f"{name}."))
    also = f" (also on line {earlier})" if earlier else ""
    return f"the table {header} is declared twice{also}; put its keys under one {header} header"


def _unreadable_advice(error: OSError) -> str:
    """What to do about a configuration file that cannot be read, by why not."""
    if error.errno in (errno.EACCES, errno.EPERM):
        # This process's user: after run_as, a reload (SIGHUP) reads as that user.
        user = _effective_user()
        return (
            f"make it readable by {user}, the user the server runs as "
            f"(e.g. chgrp to its group and chmod g+r)"
        )
    if error.errno == errno.EISDIR:
        return "give the path of the file, not of its directory"
    return "check the path, or start from `ketch config example`"


def _effective_user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Make the file's relative directory settings relative to ``base``, in place."""

    def anchored(value: Any) -> Any:
        if isinstance(value, str) and value.strip() and not value.startswith("~"):
            return str(base / value)  # an absolute value replaces base
        return value

    for key in ("root", "tls_certificate", "tls_key"):
        if key in data:
            data[key] = anchored(data[key])
    anonymous = data.get("anonymous")
    if isinstance(anonymous, dict) and "home" in anonymous:
        anonymous["home"] = anchored(anonymous["home"])
    users = data.get("users")
    if isinstance(users, list):
        for user in users:
            if isinstance(user, dict) and "home" in user:
                user["home"] = anchored(user["home"])


# -- turning pydantic's reports into plain lines ------------------------------

_MODEL_FIELDS: dict[str, frozenset[str]] = {
    "": frozenset(ServerConfig.model_fields),
    "anonymous": frozenset(AnonymousConfig.model_fields),
    "users": frozenset(UserConfig.model_fields),
}


def _key(loc: tuple[str | int, ...]) -> str:
    """("users", 0, "home") -> "users[0].home"."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _rule_for(loc: tuple[str | int, ...]) -> str | None:
    """The allowed-values sentence for the nearest enclosing key that has one."""
    names = [part for part in loc if isinstance(part, str)]
    while names:
        rule = RULES.get(".".join(names))
        if rule is not None:
            return rule
        names.pop()
    return None


def _is_secret(names: Sequence[str], value: Any) -> bool:
    """Whether ``value``, at the key path ``names`` (list indices left out), may be a secret."""
    if any(_SECRET_NAME.search(name) for name in names):
        return True
    if names and names[0] == "users" and isinstance(value, str):
        return len(names) < 2 or names[1] not in _SHOWN_USER_KEYS
    return False


def _key_names(key: str) -> list[str]:
    """A key's path, list indices left out: "users[0].home" -> ["users", "home"]."""
    return [name for name in re.split(r"\.|\[\d+\]", key) if name]


def _render(value: Any, names: Sequence[str] = (), limit: int = 80) -> str:
    """A value as it would look in TOML, shortened if long, with secrets not shown.

    ``names`` is the value's key path: what may be a secret depends on where it sits.
    """
    if isinstance(value, list | tuple):
        text = "[" + ", ".join(_render(item, names, limit) for item in value) + "]"
    elif isinstance(value, dict):
        items = (f"{k} = {_render(v, [*names, str(k)], limit)}" for k, v in value.items())
        text = "{" + ", ".join(items) + "}"
    elif _is_secret(names, value):
        text = _NOT_SHOWN
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | Path):
        text = repr(str(value))
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(loc: tuple[str | int, ...]) -> str:
    name = str(loc[-1])
    parent = ".".join(part for part in loc[:-1] if isinstance(part, str))
    allowed = sorted(_MODEL_FIELDS.get(parent, frozenset()))
    close = difflib.get_close_matches(name, allowed, n=3)
    if close:
        advice = "did you mean " + " or ".join(repr(match) for match in close) + "?"
    else:
        advice = "allowed keys here are: " + ", ".join(allowed)
    if parent and name in _MODEL_FIELDS[""]:
        # TOML puts every key after a [table] header into that table.
        advice = f"{name!r} is a top-level key: move it above the first [table] header"
    return f"{_key(loc)}: unknown key; {advice}"


def _describe(detail: ErrorDetails, source: str, origins: Origins | None = None) -> str:
    """One line for one pydantic error: where, which key, which value, what is allowed."""
    loc = tuple(detail["loc"])
    kind = detail["type"]
    context = detail.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{source}: {_unknown_key(loc)}"
    if kind == "missing":
        return f"{source}: {_key(loc)} is missing; it {_rule_for(loc) or 'is required'}"

    key = str(context.get("key", _key(loc)))
    value = context.get("value", detail.get("input"))
    if kind == "ketch_config":
        message = detail["msg"]
    elif kind == "value_error" and "error" in context:
        message = str(context["error"])
    elif loc == ("users",) and isinstance(value, dict):
        # [users] where [[users]] was meant: TOML made one table of the account's keys.
        message = (
            "is one [users] table, but accounts are a list of tables: write the header as "
            "[[users]] (double brackets), once before each account"
        )
    elif kind == "finite_number":
        # TOML has inf and nan; the rule alone ("greater than 0") would seem to allow inf.
        message = f"is not a finite number; {_rule_for(loc) or 'give a finite number'}"
    else:
        message = _rule_for(loc) or detail["msg"]

    origins = origins or Origins()
    names = _key_names(key)
    from_command_line = bool(names) and names[0] in origins.given
    message = origins.named(message, from_command_line=from_command_line)
    if not key:
        # A check of the whole configuration that names no key: its input is every
        # setting, which as "= {...}" would bury the message.
        return f"{source}: {message}"
    flag = origins.flags.get(key) if from_command_line else None
    if flag is not None:
        # As it was typed: --root '/srv/ftp', --allow-foreign-addresses.
        shown = flag if value is True else f"{flag} {_render(value, names)}"
        return f"{source}: {shown}: {message}"
    shown = f"= {_render(value, names)}"
    if shown == f"= {_NOT_SHOWN}":
        shown = "(value not shown)"
    return f"{source}: {key} {shown}: {message}"
