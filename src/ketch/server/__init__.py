"""The asyncio FTP server: listener, sessions, data channels, transfers, accounts, jail.

``FtpServer`` is imported lazily: ``ketch.config`` needs ``ketch.server.auth``,
and importing the listener here would make that a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch.server.listener import FtpServer

__all__ = ["FtpServer"]


def __getattr__(name: str) -> Any:
    if name == "FtpServer":
        from ketch.server.listener import FtpServer

        return FtpServer
    raise AttributeError(f"module 'ketch.server' has no attribute {name!r}")
