"""Configuration loading and validation: every message names key, value and what is allowed."""

from __future__ import annotations

import errno
import os
import pwd
import re
from pathlib import Path
from typing import Any

import argon2
import pydantic
import pytest

from ketch.config import (
    FLAGS,
    RULES,
    AnonymousConfig,
    ConfigError,
    PortRange,
    ServerConfig,
    UserConfig,
    load_config,
)
from ketch.config_example import DEFAULT_CONFIG_TOML

_HASH = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")


def _problems_in(path: Path, text: str) -> list[str]:
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).splitlines()


def _override_problem(key: str, value: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={key: value})
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- defaults and the example file ---------------------------------------------------


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.port == 2121
    assert config.root == tmp_path.resolve()
    assert config.root.is_absolute()
    assert config.passive_ports == PortRange(50000, 50999)
    assert config.active_source_port == "auto"
    assert config.anonymous.enabled is None and config.anonymous_enabled()
    assert config.users == []
    assert config.anonymous_home() == config.root


def test_default_config_toml_loads_with_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ketch.toml"
    path.write_text(DEFAULT_CONFIG_TOML)
    loaded = load_config(path)
    defaults = ServerConfig(root=loaded.root)
    assert loaded == defaults


def test_default_config_toml_mentions_every_key() -> None:
    keys = set(ServerConfig.model_fields) | set(AnonymousConfig.model_fields)
    keys |= set(UserConfig.model_fields)
    for key in keys:
        pattern = rf"^#? ?({key} = |\[{key}\]|\[\[{key}\]\])"
        assert re.search(pattern, DEFAULT_CONFIG_TOML, re.MULTILINE), key


def test_every_key_has_an_allowed_values_rule() -> None:
    keys = set(ServerConfig.model_fields)
    keys |= {f"anonymous.{key}" for key in AnonymousConfig.model_fields}
    keys |= {f"users.{key}" for key in UserConfig.model_fields}
    assert keys <= set(RULES)


def test_config_is_immutable() -> None:
    config = ServerConfig()
    with pytest.raises(pydantic.ValidationError):
        config.port = 21


# -- one message per key --------------------------------------------------------------


def test_bad_passive_range_names_key_value_and_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("ketch.toml").write_text('passive_ports = "70000-70010"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(Path("ketch.toml"))
    assert str(caught.value) == (
        "ketch.toml: passive_ports = '70000-70010': each port must be between 1 and 65535, "
        "written 'LOW-HIGH' with LOW <= HIGH"
    )


@pytest.mark.parametrize(
    ("key", "value", "shown", "allowed"),
    [
        ("listen_address", "localhost", "'localhost'", "must be an IP address"),
        ("port", 70000, "70000", "from 0 to 65535"),
        ("port", -1, "-1", "from 0 to 65535"),
        ("port", True, "true", "whole number"),
        ("port", "21", "'21'", "whole number"),
        ("banner", "hi\rthere", "'hi\\rthere'", "without control characters"),
        ("passive_ports", "50010-50000", "'50010-50000'", "LOW <= HIGH"),
        ("passive_ports", "0-10", "'0-10'", "between 1 and 65535"),
        ("passive_ports", [1, 2, 3], "[1, 2, 3]", "'LOW-HIGH'"),
        ("passive_ports", "50000", "'50000'", "'LOW-HIGH'"),
        ("masquerade_address", "bad host!", "'bad host!'", "IP address or a host name"),
        ("masquerade_address", "-x.example.com", "'-x.example.com'", "host name"),
        ("active_source_port", "sometimes", "'sometimes'", "'auto', 'ephemeral' or a port"),
        ("active_source_port", 0, "0", "from 1 to 65535"),
        ("active_source_port", True, "true", "'auto', 'ephemeral'"),
        ("active_source_port", 2121, "2121", "a control port the server listens on (port or"),
        ("allow_foreign_addresses", "yes", "'yes'", "true or false"),
        ("max_connections", 0, "0", "at least 1"),
        ("max_connections_per_ip", 0, "0", "at least 1"),
        ("idle_timeout", 0, "0", "greater than 0"),
        ("idle_timeout", float("inf"), "inf", "greater than 0"),
        ("data_connect_timeout", -1.5, "-1.5", "greater than 0"),
        ("data_stall_timeout", "fast", "'fast'", "greater than 0"),
        ("login_failure_delay", -1, "-1", "0 or more"),
        ("max_line_length", 511, "511", "from 512 to 65536"),
        ("max_line_length", 65537, "65537", "from 512 to 65536"),
        ("log_level", "loud", "'loud'", "'debug', 'info', 'warning', 'error'"),
        ("root", "/definitely/not/here", "'/definitely/not/here'", "no such directory"),
        ("root", "", "''", "existing directory"),
        ("anonymous", 5, "5", "[anonymous] table"),
        ("users", 5, "5", "[[users]] tables"),
    ],
)
def test_each_key_reports_key_value_and_what_is_allowed(
    key: str, value: Any, shown: str, allowed: str
) -> None:
    problem = _override_problem(key, value)
    assert problem.startswith(f"command line: {key} = {shown}: "), problem
    assert allowed in problem
    assert "pydantic" not in problem and "further information" not in problem


FLOAT_KEYS = [
    name for name, field in ServerConfig.model_fields.items() if field.annotation is float
]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_inf_and_nan_are_refused_as_not_finite(tmp_path: Path, key: str, value: str) -> None:
    # "idle_timeout = inf: must be a number of seconds greater than 0" seemed to allow inf.
    (problem,) = _problems_in(tmp_path / "k.toml", f"{key} = {value}\n")
    rule = RULES[key]
    assert problem == f"{tmp_path / 'k.toml'}: {key} = {value}: is not a finite number; {rule}"


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    problem = _override_problem("root", str(tmp_path / "file"))
    assert "is not a directory" in problem


def test_valid_values_are_accepted_and_normalized(tmp_path: Path) -> None:
    config = load_config(
        overrides={
            "listen_address": "127.0.0.1",
            "passive_ports": [40000, 40009],
            "masquerade_address": "ftp.example.com",
            "active_source_port": 20,
            "log_level": "DEBUG",
            "banner": "Welcome\r\nto ketch",
            "root": tmp_path,
        }
    )
    assert config.resolved_listen_address() == "127.0.0.1"
    assert config.passive_ports == PortRange(40000, 40009)
    assert config.masquerade_address == "ftp.example.com"
    assert config.active_source_port == 20
    assert config.log_level == "debug"
    assert config.banner == "Welcome\nto ketch"
    assert load_config(overrides={"active_source_port": "Ephemeral"}).active_source_port == (
        "ephemeral"
    )
    assert load_config(overrides={"masquerade_address": "203.0.113.5"}).masquerade_address == (
        "203.0.113.5"
    )


@pytest.mark.parametrize(
    ("value", "ipv4"), [("::ffff:1.2.3.4", "1.2.3.4"), ("::FFFF:7f00:1", "127.0.0.1")]
)
def test_an_ipv4_mapped_listen_address_is_refused_naming_the_ipv4_address(
    value: str, ipv4: str
) -> None:
    # Bound as given it failed at start-up with a bare "Invalid argument".
    assert _override_problem("listen_address", value) == (
        f"command line: listen_address = {value!r}: is an IPv4-mapped IPv6 address, "
        f"which cannot be listened on; give the IPv4 address itself: '{ipv4}'"
    )


def test_ipv4_mapped_ban_exempt_networks_are_read_as_the_ipv4_networks_they_map() -> None:
    # Clients are compared unmapped: ::ffff:127.0.0.1/128 as given exempted nobody.
    mapped = ["::ffff:127.0.0.1/128", "::ffff:10.0.0.0/104", "::FFFF:0:0/96", "::1", "::/0"]
    exempt = load_config(overrides={"ban_exempt": mapped}).ban_exempt
    assert exempt == ["127.0.0.1/32", "10.0.0.0/8", "0.0.0.0/0", "::1/128", "::/0"]


def test_listen_address_defaults_to_all_addresses() -> None:
    assert ServerConfig().resolved_listen_address() in ("::", "0.0.0.0")


def test_port_range_is_a_range() -> None:
    ports = PortRange(50000, 50009)
    assert ports.size == 10
    assert 50000 in ports and 50009 in ports and 50005 in ports
    assert 49999 not in ports and 50010 not in ports
    assert str(ports) == "50000-50009"


# -- unknown keys and syntax -----------------------------------------------------------


def test_unknown_key_suggests_close_matches(tmp_path: Path) -> None:
    problems = _problems_in(tmp_path / "ketch.toml", 'pasive_ports = "1-2"\n')
    assert problems == [
        f"{tmp_path / 'ketch.toml'}: pasive_ports: unknown key; did you mean 'passive_ports' "
        "or 'active_source_port'?"
    ]


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    (problem,) = _problems_in(tmp_path / "k.toml", "[anonymous]\nzzz = 1\n")
    # Every key of the table, sorted (new keys join the list without editing this test).
    allowed = ", ".join(sorted(AnonymousConfig.model_fields))
    assert f"anonymous.zzz: unknown key; allowed keys here are: {allowed}" in problem
    assert "enabled, home" in allowed and "permissions" in allowed


def test_top_level_key_after_a_table_header_is_explained(tmp_path: Path) -> None:
    (problem,) = _problems_in(tmp_path / "k.toml", "[anonymous]\nenabled = true\nport = 21\n")
    assert "anonymous.port: unknown key; 'port' is a top-level key" in problem
    assert "above the first [table] header" in problem


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ketch.toml"
    (problem,) = _problems_in(path, "port = 2121\nbanner = \n")
    assert problem.startswith(f"{path}:2: invalid TOML")
    assert "fix the syntax" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = 21\nport = 22\n", "2: port is set twice (also on line 1); remove one of them"),
        (
            "port = 21\n[anonymous]\nenabled = true\n  enabled=false\n",
            "4: enabled is set twice in [anonymous] (also on line 3); remove one of them",
        ),
        (
            '[[users]]\nname = "a"\n[[users]]\nname = "b"\nhome = "x"\n"name" = "c"\n',
            "6: name is set twice in [[users]] (also on line 4); remove one of them",
        ),
        (
            '[masquerade_map]\n"10.0.0.0/8" = "a"\n"10.0.0.0/8" = "b"\n',
            '3: "10.0.0.0/8" is set twice in [masquerade_map] (also on line 2); remove one of them',
        ),
        (
            "[anonymous]\nenabled = true\n\n[ anonymous ]\nhome = 'x'\n",
            "4: the table [anonymous] is declared twice (also on line 1); "
            "put its keys under one [anonymous] header",
        ),
        (
            "port = 21\n[port]\n",
            "2: [port] names a table, but port is set to a value on line 1; "
            "rename or remove one of them",
        ),
        (
            "anonymous.enabled = true\n[anonymous]\n",
            "2: the table [anonymous] is declared twice (also on line 1); "
            "put its keys under one [anonymous] header",
        ),
    ],
    ids=[
        "top-level",
        "table",
        "users-entry",
        "quoted",
        "table-twice",
        "table-over-value",
        "dotted-then-table",
    ],
)
def test_a_key_or_table_given_twice_is_named_with_both_lines(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "ketch.toml"
    (problem,) = _problems_in(path, text)
    assert problem == f"{path}:{expected}"


def test_unreadable_or_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "missing.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'banner = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_a_missing_file_gets_path_advice_and_a_forbidden_one_permission_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ketch.toml"
    with pytest.raises(ConfigError) as missing:
        load_config(path)
    assert str(missing.value) == (
        f"{path}: cannot read the configuration file (No such file or directory); "
        "check the path, or start from `ketch config example`"
    )
    path.write_text("port = 21\n")

    def forbidden(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", forbidden)
    user = pwd.getpwuid(os.geteuid()).pw_name
    with pytest.raises(ConfigError) as denied:
        load_config(path)
    assert str(denied.value) == (
        f"{path}: cannot read the configuration file (Permission denied); make it readable "
        f"by {user!r} (uid {os.geteuid()}), the user the server runs as "
        "(e.g. chgrp to its group and chmod g+r)"
    )


def test_a_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Windows editors save "UTF-8" with a BOM; TOML forbids it, the admin cannot see it.
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfport = 2121\nbanner = "caf\xc3\xa9"\n')
    config = load_config(path)
    assert (config.port, config.banner) == (2121, "caf\u00e9")


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    problems = _problems_in(tmp_path / "k.toml", "port = -5\nmax_connections = 0\nfoo = 1\n")
    assert len(problems) == 3
    assert [line.split(": ")[1].split(" ")[0] for line in problems] == [
        "port",
        "max_connections",
        "foo",
    ]


# -- paths -----------------------------------------------------------------------------


def test_relative_paths_in_file_resolve_against_its_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    for directory in ("data", "pub", "alice"):
        (conf / directory).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (conf / "ketch.toml").write_text(
        'root = "data"\n[anonymous]\nhome = "pub"\n'
        f'[[users]]\nname = "alice"\npassword_hash = "{_HASH}"\nhome = "alice"\n'
    )
    config = load_config(conf / "ketch.toml")
    assert config.root == (conf / "data").resolve()
    assert config.anonymous_home() == (conf / "pub").resolve()
    assert config.users[0].home == (conf / "alice").resolve()


def test_relative_paths_in_overrides_resolve_against_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "ketch.toml").write_text('root = "."\n')
    (tmp_path / "served").mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "conf" / "ketch.toml", {"root": "served"})
    assert config.root == (tmp_path / "served").resolve()


def test_overrides_win_over_the_file_and_are_blamed_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "ketch.toml"
    path.write_text("port = 2000\nmax_connections = 7\n")
    config = load_config(path, {"port": 3000})
    assert (config.port, config.max_connections) == (3000, 7)
    with pytest.raises(ConfigError, match=r"^command line: port = 99999: "):
        load_config(path, {"port": 99999})


NO_SUCH_USER = "~no-such-user-for-ketch"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        (f'root = "{NO_SUCH_USER}/x"\n', "root"),
        (f'[anonymous]\nhome = "{NO_SUCH_USER}"\n', "anonymous.home"),
        (
            f'[[users]]\nname = "alice"\npassword_hash = "{_HASH}"\nhome = "{NO_SUCH_USER}"\n',
            "users[0].home",
        ),
        (f'tls_certificate = "{NO_SUCH_USER}/a.crt"\n', "tls_certificate"),
        (f'tls_certificate = "/x.crt"\ntls_key = "{NO_SUCH_USER}/a.key"\n', "tls_key"),
    ],
)
def test_a_tilde_naming_no_user_is_a_config_error_naming_the_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    # Path.expanduser() raises RuntimeError ("Could not determine home directory.").
    served = "" if key == "root" else f'root = "{tmp_path}"\n'
    (problem,) = _problems_in(tmp_path / "k.toml", served + toml)
    assert f"{key} = '{NO_SUCH_USER}" in problem
    assert f"no such user for '{NO_SUCH_USER}'; write the full path" in problem


def test_a_tilde_naming_no_user_on_the_command_line_is_blamed_on_it() -> None:
    for key in ("root", "tls_certificate"):
        problem = _override_problem(key, Path(NO_SUCH_USER))
        assert problem.startswith(f"command line: {key} = '{NO_SUCH_USER}': no such user for")


NUL_IN_PATH = "the path holds a NUL byte (\\x00), which no file name can contain; remove it"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('root = "a\\u0000b"\n', "root"),
        ('[anonymous]\nhome = "a\\u0000b"\n', "anonymous.home"),
        (
            f'[[users]]\nname = "alice"\npassword_hash = "{_HASH}"\nhome = "a\\u0000b"\n',
            "users[0].home",
        ),
        ('tls_certificate = "a\\u0000b"\n', "tls_certificate"),
        ('tls_certificate = "/x.crt"\ntls_key = "a\\u0000b"\n', "tls_key"),
    ],
)
def test_a_nul_byte_in_a_path_is_refused_naming_the_key(
    tmp_path: Path, toml: str, key: str
) -> None:
    # tls_certificate gave " = {every setting}: embedded null byte"; root "no such directory".
    served = "" if key == "root" else f'root = "{tmp_path}"\n'
    (problem,) = _problems_in(tmp_path / "k.toml", served + toml)
    shown = repr(str(tmp_path / "a\0b"))
    assert problem == f"{tmp_path / 'k.toml'}: {key} = {shown}: {NUL_IN_PATH}"


def test_a_whole_config_problem_without_a_key_shows_no_settings() -> None:
    from pydantic_core import ErrorDetails

    from ketch.config import _describe

    detail: ErrorDetails = {
        "type": "value_error",
        "loc": (),
        "msg": "Value error, the settings do not hold together",
        "input": {"root": "/srv", "port": 21},
        "ctx": {"error": ValueError("the settings do not hold together")},
    }
    assert _describe(detail, "k.toml") == "k.toml: the settings do not hold together"


# -- users and anonymous ------------------------------------------------------------


def _users_problems(tmp_path: Path, *users: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"root": tmp_path, "users": list(users)})
    return str(caught.value).splitlines()


def _user(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    return {"name": "alice", "password_hash": _HASH, "home": str(tmp_path), **fields}


def test_valid_user_loads_with_default_permissions(tmp_path: Path) -> None:
    config = load_config(overrides={"users": [_user(tmp_path)]})
    assert config.users[0].permissions == ["list", "read"]
    assert config.users[0].home == tmp_path.resolve()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": ""}, "users[0].name = '': is empty"),
        ({"name": "bob smith"}, "users[0].name = 'bob smith': contains spaces"),
        ({"name": "a\tb"}, "contains spaces or control characters"),
        ({"name": "FTP"}, "users[0].name = 'FTP': is reserved for anonymous login"),
        ({"home": "/definitely/not/here"}, "users[0].home = '/definitely/not/here': no such"),
        ({"permissions": ["read", "wrte"]}, "unknown permission 'wrte'; did you mean 'write'?"),
        ({"permissions": "all"}, "users[0].permissions = 'all': must be a list of permission"),
        ({"extra": 1}, "users[0].extra: unknown key"),
    ],
)
def test_bad_user_fields_are_explained(
    tmp_path: Path, fields: dict[str, Any], expected: str
) -> None:
    (problem,) = _users_problems(tmp_path, _user(tmp_path, **fields))
    assert expected in problem


def test_password_hash_must_be_argon2_and_is_never_echoed(tmp_path: Path) -> None:
    (problem,) = _users_problems(tmp_path, _user(tmp_path, password_hash="hunter2"))
    assert "users[0].password_hash (value not shown)" in problem
    assert "`ketch user hash`" in problem
    assert "hunter2" not in problem
    (problem,) = _users_problems(tmp_path, _user(tmp_path, password_hash="$argon2id$v=19$"))
    assert "not a complete argon2 hash" in problem


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("users", {"name": "alice", "password_hash": "hunter2-secret"}),
        ("users", ["alice:hunter2-secret"]),
        ("users", "alice:hunter2-secret"),
        ("users", [[{"name": "alice", "pass": "hunter2-secret"}]]),
        ("anonymous", [{"enabled": True, "password": "hunter2-secret"}]),
        ("masquerade_map", {"10.0.0.0/8": {"secret": "hunter2-secret"}}),
        ("banner", {"api_token": "hunter2-secret"}),
    ],
)
def test_a_secret_is_never_echoed_at_any_depth(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={key: value})
    assert "hunter2-secret" not in str(caught.value)
    assert "not shown" in str(caught.value)


def test_missing_user_keys_are_named(tmp_path: Path) -> None:
    problems = _users_problems(tmp_path, {"name": "alice"})
    assert any(
        line.endswith(
            "users[0].password_hash is missing; it must be an argon2 hash "
            "starting with '$argon2'; create one with `ketch user hash`"
        )
        for line in problems
    )
    assert any("users[0].home is missing" in line for line in problems)


def test_duplicate_user_names_name_the_duplicate(tmp_path: Path) -> None:
    problems = _users_problems(
        tmp_path, _user(tmp_path), _user(tmp_path, name="bob"), _user(tmp_path)
    )
    assert problems == [
        "command line: users[2].name = 'alice': duplicate user name (also users[0]); "
        "give every user a different name"
    ]


def test_anonymous_settings_are_validated(tmp_path: Path) -> None:
    problem = _override_problem("anonymous", {"enabled": "no"})
    assert problem == (
        "command line: anonymous.enabled = 'no': must be true or false; leave it out to "
        "allow anonymous logins only while no accounts are configured"
    )
    problem = _override_problem("anonymous", {"home": "/definitely/not/here"})
    assert "anonymous.home = '/definitely/not/here': no such directory" in problem
    problem = _override_problem("anonymous", {"permissions": ["reed"]})
    assert "anonymous.permissions = ['reed']: unknown permission 'reed'" in problem


def test_anonymous_home_overrides_root(tmp_path: Path) -> None:
    (tmp_path / "pub").mkdir()
    config = load_config(overrides={"root": tmp_path, "anonymous": {"home": tmp_path / "pub"}})
    assert config.anonymous_home() == (tmp_path / "pub").resolve()
    assert config.root == tmp_path.resolve()


def test_workers_need_a_passive_port_each_and_no_quotas(tmp_path: Path) -> None:
    assert load_config(overrides={}).workers == 1
    assert load_config(overrides={"workers": 2, "passive_ports": "7-8"}).workers == 2
    problem = _override_problem("workers", 0)
    assert problem.startswith("command line: workers = 0: must be a whole number from 1 to 64")
    problem = load_config_problem({"workers": 3, "passive_ports": "7-8"})
    assert "passive_ports 7-8 has 2; widen the range or use fewer workers" in problem
    user = {"name": "alice", "password_hash": _HASH, "home": str(tmp_path), "quota_bytes": 10}
    problem = load_config_problem({"workers": 2, "users": [user]})
    assert "quotas are counted inside one server process, so they need workers = 1" in problem
    assert "alice" in problem
    assert load_config(overrides={"workers": 1, "users": [user]}).users[0].quota_bytes == 10


def test_active_source_port_may_not_be_the_implicit_ftps_port() -> None:
    problem = load_config_problem({"implicit_tls_port": 3990, "active_source_port": 3990})
    assert problem.startswith("command line: active_source_port = 3990: port 3990 is a control")


def load_config_problem(overrides: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=overrides)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_quick_account_flags_keep_every_setting_of_the_configured_users(tmp_path: Path) -> None:
    # --user/--write/--no-anonymous add to the accounts; they must not drop a user's
    # quota, rates or session limit on the way.
    from ketch.cli.serve import _apply_quick_accounts

    config_file = tmp_path / "ketch.toml"
    config_file.write_text(
        f'root = "{tmp_path}"\n[[users]]\nname = "alice"\npassword_hash = "{_HASH}"\n'
        f'home = "{tmp_path}"\nquota_bytes = 10\nquota_files = 3\ndownload_rate = 1000\n'
        'upload_rate = 2000\nmax_sessions = 2\npermissions = ["all"]\n'
    )
    config = load_config(config_file)
    changed = _apply_quick_accounts(config, config_file, {}, ("bob:pw",), False, False)
    alice, bob = changed.users
    assert alice == config.users[0]
    assert (alice.quota_bytes, alice.quota_files, alice.max_sessions) == (10, 3, 2)
    assert (alice.download_rate, alice.upload_rate) == (1000, 2000)
    assert bob.name == "bob" and not changed.anonymous_enabled()


def test_anonymous_access_is_on_by_default_only_without_accounts(tmp_path: Path) -> None:
    alice = _user(tmp_path)
    assert load_config(overrides={"root": tmp_path}).anonymous_enabled()
    with_alice = load_config(overrides={"root": tmp_path, "users": [alice]})
    assert not with_alice.anonymous_enabled()
    for enabled in (True, False):
        explicit = {"root": tmp_path, "users": [alice], "anonymous": {"enabled": enabled}}
        assert load_config(overrides=explicit).anonymous_enabled() is enabled
    assert not load_config(overrides={"anonymous": {"enabled": False}}).anonymous_enabled()
    # Left out, it stays left out through a dump and back (as --user and reloads do it).
    again = ServerConfig.model_validate(with_alice.model_dump())
    assert again.anonymous.enabled is None and not again.anonymous_enabled()


def test_quick_accounts_leave_the_anonymous_default_to_the_accounts(tmp_path: Path) -> None:
    from ketch.cli.serve import _apply_quick_accounts

    config = load_config(overrides={"root": tmp_path})
    assert config.anonymous_enabled()
    for flag, expected in ((None, False), (True, True), (False, False)):
        changed = _apply_quick_accounts(config, None, {}, ("bob:pw",), False, flag)
        assert changed.anonymous_enabled() is expected, flag


def test_flags_are_the_serve_and_firewall_options_that_set_each_key() -> None:
    import click

    from ketch.cli.firewall import firewall
    from ketch.cli.serve import serve

    def options(command: click.Command) -> dict[str, str]:
        return {
            str(param.name): param.opts[0]
            for param in command.params
            if param.name in ServerConfig.model_fields and param.name not in ("users", "anonymous")
        }  # --user and --(no-)anonymous fold into accounts: their own messages name them

    assert options(serve) == FLAGS
    assert options(firewall).items() <= FLAGS.items()


def test_a_flag_names_its_setting_and_advice_in_flags_and_the_file_its_own_in_keys(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "ketch.toml"
    config_file.write_text(f'root = "{tmp_path}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, {"tls_required": "control"}, flags=FLAGS)
    assert str(caught.value).startswith(
        "command line: --tls-required 'control': needs a certificate: set --tls-certificate "
        "(and --tls-key) to a pair"
    )
    config_file.write_text(f'root = "{tmp_path}"\ntls_key = "{tmp_path}/k.pem"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, {"tls_required": "control"}, flags=FLAGS)
    # tls_key, the file's, needs a certificate itself (the first problem found): told in
    # the file's terms.
    assert str(caught.value).startswith(
        f"{config_file}: tls_key = '{tmp_path}/k.pem': needs a certificate: set "
        "tls_certificate (and tls_key) to a pair"
    )


def test_a_whole_config_check_blames_the_flag_that_set_the_key(tmp_path: Path) -> None:
    config_file = tmp_path / "ketch.toml"
    config_file.write_text(f'root = "{tmp_path}"\n')
    with pytest.raises(ConfigError) as from_flag:
        load_config(config_file, {"tls_required": "control"})
    assert str(from_flag.value).startswith("command line: tls_required = 'control'")
    config_file.write_text(f'root = "{tmp_path}"\ntls_required = "control"\n')
    with pytest.raises(ConfigError) as from_file:
        load_config(config_file)
    assert str(from_file.value).startswith(f"{config_file}: tls_required = 'control'")


def test_serve_tls_finds_the_certificate_of_a_file_with_a_byte_order_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `ketch serve --tls` makes its own certificate only when none is configured.
    from ketch.cli.cert import serving_certificate

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbftls_certificate = "/etc/ftp.crt"\n')
    assert serving_certificate(path, {}) == {}


def test_a_reload_names_each_changed_setting_and_accounts_by_name_only(tmp_path: Path) -> None:
    from ketch.server.config_changes import changed_settings

    def user(name: str, home: str = "h") -> dict[str, Any]:
        (tmp_path / home).mkdir(exist_ok=True)
        return {"name": name, "password_hash": _HASH, "home": str(tmp_path / home)}

    old = load_config(
        None,
        {
            "root": str(tmp_path),
            "users": [user("alice"), user("carol")],
            "banner": "hi",
            "anonymous": {"enabled": True},
        },
    )
    new = load_config(
        None,
        {
            "root": str(tmp_path),
            "users": [user("alice", home="elsewhere"), user("bob")],
            "banner": "hello",
            "allow_foreign_addresses": True,
            "anonymous": {"enabled": False},
        },
    )
    assert changed_settings(old, new) == [
        "banner 'hi' -> 'hello'",
        "allow_foreign_addresses false -> true",
        "anonymous.enabled true -> false",
        "users added: bob",
        "users removed: carol",
        "users changed: alice",
    ]
    assert changed_settings(new, new) == []


def test_a_reload_names_anonymous_access_turned_on_or_off_by_the_accounts(
    tmp_path: Path,
) -> None:
    from ketch.server.config_changes import changed_settings

    alone = load_config(None, {"root": str(tmp_path)})
    with_alice = load_config(None, {"root": str(tmp_path), "users": [_user(tmp_path)]})
    assert changed_settings(alone, with_alice) == [
        "anonymous on -> off (by default, as accounts are now configured)",
        "users added: alice",
    ]
    assert changed_settings(with_alice, alone) == [
        "anonymous off -> on (by default, as no accounts are configured now)",
        "users removed: alice",
    ]
    allowed = load_config(
        None,
        {"root": str(tmp_path), "users": [_user(tmp_path)], "anonymous": {"enabled": True}},
    )
    assert changed_settings(with_alice, allowed) == ["anonymous.enabled (not set) -> true"]
    assert changed_settings(with_alice, with_alice) == []
