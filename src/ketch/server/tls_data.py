"""Protected data connections (PROT P): the TLS handshake and TLS I/O on a data socket.

:class:`TlsOffer` wraps the offer PASV/EPSV/PORT/EPRT prepared: it makes
the connection as before (the same RFC 2577 checks), then runs the TLS
handshake as the TLS *server*, also in active mode where the server
connected out (RFC 4217 §7). It checks that the client resumed a TLS
session of this server (``tls_require_session_reuse``), then hands the
transfer a :class:`TlsDataChannel`.

:class:`TlsDataChannel` has the interface of
:class:`~ketch.server.data_channel.DataChannel` over a non-blocking
:class:`ssl.SSLSocket`. Every call is tried first; ``SSLWantReadError`` or
``SSLWantWriteError`` costs one wait for the socket (one future per wait,
as in ``DataChannel``). Bytes already decrypted inside OpenSSL
(``pending()``) are read without waiting, since the socket would never
signal them. Files are read in 1 MiB pieces into one buffer per channel and
written through TLS: there is no ``sendfile`` under TLS.

Ending: ``finish`` sends TLS close_notify (curl and lftp check for it: without
it a download could have been cut short by an attacker) waiting at most
:data:`CLOSE_NOTIFY_TIMEOUT`; the peer's own close_notify is not waited for
(RFC 8446 §6.1 allows that). An upload must end with the client's
close_notify: a bare TCP close may have cut it short (an attacker, or a client
bug such as lftp's with TLS 1.3 tickets), so it is refused with 426 and, for
STOR, nothing is stored. vsftpd accepts it by default (``strict_ssl_read_eof
= NO``); curl, lftp, FileZilla and Python's ftplib all send close_notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl

from ketch.server.data_channel import YIELD_EVERY, DataChannel, DataConnectionError
from ketch.server.data_offers import DataOffer
from ketch.server.readiness import Readiness
from ketch.server.tls import reuse_refusal
from ketch.server.transfers import TransferRefused

__all__ = ["TlsDataChannel", "TlsDataError", "TlsOffer"]

log = logging.getLogger("ketch.server.data")

#: The size of the piece a file is read in; each TLS download holds one such buffer.
_FILE_PIECE = 256 << 10  # per TLS download in progress: 1,000 of them hold 256 MiB
#: The most one TLS write takes (four full records): progress shows at least this often.
_TLS_WRITE = 64 << 10
#: How long ``finish`` waits to hand close_notify to the kernel.
CLOSE_NOTIFY_TIMEOUT = 5.0


class TlsDataError(DataConnectionError):
    """TLS on the data connection failed (RFC 4217: 522); the text is for the reply."""

    code = 522


class TlsDataChannel(DataChannel):
    """A data connection under TLS; same interface as :class:`DataChannel`."""

    #: The socket carries TLS records: no sendfile, no raw receive loop.
    zero_copy = False

    def __init__(self, sock: ssl.SSLSocket, mode: str, plain: DataChannel) -> None:
        # ``plain`` gave its socket to ``sock`` (wrap_socket detaches it); closing it
        # later only runs its own clean-up, such as releasing the passive port.
        super().__init__(sock, mode, plain.close)
        self.tls_sock = sock
        self._file_buffer: bytearray | None = None
        self._finished = False
        self._receive_budget = YIELD_EVERY

    async def handshake(self) -> None:
        """The server side of the TLS handshake (the caller bounds its time)."""
        while True:
            try:
                self.tls_sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await self._readable()
            except ssl.SSLWantWriteError:
                await self._writable()

    async def send_file(self, fd: int, offset: int, count: int | None = None) -> int:
        """Read the file in large pieces into one buffer and write each through TLS."""
        if self._file_buffer is None:
            self._file_buffer = bytearray(_FILE_PIECE)
        buffer = self._file_buffer
        view = memoryview(buffer)
        total = 0
        budget = YIELD_EVERY
        with self.readiness(write=True) as writable:
            while count is None or total < count:
                want = _FILE_PIECE if count is None else min(_FILE_PIECE, count - total)
                got = os.preadv(fd, [view[:want]], offset)
                if got == 0:
                    break
                waited = await self._send_view(view[:got], writable)
                offset += got
                total += got
                budget = YIELD_EVERY if waited else budget - got
                if budget <= 0:
                    budget = YIELD_EVERY
                    await asyncio.sleep(0)
        return total

    async def send_all(self, data: bytes) -> None:
        with self.readiness(write=True) as writable:
            await self._send_view(memoryview(data), writable)

    async def _send_view(self, view: memoryview, writable: Readiness) -> bool:
        """Write all of ``view``; True if it had to wait for the socket.

        OpenSSL, without partial writes, takes a write whole or asks to be
        called again with the same bytes after the wait; writes of
        :data:`_TLS_WRITE` keep the progress the stall watchdog sees fine-grained.
        """
        waited = False
        start = 0
        while start < len(view):
            piece = view[start : start + _TLS_WRITE]
            try:
                sent = self.tls_sock.send(piece)
            except ssl.SSLWantWriteError:
                waited = True
                await writable.wait()
                continue
            except ssl.SSLWantReadError:
                waited = True
                writable.release()  # else a writable socket calls it on every pass meanwhile
                await self._readable()
                continue
            self.bytes_moved += sent
            start += sent
        return waited

    async def receive_into(self, buffer: bytearray) -> int:
        """Decrypted bytes into ``buffer``; 0 at the end (the client's close_notify).

        OpenSSL gives one TLS record (16 KiB at most) per read: the buffer is
        filled from as many as have arrived, so the file gets one write per
        buffer, not one per record. A client faster than the server never makes
        this wait, so every ``YIELD_EVERY`` bytes it lets the event loop run
        (other sessions, ABOR).
        """
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer):
            try:
                count = self.tls_sock.recv_into(view[filled:])
            except ssl.SSLWantReadError:
                if filled:
                    break
                self._receive_budget = YIELD_EVERY
                await self._readable()
                continue
            except ssl.SSLWantWriteError:
                if filled:
                    break
                await self._writable()
                continue
            except ssl.SSLEOFError:
                if filled:
                    break  # what arrived before is stored first; the next read fails again
                raise TransferRefused(
                    426,
                    "Transfer aborted: the data connection closed without TLS close_notify, "
                    "so the data may be cut short; send it again.",
                ) from None
            if not count:
                break  # close_notify: the next call gets 0 again
            filled += count
        self.bytes_moved += filled
        self._receive_budget -= filled
        if self._receive_budget <= 0:
            self._receive_budget = YIELD_EVERY
            await asyncio.sleep(0)
        return filled

    async def finish(self) -> None:
        """Send close_notify, so the client knows the data is complete."""
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(OSError, ValueError, TimeoutError):
            async with asyncio.timeout(CLOSE_NOTIFY_TIMEOUT):
                while True:
                    try:
                        self.tls_sock.unwrap()
                        return
                    except ssl.SSLWantWriteError:
                        await self._writable()
                    except ssl.SSLWantReadError:
                        return  # ours is sent; the peer's is not worth waiting for

    def close(self) -> None:
        """Close; after an abort (no ``finish``) try close_notify once, without waiting."""
        if self._closed:
            return
        if not self._finished:
            self._finished = True
            with contextlib.suppress(OSError, ValueError):
                self.tls_sock.unwrap()
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.sock.close()
        self._on_close()


class TlsOffer(DataOffer):
    """A prepared data connection that is secured with TLS once it is made."""

    def __init__(
        self,
        plain: DataOffer,
        context: ssl.SSLContext,
        *,
        require_reuse: bool,
        timeout: float,
        who: str,
    ) -> None:
        self.mode = plain.mode
        self._plain = plain
        self._context = context
        self._require_reuse = require_reuse
        self._timeout = timeout
        #: The session's log fields ("user=... client=..."), so a warning can be matched
        #: to the session it concerns.
        self._who = who

    async def prepare(self) -> None:
        # The TCP connection only (active mode): the client starts TLS after the 150.
        await self._plain.prepare()

    async def connect(self) -> TlsDataChannel:
        plain = await self._plain.connect()
        context = self._context
        tickets = context.num_tickets
        # No TLS 1.3 session tickets on data connections: the client resumes the control
        # connection's session, and a ticket arriving while it uploads makes GnuTLS (lftp)
        # and some curl builds read it as the end of the connection, cutting the upload
        # short (lftp issue 666, curl issue 6149). OpenSSL copies the count into each
        # connection when it is made, and nothing else runs in between (no await).
        context.num_tickets = 0
        try:
            sock = context.wrap_socket(
                plain.sock,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,  # a bare TCP close must not look like the end
            )
        except BaseException:
            plain.close()
            raise
        finally:
            context.num_tickets = tickets
        channel = TlsDataChannel(sock, plain.mode, plain)
        try:
            async with asyncio.timeout(self._timeout):
                await channel.handshake()
        except TimeoutError:
            channel.close()
            raise TlsDataError(
                f"no TLS handshake on the data connection within {self._timeout:g} s; "
                "the client sent PROT P, so it must start TLS on the data connection"
            ) from None
        except (ssl.SSLError, OSError) as error:
            channel.close()
            raise TlsDataError(handshake_failure(error)) from None
        except BaseException:
            channel.close()
            raise
        refusal = reuse_refusal(sock, required=self._require_reuse)
        if refusal is not None:
            log.warning(
                "protected data connection refused %s mode=%s: no TLS session resumed",
                self._who,
                self.mode,
            )
            channel.close()
            raise TlsDataError(refusal)
        log.debug(
            "data connection secured mode=%s version=%s resumed=%s",
            self.mode,
            sock.version(),
            sock.session_reused,
        )
        return channel

    def close(self) -> None:
        self._plain.close()


def handshake_failure(error: OSError) -> str:
    """The 425/522 text for a failed data handshake: the likely cause and what to do."""
    reason = (error.reason if isinstance(error, ssl.SSLError) else error.strerror) or str(error)
    lowered = reason.lower().replace("_", " ")  # OpenSSL's TLSV1_ALERT_UNKNOWN_CA too
    if "unknown ca" in lowered or "certificate" in lowered:
        advice = (
            "the client does not trust this server's certificate: give it the CA that signed "
            "it (curl --cacert, ketch --cacert)"
        )
    elif ("version" in lowered or "protocol" in lowered) and "wrong version" not in lowered:
        # (WRONG_VERSION_NUMBER is what OpenSSL says of bytes that are no TLS at all.)
        advice = "the client must use TLS 1.2 or newer"
    else:
        advice = "the client must start TLS on the data connection after PROT P, or send PROT C"
    return f"the TLS handshake on the data connection failed ({reason}); {advice}"
