"""The server's TLS: one context for control and data connections, checks, reload.

One :class:`ssl.SSLContext` serves every TLS connection of a server process:
the control connections (AUTH TLS, implicit FTPS) and the protected data
connections. Sharing it is what lets a data connection resume the control
connection's session: the session tickets the control handshake hands out
are sealed with this context's keys, and only this context opens them.

Settings: TLS 1.2 and newer only; OpenSSL's default cipher list (Python's
selection for servers: forward secrecy, AEAD first); no compression (CRIME);
no renegotiation (client-initiated renegotiation is a denial-of-service lever
and FTPS has no use for it).

A reload (SIGHUP) loads a renewed certificate into the same context, so new
connections get it and open sessions keep theirs. The files are checked in a
scratch context first: a bad pair is logged and the old one stays. The pair
``ketch serve --tls`` generated is read once, at start, and kept as loaded:
after run_as, its key is root's alone, as a private key should be.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ketch.server.control_stream import ControlStream

if TYPE_CHECKING:
    from ketch.config import ServerConfig
    from ketch.tools.certificates import CertificateFiles

__all__ = [
    "CertificateProblem",
    "ServerTls",
    "certificate_problem",
    "is_generated",
    "make_server_context",
    "mark_generated",
    "read_certificate",
    "reload_tls",
    "reuse_refusal",
    "secure_control_stream",
    "settings_problem",
]

log = logging.getLogger("ketch.server")

#: Seconds a client has to complete a TLS handshake on the control connection.
HANDSHAKE_TIMEOUT = 30.0


def make_server_context(certificate: Path, key: Path | None) -> ssl.SSLContext:
    """A server context with ``certificate`` (and ``key``; None: the key is in the same file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(certificate, key)
    return context


@dataclass(frozen=True)
class CertificateProblem:
    """Why a certificate/key pair cannot be used: the setting to blame and what to do."""

    key: str  # "tls_certificate" or "tls_key"
    path: Path
    message: str


def certificate_problem(certificate: Path, key: Path | None) -> CertificateProblem | None:
    """Check that the files exist, parse, belong together and load; None when they do."""
    key_setting = "tls_key" if key is not None else "tls_certificate"
    key_path = key if key is not None else certificate
    for setting, path in (("tls_certificate", certificate), (key_setting, key_path)):
        problem = _unreadable(path)
        if problem is not None:
            return CertificateProblem(setting, path, problem)
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    except ValueError:
        return CertificateProblem(
            "tls_certificate",
            certificate,
            "is not a PEM certificate (-----BEGIN CERTIFICATE-----); "
            "give the certificate file, or create one with `ketch cert --host NAME`",
        )
    try:
        private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except TypeError:
        return CertificateProblem(
            key_setting,
            key_path,
            "is protected by a passphrase, which the server cannot ask for; "
            "write an unencrypted copy readable only by the server "
            "(openssl pkey -in KEY -out KEY.plain; chmod 600 KEY.plain)",
        )
    except (ValueError, UnsupportedAlgorithm):
        advice = (
            "give the key file that belongs to the certificate"
            if key is not None
            else "set tls_key to the certificate's key file"
        )
        return CertificateProblem(
            key_setting,
            key_path,
            f"holds no PEM private key (-----BEGIN PRIVATE KEY-----); {advice}, "
            "or create a pair with `ketch cert --host NAME`",
        )
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, public) != private_key.public_key().public_bytes(
        der, public
    ):
        return CertificateProblem(
            key_setting,
            key_path,
            f"is not the key of the certificate {certificate}; give the key the "
            "certificate was made for (a renewed certificate comes with a new key)",
        )
    try:
        make_server_context(certificate, key)
    except (ssl.SSLError, OSError) as error:
        return CertificateProblem(
            "tls_certificate",
            certificate,
            f"cannot be used for TLS ({error}); check that it is a server certificate "
            "with its chain, or create one with `ketch cert --host NAME`",
        )
    return None


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return (
            "no such file; give the path of an existing file, "
            "or create a certificate with `ketch cert --host NAME`"
        )
    except IsADirectoryError:
        return "is a directory; give the path of the file"
    except PermissionError:
        return (
            f"cannot be read by user id {os.geteuid()} (permission denied); make it readable "
            "by the user the server runs as (with run_as, a reload reads it as that user)"
        )
    except OSError as error:
        return f"cannot be read ({os.strerror(error.errno or 0)}); check the path"
    except ValueError:  # "embedded null byte"
        return "the path holds a NUL byte (\\x00), which no file name can contain; remove it"
    return None


#: The certificate and key `ketch serve --tls` generated for this process, if it did.
_generated: set[tuple[Path, Path | None]] = set()


def mark_generated(certificate: Path, key: Path | None) -> None:
    """Note that `ketch serve --tls` generated this pair, as none was configured."""
    _generated.add((certificate, key))


def is_generated(certificate: Path, key: Path | None) -> bool:
    return (certificate, key) in _generated


def _origin(certificate: Path, key: Path | None) -> str:
    """Which certificate a reload settled on, when --tls could have generated one: a
    configured one comes first, so one added to the file replaces the generated one."""
    if not _generated:
        return ""
    if is_generated(certificate, key):
        return " (generated by --tls, as none is configured)"
    return " (configured, so used instead of the one --tls generated)"


class ServerTls:
    """The TLS context of one server process, reloadable in place."""

    def __init__(self, certificate: Path, key: Path | None) -> None:
        self.certificate = certificate
        self.key = key
        self.context = make_server_context(certificate, key)
        #: What the certificate served holds (names, fingerprint, dates), read along with
        #: it: at start that is before run_as, for the summary and the date warnings.
        self.files = read_certificate(certificate, key)
        # The pair --tls generated is read this once: reloads reuse it rather than read
        # files that, after run_as, only root may read.
        generated = is_generated(certificate, key)
        self._generated = (self.context, self.files) if generated else None

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServerTls | None:
        """The server's TLS, or None when no certificate is configured (no FTPS)."""
        if config.tls_certificate is None:
            return None
        tls = cls(config.tls_certificate, config.tls_key)
        _warn_about_dates(tls.files)
        return tls

    def reload(self, config: ServerConfig) -> None:
        """Load the configured (possibly renewed) certificate for new connections."""
        if config.tls_certificate is None:
            log.warning(
                "reload: tls_certificate was removed, but turning TLS off needs a restart; "
                "still using %s",
                self.certificate,
            )
            return
        certificate, key = config.tls_certificate, config.tls_key
        if self._generated is not None and is_generated(certificate, key):
            self._use_generated(certificate, key)
            return
        try:
            fresh = make_server_context(certificate, key)
        except (ssl.SSLError, OSError) as error:
            log.error(
                "reload: cannot load TLS certificate %s (%s); still using %s",
                certificate,
                error,
                self.certificate,
            )
            return
        # A new context, not load_cert_chain on the live one: that adds a certificate per
        # key type, so an RSA one after an EC one left the EC one served to most clients.
        # Sessions begun before keep theirs for their data connections (control_context),
        # which must resume TLS sessions that only the old context's tickets open.
        self.context = fresh
        self.certificate, self.key = certificate, key
        self.files = read_certificate(certificate, key)
        log.info(
            "reload: TLS certificate %s%s loaded for new connections",
            certificate,
            _origin(certificate, key),
        )
        _warn_about_dates(self.files, "reload: ")

    def _use_generated(self, certificate: Path, key: Path | None) -> None:
        """No certificate configured: the one --tls generated, as loaded at start."""
        assert self._generated is not None
        context, files = self._generated
        again = "still" if self.context is context else "again"
        self.context, self.files = context, files
        self.certificate, self.key = certificate, key
        log.info(
            "reload: TLS certificate %s%s %s in use for new connections (loaded at start)",
            certificate,
            _origin(certificate, key),
            again,
        )
        _warn_about_dates(files, "reload: ")


def control_context(stream: ControlStream) -> ssl.SSLContext | None:
    """The TLS context of a control connection (None in the clear): its data connections
    use it too, as a session's TLS session resumes only where it was made."""
    ssl_object = stream.get_extra_info("ssl_object")
    return ssl_object.context if ssl_object is not None else None


def reload_tls(current: ServerTls | None, config: ServerConfig) -> ServerTls | None:
    """The server's TLS after a reload: the renewed certificate, or TLS turned on."""
    if current is not None:
        current.reload(config)  # a renewed certificate, for new connections
        return current
    if config.tls_certificate is None:
        return None
    try:
        tls = ServerTls(config.tls_certificate, config.tls_key)
    except (ssl.SSLError, OSError) as error:
        log.error(
            "reload: cannot load TLS certificate %s (%s); TLS stays off",
            config.tls_certificate,
            error,
        )
        return None
    log.info(
        "reload: TLS on with certificate %s (AUTH TLS; implicit FTPS needs a restart)",
        config.tls_certificate,
    )
    _warn_about_dates(tls.files, "reload: ")
    return tls


def read_certificate(certificate: Path, key: Path | None) -> CertificateFiles | None:
    """What the certificate holds (names, fingerprint, dates); None when it cannot be read.

    The server reads it right after OpenSSL loaded it: None then means it changed
    or went away in between."""
    from ketch.tools.certificates import describe_certificate

    try:
        return describe_certificate(certificate, key or certificate)
    except (OSError, ValueError):
        return None  # changed or gone since OpenSSL read it a moment ago


def _warn_about_dates(files: CertificateFiles | None, prefix: str = "") -> None:
    """Log that clients refuse (or soon will) the certificate for its dates. It is served
    all the same: the admin may be in the middle of renewing it."""
    from ketch.tools.certificates import validity_warning

    warning = validity_warning(files) if files is not None else None
    if warning is not None:
        log.warning("%s%s", prefix, warning)


def reuse_refusal(data_socket: ssl.SSLSocket, *, required: bool) -> str | None:
    """Why a protected data connection is refused for not resuming a TLS session, or None.

    As vsftpd's require_ssl_reuse: a data connection that resumed a session
    proves its client holds a session this server handed out on *a* control
    connection, which a stranger racing for the passive port without an FTPS
    login of its own does not. It cannot prove it is *this* session's control
    connection (session ids change on resumption, in TLS 1.2 and 1.3 alike):
    a client of this server behind the same address could still pass. The
    passive listener's check that the data connection comes from the control
    connection's address is the other half of the defence.
    """
    if not required or data_socket.session_reused:
        return None
    return (
        "the data connection did not resume the control connection's TLS session; "
        "use a client that reuses TLS sessions (curl, lftp, ketch), or the admin can set "
        "tls_require_session_reuse = false"
    )


async def secure_control_stream(stream: ControlStream, context: ssl.SSLContext) -> ControlStream:
    """Run the server side of a TLS handshake on a control connection; its new stream.

    A new stream rather than the same one secured: bytes that arrived in the
    clear after the AUTH line stay in the old stream and are dropped with it,
    instead of being read as commands that came over TLS (plaintext command
    injection, as CVE-2011-0411).
    """
    return await stream.secure(context, HANDSHAKE_TIMEOUT)


def settings_problem(config: ServerConfig) -> tuple[str, object, str] | None:
    """The TLS settings together: ``(key, value, what to do)`` when they cannot work."""
    if config.tls_certificate is None:
        implicit = config.implicit_tls_port
        for key, value, wanted in (
            ("tls_key", str(config.tls_key), config.tls_key is not None),
            ("tls_required", config.tls_required, config.tls_required != "off"),
            ("implicit_tls_port", implicit, implicit is not None),
        ):
            if wanted:
                return (
                    key,
                    value,
                    "needs a certificate: set tls_certificate (and tls_key) to a pair from "
                    "`ketch cert --host NAME`, or serve with --tls for a generated "
                    "self-signed one",
                )
        return None
    if config.implicit_tls_port is not None:
        if config.workers > 1:
            return (
                "implicit_tls_port",
                config.implicit_tls_port,
                "cannot be combined with workers > 1 yet; use explicit FTPS (AUTH TLS, "
                "on the control port) with several workers, or workers = 1",
            )
        if config.implicit_tls_port and config.implicit_tls_port == config.port:
            return (
                "implicit_tls_port",
                config.implicit_tls_port,
                "is the control port; choose another port (990 by convention)",
            )
    if is_generated(config.tls_certificate, config.tls_key):
        return None  # checked and loaded at start, and not read again (see ServerTls)
    problem = certificate_problem(config.tls_certificate, config.tls_key)
    if problem is not None:
        return problem.key, str(problem.path), problem.message
    return None
