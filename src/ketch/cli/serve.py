"""``ketch serve``, ``ketch user hash``, ``ketch config example|check``: the server side."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ketch import __version__

if TYPE_CHECKING:
    from ketch.config import PortRange, ServerConfig
    from ketch.server.port20_helper import LowPortHelper
    from ketch.server.privileges import RunAs
    from ketch.tools.certificates import CertificateFiles

# ketch.config (pydantic) is imported by the commands that need it, so that the
# client commands start without paying for it.

__all__ = ["config", "serve", "user"]

log = logging.getLogger("ketch.server")

# -- serve ----------------------------------------------------------------------


def _parse_user(value: str) -> tuple[str, str]:
    """A --user NAME:PASSWORD; a usage error naming --user (never the password) if not."""
    name, sep, password = value.partition(":")
    if not sep:
        problem = f"{value!r} has no password"
    elif not name:
        problem = "the name before ':' is empty"
    elif not password:
        problem = f"{name!r} has an empty password"
    else:
        return name, password
    raise click.BadParameter(f"{problem}; write it as NAME:PASSWORD", param_hint="'--user'")


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with every setting (see `ketch config example`).",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to serve. [default: the current directory]",
)
@click.option("--port", type=int, help="Control port. [default: 2121]")
@click.option(
    "--listen", "listen_address", help="Address to listen on. [default: :: (IPv4 and IPv6)]"
)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="Add an account whose home is the served directory (repeatable).",
)
@click.option(
    "--write",
    is_flag=True,
    help="Allow uploads, deletes and renames: for --user accounts, or for anonymous "
    "when there are no accounts at all (with accounts in --config and no --user, refused).",
)
@click.option(
    "--anonymous/--no-anonymous",
    default=None,
    help="Allow or refuse anonymous logins. [default: allowed only when no accounts are "
    "configured (no --user, no [[users]] in --config)]",
)
@click.option(
    "--passive-ports", metavar="LOW-HIGH", help="Passive port range. [default: 50000-50999]"
)
@click.option(
    "--masquerade-address",
    metavar="ADDR",
    help="Address PASV advertises (the public address when behind NAT).",
)
@click.option(
    "--active-source-port",
    metavar="auto|ephemeral|N",
    help="Source port for active connections. [default: auto, i.e. control port - 1]",
)
@click.option(
    "--allow-foreign-addresses",
    is_flag=True,
    default=None,
    help="Let PORT/EPRT name another host than the client (FXP; unsafe, RFC 2577).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="How much goes to stderr: info has a line per login and transfer.",
)
@click.option(
    "--run-as",
    metavar="USER",
    help="Started as root: become USER right after binding the ports (see README).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes sharing the port, each with a slice of the passive range. [default: 1]",
)
@click.option(
    "--event-loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    help="auto: uvloop when installed, else asyncio. [default: auto]",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Offer FTPS (AUTH TLS); without a configured certificate, generate a self-signed one.",
)
@click.option(
    "--tls-certificate",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate (with its chain) for FTPS; `ketch cert` makes one.",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Its PEM private key."
)
@click.option(
    "--tls-required",
    type=click.Choice(["off", "control", "all"]),
    help="control: logins need AUTH TLS; all: data connections need PROT P too. [default: off]",
)
@click.option(
    "--implicit-tls-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Also serve implicit FTPS (ftps://) on this port (990 by convention).",
)
def serve(
    config_file: Path | None,
    users: tuple[str, ...],
    write: bool,
    anonymous: bool | None,
    tls: bool,
    **flags: Any,
) -> None:
    """Serve a directory over FTP (anonymous read-only when no accounts are given).

    SIGTERM or SIGINT stops gracefully (a second one at once); SIGHUP reloads --config.
    """
    from ketch.config import FLAGS, ConfigError, Origins, load_config
    from ketch.server import event_loop
    from ketch.server.listener import ListenError
    from ketch.server.privileges import PrivilegeError

    overrides = {key: value for key, value in flags.items() if value is not None}
    if "active_source_port" in overrides and overrides["active_source_port"].isdigit():
        overrides["active_source_port"] = int(overrides["active_source_port"])

    generated: dict[str, Path] = {}  # --tls: the certificate made as none is configured

    def build_config() -> ServerConfig:
        """The file with the flags on top; again on every SIGHUP."""
        settings = {**overrides, **_unless_configured(generated, config_file, overrides)}
        config = load_config(config_file, settings, flags=FLAGS)
        config = _apply_quick_accounts(config, config_file, settings, users, write, anonymous)
        _refuse_serving_everything(config, config_file)
        return config

    try:
        if tls:
            from ketch.cli.cert import serving_certificate
            from ketch.server.tls import mark_generated

            generated.update(serving_certificate(config_file, overrides))
        config = build_config()
        if generated:
            mark_generated(generated["tls_certificate"], generated["tls_key"])
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    except click.BadParameter:
        raise
    _log_to_stderr(config.log_level)
    try:
        if config.workers > 1:
            from ketch.server.workers import serve_workers

            serve_workers(config, config_file, build_config, _describe)
        else:
            event_loop.run(_serve(config, config_file, build_config), config.event_loop)
    except event_loop.EventLoopError as error:
        raise click.ClickException(str(error)) from None
    except (PrivilegeError, ValueError) as error:
        # run_as, passive_ports, a masquerade name that does not resolve: say where it is set.
        origins = Origins.of(config, config_file, overrides)
        raise click.ClickException(origins.locate(str(error))) from None
    except ListenError as error:
        raise click.ClickException(error.strerror or str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot start the server: {error}") from None


def _log_to_stderr(level: str) -> None:
    """The server's log: LOG_FORMAT's lines on stderr (workers inherit the handler)."""
    from ketch.server.log_format import LOG_FORMAT, LogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _unless_configured(
    generated: dict[str, Path], config_file: Path | None, overrides: Mapping[str, Any]
) -> dict[str, Path]:
    """The certificate --tls generated, unless the file or the flags now set one: a
    certificate added to the file later replaces it on reload."""
    from ketch.cli.cert import certificate_configured

    return {} if not generated or certificate_configured(config_file, overrides) else generated


def _apply_quick_accounts(
    config: ServerConfig,
    config_file: Path | None,
    overrides: dict[str, Any],
    users: tuple[str, ...],
    write: bool,
    anonymous: bool | None,
) -> ServerConfig:
    """Fold --user/--write/--anonymous/--no-anonymous into the configuration (validated
    again). [anonymous] enabled left out stays so: it then follows the accounts."""
    if not users and not write and anonymous is None:
        return config
    from ketch.config import FLAGS, load_config
    from ketch.server.auth import hash_password

    quick = [_parse_user(value) for value in users]
    _check_quick_names([name for name, _ in quick], config, config_file)
    if write and not quick:
        _refuse_write_for_configured_accounts(config, config_file)
    permissions = ["all"] if write else ["list", "read"]
    accounts = [
        # Whole, limits and quotas included: only the accounts are added to.
        *(user.model_dump(mode="json") for user in config.users),
        *(
            {
                "name": name,
                "password_hash": hash_password(password),
                "home": str(config.root),
                "permissions": permissions,
            }
            for name, password in quick
        ),
    ]
    table = config.anonymous.model_dump(mode="json")
    if anonymous is not None:
        table["enabled"] = anonymous
    if write and not accounts:  # no accounts at all: the quick start's anonymous
        table["permissions"] = ["all"]
    settings = {**overrides, "users": accounts, "anonymous": table}
    return load_config(config_file, settings, flags=FLAGS)


def _refuse_write_for_configured_accounts(config: ServerConfig, config_file: Path | None) -> None:
    """ConfigError for --write without --user when the file has accounts: it is meant
    for none of them, and anonymous must not be given write access in their stead."""
    from ketch.config import ConfigError

    if not config.users:
        return
    names = ", ".join(user.name for user in config.users)
    raise ConfigError(
        "command line: --write applies to --user accounts (and to anonymous when there "
        f"are no accounts), but {config_file} has accounts ({names}) and no --user is "
        f"given; set each account's permissions in {config_file} instead, such as "
        'permissions = ["all"]'
    )


def _refuse_serving_everything(config: ServerConfig, config_file: Path | None) -> None:
    """ConfigError when anonymous users would be served "/" only because root was left
    out and the server was started there (as a service is): the whole file system."""
    from ketch.config import ConfigError

    by_default = "root" not in config.model_fields_set and config.anonymous.home is None
    if not (by_default and config.anonymous_enabled() and config.root == Path("/")):
        return
    problem = (
        "root is not set, so anonymous users would be served the current directory, "
        "/ (the whole file system); "
    )
    if config_file is None:
        raise ConfigError(
            problem + "give --root DIR, or turn anonymous access off (--no-anonymous)"
        )
    raise ConfigError(
        f"{config_file}: {problem}set root in the file (or give --root DIR), or turn "
        "anonymous access off ([anonymous] enabled = false)"
    )


def _check_quick_names(names: list[str], config: ServerConfig, config_file: Path | None) -> None:
    """ConfigError naming --user (and the file) when a --user name is no valid name or is
    taken: validated later, it would be blamed on an entry users[N] the person never wrote."""
    from ketch.config import ConfigError
    from ketch.config_models import user_name_problem

    configured = {user.name: index for index, user in enumerate(config.users)}
    for position, name in enumerate(names):
        if problem := user_name_problem(name):
            raise ConfigError(f"command line: --user {name!r}: {problem}")
        if name in configured:
            raise ConfigError(
                f"command line: --user {name}: {config_file} already has a user {name!r} "
                f"(users[{configured[name]}]); give --user another name, or remove one of them"
            )
        if name in names[:position]:
            raise ConfigError(
                f"command line: --user {name}: given twice; give every --user a different name"
            )


async def _serve(
    config: ServerConfig, config_file: Path | None, build_config: Callable[[], ServerConfig]
) -> None:
    """Bind, drop root if told to, serve until SIGTERM/SIGINT; SIGHUP reloads the file."""
    from ketch.server import FtpServer, event_loop, port20_helper
    from ketch.server.lifecycle import Lifecycle, Reloader
    from ketch.server.privileges import (
        drop_privileges,
        refuse_unbindable_passive_ports,
        resolve_run_as,
        warn_after_drop,
    )

    run_as = resolve_run_as(config.run_as)
    refuse_unbindable_passive_ports(config)
    server = FtpServer(config)
    host, port = server.bind()
    helper = (
        port20_helper.start_for(config.active_source_port, host, port)
        if run_as is not None
        else None
    )
    port20_helper.install(helper)
    try:
        if run_as is not None:
            # Bound, helper started: nothing else needs root. No connection accepted yet.
            drop_privileges(run_as)
            warn_after_drop(config, run_as, config_file)
        reloader = Reloader(server, build_config, config_file, run_as) if config_file else None
        lifecycle = Lifecycle(server, reloader)
        lifecycle.install()
        await server.start()
        helpers = [helper] if helper else []
        resolved = server.context.masquerade.resolved_names()
        implicit = server.implicit_tls_address
        tls = server.context.tls
        server.log_serving()
        click.echo(
            _describe(
                config,
                server.address,
                run_as,
                helpers,
                event_loop.current(),
                resolved=resolved,
                implicit_port=implicit[1] if implicit else None,
                certificate=tls.files if tls else None,
            )
        )
        await lifecycle.run()
    finally:
        if helper is not None:
            port20_helper.install(None)
            helper.close()


def _describe(
    config: ServerConfig,
    address: tuple[str, int],
    run_as: RunAs | None = None,
    helpers: Sequence[LowPortHelper] = (),
    loop: str = "asyncio",
    workers: Sequence[tuple[int, PortRange]] = (),
    *,
    resolved: Mapping[str, str] | None = None,
    implicit_port: int | None = None,
    certificate: CertificateFiles | None = None,
) -> str:
    """The start-up summary: where, who, how data connections are made, how to try it.

    ``workers`` are the worker processes' pids and passive slices, when there are several;
    ``resolved`` the addresses masquerade host names resolved to; ``certificate`` what the
    TLS certificate holds, read when it was loaded (before run_as). Warnings about the
    data-connection set-up are also logged.
    """
    from ketch.cli.cert import tls_summary, try_command
    from ketch.server.setup_report import setup_report

    host, port = address
    families = "IPv4 and IPv6" if host == "::" else ("IPv6" if ":" in host else "IPv4")
    who = _anonymous_access(config) if config.anonymous_enabled() else "no anonymous access"
    if config.users:
        who += f", {len(config.users)} account(s): " + ", ".join(u.name for u in config.users)
    elif not config.anonymous_enabled():
        who += " and no accounts"
    data = setup_report(
        config,
        host=host,
        port=port,
        slices=[ports for _, ports in workers],
        resolved=resolved,
    )
    warnings = data.warnings
    for warning in warnings:
        log.warning("set-up: %s", warning)
    client_host = (
        "127.0.0.1" if host in ("::", "0.0.0.0") else (f"[{host}]" if ":" in host else host)
    )
    credentials = (
        ""
        if config.anonymous_enabled() or not config.users
        else f"{config.users[0].name}:PASSWORD@"
    )
    url = f"ftp://{credentials}{client_host}:{port}/"
    privileges = []
    if run_as is not None:
        line = f"  user     {run_as}"
        if len(helpers) == 1:
            line += f"; a root helper (pid {helpers[0].pid}) binds source port "
        elif helpers:
            pids = ", ".join(str(helper.pid) for helper in helpers)
            line += f"; root helpers (pids {pids}), one per worker, bind source port "
        if helpers:
            line += ", ".join(map(str, sorted(helpers[0].ports)))
        privileges.append(line)
    if workers:
        pids = ", ".join(str(pid) for pid, _ in workers)
        slices = ", ".join(str(ports) for _, ports in workers)
        processes = (
            f"  workers  {len(workers)} processes (pids {pids}) on {loop}, "
            f"with passive ports {slices}"
        )
    else:
        processes = f"  workers  1 process on {loop}"
    return "\n".join(
        [
            f"ketch {__version__} serving {config.root} ({who})",
            *_anonymous_off_by_default(config),
            f"  control  {host} port {port} ({families})",
            *privileges,
            processes,
            *tls_summary(config, certificate, client_host, port, implicit_port),
            *data.lines,
            *(f"  warning  {warning}" for warning in warnings),
            f"  try      {try_command(config, certificate, client_host, url)}",
        ]
    )


def _anonymous_access(config: ServerConfig) -> str:
    """The summary's "anonymous read-only", or what else anonymous users may do."""
    from ketch.server.auth import Permission, describe_access, parse_permissions

    granted = parse_permissions(config.anonymous.permissions)
    plain = granted in (Permission.READ_ONLY, Permission.ALL)
    return f"anonymous {'' if plain else 'with '}{describe_access(granted)}"


def _anonymous_off_by_default(config: ServerConfig) -> list[str]:
    """The summary's line saying why anonymous access is off, when only accounts say so."""
    if config.anonymous.enabled is not None or not config.users:
        return []
    return [
        "  anonymous off, as accounts are configured; to allow it too, pass --anonymous "
        "or set [anonymous] enabled = true"
    ]


# -- user -----------------------------------------------------------------------


@click.group()
def user() -> None:
    """Manage virtual-user credentials."""


@user.command("hash")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_hash(password_stdin: bool) -> None:
    """Print an argon2 hash for a user's password_hash in the config file."""
    from ketch.server.auth import hash_password

    password = _piped_password() if password_stdin else _typed_password()
    if not password:
        raise click.ClickException("empty password: give a non-empty one")
    click.echo(hash_password(password))


def _piped_password() -> bytes:
    """The first line of standard input as bytes, as the server checks a password's bytes:
    one that is not UTF-8 is hashed as given (with a warning), not refused."""
    if sys.stdin is None:  # started with standard input closed (<&-)
        raise click.ClickException(
            "standard input is closed, so there is no password to read; "
            "pipe it in: ketch user hash --password-stdin < FILE"
        )
    try:
        line = sys.stdin.buffer.readline().rstrip(b"\r\n")
    except OSError as error:
        raise click.ClickException(
            f"cannot read the password from standard input ({error.strerror}); "
            "pipe it in: ketch user hash --password-stdin < FILE"
        ) from None
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        click.echo(
            f"warning: the password is not UTF-8 text (byte {line[error.start]:#04x} at "
            f"offset {error.start}); it is hashed as these bytes, which a client must send",
            err=True,
        )
    return line


def _typed_password() -> str:
    if sys.stdin is None or not sys.stdin.isatty():
        # click would print "Password input may be echoed" and abort with no hint.
        raise click.ClickException(
            "standard input is not a terminal, so the password cannot be typed; "
            "to read it from standard input, add --password-stdin"
        )
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


# -- config ---------------------------------------------------------------------


@click.group()
def config() -> None:
    """Work with configuration files."""


@config.command("example")
def config_example() -> None:
    """Print a commented configuration file with every setting and its default."""
    from ketch.config_example import DEFAULT_CONFIG_TOML

    click.echo(DEFAULT_CONFIG_TOML, nl=False)


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def config_check(path: Path) -> None:
    """Validate a configuration file and report every problem."""
    from ketch.config import ConfigError, load_config
    from ketch.server.masquerade import MasqueradePolicy
    from ketch.server.privileges import (
        PrivilegeError,
        refuse_unbindable_passive_ports,
        run_as_user,
    )
    from ketch.server.setup_report import setup_report
    from ketch.server.workers import split_ports

    try:
        checked = load_config(path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    # What `serve` looks up or refuses at start beyond the file itself.
    problems = []
    if checked.run_as is not None:
        try:
            run_as_user(checked.run_as)
            refuse_unbindable_passive_ports(checked)
        except PrivilegeError as error:
            problems.append(f"{path}: {error}")
    resolved: dict[str, str] = {}
    try:
        resolved = MasqueradePolicy.from_config(checked).resolved_names()
    except ValueError as error:
        problems.append(f"{path}: {error}")
    if problems:
        raise click.ClickException("\n".join(problems))
    # And what it warns about: contradictions that leave it serving, but not well.
    slices = split_ports(checked.passive_ports, checked.workers) if checked.workers > 1 else []
    host = checked.resolved_listen_address()
    report = setup_report(checked, host=host, port=checked.port, slices=slices, resolved=resolved)
    warnings = [*report.warnings, *_run_as_warnings(checked, path)]
    if (dates := _certificate_dates_warning(checked)) is not None:
        warnings.append(dates)
    for warning in warnings:
        click.echo(f"{path}: warning: {warning}", err=True)
    count = len(warnings)
    click.echo(f"{path}: ok" + (f", with {count} warning(s)" if count else ""))


def _run_as_warnings(config: ServerConfig, path: Path) -> list[str]:
    """What serve would warn that run_as cannot read or write once root is dropped
    (checked only when this process is root, or is run_as)."""
    from ketch.server.privileges import PrivilegeError, access_problems_as

    if config.run_as is None:
        return []
    try:
        problems = access_problems_as(config, config.run_as, path)
    except PrivilegeError as error:
        return [str(error)]
    # The line about the file itself starts with its name, which the warning gives.
    return [problem.removeprefix(f"{path}: ") for problem in problems or []]


def _certificate_dates_warning(config: ServerConfig) -> str | None:
    """What serve would warn about the certificate's dates (expired, not yet valid, soon)."""
    from ketch.server.tls import read_certificate
    from ketch.tools.certificates import validity_warning

    if config.tls_certificate is None:
        return None
    # Unreadable: the configuration check has said so.
    files = read_certificate(config.tls_certificate, config.tls_key)
    return validity_warning(files) if files is not None else None
