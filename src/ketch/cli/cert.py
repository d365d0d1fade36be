"""``ketch cert``: a self-signed certificate and key for FTPS."""

from __future__ import annotations

import contextlib
import datetime
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ketch.config import ServerConfig
    from ketch.tools.certificates import CertificateFiles

__all__ = [
    "cert",
    "certificate_configured",
    "serving_certificate",
    "tls_summary",
    "try_command",
]


@click.command()
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    metavar="NAME",
    help="Host name or IP address clients connect to (repeatable; the first names the files).",
)
@click.option(
    "--out",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to write NAME.crt and NAME.key (mode 0600) in.",
)
@click.option(
    "--days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Validity."
)
@click.option("--force", is_flag=True, help="Replace existing files.")
def cert(hosts: tuple[str, ...], directory: Path, days: int, force: bool) -> None:
    """Write a self-signed certificate and key for `ketch serve` (tls_certificate, tls_key).

    Clients check a self-signed certificate by its SHA-256 fingerprint, or by
    trusting the .crt file (curl --cacert NAME.crt, lftp set ssl:ca-file NAME.crt).
    """
    from ketch.tools.certificates import write_certificate

    names = _certificate_names(hosts)
    try:
        # Absolute: the paths printed are copied into a configuration read from elsewhere.
        files = write_certificate(directory.absolute(), names, days=days, overwrite=force)
    except FileExistsError as error:
        raise click.ClickException(
            f"{error} exists already; choose another --out directory, or --force to replace it"
        ) from None
    except OSError as error:
        raise click.ClickException(
            f"cannot write to {directory} ({error.strerror}); choose another --out directory"
        ) from None
    click.echo(f"certificate  {files.certificate}  (for {', '.join(files.hosts)}, {days} days)")
    click.echo(f"key          {files.key}  (mode 0600: keep it secret)")
    click.echo(f"SHA-256      {files.fingerprint}")
    click.echo(
        f"use it       tls_certificate = {str(files.certificate)!r}, "
        f"tls_key = {str(files.key)!r} in the configuration, "
        f"or ketch serve --tls-certificate {files.certificate} --tls-key {files.key}"
    )


def _certificate_names(hosts: tuple[str, ...]) -> list[str]:
    """The --host values as the certificate holds them (non-ASCII names IDNA-encoded);
    a usage error naming the first that is no host name or IP address."""
    from ketch.tools.certificates import certificate_name

    names = []
    for host in hosts:
        try:
            names.append(certificate_name(host))
        except ValueError as error:
            raise click.UsageError(f"--host {host!r}: {error}") from None
    return names


# -- for `ketch serve` -----------------------------------------------------------


def serving_certificate(config_file: Path | None, overrides: Mapping[str, Any]) -> dict[str, Path]:
    """``ketch serve --tls``: the generated certificate's settings, unless one is configured.

    Decided before the configuration is validated, since settings such as
    ``tls_required`` are only valid with a certificate. The generated one is
    kept in $XDG_STATE_HOME/ketch (~/.local/state/ketch) and reused while it
    is valid, so clients that pinned its fingerprint keep working.
    """
    from ketch.tools.certificates import ensure_serving_certificate

    settings = {**_file_settings(config_file), **overrides}
    if _configures_certificate(settings):
        return {}
    try:
        files, _ = ensure_serving_certificate(_serving_hosts(settings))
    except OSError as error:
        raise click.ClickException(
            f"cannot write a certificate for --tls ({error}); set XDG_STATE_HOME to a "
            "writable directory, or give --tls-certificate and --tls-key (see `ketch cert`)"
        ) from None
    return {"tls_certificate": files.certificate, "tls_key": files.key}


def certificate_configured(config_file: Path | None, overrides: Mapping[str, Any]) -> bool:
    """Whether the file or the flags set tls_certificate: then --tls generates none."""
    return _configures_certificate({**_file_settings(config_file), **overrides})


def _configures_certificate(settings: Mapping[str, Any]) -> bool:
    return bool(settings.get("tls_certificate"))


def _serving_hosts(settings: Mapping[str, Any]) -> list[str]:
    """The names and addresses the generated certificate holds: this machine's, and the
    addresses the settings (unchecked yet) give clients."""
    from ketch.tools.certificates import certificate_name

    candidates = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    for key in ("listen_address", "masquerade_address", "tls_masquerade_address"):
        address = settings.get(key)
        if isinstance(address, str) and address not in ("0.0.0.0", "::"):
            candidates.append(address)
    hosts: list[str] = []
    for host in candidates:
        # A machine name a certificate cannot hold (my_host) is left out; a bad setting
        # is reported by the configuration check that follows.
        with contextlib.suppress(ValueError):
            if (name := certificate_name(host)) not in hosts:
                hosts.append(name)
    return hosts


def _file_settings(config_file: Path | None) -> dict[str, Any]:
    """The configuration file's top-level settings, unchecked ({} if it cannot be read).

    Loading it properly, with its errors, is load_config's job a moment later.
    """
    from ketch.config import ConfigError, read_toml

    if config_file is None:
        return {}
    try:
        return read_toml(config_file)
    except ConfigError:
        return {}


def tls_summary(
    config: ServerConfig,
    files: CertificateFiles | None,
    client_host: str,
    port: int,
    implicit_port: int | None = None,
) -> list[str]:
    """The start-up summary's lines about FTPS (none when TLS is off). ``files`` is what
    the certificate holds, as read when it was loaded (None: it could not be read);
    ``implicit_port`` the port the implicit listener got, when it was given as 0."""
    if config.tls_certificate is None:
        return []
    if files is None:
        return [f"  tls      certificate {config.tls_certificate}"]
    from ketch.tools.certificates import state_directory

    modes = "explicit (AUTH TLS)"
    if config.implicit_tls_port is not None:
        where = implicit_port or config.implicit_tls_port or "chosen at start-up"
        modes += f" and implicit (ftps://) on port {where}"
    required = {
        "off": "optional",
        "control": "required for logins",
        "all": "required for logins and data",
    }[config.tls_required]
    generated = config.tls_certificate.parent == state_directory()
    origin = "self-signed, generated by --tls, " if generated else ""
    lines = [
        f"  tls      {modes}, {required}; certificate {files.certificate} "
        f"({origin}for {', '.join(files.hosts) or 'no names'}, {_validity(files)})",
        f"  tls      SHA-256 fingerprint {files.fingerprint}",
    ]
    if generated and config.tls_required == "off":  # else the summary's last line is this
        url = f"ftp://{client_host}:{port}/"
        lines.append(f"  tls      try {_curl_over_tls(files, client_host, url)}")
    return lines


def try_command(
    config: ServerConfig, files: CertificateFiles | None, client_host: str, url: str
) -> str:
    """The summary's curl command for ``url``: over TLS when the server requires it."""
    if config.tls_certificate is None or config.tls_required == "off":
        return f"curl {url}"
    return _curl_over_tls(files, client_host, url)


def _curl_over_tls(files: CertificateFiles | None, client_host: str, url: str) -> str:
    """curl with AUTH TLS, trusting the certificate file when it is self-signed and names
    the host; else with -k, which skips the check, and a shell comment saying so."""
    host = client_host.removeprefix("[").removesuffix("]")
    if files is not None and files.self_signed and host in files.hosts:
        return f"curl --ssl-reqd --cacert {files.certificate} {url}"
    names = ", ".join(files.hosts) if files is not None else ""
    elsewhere = f"; clients connect by a name it holds ({names})" if names else ""
    return f"curl --ssl-reqd -k {url}  # -k: no certificate check, for this test only{elsewhere}"


def _validity(files: CertificateFiles) -> str:
    """The summary's dates: until when, or what is wrong with them (the log says what to do)."""
    from ketch.tools.certificates import EXPIRY_WARNING

    now = datetime.datetime.now(datetime.UTC)
    if now >= files.not_after:
        return f"EXPIRED on {files.not_after:%Y-%m-%d}"
    if now < files.not_before:
        return f"NOT VALID before {files.not_before:%Y-%m-%d}"
    left = files.not_after - now
    soon = f", in {left.days} day(s)" if left < EXPIRY_WARNING else ""
    return f"until {files.not_after:%Y-%m-%d}{soon}"
