"""Self-signed certificates for FTPS: ``ketch cert`` and ``ketch serve --tls``.

A self-signed certificate gives encryption at once; clients cannot check it
against a CA, so they verify it by its SHA-256 fingerprint (printed with it)
or trust the certificate file itself (curl --cacert, lftp ssl:ca-file).
For a server others use, get a certificate from a CA (e.g. Let's Encrypt)
and set tls_certificate and tls_key to it.

Keys are ECDSA P-256: fast handshakes, and every TLS 1.2+ client (curl,
lftp/GnuTLS, Python, FileZilla) takes them. The key file is created with
mode 0600 from the start, never widened.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ketch.config_rules import is_hostname

__all__ = [
    "EXPIRY_WARNING",
    "CertificateFiles",
    "certificate_name",
    "describe_certificate",
    "ensure_serving_certificate",
    "fingerprint",
    "make_self_signed",
    "state_directory",
    "validity_warning",
    "write_certificate",
]

#: A certificate with less time left than this is warned about (at start, on reload);
#: `ketch serve --tls` makes its generated one again at start when it is this close to its end.
EXPIRY_WARNING = datetime.timedelta(days=14)


@dataclass(frozen=True)
class CertificateFiles:
    certificate: Path
    key: Path
    #: SHA-256 of the certificate (DER), as "AB:CD:...", for pinning.
    fingerprint: str
    hosts: tuple[str, ...]
    #: Issued by itself (as `ketch cert` and --tls make them): clients trust the file itself.
    self_signed: bool
    not_before: datetime.datetime
    not_after: datetime.datetime


def certificate_name(host: str) -> str:
    """``host`` as a certificate names it: an IP address, or a host name in ASCII (IDNA
    A-labels for a non-ASCII name, without a final dot); ValueError when it is neither."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii").removesuffix(".")
    except UnicodeError:  # an empty or over-long label
        name = ""
    if not is_hostname(name):
        raise ValueError(
            "not a host name or IP address; give a name such as ftp.example.com "
            "(letters, digits and '-' between dots) or an address such as 192.0.2.7"
        )
    return name


def _subject_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_self_signed(hosts: Sequence[str], days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed server certificate for ``hosts`` (names or IP addresses), PEM and key PEM.

    ValueError when a host is neither (see :func:`certificate_name`).
    """
    if not hosts:
        raise ValueError("a certificate needs at least one host name or IP address")
    if days < 1:
        raise ValueError("a certificate must be valid for at least 1 day")
    hosts = [certificate_name(host) for host in hosts]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(certificate_pem: bytes) -> str:
    """The SHA-256 fingerprint of the (first) certificate in ``certificate_pem``."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def write_certificate(
    directory: Path,
    hosts: Sequence[str],
    *,
    days: int = 365,
    stem: str | None = None,
    overwrite: bool = False,
) -> CertificateFiles:
    """Write ``<stem>.crt`` and ``<stem>.key`` (0600) in ``directory``; the stem is the host.

    Raises FileExistsError rather than replace files unless ``overwrite``.
    """
    certificate_pem, key_pem = make_self_signed(hosts, days)
    directory.mkdir(parents=True, exist_ok=True)
    stem = stem or certificate_name(hosts[0])
    certificate_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    if not overwrite:
        for path in (certificate_path, key_path):
            if path.exists():
                raise FileExistsError(path)
    _write_private(key_path, key_pem)
    certificate_path.write_bytes(certificate_pem)
    return _describe(certificate_path, key_path, certificate_pem)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that is 0600 from its first byte (replacing any old one)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _describe(certificate_path: Path, key_path: Path, certificate_pem: bytes) -> CertificateFiles:
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple(
            [*names.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        hosts = ()
    return CertificateFiles(
        certificate=certificate_path,
        key=key_path,
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
        hosts=hosts,
        self_signed=certificate.issuer == certificate.subject,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def describe_certificate(certificate_path: Path, key_path: Path) -> CertificateFiles:
    """What a certificate file holds (names, fingerprint, expiry)."""
    return _describe(certificate_path, key_path, certificate_path.read_bytes())


def validity_warning(files: CertificateFiles, now: datetime.datetime | None = None) -> str | None:
    """Why clients refuse (or soon will refuse) the certificate by its dates, and what to
    do; None while it is valid for longer than EXPIRY_WARNING."""
    now = now or datetime.datetime.now(datetime.UTC)
    span = f"valid {files.not_before:%Y-%m-%d %H:%M} to {files.not_after:%Y-%m-%d %H:%M} UTC"
    self_signed = "or make a self-signed one with `ketch cert --host NAME`"
    fix = f"renew it, {self_signed}, then reload (SIGHUP) or restart"
    if now >= files.not_after:
        return f"TLS certificate {files.certificate} has expired ({span}): clients refuse it; {fix}"
    if now < files.not_before:
        return (
            f"TLS certificate {files.certificate} is not valid yet ({span}): clients refuse "
            f"it until then; check this machine's clock, or use a certificate valid now "
            f"({self_signed}), then reload (SIGHUP) or restart"
        )
    left = files.not_after - now
    if left < EXPIRY_WARNING:
        when = f"in {left.days} day(s)" if left.days else "within a day"
        return f"TLS certificate {files.certificate} expires {when} ({span}); before then, {fix}"
    return None


def state_directory() -> Path:
    """Where ``ketch serve --tls`` keeps its generated certificate: $XDG_STATE_HOME/ketch."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ketch"


def ensure_serving_certificate(
    hosts: Sequence[str], directory: Path | None = None
) -> tuple[CertificateFiles, bool]:
    """The certificate ``ketch serve --tls`` uses, and whether it was generated just now.

    It is kept between runs, so its fingerprint stays the same for clients
    that pinned it; a new one is made when it is missing, unreadable, about
    to expire, or does not name all of ``hosts``.
    """
    directory = directory or state_directory()
    certificate_path = directory / "serve.crt"
    key_path = directory / "serve.key"
    try:
        existing = describe_certificate(certificate_path, key_path)
    except (OSError, ValueError):
        existing = None
    now = datetime.datetime.now(datetime.UTC)
    if (
        existing is not None
        and key_path.is_file()
        and existing.not_after - now > EXPIRY_WARNING
        and set(hosts) <= set(existing.hosts)
    ):
        return existing, False
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_certificate(directory, hosts, stem="serve", overwrite=True), True
