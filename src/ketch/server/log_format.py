"""The server's log line layout (times in UTC), and the session each line belongs to.

Several sessions from one address (a client opening a connection per
transfer, users behind one NAT) log lines that ``client=`` cannot tell
apart. Each session is numbered when it connects, and every line logged
while it runs (its commands, its transfers, their warnings) ends with
``session=N``; connect, login and disconnect lines have it too, so one
``grep session=N`` shows a session whole. The number lives in a context
variable: asyncio copies the context into the tasks and callbacks a session
starts, so no log call has to pass it.
"""

from __future__ import annotations

import itertools
import logging
import time
from contextvars import ContextVar

__all__ = ["LOG_FORMAT", "SESSION", "LogFormatter", "next_session_number"]

#: The log line layout; a worker process names itself after the logger name.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(session)s"

#: The number of the session whose code is running, or None outside any session.
SESSION: ContextVar[int | None] = ContextVar("ketch_session", default=None)

_numbers = itertools.count(1)


def next_session_number() -> int:
    """A number no other session of this process has had (workers: with their label)."""
    return next(_numbers)


class LogFormatter(logging.Formatter):
    """``LOG_FORMAT``'s lines: ``%(session)s`` is `` session=N`` inside a session, else empty,
    and the time is UTC in ISO 8601 (``2026-11-22T12:48:46.199Z``).

    UTC, not local time: a local time without its offset cannot be matched with other
    machines' logs, a client's report, or certificate dates (which are UTC), and is
    ambiguous for an hour when daylight saving time ends.
    """

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        # Read when the line is written, which is at the log call: handlers here are
        # synchronous, so the context is still the caller's.
        if not hasattr(record, "session"):
            number = SESSION.get()
            record.session = "" if number is None else f" session={number}"
        return super().format(record)
