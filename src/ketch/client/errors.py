"""What can go wrong in a client session, as exceptions that explain themselves.

Every exception's ``str()`` is one line a person can act on: what happened,
then (after " — ") what to try. The CLI prints exactly that line and maps the
class to an exit code, so scripts can branch on the kind of failure.
"""

from __future__ import annotations

from ketch.protocol import Reply

#: Replies that mean "this server does not have the command" (RFC 959: 500 not
#: understood, 502 not implemented, 504 not implemented for that parameter), as
#: against a refusal about the path or the account, such as 550.
NOT_IMPLEMENTED = frozenset({500, 502, 504})

__all__ = [
    "NOT_IMPLEMENTED",
    "ConnectFailed",
    "DataConnectionFailed",
    "FtpError",
    "HashUnsupported",
    "InvalidArgument",
    "LocalFileError",
    "LoginFailed",
    "PermanentReplyError",
    "ProtocolError",
    "ReplyError",
    "TransientReplyError",
    "UnreadableListing",
    "VerifyFailed",
    "reply_error",
    "unresolvable",
]


class FtpError(Exception):
    """Base class: ``str(error)`` is the one-line message for people."""

    #: Whether ``hint`` already says to resume with -c (a cut-off download's own advice).
    advises_resume = False

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        super().__init__(what, hint)

    def __str__(self) -> str:
        # From the parts, so a caller that adds to the hint changes the message too.
        return f"{self.what} — {self.hint}" if self.hint else self.what


class InvalidArgument(FtpError, ValueError):
    """An argument FTP cannot carry (a line break in a path or a password): the caller's to fix."""


class ConnectFailed(FtpError):
    """The control connection could not be opened (DNS, refused, timeout, closed)."""


def unresolvable(host: str, error: OSError) -> ConnectFailed:
    """The error for a host name DNS does not resolve (``socket.gaierror``)."""
    return ConnectFailed(
        f"cannot resolve host {host!r}: {error.strerror}",
        "check the spelling of the host name and your DNS",
    )


class LoginFailed(FtpError):
    """The server refused the user name or password."""


class ProtocolError(FtpError):
    """The server said something that is not valid FTP, or closed the connection."""


class ReplyTimedOut(ProtocolError):
    """No reply came within the timeout; one may still come, late."""


class UnreadableListing(ProtocolError):
    """A listing came whole but is not in its format; the session goes on in step."""


class LocalFileError(FtpError):
    """A local file could not be read or written."""


class ReplyError(FtpError):
    """The server answered a command with an error reply."""

    def __init__(self, command: str, reply: Reply, hint: str = "") -> None:
        self.command = command
        self.reply = reply
        text = " ".join(line.strip() for line in reply.lines)
        super().__init__(f"{command} failed: {reply.code} {text}", hint)

    @property
    def code(self) -> int:
        return self.reply.code


class TransientReplyError(ReplyError):
    """A 4xx reply: the command may succeed if tried again later."""


class PermanentReplyError(ReplyError):
    """A 5xx reply: the command will not succeed as sent."""


class DataConnectionFailed(FtpError):
    """No data connection could be made for a transfer or listing.

    ``mode`` is the data-connection command that was tried (EPSV, PASV, EPRT
    or PORT); ``address`` is ``host:port`` of the far end when known.
    ``cause`` says how the TCP connection itself failed, when it did:
    "timeout", "refused" or "unreachable" (``ketch doctor`` classifies by it).
    ``remedy`` is what would make this mode work, without ``hint``'s "use the
    other mode": when both modes fail, the message gives each mode's remedy.
    """

    def __init__(
        self,
        what: str,
        hint: str,
        *,
        mode: str,
        address: str = "",
        cause: str = "",
        remedy: str = "",
        advises_resume: bool = False,
    ) -> None:
        self.mode = mode
        self.address = address
        self.cause = cause
        self.remedy = remedy or hint
        self.advises_resume = advises_resume
        super().__init__(what, hint)


class HashUnsupported(FtpError):
    """The server offers no command that hashes a file (HASH, XSHA256, ...)."""


class VerifyFailed(FtpError):
    """The server's hash of a file differs from the local copy's."""

    def __init__(self, what: str, hint: str, *, remote_digest: str, local_digest: str) -> None:
        self.remote_digest = remote_digest
        self.local_digest = local_digest
        super().__init__(what, hint)


def reply_error(command: str, reply: Reply, hint: str = "") -> ReplyError:
    """The right ReplyError subclass for ``reply``'s code."""
    kind = TransientReplyError if reply.code < 500 else PermanentReplyError
    return kind(command, reply, hint or _hint_for(reply.code))


def _hint_for(code: int) -> str:
    """A generic next step for common error codes; specific callers pass better ones."""
    if code in (450, 550):
        return "check that the path exists and that this account may use it"
    if code == 421:
        return "the server closed the session; connect again later"
    if code in (451, 452):
        return "the server had a local problem; try again later or ask its admin"
    if code in (530, 532):
        return "log in with an account that has access"
    if code == 552:
        return "the server's storage or quota is full; free space or ask its admin"
    if code == 553:
        return "the file name is not allowed on this server; choose another"
    if code == 522:  # RFC 4217: the data connection's TLS was refused
        return "the server refused TLS on the data connection; check its FTPS settings"
    if code in NOT_IMPLEMENTED:
        return "this server does not support the command"
    return ""
