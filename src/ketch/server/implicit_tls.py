"""The implicit FTPS listener: accepted in the clear, admitted, then TLS from the first byte.

Bans and connection limits apply before a TLS handshake costs anything, so
the connection is accepted here as a plain socket and only an admitted one
is handed to ``loop.connect_accepted_socket(..., ssl=...)``, whose transport
reads nothing outside TLS.

Why not ``create_server`` with a plain protocol and ``start_tls`` once the
connection is admitted: under uvloop the transport reads as soon as it
exists (``pause_reading`` in ``connection_made`` is ignored, a known asyncio
and uvloop limitation), so a ClientHello that came before the session task
reached ``start_tls`` was taken by the plain protocol and lost to TLS; the
handshake then waited for it until its timeout. Client and tests saw it as
an implicit FTPS connection that hung about one time in three.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["ImplicitTlsListener"]

log = logging.getLogger("ketch.server")

# Connections taken per wake-up before the event loop serves others again.
_ACCEPT_BURST = 64
# After running out of descriptors or memory, the pause before trying again: the
# waiting connections stay in the backlog meanwhile, instead of the loop spinning.
_RETRY_AFTER = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ImplicitTlsListener:
    """Accepts on the implicit FTPS socket and gives each connection to ``on_accept``."""

    def __init__(
        self, sock: socket.socket, on_accept: Callable[[socket.socket, Any], None]
    ) -> None:
        self._sock = sock
        self._on_accept = on_accept
        self._loop = asyncio.get_running_loop()
        self._retry: asyncio.TimerHandle | None = None
        self._watching = False
        self._closed = False

    def start(self) -> None:
        self._sock.setblocking(False)
        self._watch()

    def close(self) -> None:
        """Stop accepting and close the socket (new connections are refused)."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._unwatch()  # before the close: the descriptor number may be reused
        self._sock.close()

    def _watch(self) -> None:
        self._retry = None
        if not self._closed and not self._watching:
            self._loop.add_reader(self._sock.fileno(), self._accept_ready)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    def _accept_ready(self) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # reset while in the backlog
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    log.info("implicit FTPS: a connection failed before accept: %s", error)
                    continue  # that connection's own trouble (EPROTO, EPERM...)
                log.warning(
                    "implicit FTPS: cannot accept connections (%s); trying again in %g s",
                    error,
                    _RETRY_AFTER,
                )
                self._unwatch()
                self._retry = self._loop.call_later(_RETRY_AFTER, self._watch)
                return
            self._on_accept(conn, peer)
