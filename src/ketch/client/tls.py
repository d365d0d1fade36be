"""FTPS for the client: the TLS settings, the SSL context, and TLS on raw sockets.

Explicit TLS (RFC 4217) upgrades a plain control connection with AUTH TLS;
implicit TLS (``ftps://``, port 990) speaks TLS from the first byte. Either
way the client then sends PBSZ 0 and PROT P, so data connections are
encrypted too, and each data connection *resumes the control connection's
TLS session*: servers such as vsftpd with ``require_ssl_reuse=YES`` use that
to know the data connection comes from the same client (Python's ftplib does
not, and fails there).

Data connections are raw non-blocking sockets (data_stream.py), so TLS on
them is an ``ssl.SSLSocket`` driven here by hand: try the call, and on
SSLWantRead/SSLWantWrite wait until the socket is readable or writable. A
call is always tried before waiting, so bytes OpenSSL already holds
(``pending()``) are never left waiting for the socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ketch.client.errors import ConnectFailed, DataConnectionFailed, FtpError, InvalidArgument

if TYPE_CHECKING:
    from ketch.client.control import ControlConnection
    from ketch.client.data_stream import DataStream
    from ketch.protocol import Reply

__all__ = [
    "TlsFailed",
    "TlsMode",
    "TlsSettings",
    "call_tls",
    "certificate_problem",
    "secure_data_connection",
]

log = logging.getLogger("ketch.client")

T = TypeVar("T")

_REFUSAL_WAIT = 2.0  # after a failed data handshake, how long to wait for the server's reason

TlsMode = Literal["explicit", "implicit"]


class TlsFailed(ConnectFailed):
    """The control connection could not be secured: AUTH TLS refused, or a bad certificate."""


@dataclass(frozen=True)
class TlsSettings:
    """How a client uses TLS (see Client's docstring).

    ``context``, when given, is used as it is (client certificates, pinned
    ciphers); otherwise one is made from ``cafile`` and ``verify``.
    """

    mode: TlsMode = "explicit"
    cafile: str | None = None
    verify: bool = True
    context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.cafile is not None and not self.verify and self.context is None:
            raise InvalidArgument(
                "cafile and verify=False contradict each other",
                "pick one: cafile to check the certificate against it, or verify=False",
            )

    def make_context(self) -> ssl.SSLContext:
        """The context for the control connection and every data connection.

        One context for all of them: a TLS session can only be resumed through
        the context that made it.
        """
        if self.context is not None:
            return self.context
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise TlsFailed(
                f"cannot load CA certificates from {self.cafile}: {reason}",
                "name a PEM file holding the certificate of the CA that signed the server's",
            ) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the chain is
# trusted, but for other names; a CA file would not help there.
_NAME_MISMATCH = frozenset({62, 64})


def certificate_problem(error: ssl.SSLError, host: str) -> TlsFailed:
    """A TLS handshake failure on the control connection, told so a person can act."""
    if isinstance(error, ssl.SSLCertVerificationError) and (
        getattr(error, "verify_code", None) in _NAME_MISMATCH
    ):
        return TlsFailed(
            f"the TLS certificate of {host} does not name it: {error.verify_message}",
            "connect by a name (or address) the certificate was issued for, or (unsafe) "
            "skip the check with --insecure",
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return TlsFailed(
            f"the TLS certificate of {host} is not trusted: {error.verify_message}",
            "give the CA certificate that signed it with --cacert FILE, or (unsafe) "
            "skip the check with --insecure",
        )
    return TlsFailed(
        f"TLS handshake with {host} failed: {error.reason or error}",
        "check that the port speaks FTPS of this kind (ftps:// is implicit TLS, "
        "--ftps is AUTH TLS on ftp://) and that the server allows TLS 1.2 or later",
    )


async def _until_ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, read: bool) -> None:
    """Wait until ``sock`` is readable (or writable); the caller bounds the wait."""
    ready = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if read:
        loop.add_reader(fd, wake)
    else:
        loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        if read:
            loop.remove_reader(fd)
        else:
            loop.remove_writer(fd)


async def call_tls(
    loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket, operation: Callable[[], T]
) -> T:
    """Run a non-blocking SSLSocket call to completion, waiting on the socket as it asks."""
    while True:
        try:
            return operation()
        except ssl.SSLWantReadError:
            await _until_ready(loop, sock, read=True)
        except ssl.SSLWantWriteError:
            await _until_ready(loop, sock, read=False)


async def secure_data_connection(
    control: ControlConnection, stream: DataStream, context: ssl.SSLContext
) -> None:
    """TLS on a data connection, resuming the control connection's session.

    Only after the server's 150 to the transfer command, as curl does it:
    servers start their side of the handshake then. A server that refuses the handshake says why
    on the control connection, and that goes into the error.
    """
    try:
        await stream.start_tls(context, control.host, control.tls_session)
    except DataConnectionFailed as error:
        stream.abort()
        reason = await _late_refusal(control)
        await control.resync()
        if reason is None:
            raise
        raise DataConnectionFailed(
            f"{error.what}; the server said: {reason.code} {reason.text.strip()}",
            error.hint,
            mode=error.mode,
            address=error.address,
        ) from None
    except BaseException:  # cancelled: the transfer is abandoned
        stream.abort()
        await control.resync()
        raise
    log.debug(
        "data connection: %s, TLS session %s",
        stream.tls_version,
        "resumed" if stream.session_reused else "NOT resumed (the server may refuse it)",
    )


async def _late_refusal(control: ControlConnection) -> Reply | None:
    """The server's error reply after a failed data handshake, if it sends one soon."""
    try:
        reply = await control.read_reply(timeout=_REFUSAL_WAIT)
    except FtpError:
        return None
    return reply if reply.code >= 400 else None
