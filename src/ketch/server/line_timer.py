"""Slowloris protection for the control connection: a started line must end in time.

``idle_timeout`` bounds the wait for the *start* of a command, but every byte
resets it, so a client sending one byte every few seconds and never a line
end could hold a connection (and its slot) forever. The timer here runs
while the server waits for the rest of an unfinished line; when it exceeds
``line_timeout`` the session says 421 and closes.

It only counts time spent waiting for the client: while the session is busy
with the commands that came before the unfinished line (a transfer that
pipelined commands wait for, rate limiting), the line is not charged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized

__all__ = ["LineTimer"]


class LineTimer:
    """Tracks whether a line is unfinished and since when the server waits for its end."""

    __slots__ = ("_clock", "_open", "_waiting_since", "timeout")  # one per session

    def __init__(self, timeout: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        #: Whether the last bytes received left a line unfinished.
        self._open = False
        self._waiting_since: float | None = None

    def start_waiting(self) -> None:
        """The session is about to wait for input."""
        if self._open and self._waiting_since is None:
            self._waiting_since = self._clock()

    def received(self, data: bytes, events: Sized) -> None:
        """``data`` arrived and completed ``len(events)`` lines."""
        # Every line ends with LF (also an over-long one being discarded).
        self._open = bool(data) and not data.endswith(b"\n")
        if events or not self._open:
            # Any unfinished tail is a new line: its clock starts at the next wait.
            self._waiting_since = None

    def remaining(self) -> float | None:
        """Seconds left to finish the unfinished line, or None when no line is unfinished."""
        if self._waiting_since is None:
            return None
        return self.timeout - (self._clock() - self._waiting_since)
