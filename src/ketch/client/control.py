"""The client's control connection: send command lines, read complete replies.

Framing and reply parsing are ketch.protocol's; this module adds the socket,
timeouts and the transcript. The transcript goes to the ``ketch.client.transcript``
logger at DEBUG level with passwords masked, which is what ``ketch -v`` prints.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import ssl

from ketch.client.errors import (
    ConnectFailed,
    FtpError,
    InvalidArgument,
    ProtocolError,
    ReplyTimedOut,
    unresolvable,
)
from ketch.client.tls import TlsFailed, certificate_problem
from ketch.protocol import Reply, ReplyParser, ReplySyntaxError, encode_text, format_host_port

__all__ = ["ControlConnection", "mask_secrets"]

transcript = logging.getLogger("ketch.client.transcript")

_READ_SIZE = 65536
_SECRET_VERBS = ("PASS ", "ACCT ")
_RESYNC_TIMEOUT = 10.0
#: How long a cancelled task (Ctrl-C, a caller's timeout) still waits for the server to
#: resynchronise or say goodbye: it answers at once or the connection is closed.
INTERRUPTED_WAIT = 2.0


def being_cancelled() -> bool:
    """Whether the running task is being cancelled: clean-up must not wait long then."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def mask_secrets(line: str) -> str:
    """The line as it may be shown to people: PASS/ACCT arguments hidden."""
    if line[:5].upper() in _SECRET_VERBS:
        return line[:5] + "****"
    return line


class ControlConnection:
    """One open control connection; every wait on it is bounded by ``timeout``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        host: str,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = ReplyParser()
        self._ready: collections.deque[Reply] = collections.deque()
        self._read_ahead: Reply | None = None  # see keep_for_next_read
        self.closed = False
        self.host = host  # the name the user gave, for messages
        self.timeout = timeout
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.peer_ip: str = peer[0]
        self.local_ip: str = local[0]
        sock = writer.get_extra_info("socket")
        self.family: int = sock.family if sock is not None else socket.AF_INET

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        timeout: float,  # noqa: ASYNC109
        tls: ssl.SSLContext | None = None,
    ) -> ControlConnection:
        """Connect to ``host:port`` (in TLS from the start with ``tls``: implicit FTPS).

        The caller reads the greeting.
        """
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    limit=_READ_SIZE,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                connect_timeout,
            )
        except ssl.SSLError as error:  # before OSError: it is one, but not a refused connection
            raise certificate_problem(error, host) from None
        except TimeoutError:
            raise ConnectFailed(
                f"connecting to {format_host_port(host, port)} timed out "
                f"after {connect_timeout:g} s",
                "check the host name and port, and that no firewall drops the connection",
            ) from None
        except socket.gaierror as error:
            raise unresolvable(host, error) from None
        except OSError as error:
            # asyncio's connect errors carry an errno but a message of their own.
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise ConnectFailed(
                f"cannot connect to {format_host_port(host, port)}: {reason}",
                "check that an FTP server runs there and that the port is right",
            ) from None
        return cls(reader, writer, host=host, timeout=timeout)

    @property
    def tls_session(self) -> ssl.SSLSession | None:
        """The control connection's current TLS session, for data connections to resume.

        Read it when a data connection opens, not right after the handshake:
        TLS 1.3 servers send their session tickets after it.
        """
        ssl_object = self._writer.get_extra_info("ssl_object")
        return ssl_object.session if ssl_object is not None else None

    @property
    def tls_version(self) -> str | None:
        ssl_object = self._writer.get_extra_info("ssl_object")
        return ssl_object.version() if ssl_object is not None else None

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Secure the open connection (after the server's 234 to AUTH TLS).

        Anything received after the 234 and before the handshake came in the
        clear and would be read as if it came over TLS: a man in the middle can
        inject replies that way (CVE-2011-0411, client side). Refuse instead.
        """
        # StreamReader has no public way to look at what it buffered.
        buffered = len(getattr(self._reader, "_buffer", b""))
        if self._ready or self._read_ahead is not None or self._parser.pending or buffered:
            await self.close()
            raise TlsFailed(
                f"{self.host} sent more data in the clear after accepting AUTH TLS, "
                "before the TLS handshake; something on the path may be injecting replies",
                "do not trust this connection; try again, and from another network if it "
                "happens again",
            )
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.start_tls(context, server_hostname=self.host)
        except ssl.SSLError as error:
            await self.close()
            raise certificate_problem(error, self.host) from None
        except TimeoutError:
            await self.close()
            raise ConnectFailed(
                f"TLS handshake with {self.host} did not finish within {self.timeout:g} s",
                "check that the server speaks FTPS; raise --timeout on a slow link",
            ) from None
        except OSError as error:
            await self.close()
            raise self._lost(error) from None

    async def send(self, line: str) -> None:
        """Send one command line; CR or LF inside it would smuggle a second command.

        A 0xFF byte (a non-UTF-8 name's) is doubled: alone it is Telnet's IAC, which
        the server would take as a Telnet command (RFC 959 §4.1, RFC 2640 §3.1).
        """
        if "\r" in line or "\n" in line:
            raise InvalidArgument(
                f"cannot send {mask_secrets(line)!r}: FTP cannot carry a line break (CR or LF)",
                "remove it from the path or password (one read from a file keeps its newline)",
            )
        if self.closed:
            raise ProtocolError(f"the control connection to {self.host} is closed", "connect again")
        transcript.debug("> %s", mask_secrets(line))
        self._writer.write(encode_text(line).replace(b"\xff", b"\xff\xff") + b"\r\n")
        try:
            await self._writer.drain()
        except OSError as error:
            raise self._lost(error) from None

    async def read_reply(self, timeout: float | None = None) -> Reply:  # noqa: ASYNC109
        """The next complete reply (preliminary 1xx replies included)."""
        if self._read_ahead is not None:  # in the transcript already
            reply, self._read_ahead = self._read_ahead, None
            return reply
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                while not self._ready:
                    await self._fill()
        except TimeoutError:
            raise ReplyTimedOut(
                f"no reply from {self.host} within {limit:g} s",
                "the server or the network stalled; try again, or raise --timeout",
            ) from None
        reply = self._ready.popleft()
        for index, text in enumerate(reply.lines):
            last = index == len(reply.lines) - 1
            transcript.debug("< %s%s%s", reply.code, " " if last else "-", text)
        return reply

    async def command(self, line: str) -> Reply:
        """Send ``line`` and return the server's first reply to it.

        When the reply does not come in time, the conversation is resynchronised
        (or closed) before the error is raised: a reply that came late, such as
        a HASH of a big file, would otherwise answer the next command.
        """
        await self.send(line)
        try:
            return await self.read_reply()
        except ReplyTimedOut:
            await self.resync()
            raise

    def keep_for_next_read(self, reply: Reply) -> None:
        """Make ``reply``, read too early, the next read_reply's result.

        Watching for a 425 after a 150 can read the transfer's final reply
        before its data connection is taken; the transfer's end must still get it.
        """
        self._read_ahead = reply

    def has_pending_reply(self) -> bool:
        """Whether a complete reply is already buffered."""
        return bool(self._ready) or self._read_ahead is not None

    async def _fill(self) -> None:
        try:
            data = await self._reader.read(_READ_SIZE)
        except OSError as error:
            raise self._lost(error) from None
        if not data:
            raise ProtocolError(
                f"{self.host} closed the control connection",
                "the server may have timed out or refused the session; connect again",
            )
        try:
            self._ready.extend(self._parser.feed(data))
        except ReplySyntaxError as error:
            raise ProtocolError(
                f"{self.host} sent something that is not an FTP reply: {error}",
                "check that the port belongs to an FTP server",
            ) from None

    def _lost(self, error: OSError) -> ProtocolError:
        return ProtocolError(
            f"lost the control connection to {self.host}: {error.strerror or error}",
            "connect again",
        )

    async def resync(self) -> None:
        """Bring the conversation back in step after a transfer was abandoned.

        ABOR stops whatever the server still does for it, and replies are read
        up to its 2xx, or up to the second final reply. Only then is NOOP sent
        and replies read up to NOOP's 200, so a late 426 or 425 cannot answer
        the next command. NOOP must not go out with ABOR: pure-ftpd reads both
        while aborting and drops the NOOP.
        If that fails the connection is closed: a session that is out of step
        would pair replies with the wrong commands.
        """
        limit = INTERRUPTED_WAIT if being_cancelled() else max(_RESYNC_TIMEOUT, self.timeout)
        try:
            async with asyncio.timeout(limit):
                await self.send("ABOR")
                # 426/451 end the transfer; a 2xx (or a 5xx refusal) ends ABOR. Two final
                # replies end both whatever their codes: pure-ftpd answers 426 and 451.
                finals = 0
                while finals < 2:
                    code = (await self.read_reply(limit)).code
                    if code // 100 in (2, 5):
                        break
                    finals += code >= 200
                await self.send("NOOP")
                while (await self.read_reply(limit)).code != 200:
                    pass
        except (FtpError, TimeoutError):
            transcript.debug("could not resynchronise; closing the control connection")
            await self.close()
        except BaseException:
            # Cancelled (Python 3.11.0-3.11.2 also report a timeout in a cancelled task so):
            # a session left out of step would pair replies with the wrong commands.
            await self.close()
            raise

    async def close(self) -> None:
        """Close the socket without a goodbye (QUIT is the caller's)."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 2)
