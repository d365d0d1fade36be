"""Stateful fuzzing of whole control sessions against a real ketch server.

Hypothesis sends random sequences of command lines, sensible and not, over
raw sockets to a server on loopback and checks after every step that:

* every line got exactly one well-formed final reply (1xx replies may come
  first) within REPLY_BOUND seconds, and none was a traceback or a 451
  "Internal error", and the server logged no error;
* nothing outside alice's home changed on disk, and nothing from outside it
  showed up in a reply or on a data connection, although her home holds
  symlinks that point out of it;
* the working directory is a normalized virtual path that lies inside the
  home on disk, and is the one the model expects;
* the server keeps accepting new logins.

Lines are always well framed (CR and LF only at the end) but may carry NUL,
Telnet IAC, invalid UTF-8 and over-long contents.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import socket
import stat
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import argon2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import ketch.server.commands  # noqa: F401  (fills the command table)
from ketch.config import ServerConfig
from ketch.protocol import (
    Reply,
    ReplyParser,
    ReplySyntaxError,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_quoted_path,
)
from ketch.server.command_table import COMMANDS, NOT_IMPLEMENTED

from conftest import PASSWORD, USER, RunningServer, start_server

HOST = "127.0.0.1"
#: Seconds within which every command line must have its final reply.
REPLY_BOUND = 5.0
MAX_LINE = 512  # the smallest limit the configuration allows: over-long lines are cheap
DATA_LIMIT = 1 << 20
FRESH_LOGIN_EVERY = 10  # steps between checks that a new connection can still log in

# What lies outside the home. The client never sends these markers, so seeing
# one in a reply or on a data connection means the server read outside the home.
UNLISTED_NAME = "unlisted-q7v2k9"
SECRET_TOKEN = b"TOP-SECRET-3f81c0d2"
SECRET_SIZE = 31337
SECRET_MTIME = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC).timestamp()
LEAK_MARKERS = (UNLISTED_NAME, SECRET_TOKEN.decode(), "20010203040506")

_CHEAP_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

# Settings of the server's abuse limits, where this version has them. This test
# sends many commands and wrong passwords from one address by design, so the
# delays stay short, banning and command rate limits are off ("0"); the session
# limits stay as they are.
_LENIENT_IF_PRESENT: dict[str, Any] = {
    "login_failure_delay_max": 0.05,
    "ban_after_failures": 0,
    "command_rate": 0,
}


def _lenient_settings() -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for name, value in _LENIENT_IF_PRESENT.items():
        info = ServerConfig.model_fields.get(name)
        if info is None:
            continue
        default = info.default
        chosen[name] = float(value) if isinstance(default, float) else value
    return chosen


# -- the files on disk ------------------------------------------------------------


def _populate_outside(outside: Path) -> None:
    (outside / UNLISTED_NAME).write_bytes(SECRET_TOKEN + b"\n")
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET_TOKEN.ljust(SECRET_SIZE, b"#"))
    os.utime(secret, (SECRET_MTIME, SECRET_MTIME))
    (outside / "dir").mkdir()
    os.utime(outside, (SECRET_MTIME, SECRET_MTIME))


def _populate_home(home: Path, outside: Path) -> None:
    (home / "hello.txt").write_bytes(b"hello, world\n")
    (home / "sub").mkdir()
    (home / "sub" / "file.txt").write_bytes(b"inside\n")
    links = {
        "out": str(outside),  # absolute, to a directory outside
        "rel-out": "../outside",  # relative, to the same
        "up": "..",  # the parent of the home
        "secret-link": str(outside / "secret.txt"),
        "dangling": str(outside / "not-there-yet"),  # creating it would write outside
        "loop": "loop",
        "inner": "sub",  # a harmless link inside
    }
    for name, target in links.items():
        os.symlink(target, home / name)


def _clear_directory(directory: Path) -> None:
    """Empty ``directory`` even if the fuzzer chmod-ed things to 000."""
    os.chmod(directory, 0o755)
    for dirpath, dirnames, _ in os.walk(directory):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)
    with os.scandir(directory) as entries:
        for entry in list(entries):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def _facts(path: str, info: os.stat_result) -> tuple[object, ...]:
    facts: tuple[object, ...] = (
        stat.S_IFMT(info.st_mode),
        stat.S_IMODE(info.st_mode),
        info.st_size,
        info.st_mtime_ns,
        info.st_uid,
        info.st_gid,
    )
    if stat.S_ISLNK(info.st_mode):
        facts += (os.readlink(path),)
    elif stat.S_ISREG(info.st_mode):
        facts += (hashlib.sha256(Path(path).read_bytes()).hexdigest(),)
    return facts


def snapshot_outside(base: Path, home: Path) -> dict[str, tuple[object, ...]]:
    """Everything under ``base`` except the inside of ``home``, as comparable facts."""
    found = {str(base): _facts(str(base), os.lstat(base))}

    def visit(directory: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.path == str(home):
                    found[entry.path] = ("the home",)  # its contents are the user's
                    continue
                found[entry.path] = _facts(entry.path, entry.stat(follow_symlinks=False))
                if entry.is_dir(follow_symlinks=False):
                    visit(entry.path)

    visit(str(base))
    return found


def normalize_virtual(cwd: str, argument: str) -> str:
    """The model's idea of where ``argument`` leads: ".." stops at "/", as in a chroot,
    and "~" or "~/..." start at the home, "/"."""
    if argument == "~" or argument.startswith("~/"):
        argument = "/" + argument[1:]
    combined = argument if argument.startswith("/") else f"{cwd}/{argument}"
    parts: list[str] = []
    for part in combined.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# -- a small control-connection client ---------------------------------------------


def check_reply(reply: Reply, sent: bytes) -> None:
    """What must hold for any reply to any line."""
    shown = f"{reply.code} {reply.text!r} (after sending {sent!r})"
    assert "Traceback" not in reply.text, f"a traceback in a reply: {shown}"
    assert not (reply.code == 451 and "internal error" in reply.text.lower()), (
        f"internal error: {shown}"
    )
    assert reply.code != 421, f"the server dropped the session: {shown}"
    for marker in LEAK_MARKERS:
        assert marker not in reply.text, f"something from outside the home leaked: {shown}"


def check_data(data: bytes, sent: bytes) -> None:
    for marker in LEAK_MARKERS:
        assert marker.encode() not in data, (
            f"something from outside the home leaked on a data connection after {sent!r}"
        )


class Control:
    """A raw control connection with a bounded, strict reply reader."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=REPLY_BOUND)
        self.parser = ReplyParser()
        self.pending: deque[Reply] = deque()
        greeting = self.next_reply(time.monotonic() + REPLY_BOUND, b"(connect)")
        assert greeting.code == 220, f"expected the 220 greeting, got {greeting}"

    def close(self) -> None:
        self.sock.close()

    def send(self, line: bytes, terminator: bytes = b"\r\n") -> None:
        assert b"\r" not in line and b"\n" not in line, f"test bug: badly framed {line!r}"
        self.sock.sendall(line + terminator)

    def next_reply(self, deadline: float, sent: bytes) -> Reply:
        while not self.pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete reply within {REPLY_BOUND} s to {sent!r}"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"no complete reply within {REPLY_BOUND} s to {sent!r}"
                ) from None
            assert data, f"the server closed the control connection after {sent!r}"
            try:
                self.pending.extend(self.parser.feed(data))
            except ReplySyntaxError as error:
                raise AssertionError(f"malformed reply to {sent!r}: {error}") from None
        reply = self.pending.popleft()
        check_reply(reply, sent)
        return reply

    def final_reply(self, deadline: float, sent: bytes) -> tuple[list[Reply], Reply]:
        """Replies up to and including the first final (2xx..5xx) one."""
        preliminary: list[Reply] = []
        while True:
            reply = self.next_reply(deadline, sent)
            if reply.code >= 200:
                return preliminary, reply
            preliminary.append(reply)

    def exchange(self, line: bytes, terminator: bytes = b"\r\n") -> Reply:
        """Send one line and return its final reply."""
        self.send(line, terminator)
        return self.final_reply(time.monotonic() + REPLY_BOUND, line)[1]

    def expect_eof(self, sent: bytes) -> None:
        assert not self.pending, f"replies after the last one to {sent!r}: {list(self.pending)}"
        self.sock.settimeout(REPLY_BOUND)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection stayed open after {sent!r}") from None
        except ConnectionResetError:
            data = b""
        assert data == b"", f"bytes after the last reply to {sent!r}: {data!r}"


def read_to_eof(sock: socket.socket, deadline: float, sent: bytes) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < DATA_LIMIT:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the data connection did not end within {REPLY_BOUND} s ({sent!r})"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the data connection stalled ({sent!r})") from None
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# -- the environment: one server for all examples -------------------------------------


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Environment:
    base: Path
    home: Path
    outside: Path
    running: RunningServer
    errors: _ErrorRecords
    baseline: dict[str, tuple[object, ...]] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.running.port

    def reset(self) -> None:
        """Lay out the files anew, so that each example starts from the same state."""
        _clear_directory(self.home)
        _clear_directory(self.outside)
        _clear_directory(self.base / "empty")
        _populate_outside(self.outside)
        _populate_home(self.home, self.outside)
        self.baseline = snapshot_outside(self.base, self.home)
        self.errors.records.clear()

    def connect(self) -> Control:
        return Control(self.port)

    def check_outside_untouched(self) -> None:
        now = snapshot_outside(self.base, self.home)
        if now != self.baseline:
            changed = sorted(
                path
                for path in now.keys() | self.baseline.keys()
                if now.get(path) != self.baseline.get(path)
            )
            raise AssertionError(f"files outside the home changed: {changed}")

    def check_no_server_errors(self) -> None:
        if self.errors.records:
            shown = [self.errors.format(record) for record in self.errors.records[:3]]
            raise AssertionError(f"the server logged errors: {shown}")

    def check_fresh_login(self) -> None:
        """A brand-new connection can still log in, see "/" and quit cleanly."""
        control = self.connect()
        try:
            assert control.exchange(f"USER {USER}".encode()).code == 331
            reply = control.exchange(f"PASS {PASSWORD}".encode())
            assert reply.code == 230, f"a fresh login failed: {reply}"
            reply = control.exchange(b"PWD")
            assert reply.code == 257 and parse_quoted_path(reply.text) == "/", reply
            assert control.exchange(b"QUIT").code == 221
            control.expect_eof(b"QUIT")
        finally:
            control.close()


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[Environment]:
    base = tmp_path / "fuzz-root"
    home, pub, outside, empty = (base / name for name in ("home", "pub", "outside", "empty"))
    for directory in (home, pub, outside, empty):
        directory.mkdir(parents=True)

    overrides: dict[str, Any] = {
        "listen_address": HOST,
        "port": 0,
        "root": str(pub),
        "passive_ports": "22000-22199",
        "login_failure_delay": 0.01,
        "data_connect_timeout": 3.0,
        "max_line_length": MAX_LINE,
        "anonymous": {"enabled": False},
        "users": [
            {
                "name": USER,
                "password_hash": _CHEAP_HASHER.hash(PASSWORD),
                "home": str(home),
                "permissions": ["all"],
            }
        ],
        **_lenient_settings(),
    }
    errors = _ErrorRecords()
    loggers = [logging.getLogger("ketch"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(errors)
    try:
        server, loop, thread = start_server(overrides)
        running = RunningServer(server, loop, thread, pub, home)
        try:
            yield Environment(base, home, outside, running, errors)
        finally:
            running.stop()
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
        # Directories the fuzzer chmod-ed to 000 would trouble pytest's later clean-up.
        _clear_directory(home)


# -- strategies ----------------------------------------------------------------------

KNOWN_VERBS = frozenset(COMMANDS) | frozenset(NOT_IMPLEMENTED)


def _framed(raw: bytes) -> bytes:
    """Drop CR and LF: lines must stay well framed whatever else they contain."""
    return raw.replace(b"\r", b"").replace(b"\n", b"")


def _without_iac(raw: bytes) -> bytes:
    """Drop Telnet IAC (0xFF), which makes the server remove bytes the model would keep."""
    return raw.replace(b"\xff", b"")


# Known server bugs this test found (see the report that came with it). Each
# filter keeps inputs that trigger one out of the test until it is fixed; delete
# the filter with the fix, and the test checks the fix.


junk = st.binary(max_size=24).map(_framed)
text_junk = st.text(max_size=16).map(lambda text: _framed(text.encode("utf-8", "surrogatepass")))

INTERESTING_PATHS = [
    b"",
    b".",
    b"..",
    b"/",
    b"//",
    b"/..",
    b"../..",
    b"./././..",
    b"../../etc",
    b"../../etc/passwd",
    b"/etc/passwd",
    b"../outside",
    b"../outside/secret.txt",
    b"/../outside/dir",
    b"../empty/new",
    b"out",
    b"out/",
    b"out/secret.txt",
    b"out/dir",
    b"out/newdir",
    b"out/..",
    b"out/../..",
    b"rel-out",
    b"rel-out/secret.txt",
    b"up",
    b"up/outside",
    b"up/outside/secret.txt",
    b"up/empty/x",
    b"up/home",
    b"up/home/sub",
    b"secret-link",
    b"dangling",
    b"loop",
    b"loop/x",
    b"inner",
    b"inner/file.txt",
    b"sub",
    b"sub/",
    b"sub/..",
    b"sub/../..",
    b"sub/file.txt",
    b"hello.txt",
    b"new",
    b"sub/new",
    b"~",
    b"~root",
    b"*",
    b"out/*",
    b"../*",
    b"sub/*.txt",
    b"a\x00b",
    b"\x00",
    b"caf\xc3\xa9",
    b"caf\xe9",  # Latin-1, not UTF-8
    b"\xed\xa0\x80",  # an encoded surrogate: invalid UTF-8
    b"sub/\xff\xfe",  # Telnet IAC bytes
    b" leading space",
    b"trailing space ",
    b'quo"te',
    b"semi;colon",
    b"L" * 255,
    b"L" * 256,
    b"sub/" + b"L" * 300,
    b"/".join([b"d"] * 200),
]

NAMES = [b"sub", b"out", b"up", b"inner", b"loop", b"dangling", b"secret-link", b"new", b"x"]
plain_component = st.sampled_from([*NAMES, b".", b"..", b"", b"~"])
component = st.one_of(
    plain_component,
    plain_component,
    plain_component,
    st.binary(min_size=1, max_size=10).map(_framed),
    st.integers(min_value=200, max_value=320).map(lambda length: b"N" * length),
)
paths = st.one_of(
    st.sampled_from(INTERESTING_PATHS),
    st.builds(
        lambda absolute, parts: (b"/" if absolute else b"") + b"/".join(parts),
        st.booleans(),
        st.lists(component, min_size=1, max_size=5),
    ),
)

CHANGE_VERBS = [b"MKD", b"MKD", b"XMKD", b"RMD", b"XRMD", b"DELE", b"DELE", b"SITE CHMOD 755"]
CHMOD_MODES = [b"000", b"644", b"755", b"777", b"4755", b"7777", b"8", b"-1", b"0o7"]
QUERY_VERBS = [b"SIZE", b"MDTM", b"STAT"]
#: Whether a rule logs in first when the session is not logged in: mostly.
logins = st.sampled_from([True, True, True, False])


def _case(verb: bytes, lower: bool) -> bytes:
    return verb.lower() if lower else verb


def _port_argument(host: bytes, port: int) -> bytes:
    return host + f",{port >> 8},{port & 0xFF}".encode()


port_arguments = st.one_of(
    st.builds(
        _port_argument,
        st.sampled_from([b"127,0,0,1", b"127,0,0,2", b"0,0,0,0", b"127, 0 ,0,1", b"127,0,0,01"]),
        st.integers(min_value=0, max_value=65535),
    ),
    st.sampled_from(
        [
            b"127,0,0,1,300,1",
            b"127,0,0,1,4",
            b"1,2,3",
            b"-1,0,0,1,4,1",
            b"127,0,0,1,+4,1",
            "\u0661\u0662\u0667,0,0,1,4,1".encode(),  # Arabic-Indic digits
            b"127,0,0,1," + b"9" * 400 + b",1",
            b"",
        ]
    ),
    junk,
)
eprt_arguments = st.one_of(
    st.builds(
        lambda delimiter, family, host, port: delimiter.join(
            [b"", family, host, str(port).encode(), b""]
        ),
        st.sampled_from([b"|", b"!", b"#", b"1", b" "]),
        st.sampled_from([b"1", b"2", b"3", b"01", b"", b"-1"]),
        st.sampled_from([b"127.0.0.1", b"::1", b"::ffff:127.0.0.1", b"127.0.0.2", b"fe80::1%lo"]),
        st.integers(min_value=-1, max_value=70000),
    ),
    junk,
)
rest_arguments = st.one_of(
    st.sampled_from(
        [
            b"0",
            b"1",
            b"5",
            b"100000",
            b"-1",
            b"+5",
            b" 5",
            b"1e3",
            b"0x10",
            b"9" * 40,
            "\u0663".encode(),  # an Arabic-Indic digit
            "\u00b2".encode(),  # a superscript two: a digit to str.isdigit, not to int()
        ]
    ),
    junk,
)


def _choice(*pairs: tuple[bytes, list[bytes]]) -> st.SearchStrategy[tuple[bytes, bytes]]:
    return st.one_of(
        st.tuples(st.just(verb), st.one_of(st.sampled_from(arguments), junk))
        for verb, arguments in pairs
    )


simple_commands = st.one_of(
    _choice(
        (b"NOOP", [b""]),
        (b"SYST", [b""]),
        (b"FEAT", [b""]),
        (b"HELP", [b"", b"CWD", b"SITE", b"bogus"]),
        (b"OPTS", [b"UTF8 ON", b"UTF8", b"MLST type;size;", b""]),
        (b"TYPE", [b"A", b"I", b"E", b"L 8", b"L 7", b"A N", b"A T", b"i", b""]),
        (b"MODE", [b"S", b"B", b"C", b"Z", b"s", b""]),
        (b"STRU", [b"F", b"R", b"P", b"f", b""]),
        (b"ALLO", [b"100", b""]),
        (b"ABOR", [b""]),
        (b"STAT", [b""]),
        (b"ACCT", [b"x", b""]),
        (b"SITE", [b"HELP", b"CHMOD", b"CHMOD 755", b"CHMOD x y", b"CHMOD 99 z", b"BOGUS"]),
        (b"PASV", [b""]),
        (b"EPSV", [b"", b"1", b"2", b"3", b"01", b"ALL", b"all", b"-1"]),
        (b"REIN", [b""]),
    ),
    st.tuples(st.just(b"PORT"), port_arguments),
    st.tuples(st.just(b"EPRT"), eprt_arguments),
    st.tuples(st.just(b"REST"), rest_arguments),
)


def _unknown_verb(verb: bytes) -> bool:
    return decode(verb.upper()) not in KNOWN_VERBS and not verb.upper().startswith(b"ZZSYNC")


garbage_verbs = (
    st.binary(min_size=1, max_size=12)
    .map(lambda raw: _without_iac(_framed(raw)).replace(b" ", b""))
    .filter(lambda verb: verb != b"" and _unknown_verb(verb))
)
user_names = st.one_of(
    st.sampled_from(
        [USER.encode(), b"bob", b"root", b"anonymous", b"ftp", b"ALICE", b"alice ", b" alice", b""]
    ),
    junk.map(_without_iac),
)
passwords = st.one_of(
    st.sampled_from(
        [PASSWORD.encode(), b"wrong", b"", b"S3CRET", b"s3cret ", b"s3cret\x00", b"caf\xe9"]
    ),
    junk.map(_without_iac),
)


# -- the state machine ------------------------------------------------------------------


class SessionMachine(RuleBasedStateMachine):
    """One control connection, with a model of its login stage and working directory."""

    def __init__(self, env: Environment) -> None:
        super().__init__()
        self.env = env
        env.reset()
        self.control = env.connect()
        self.stage = "user"  # "user" (send USER), "password" (send PASS) or "in"
        self.user_name: bytes | None = None
        self.cwd = "/"
        self.steps = 0

    def teardown(self) -> None:
        self.control.close()
        self.env.check_fresh_login()
        self.env.check_no_server_errors()

    # -- helpers --------------------------------------------------------------

    def reconnect(self) -> None:
        self.control.close()
        self.control = self.env.connect()
        self.logged_out()

    def logged_out(self) -> None:
        self.stage = "user"
        self.user_name = None
        self.cwd = "/"

    def pwd(self) -> str:
        reply = self.control.exchange(b"PWD")
        assert reply.code == 257, f"PWD while logged in: {reply}"
        path = parse_quoted_path(reply.text)
        assert path is not None, f"no quoted path in {reply}"
        assert path == normalize_virtual("/", path), f"PWD is not a normalized path: {path!r}"
        return path

    def check_inside_home(self, virtual: str, what: str) -> None:
        """The real directory a virtual path names lies inside the home."""
        home = os.path.realpath(self.env.home)
        real = os.path.realpath(os.path.join(home, virtual.lstrip("/")))
        assert real == home or real.startswith(home + os.sep), (
            f"{what} {virtual!r} is {real!r} on disk, outside the home {home!r}"
        )

    def entered(self, argument: bytes) -> None:
        """After CWD/CDUP succeeded: where are we, and is it where the model says?"""
        path = self.pwd()
        self.check_inside_home(path, "the new working directory")
        if b"\xff" not in argument:
            expected = normalize_virtual(self.cwd, decode(argument))
            assert path == expected, f"CWD {argument!r} from {self.cwd!r} led to {path!r}"
        self.cwd = path

    def ready(self, login: bool) -> None:
        """Most commands are sent logged in, which is where most of the server is."""
        if login and self.stage != "in":
            self.log_in_right()

    # -- logging in and out ---------------------------------------------------

    @initialize(log_in=st.sampled_from([True, True, True, False]))
    def start(self, log_in: bool) -> None:
        if log_in:
            self.log_in_right()

    @rule()
    def log_in_right(self) -> None:
        assert self.control.exchange(f"USER {USER}".encode()).code == 331
        reply = self.control.exchange(f"PASS {PASSWORD}".encode())
        assert reply.code == 230, f"the right password was refused: {reply}"
        self.stage, self.user_name, self.cwd = "in", USER.encode(), "/"

    @rule(name=user_names, lower=st.booleans())
    def user(self, name: bytes, lower: bool) -> None:
        reply = self.control.exchange(_case(b"USER", lower) + b" " + name)
        if name == b"":
            assert reply.code == 501, f"USER without a name: {reply}"
            return
        assert reply.code == 331, f"USER {name!r}: {reply}"
        self.stage, self.user_name, self.cwd = "password", name, "/"

    @rule(secret=passwords, lower=st.booleans())
    def password(self, secret: bytes, lower: bool) -> None:
        reply = self.control.exchange(_case(b"PASS", lower) + b" " + secret)
        if self.stage == "in":
            assert reply.code == 230, f"PASS when logged in: {reply}"
        elif self.stage == "user":
            assert reply.code == 503, f"PASS before USER: {reply}"
        elif self.user_name == USER.encode() and secret == PASSWORD.encode():
            assert reply.code == 230, f"the right password was refused: {reply}"
            self.stage, self.cwd = "in", "/"
        else:
            assert reply.code == 530, f"USER {self.user_name!r} PASS {secret!r} let in: {reply}"
            self.stage, self.user_name = "user", None

    @rule(name=user_names, secret=passwords)
    def log_in_attempt(self, name: bytes, secret: bytes) -> None:
        self.user(name, lower=False)
        self.password(secret, lower=False)

    @rule(lower=st.booleans())
    def quit_and_reconnect(self, lower: bool) -> None:
        line = _case(b"QUIT", lower)
        assert self.control.exchange(line).code == 221
        self.control.expect_eof(line)
        self.reconnect()

    @rule(partial=st.one_of(st.just(b""), st.binary(max_size=40).map(_framed)))
    def drop_and_reconnect(self, partial: bytes) -> None:
        """Hang up without QUIT, possibly in the middle of a line."""
        if partial:
            self.control.sock.sendall(partial)
        self.reconnect()

    @rule()
    def fresh_login_works(self) -> None:
        self.env.check_fresh_login()

    # -- commands ---------------------------------------------------------------

    def path_command(self, verb: bytes, path: bytes, lower: bool, login: bool) -> None:
        self.ready(login)
        line = _case(verb, lower) + b" " + path
        reply = self.control.exchange(line)
        if self.stage != "in":
            assert reply.code in (530, 500, 501), f"{line!r} before logging in: {reply}"
            return
        if verb in (b"CWD", b"XCWD") and reply.code == 250:
            self.entered(path)
        elif verb in (b"MKD", b"XMKD") and reply.code == 257:
            created = parse_quoted_path(reply.text)
            assert created is not None, f"no quoted path in {reply}"
            assert created == normalize_virtual("/", created), f"MKD made {created!r}"
            self.check_inside_home(created, "the new directory")
            if b"\xff" not in path:
                assert created == normalize_virtual(self.cwd, decode(path)), (created, path)
        elif verb == b"SIZE" and reply.code == 213:
            assert reply.text.strip() != str(SECRET_SIZE), f"SIZE {path!r} read outside: {reply}"

    @rule(verb=st.sampled_from([b"CWD", b"XCWD"]), path=paths, lower=st.booleans(), login=logins)
    def navigate(self, verb: bytes, path: bytes, lower: bool, login: bool) -> None:
        self.path_command(verb, path, lower, login)

    @rule(verb=st.sampled_from(CHANGE_VERBS), path=paths, lower=st.booleans(), login=logins)
    def change(self, verb: bytes, path: bytes, lower: bool, login: bool) -> None:
        self.path_command(verb, path, lower, login)

    @rule(mode=st.sampled_from(CHMOD_MODES), path=paths, lower=st.booleans(), login=logins)
    def chmod(self, mode: bytes, path: bytes, lower: bool, login: bool) -> None:
        self.path_command(b"SITE CHMOD " + mode, path, lower, login)

    @rule(verb=st.sampled_from(QUERY_VERBS), path=paths, lower=st.booleans(), login=logins)
    def query(self, verb: bytes, path: bytes, lower: bool, login: bool) -> None:
        self.path_command(verb, path, lower, login)

    @rule(lower=st.booleans(), login=logins)
    def cdup(self, lower: bool, login: bool) -> None:
        self.ready(login)
        reply = self.control.exchange(_case(b"CDUP", lower))
        if reply.code == 250:
            assert self.stage == "in", f"CDUP before logging in: {reply}"
            self.entered(b"..")

    @rule(source=paths, destination=paths, login=logins)
    def rename(self, source: bytes, destination: bytes, login: bool) -> None:
        self.ready(login)
        first = self.control.exchange(b"RNFR " + source)
        second = self.control.exchange(b"RNTO " + destination)
        if first.code != 350:
            assert second.code in (503, 530, 500, 501), f"RNTO without RNFR: {second}"

    @rule(command=simple_commands, lower=st.booleans(), login=logins)
    def simple(self, command: tuple[bytes, bytes], lower: bool, login: bool) -> None:
        self.ready(login)
        verb, argument = command
        line = _case(verb, lower) + (b" " + argument if argument else b"")
        reply = self.control.exchange(line)
        if verb == b"REIN" and not argument:
            assert reply.code == 220, f"REIN: {reply}"
            self.logged_out()

    @rule(verb=garbage_verbs, argument=st.one_of(st.just(b""), junk, text_junk))
    def garbage(self, verb: bytes, argument: bytes) -> None:
        line = verb + (b" " + argument if argument else b"")
        reply = self.control.exchange(line)
        assert reply.code == 500, f"unknown verb {verb!r}: {reply}"

    @rule(terminator=st.sampled_from([b"\r\n", b"\n"]))
    def empty_line(self, terminator: bytes) -> None:
        assert self.control.exchange(b"", terminator).code == 500

    @rule(
        verb=st.sampled_from([b"NOOP", b"CWD", b"MKD", b"ZZZZ"]),
        extra=st.sampled_from([-1, 0, 1, 2, 3, MAX_LINE, 4 * MAX_LINE, 20 * MAX_LINE]),
    )
    def long_line(self, verb: bytes, extra: int) -> None:
        """A line of exactly MAX_LINE + extra bytes (without its terminator)."""
        length = MAX_LINE + extra
        line = verb + b" " + b"L" * (length - len(verb) - 1)
        assert len(line) == length
        reply = self.control.exchange(line)
        if length > MAX_LINE:
            assert reply.code == 500 and "line too long" in reply.text, f"{length} bytes: {reply}"
        else:
            assert "line too long" not in reply.text, f"{length} bytes refused: {reply}"

    @rule(
        lines=st.lists(
            st.one_of(
                st.sampled_from([b"NOOP", b"PWD", b"SYST", b"TYPE I", b"STAT", b"FEAT", b""]),
                garbage_verbs,
            ),
            min_size=2,
            max_size=6,
        )
    )
    def pipelined(self, lines: list[bytes]) -> None:
        """Several lines in one write: one final reply each, in order."""
        self.control.sock.sendall(b"".join(line + b"\r\n" for line in lines))
        deadline = time.monotonic() + REPLY_BOUND
        for line in lines:
            _, reply = self.control.final_reply(deadline, line)
            if line == b"PWD" and self.stage == "in":
                assert reply.code == 257, reply
            elif line == b"NOOP":
                assert reply.code == 200, reply

    @rule(
        line=st.sampled_from([b"NOOP", b"SYST", b"TYPE I", b"PWD", b"garbage here"]),
        cuts=st.lists(st.integers(min_value=0, max_value=14), min_size=1, max_size=4),
    )
    def split_line(self, line: bytes, cuts: list[int]) -> None:
        """One line sent in several writes (cut anywhere, also between CR and LF)."""
        whole = line + b"\r\n"
        points = sorted({min(cut, len(whole)) for cut in cuts} | {0, len(whole)})
        for start, end in itertools.pairwise(points):
            self.control.sock.sendall(whole[start:end])
            time.sleep(0.002)
        _, reply = self.control.final_reply(time.monotonic() + REPLY_BOUND, line)
        if line == b"NOOP":
            assert reply.code == 200, reply

    @rule(
        setup=st.sampled_from(["PASV", "EPSV", "PORT", "EPRT"]),
        verb=st.sampled_from([b"LIST", b"NLST", b"RETR", b"STOR", b"APPE", b"STOU"]),
        path=st.one_of(st.just(b""), paths),
        options=st.sampled_from([b"", b"-la ", b"-a "]),
        payload=st.binary(max_size=64),
        login=logins,
    )
    def transfer(
        self, setup: str, verb: bytes, path: bytes, options: bytes, payload: bytes, login: bool
    ) -> None:
        """Prepare a data connection of our own, then run one transfer command over it."""
        self.ready(login)
        listener: socket.socket | None = None
        data: socket.socket | None = None
        try:
            if setup in ("PASV", "EPSV"):
                reply = self.control.exchange(setup.encode())
                if reply.code not in (227, 229):
                    return  # not logged in, or EPSV ALL: fine, no transfer then
                if setup == "PASV":
                    address = parse_pasv_reply(reply.text)
                    assert address.host == HOST, f"PASV names {address.host}"
                    port = address.port
                else:
                    port = parse_epsv_reply(reply.text)
                data = socket.create_connection((HOST, port), timeout=REPLY_BOUND)
            else:
                listener = socket.create_server((HOST, 0))
                listener.settimeout(REPLY_BOUND)
                port = listener.getsockname()[1]
                argument = (
                    _port_argument(b"127,0,0,1", port)
                    if setup == "PORT"
                    else f"|1|{HOST}|{port}|".encode()
                )
                reply = self.control.exchange(setup.encode() + b" " + argument)
                if reply.code != 200:
                    return
            argument = options + path if verb in (b"LIST", b"NLST") else path
            line = verb + (b" " + argument if argument else b"")
            self.control.send(line)
            deadline = time.monotonic() + REPLY_BOUND
            first = self.control.next_reply(deadline, line)
            if first.code >= 200:
                return  # refused before any data moved
            assert first.code == 150, f"{line!r}: {first}"
            if listener is not None:
                data, _ = listener.accept()
            assert data is not None
            if verb in (b"STOR", b"APPE", b"STOU"):
                data.sendall(payload)
                data.close()
            else:
                check_data(read_to_eof(data, deadline, line), line)
            _, final = self.control.final_reply(deadline, line)
            assert final.code == 226, f"{line!r} after 150: {final}"
        finally:
            for sock in (data, listener):
                if sock is not None:
                    sock.close()

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def one_reply_per_line(self) -> None:
        """A marker line answered first proves no earlier line got a second reply."""
        self.steps += 1
        token = f"ZZSYNC{self.steps}".encode()
        assert not self.control.pending, f"unasked-for replies: {list(self.control.pending)}"
        self.control.send(token)
        preliminary, reply = self.control.final_reply(time.monotonic() + REPLY_BOUND, token)
        assert not preliminary and reply.code == 500 and decode(token) in reply.text, (
            f"a stray reply instead of the answer to {token!r}: {[*preliminary, reply]}"
        )

    @invariant()
    def working_directory_as_modelled(self) -> None:
        if self.stage == "in":
            path = self.pwd()
            assert path == self.cwd, f"PWD says {path!r}, the model {self.cwd!r}"
        else:
            reply = self.control.exchange(b"PWD")
            assert reply.code == 530, f"PWD while not logged in: {reply}"

    @invariant()
    def nothing_escaped(self) -> None:
        self.env.check_outside_untouched()
        self.env.check_no_server_errors()

    @invariant()
    def logins_still_work(self) -> None:
        if self.steps % FRESH_LOGIN_EVERY == 0:
            self.env.check_fresh_login()


@pytest.mark.timeout(600)
def test_random_sessions_keep_the_server_sound(environment: Environment) -> None:
    run_state_machine_as_test(
        lambda: SessionMachine(environment),
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
