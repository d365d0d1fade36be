"""Stopping a server started in a process group of its own (``start_new_session=True``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

__all__ = ["signal_group", "stop_group"]


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """``sig`` to the process's group; a group that is gone already is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the group and wait up to ``timeout``; SIGKILL it if the process lingers.

    Bounded: at most twice ``timeout``. Safe on a process that has exited.
    """
    if process.poll() is not None:
        return
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        process.wait(timeout=timeout)
