"""``workers = N``: N server processes sharing the control port, under one supervisor.

The ``ketch serve`` process becomes the *supervisor*. It does everything that
needs root or happens once, in this order:

1. binds one listening socket per worker, all on the same port with
   ``SO_REUSEPORT``, so the kernel spreads new connections over the workers;
2. starts one port-20 helper per worker when ``run_as`` is set and active
   mode needs a source port below 1024 (a helper answers one process);
3. drops to ``run_as``;
4. forks the workers, and from then on only supervises.

Each worker is a whole single-process server on its slot's listening socket,
with its own event loop, sessions, limits, counters and log label. The passive
range is cut into contiguous slices, one per worker, so two workers never hand
out the same port. The supervisor keeps every slot's socket and helper open, so
a crashed worker is restarted on the same socket (connections that arrived
meanwhile wait in its backlog) with the same helper and passive slice.

Signals: SIGTERM or SIGINT to the supervisor is passed on to every worker as
SIGUSR1 (graceful stop), a second one as SIGUSR2 (cut off); SIGHUP is passed on
(each worker reloads the file itself). Not as SIGTERM, which a worker may also
get straight from a signal to the whole process group (systemd's default
KillMode, `timeout`, kill -TERM -PGID): that one stop request would then reach
it twice and cut every transfer off. A worker's own SIGTERM still stops it (a
second one cuts off). Workers ignore SIGINT, so Ctrl-C in a terminal, which
reaches the whole process group, counts once. A worker whose supervisor dies
(even killed) sees its lifeline pipe close and stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ketch.config import PortRange
from ketch.server import event_loop, port20_helper
from ketch.server.listener import listening_socket
from ketch.server.privileges import (
    drop_privileges,
    refuse_unbindable_passive_ports,
    resolve_run_as,
    warn_after_drop,
)
from ketch.server.tls import ServerTls

if TYPE_CHECKING:
    from ketch.config import ServerConfig
    from ketch.server.lifecycle import Lifecycle
    from ketch.server.port20_helper import LowPortHelper
    from ketch.server.privileges import RunAs

__all__ = ["Supervisor", "bind_sockets", "serve_workers", "split_ports"]

log = logging.getLogger("ketch.server")

_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
#: What the supervisor sends the workers: stop gracefully; cut every session off.
_STOP_GRACEFULLY, _CUT_OFF = signal.SIGUSR1, signal.SIGUSR2
# Blocked from before the fork until a worker's event loop handles them.
_FROM_SUPERVISOR = {_STOP_GRACEFULLY, _CUT_OFF}
# A worker that dies sooner than this after starting is restarted after a delay
# that doubles with each such quick death, up to _MAX_BACKOFF.
_QUICK_DEATH = 10.0
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 30.0
# After the stop signal, workers get shutdown_grace plus this long before SIGKILL.
_STOP_SLACK = 30.0

Describe = Callable[..., str]


def split_ports(ports: PortRange, count: int) -> list[PortRange]:
    """``count`` contiguous, disjoint slices covering ``ports``, sizes differing by one at most."""
    if count > ports.size:
        raise ValueError(f"cannot split {ports.size} passive ports between {count} workers")
    size, extra = divmod(ports.size, count)
    slices = []
    low = ports.low
    for index in range(count):
        high = low + size - 1 + (1 if index < extra else 0)
        slices.append(PortRange(low, high))
        low = high + 1
    return slices


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets sharing one port (port 0: the first one picks it)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = listening_socket(host, port, reuse_port=True)
            sockets.append(sock)
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass
class _Slot:
    """One worker's place: what survives the worker, and its current process."""

    number: int  # 1-based, as logs show it
    sock: socket.socket
    ports: PortRange
    helper: LowPortHelper | None
    pid: int | None = None
    started: float = 0.0
    restart_at: float | None = None
    quick_deaths: int = 0


def serve_workers(
    config: ServerConfig,
    config_file: Path | None,
    build_config: Callable[[], ServerConfig],
    describe: Describe,
) -> None:
    """Run ``config.workers`` workers until a stop signal; see the module text."""
    run_as = resolve_run_as(config.run_as)
    refuse_unbindable_passive_ports(config)
    loop_name = event_loop.resolve(config.event_loop)  # fails here, not in every worker
    count = config.workers
    sockets = bind_sockets(config.resolved_listen_address(), config.port, count)
    host, port = sockets[0].getsockname()[:2]
    helpers: list[LowPortHelper | None] = [None] * count
    try:
        if run_as is not None:
            for index in range(count):
                helpers[index] = port20_helper.start_for(config.active_source_port, host, port)
                if helpers[index] is None:
                    break  # no source port below 1024: no helper needed
        # Loaded before root is dropped (the key is often root's only); workers inherit it.
        tls = ServerTls.from_config(config)
        if run_as is not None:
            drop_privileges(run_as)
            warn_after_drop(config, run_as, config_file)
        slots = [
            _Slot(number, sock, ports, helper)
            for number, (sock, ports, helper) in enumerate(
                zip(sockets, split_ports(config.passive_ports, count), helpers, strict=True),
                start=1,
            )
        ]
        supervisor = Supervisor(config, config_file, build_config, slots, run_as, tls=tls)
        supervisor.start()
        print(
            describe(
                config,
                (host, port),
                run_as,
                [helper for helper in helpers if helper is not None],
                loop_name,
                [(slot.pid, slot.ports) for slot in slots],
                certificate=tls.files if tls else None,
            ),
            flush=True,
        )
        supervisor.run()
    finally:
        for sock in sockets:
            sock.close()
        for helper in helpers:
            if helper is not None:
                helper.close()


class Supervisor:
    """Forks the workers, restarts the ones that die, passes signals on, waits for the end."""

    def __init__(
        self,
        config: ServerConfig,
        config_file: Path | None,
        build_config: Callable[[], ServerConfig],
        slots: Sequence[_Slot],
        run_as: RunAs | None,
        *,
        tls: ServerTls | None = None,
    ) -> None:
        self._config = config
        self._tls = tls
        self._config_file = config_file
        self._build_config = build_config
        self._slots = list(slots)
        self._run_as = run_as
        self._stopping = False
        self._kill_at = 0.0
        #: The longest shutdown_grace any worker may be using (a reload can raise it).
        self._grace = config.shutdown_grace
        self._reloaded = False  # restarted workers must read the file again
        # Workers hold the reading end; it closes (EOF) when the supervisor goes.
        self._lifeline_read, self._lifeline_write = os.pipe()

    # -- the supervisor's side ------------------------------------------------

    def start(self) -> None:
        """Block the handled signals (``run`` takes them in turn) and fork every worker."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED | _FROM_SUPERVISOR)
        for slot in self._slots:
            self._spawn(slot)

    def run(self) -> None:
        """Supervise until a stop signal and the exit of every worker."""
        try:
            while True:
                received = signal.sigtimedwait(_HANDLED, self._wait_time())
                if received is not None:
                    self._on_signal(received.si_signo)
                self._reap()
                if self._stopping:
                    if all(slot.pid is None for slot in self._slots):
                        break
                    if time.monotonic() >= self._kill_at:
                        self._kill_remaining()
                else:
                    self._restart_due()
        finally:
            os.close(self._lifeline_write)
            os.close(self._lifeline_read)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED | _FROM_SUPERVISOR)
        log.info("supervisor: every worker has exited")

    def _wait_time(self) -> float:
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        if not due or self._stopping:
            return 1.0
        return min(1.0, max(0.0, min(due) - time.monotonic()))

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if self._stopping:
                return
            log.info("supervisor: SIGHUP: passing it on to the workers")
            self._reloaded = True
            self._grace = max(self._grace, self._reloaded_grace())
            self._signal_workers(signal.SIGHUP)
            return
        order = _CUT_OFF if self._stopping else _STOP_GRACEFULLY
        if not self._stopping:
            self._stopping = True
            self._kill_at = time.monotonic() + self._grace + _STOP_SLACK
            log.info("supervisor: %s: stopping the workers", name)
            # New connections are refused at once: only the workers' copies stay open.
            for slot in self._slots:
                slot.sock.close()
        else:
            log.info("supervisor: %s again: the workers cut off their sessions now", name)
        self._signal_workers(order)

    def _reloaded_grace(self) -> float:
        """shutdown_grace as the reloaded file has it, which the workers then wait for.

        The larger of old and new is kept: a file the workers refuse leaves them
        on the old value, and waiting longer than needed costs nothing (the
        supervisor ends as soon as every worker has exited).
        """
        try:
            return self._build_config().shutdown_grace
        except Exception:  # the workers log what is wrong with the file
            return self._grace

    def _signal_workers(self, signum: signal.Signals) -> None:
        for slot in self._slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _reap(self) -> None:
        for slot in self._slots:
            if slot.pid is None:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            slot.pid = None
            self._exited(slot, pid, status)

    def _exited(self, slot: _Slot, pid: int, status: int) -> None:
        how = _exit_text(status)
        if self._stopping:
            log.info("supervisor: worker %d (pid %d) %s", slot.number, pid, how)
            return
        ran = time.monotonic() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if ran < _QUICK_DEATH else 0
        delay = (
            min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** (slot.quick_deaths - 1))
            if slot.quick_deaths
            else 0.0
        )
        log.warning(
            "supervisor: worker %d (pid %d) %s after %.1f s; restarting it in %g s",
            slot.number,
            pid,
            how,
            ran,
            delay,
        )
        slot.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.pid is None and slot.restart_at is not None and slot.restart_at <= now:
                self._spawn(slot)

    def _kill_remaining(self) -> None:
        for slot in self._slots:
            if slot.pid is not None:
                log.warning(
                    "supervisor: worker %d (pid %d) has not exited; killing it",
                    slot.number,
                    slot.pid,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGKILL)
        self._kill_at = time.monotonic() + _STOP_SLACK

    def _spawn(self, slot: _Slot) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                code = self._worker(slot)
            except BaseException:
                log.exception("worker %d failed", slot.number)
            finally:
                logging.shutdown()
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        slot.pid = pid
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info(
            "supervisor: worker %d started (pid %d, passive ports %s)",
            slot.number,
            pid,
            slot.ports,
        )

    # -- the worker's side ------------------------------------------------------

    def _worker(self, slot: _Slot) -> int:
        """The body of a forked worker; the exit code."""
        os.close(self._lifeline_write)
        for other in self._slots:
            if other is not slot:
                other.sock.close()
                if other.helper is not None:
                    other.helper.release()
        # The supervisor passes Ctrl-C on; the other signals stay blocked until the
        # event loop handles them, so one that comes early waits instead of killing us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _label_logs(f"worker {slot.number}")
        if slot.helper is not None:
            slot.helper.adopt()
        port20_helper.install(slot.helper)
        reload_first = self._reloaded
        event_loop.run(self._serve(slot, reload_first), self._config.event_loop)
        return 0

    async def _serve(self, slot: _Slot, reload_first: bool) -> None:
        from ketch.server import FtpServer
        from ketch.server.lifecycle import Lifecycle, Reloader

        label = f"worker {slot.number} of {len(self._slots)} (pid {os.getpid()})"
        server = FtpServer(
            self._config, sock=slot.sock, passive_ports=slot.ports, worker=label, tls=self._tls
        )
        reloader = (
            Reloader(server, self._build_config, self._config_file, self._run_as)
            if self._config_file
            else None
        )
        from_supervisor = (_STOP_GRACEFULLY, _CUT_OFF)
        lifecycle = Lifecycle(
            server, reloader, stop_signals=(signal.SIGTERM,), supervisor=from_supervisor
        )
        lifecycle.install()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED | _FROM_SUPERVISOR)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._lifeline_read, self._supervisor_gone, lifecycle)
        await server.start()
        server.log_serving()
        if reload_first:  # the file was reloaded since the supervisor started
            lifecycle.request_reload()
        try:
            await lifecycle.run()
        finally:
            loop.remove_reader(self._lifeline_read)
            counters = " ".join(
                f"{name}={value}" for name, value in sorted(server.context.counters.items())
            )
            log.info("%s exiting; counters: %s", label, counters or "none")

    def _supervisor_gone(self, lifecycle: Lifecycle) -> None:
        with contextlib.suppress(BlockingIOError):
            if os.read(self._lifeline_read, 1):
                return
        asyncio.get_running_loop().remove_reader(self._lifeline_read)
        log.warning("the supervisor has gone; stopping")
        lifecycle.request_stop("supervisor gone")


def _label_logs(label: str) -> None:
    """Put ``[label]`` after the logger name in every line this process logs."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if formatter is None or not formatter._fmt or "%(name)s" not in formatter._fmt:
            continue
        # The same class: LogFormatter supplies the session field and the time zone.
        layout = formatter._fmt.replace("%(name)s", f"%(name)s[{label}]", 1)
        handler.setFormatter(type(formatter)(layout))


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
