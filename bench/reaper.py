"""Run a forking server as the only child of a child subreaper: reaper.py COMMAND...

vsftpd and pure-ftpd run two processes per session, and the first one can
exit before the second: the second is then orphaned to PID 1 and its CPU
time leaves the server's process tree (nor does it reach the listener's
cutime). Under this wrapper, set as a child subreaper (prctl), orphans come
here instead and are reaped here, so their time ends up in this process's
cutime/cstime and the bench still sees it. The wrapper's own CPU time and
memory are not counted (servers.Server does that); SIGTERM and SIGINT are
passed on to the server, and the wrapper exits with the server's status.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    command = sys.argv[1:]
    if not command:
        print("usage: reaper.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    server = os.fork()
    if server == 0:
        try:
            os.execv(command[0], command)
        finally:
            os._exit(127)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            pid, status = os.wait()  # the server, or an orphaned session process
        except ChildProcessError:
            return 1
        if pid == server:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
