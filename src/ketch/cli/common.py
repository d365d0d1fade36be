"""What every client command shares: options, credentials, sessions, errors, output.

A command parses its arguments, builds a ``Target`` (URL, credentials and
settings, resolved before any network I/O, since resolving may prompt for a
password), then hands a coroutine to ``run``, which turns every failure into
one line on stderr and a documented exit code.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from ketch.cli.output import Display, safe_text
from ketch.client import (
    Client,
    ConnectFailed,
    DataConnectionFailed,
    FtpError,
    HashUnsupported,
    InvalidArgument,
    LocalFileError,
    LoginFailed,
    ModeMemory,
    PermanentReplyError,
    ProtocolError,
    TransientReplyError,
    VerifyFailed,
)
from ketch.client.data_modes import Mode, PassiveCommand
from ketch.client.tls import TlsMode
from ketch.client.url import FtpUrl, UrlError, credentials_from_netrc, parse_ftp_url

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_USAGE",
    "EXIT_VERIFY_FAILED",
    "ClientOptions",
    "CommandFailed",
    "Target",
    "client_options",
    "display_for",
    "exit_code_for",
    "run",
    "target_for",
]

EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_LOCAL = 8
EXIT_INCOMPLETE = 9  # mirror: some files failed; ls: some listing lines could not be read
EXIT_VERIFY_FAILED = 10
ANONYMOUS_USERS = ("anonymous", "ftp")

_LOGGERS = ("ketch.client", "ketch.client.transcript")


class CommandFailed(Exception):
    """A failure the CLI itself detects: its message and exit code."""

    def __init__(self, message: str, code: int = EXIT_OTHER) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for an error (see ``ketch --help``)."""
    if isinstance(error, CommandFailed):
        return error.code
    if isinstance(error, UrlError):
        return EXIT_USAGE
    codes: tuple[tuple[type[BaseException], int], ...] = (
        (InvalidArgument, EXIT_USAGE),
        (ConnectFailed, 3),
        (LoginFailed, 4),
        (PermanentReplyError, 5),
        (HashUnsupported, 5),
        (VerifyFailed, EXIT_VERIFY_FAILED),
        (DataConnectionFailed, 6),
        (TransientReplyError, 7),
        (ProtocolError, 7),
        (LocalFileError, EXIT_LOCAL),
    )
    for kind, code in codes:
        if isinstance(error, kind):
            return code
    return EXIT_OTHER


# -- options -----------------------------------------------------------------------


@dataclass(frozen=True)
class ClientOptions:
    """The settings every client command takes (see ``client_options``)."""

    mode: Mode = "auto"
    passive_command: PassiveCommand = "auto"
    trust_pasv_address: bool = False
    active_address: str | None = None
    active_ports: range | None = None
    connect_timeout: float = 30.0
    data_timeout: float = 10.0
    timeout: float = 60.0
    user: str | None = None
    netrc_file: str | None = None
    verbose: bool = False
    quiet: bool = False
    ftps: bool = False  # explicit TLS on ftp:// URLs (ftps:// URLs are implicit TLS)
    cacert: str | None = None
    insecure: bool = False


def _parse_ports(_ctx: click.Context, _param: click.Parameter, value: str | None) -> range | None:
    if value is None:
        return None
    low, dash, high = value.partition("-")
    if not (dash and low.isdigit() and high.isdigit()):
        raise click.BadParameter(f"{value!r}: write it as LOW-HIGH, e.g. 40000-40100")
    if not 1 <= int(low) <= int(high) <= 65535:
        raise click.BadParameter(f"{value!r}: ports run from 1 to 65535, LOW <= HIGH")
    return range(int(low), int(high) + 1)


def _parse_address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """--active-address: an IP address that EPRT or PORT can name."""
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 or IPv6 address") from None
    # ipaddress takes "fe80::1%eth0", but a zone only means something on this host:
    # EPRT has no field for it (RFC 2428), so the client could not send it.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        bare = value.partition("%")[0]
        raise click.BadParameter(
            f"{value!r} has a zone id (%{address.scope_id}), which EPRT cannot send: "
            f"give the address without it ({bare})"
        )
    return str(address)


_Seconds = click.FloatRange(min=0, min_open=True)

#: FTPS options, shared by the transfer commands and ketch doctor.
TLS_OPTIONS = (
    click.option(
        "--ftps",
        is_flag=True,
        help="Explicit FTPS: AUTH TLS on an ftp:// URL, data connections encrypted too "
        "(ftps:// URLs use implicit TLS, port 990).",
    ),
    click.option(
        "--cacert",
        metavar="FILE",
        type=click.Path(exists=True, dir_okay=False),
        help="Check the server's TLS certificate against the CA certificates in FILE (PEM) "
        "instead of the system's (implies --ftps on an ftp:// URL).",
    ),
    click.option(
        "--insecure",
        is_flag=True,
        help="Do not check the server's TLS certificate (unsafe: anyone on the way could "
        "pose as the server; implies --ftps on an ftp:// URL).",
    ),
)

_OPTIONS = (
    click.option(
        "--active/--passive",
        "active",
        default=None,
        help="Data connections: the server connects to us (active) or we to it (passive). "
        "[default: passive, falling back to active]",
    ),
    click.option(
        "--epsv/--no-epsv",
        "epsv",
        default=None,
        help="Passive mode with EPSV only, or with PASV only. [default: EPSV, then PASV]",
    ),
    click.option(
        "--trust-pasv-address",
        is_flag=True,
        help="Connect where PASV says even when that is a private address unlike the server's.",
    ),
    click.option(
        "--active-address",
        metavar="ADDR",
        callback=_parse_address,
        help="Address to advertise in active mode (this host's public address behind NAT).",
    ),
    click.option(
        "--active-ports",
        metavar="LOW-HIGH",
        callback=_parse_ports,
        help="Local ports to listen on in active mode. [default: any]",
    ),
    click.option(
        "--connect-timeout",
        type=_Seconds,
        default=30.0,
        show_default=True,
        metavar="S",
        help="Seconds to wait for the control connection.",
    ),
    click.option(
        "--data-timeout",
        type=_Seconds,
        default=10.0,
        show_default=True,
        metavar="S",
        help="Seconds to wait for each data connection.",
    ),
    click.option(
        "--timeout",
        type=_Seconds,
        default=60.0,
        show_default=True,
        metavar="S",
        help="Seconds to wait for a reply, or for a stalled transfer.",
    ),
    click.option(
        "-u",
        "--user",
        metavar="USER[:PASSWORD]",
        help="Log in as USER (asks for the password on a terminal when ~/.netrc has none).",
    ),
    click.option(
        "--netrc-file",
        type=click.Path(dir_okay=False),
        help="Read credentials from this file instead of ~/.netrc.",
    ),
    *TLS_OPTIONS,
    click.option("-v", "--verbose", is_flag=True, help="Show the FTP conversation on stderr."),
    click.option("-q", "--quiet", is_flag=True, help="Show nothing but errors."),
)


def check_tls_options(cacert: str | None, insecure: bool) -> None:
    if cacert is not None and insecure:
        raise click.UsageError("--cacert and --insecure contradict each other; pick one")


def client_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add the shared client options; the command receives them as ``options``."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        active: bool | None = kwargs.pop("active")
        epsv: bool | None = kwargs.pop("epsv")
        verbose: bool = kwargs.pop("verbose")
        quiet: bool = kwargs.pop("quiet")
        if verbose and quiet:
            raise click.UsageError("--verbose and --quiet contradict each other; pick one")
        cacert: str | None = kwargs.pop("cacert")
        insecure: bool = kwargs.pop("insecure")
        check_tls_options(cacert, insecure)
        options = ClientOptions(
            mode="auto" if active is None else ("active" if active else "passive"),
            passive_command="auto" if epsv is None else ("EPSV" if epsv else "PASV"),
            trust_pasv_address=kwargs.pop("trust_pasv_address"),
            active_address=kwargs.pop("active_address"),
            active_ports=kwargs.pop("active_ports"),
            connect_timeout=kwargs.pop("connect_timeout"),
            data_timeout=kwargs.pop("data_timeout"),
            timeout=kwargs.pop("timeout"),
            user=kwargs.pop("user"),
            netrc_file=kwargs.pop("netrc_file"),
            verbose=verbose,
            quiet=quiet,
            ftps=kwargs.pop("ftps"),
            cacert=cacert,
            insecure=insecure,
        )
        setup_logging(options)
        try:
            command(options=options, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors are click's to show
        except (Exception, KeyboardInterrupt) as error:  # also those found before any I/O
            report_failure(error, verbose=verbose)

    decorated: Callable[..., None] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


# -- targets: URL, credentials, settings -------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server to talk to: the URL, the credentials to use and the client settings."""

    url: FtpUrl
    user: str | None
    password: str | None
    options: ClientOptions

    @property
    def path(self) -> str:
        return self.url.path

    def same_session(self, other: Target) -> bool:
        """Whether one logged-in session can serve both targets."""
        return (self.url.host, self.url.port, self.tls, self.user, self.password) == (
            other.url.host,
            other.url.port,
            other.tls,
            other.user,
            other.password,
        )

    @property
    def tls(self) -> TlsMode | None:
        """ftps:// is implicit TLS; --ftps asks for explicit TLS on ftp://.

        So do --cacert and --insecure: who names a certificate check expects TLS, and
        without it the password would go in the clear.
        """
        if self.url.scheme == "ftps":
            return "implicit"
        options = self.options
        wants_tls = options.ftps or options.cacert is not None or options.insecure
        return "explicit" if wants_tls else None

    def client(self, mode_memory: ModeMemory | None = None) -> Client:
        """A Client for this target, not yet connected (``async with`` it)."""
        options = self.options
        return Client(
            self.url.host,
            self.url.port,
            user=self.user,
            password=self.password,
            mode=options.mode,
            passive_command=options.passive_command,
            trust_pasv_address=options.trust_pasv_address,
            active_ports=options.active_ports,
            active_address=options.active_address,
            connect_timeout=options.connect_timeout,
            data_connect_timeout=options.data_timeout,
            timeout=options.timeout,
            mode_memory=mode_memory,
            tls=self.tls,
            cafile=options.cacert,
            verify=not options.insecure,
        )


def parse_url(text: str) -> FtpUrl:
    """Parse a URL the user gave; a bad one is a usage error (exit 2)."""
    try:
        url = parse_ftp_url(text)
    except UrlError as error:
        raise CommandFailed(f"bad URL: {error}", EXIT_USAGE) from None
    return url


def target_for(url_text: str, options: ClientOptions) -> Target:
    """Parse ``url_text`` and settle the credentials; may prompt for a password."""
    url = parse_url(url_text)
    user, password = resolve_credentials(url, options)
    return Target(url, user, password, options)


def resolve_credentials(url: FtpUrl, options: ClientOptions) -> tuple[str | None, str | None]:
    """User and password, first match wins: the URL, then -u, then .netrc, then anonymous.

    A user named without a password gets the one .netrc has for that host and
    login; failing that, a hidden prompt when stdin is a terminal, else "".
    (None, None) means anonymous.
    """
    if url.user is not None:
        user, password = url.user, url.password
    elif options.user is not None:
        user, colon, given = options.user.partition(":")
        if not user:
            raise CommandFailed("-u needs a user name: -u USER[:PASSWORD]", EXIT_USAGE)
        password = given if colon else None
    else:
        found = _netrc_lookup(url.host, options.netrc_file)
        return found if found is not None else (None, None)
    if password is not None or user.lower() in ANONYMOUS_USERS:
        return user, password
    found = _netrc_lookup(url.host, options.netrc_file)
    if found is not None and found[0] == user:
        return user, found[1]
    if sys.stdin.isatty():
        prompted: str = click.prompt(
            f"Password for {user}@{url.host}",
            hide_input=True,
            default="",
            show_default=False,
            err=True,
        )
        return user, prompted
    return user, ""


def _netrc_lookup(host: str, netrc_file: str | None) -> tuple[str, str] | None:
    try:
        return credentials_from_netrc(host, netrc_file)
    except UrlError as error:
        raise LocalFileError(
            str(error), "fix the file, or name another with --netrc-file"
        ) from None


# -- running a command ---------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Writes to whatever sys.stderr is at the time, so lines show above progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(safe_text(self.format(record)) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def setup_logging(options: ClientOptions) -> None:
    """-v: the control conversation and mode decisions; otherwise warnings only."""
    level = (
        logging.DEBUG if options.verbose else logging.ERROR if options.quiet else logging.WARNING
    )
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    parent = logging.getLogger(_LOGGERS[0])
    for old in [h for h in parent.handlers if isinstance(h, _StderrHandler)]:
        parent.removeHandler(old)
    parent.addHandler(handler)
    parent.propagate = False
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(level)


def fail(message: str, code: int) -> NoReturn:
    """Print the one line "ketch: <message>" on stderr and exit with ``code``."""
    click.echo(f"ketch: {safe_text(message)}", err=True)
    raise SystemExit(code)


class Terminated(Exception):
    """SIGTERM arrived: the command was stopped as by Ctrl-C (partial files removed)."""


def run(options: ClientOptions, work: Callable[[], Awaitable[int | None]]) -> NoReturn:
    """Run a command's coroutine and exit with its code, or the failure's.

    SIGTERM (cron's timeout, systemd's stop) cancels the command as asyncio.run
    does for Ctrl-C, so it cleans up the same way: a mirror leaves no hidden
    ``.part`` files behind, and the session says goodbye.
    """

    async def main() -> int | None:
        task = asyncio.current_task()
        assert task is not None
        terminated: list[bool] = []

        def terminate() -> None:
            terminated.append(True)
            task.cancel()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, terminate)
        try:
            return await work()
        except asyncio.CancelledError:
            if terminated:
                raise Terminated from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        code = asyncio.run(main())
    except (Exception, KeyboardInterrupt) as error:
        report_failure(error, verbose=options.verbose)
    raise SystemExit(code or 0)


def report_failure(error: BaseException, *, verbose: bool) -> NoReturn:
    """Print the one line for ``error`` and exit with its code."""
    if isinstance(error, KeyboardInterrupt):
        fail(_with_notes("interrupted", error), 130)
    if isinstance(error, Terminated):
        fail(_with_notes("terminated (SIGTERM)", error), 143)
    if isinstance(error, (FtpError, CommandFailed, UrlError)):
        fail(str(error), exit_code_for(error))
    if isinstance(error, OSError):
        if error.errno == errno.EPIPE:
            _quiet_broken_pipe()
        fail(f"local error: {error.strerror or error}", EXIT_LOCAL)
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    fail(
        f"internal error: {type(error).__name__}: {error} — please report it; -v shows details",
        EXIT_OTHER,
    )


def _with_notes(what: str, error: BaseException) -> str:
    """``what``, then what the cancelled work noted (a download: the state of its file).

    The notes are on the CancelledError that ended the work, the context of the
    KeyboardInterrupt or Terminated raised in its place.
    """
    notes: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        notes += getattr(cause, "__notes__", [])
        cause = cause.__context__
    return f"{what} — {'; '.join(notes)}" if notes else what


def _quiet_broken_pipe() -> NoReturn:
    """The reader of our output went away (``ketch ls | head``): stop without a word."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(EXIT_OTHER)


def display_for(options: ClientOptions, *, bars: bool = True) -> Display:
    """The progress bars and status lines for a command run with ``options``."""
    return Display(verbose=options.verbose, quiet=options.quiet, bars=bars)
