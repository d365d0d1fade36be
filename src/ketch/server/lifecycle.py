"""Signals of a running server: SIGTERM/SIGINT stop it gracefully, SIGHUP reloads.

Graceful stop: the listening socket closes at once (new connections are
refused), idle sessions get ``421`` right away, a command still running
(a big listing) gets its reply first, running transfers (and hashes) may
finish for ``shutdown_grace`` seconds (each then gets its final reply and
a ``421``), and whatever still runs at the deadline is cut off (``426``,
then ``421``). A second stop signal cuts off at once.

Reload: the configuration file is read and validated again; if it is
good, what depends on it (accounts, limits, the masquerade address) is
swapped in one step, without awaiting in between, so every session sees
either the old or the new configuration, never a mix. Settings bound to
sockets or processes made at start-up stay as they are, with one log line
each. A bad file changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ketch.config import ConfigError, ServerConfig, with_values
from ketch.server.auth import Authenticator
from ketch.server.config_changes import changed_settings, shown_setting
from ketch.server.masquerade import MasqueradePolicy
from ketch.server.privileges import RunAs, access_problems
from ketch.server.session import SHUTDOWN_TEXT
from ketch.server.setup_report import setup_report
from ketch.server.transfer_task import cancel_after_first_step

if TYPE_CHECKING:
    from ketch.server.listener import FtpServer
    from ketch.server.session import Session

__all__ = ["RESTART_ONLY", "Lifecycle", "Reloader", "shut_down"]

log = logging.getLogger("ketch.server")

#: Settings a reload cannot change: they shaped sockets and processes made at start-up.
#: active_source_port is one because the port-20 helper is told its port when it starts.
RESTART_ONLY = (
    "listen_address",
    "port",
    "passive_ports",
    "run_as",
    "active_source_port",
    "workers",
    "event_loop",
    "implicit_tls_port",
)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_POLL = 0.1
# How long sessions may take to close after being told to (a peer that reads nothing).
_CLOSE_TIMEOUT = 6.0

SessionTask = asyncio.Task[None]


class Lifecycle:
    """Installs the signal handlers and runs the server until a stop signal."""

    def __init__(
        self,
        server: FtpServer,
        reloader: Reloader | None = None,
        *,
        stop_signals: tuple[signal.Signals, ...] = _STOP_SIGNALS,
        supervisor: tuple[signal.Signals, signal.Signals] | None = None,
    ) -> None:
        self._server = server
        self._reloader = reloader
        self._stop_signals = stop_signals
        #: A worker's: the signals its supervisor sends to stop it, then to cut off.
        self._supervisor_signals = supervisor
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._reason = ""
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._finished = False

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._stop_signals:
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if self._supervisor_signals:
            stop, cut_off = self._supervisor_signals
            # Only a cut-off signal cuts off: the stop copy may follow the worker's own
            # SIGTERM from the same signal to the whole group.
            loop.add_signal_handler(stop, self._on_supervisor_stop)
            loop.add_signal_handler(cut_off, self.cut_off, "the supervisor's second stop signal")

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (*self._stop_signals, signal.SIGHUP, *(self._supervisor_signals or ())):
            loop.remove_signal_handler(signum)

    async def run(self) -> None:
        """Wait for SIGTERM or SIGINT, then shut the server down gracefully."""
        await self._stop.wait()
        if self._reloading is not None:
            self._reloading.cancel()
        grace = self._server.context.config.shutdown_grace
        await shut_down(self._server, grace, self._hurry, self._reason)
        self._finished = True

    def _on_stop_signal(self, signum: int) -> None:
        self.request_stop(signal.Signals(signum).name)

    def _on_supervisor_stop(self) -> None:
        self._begin_stop("stop signal to the supervisor")  # a second one is no hurry

    def request_stop(self, reason: str) -> None:
        """What a stop signal does: stop gracefully, or at once when already stopping."""
        if self._stop.is_set():
            self.cut_off(f"{reason} received again")
        else:
            self._begin_stop(reason)

    def _begin_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._reason = reason
            self._stop.set()

    def cut_off(self, why: str) -> None:
        """Stop now, cutting off every session and transfer."""
        if self._finished:
            return
        self._begin_stop(why)
        if not self._hurry.is_set():
            log.warning("shutdown: %s: cutting off every session now", why)
            self._hurry.set()

    def request_reload(self) -> None:
        """What SIGHUP does: reload the configuration file (once more if one is running)."""
        if self._stop.is_set():
            log.info("SIGHUP ignored: the server is shutting down")
        elif self._reloader is None:
            log.warning(
                "SIGHUP ignored: the server was started without --config, "
                "so there is no configuration file to reload"
            )
        elif self._reloading is not None and not self._reloading.done():
            self._reload_again = True  # the file may have changed after it was read
        else:
            self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        assert self._reloader is not None
        while True:
            self._reload_again = False
            try:
                await self._reloader.reload()
            except Exception:
                log.exception("reload failed; the previous configuration stays in force")
            if not self._reload_again:
                return


# -- graceful shutdown --------------------------------------------------------


def _running_transfer(session: Session) -> asyncio.Task[None] | None:
    transfer = session.transfer
    return transfer if transfer is not None and not transfer.done() else None


class _Closer:
    """Tells each session once that the server stops, now or when its transfer ends."""

    def __init__(self) -> None:
        self.cutting = False
        self.why = ""  # why transfers are cut off, for their 426
        self.finished = 0
        self.cut_off = 0
        self._seen: set[SessionTask] = set()
        self._closed: set[SessionTask] = set()
        #: Sessions seen in the middle of a command (a big listing), no transfer yet.
        self._busy: set[SessionTask] = set()

    def take(self, task: SessionTask, session: Session) -> bool:
        """Handle a session not seen yet; True if the shutdown waits for it."""
        if task in self._seen:
            return False
        self._seen.add(task)
        return self._settle(task, session)

    def recheck(self, sessions: dict[SessionTask, Session]) -> None:
        """Settle the busy sessions whose command has ended, or has started a transfer."""
        for task in list(self._busy):
            session = sessions.get(task)
            if session is None:  # it saw the shutdown at its next wait, and ended
                self._busy.discard(task)
            else:
                self._settle(task, session)

    def _settle(self, task: SessionTask, session: Session) -> bool:
        """Close an idle session; wait for a transfer, or for a command still running."""
        transfer = _running_transfer(session)
        if transfer is not None:
            self._busy.discard(task)
            transfer.add_done_callback(functools.partial(self._transfer_done, task, session))
            if self.cutting:
                cancel_after_first_step(transfer)
            return True
        if session.waiting_for_command or session.stream.must_drain or self.cutting:
            # Idle, stuck on a client that takes no replies, or past the deadline.
            self.close(task, session)
            return False
        # A command is running: its reply must not be cut off by a 421. The session
        # ends itself after it, running no other (context.stopping), unless the
        # command starts a transfer, which recheck then sees.
        self._busy.add(task)
        return True

    def cut(self, sessions: dict[SessionTask, Session], why: str) -> None:
        """The deadline: cancel every transfer (its callback says 426, and ``why``) and
        close the rest."""
        self.cutting = True
        self.why = why
        for task, session in sessions.items():
            if task not in self._seen:
                self.take(task, session)
            elif (transfer := _running_transfer(session)) is not None:
                cancel_after_first_step(transfer)
            else:
                self.close(task, session)

    def close(self, task: SessionTask, session: Session) -> None:
        self._busy.discard(task)
        if task in self._closed:
            return
        self._closed.add(task)
        session.say_goodbye(421, SHUTDOWN_TEXT)
        task.cancel()

    def _transfer_done(
        self, task: SessionTask, session: Session, transfer: asyncio.Task[None]
    ) -> None:
        # Runs before the session's own task resumes, so no pipelined command slips in.
        if transfer.cancelled() and self.cutting:
            self.cut_off += 1
            session.say_goodbye(
                426, f"Transfer cut off: the server is shutting down and {self.why}."
            )
            log.info(
                "shutdown: transfer cut off client=%s user=%s",
                session.peer_ip,
                session.log_user,
            )
        else:
            self.finished += 1
            log.info(
                "shutdown: transfer ended client=%s user=%s; closing the session",
                session.peer_ip,
                session.log_user,
            )
        self.close(task, session)


async def shut_down(server: FtpServer, grace: float, hurry: asyncio.Event, reason: str) -> None:
    """Stop accepting, let transfers finish for ``grace`` seconds, close every session.

    ``hurry`` set (a second signal) ends the wait at once.
    """
    loop = asyncio.get_running_loop()
    server.stop_accepting()
    server.context.stopping = True
    deadline = loop.time() + grace
    closer = _Closer()
    sessions = server.sessions
    waiting = sum(closer.take(task, session) for task, session in sessions.items())
    log.info(
        "shutdown (%s): no longer accepting connections; %d session(s): %d idle, told 421; "
        "waiting up to %g s for %d running transfer(s) or command(s)",
        reason or "requested",
        len(sessions),
        len(sessions) - waiting,
        grace,
        waiting,
    )
    cut_at: float | None = None
    while sessions := server.sessions:
        for task, session in sessions.items():  # connections accepted just before closing
            if closer.take(task, session):
                waiting += 1
        closer.recheck(sessions)
        now = loop.time()
        if cut_at is None and (hurry.is_set() or now >= deadline):
            cut_at = now
            running = sum(_running_transfer(session) is not None for session in sessions.values())
            log.warning(
                "shutdown: %s; cutting off %d transfer(s) and closing %d session(s)",
                "second signal" if hurry.is_set() else f"grace period of {grace:g} s over",
                running,
                len(sessions),
            )
            why = (
                "was told again to stop at once"
                if hurry.is_set()
                else f"its {grace:g} s grace period is over"
            )
            closer.cut(sessions, why)
        elif cut_at is not None and now - cut_at > _CLOSE_TIMEOUT:
            log.warning("shutdown: %d session(s) did not close; exiting anyway", len(sessions))
            break
        timeout = _POLL if cut_at is not None else min(_POLL, max(deadline - now, 0.0))
        await asyncio.wait(list(sessions), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    await server.close()
    log.info(
        "shutdown complete: %d transfer(s) or command(s) waited for, %d finished, %d cut off",
        waiting,
        closer.finished,
        closer.cut_off,
    )


# -- reload -------------------------------------------------------------------


class Reloader:
    """Builds a new configuration from the file (and the start-up flags) and swaps it in."""

    def __init__(
        self,
        server: FtpServer,
        load: Callable[[], ServerConfig],
        source: Path,
        run_as: RunAs | None = None,
    ) -> None:
        self._server = server
        self._load = load
        self._source = source
        self._run_as = run_as

    async def reload(self) -> bool:
        """Apply the file if it is valid; log why not otherwise. True when applied."""
        log.info("SIGHUP: reloading the configuration from %s", self._source)
        try:
            config = await asyncio.to_thread(self._load)
        except ConfigError as error:
            return self._refuse(error.problems)
        except ValueError as error:
            return self._refuse([str(error)])
        current = self._server.context.config
        kept: dict[str, Any] = {}
        for key in RESTART_ONLY:
            old, new = getattr(current, key), getattr(config, key)
            if new != old:
                log.warning(
                    "reload: %s changed from %s to %s, which needs a restart; still using %s",
                    key,
                    shown_setting(old),
                    shown_setting(new),
                    shown_setting(old),
                )
                kept[key] = old
        if kept:
            # The new file with the old restart-only values must still hold together.
            kept_now = f"{self._source} (with {', '.join(sorted(kept))} kept until a restart)"
            try:
                config = with_values(config, kept, kept_now)
            except ConfigError as error:
                return self._refuse(error.problems)
        try:
            masquerade = await asyncio.to_thread(MasqueradePolicy.from_config, config)
        except ValueError as error:
            return self._refuse([f"{self._source}: {error}"])
        authenticator = await asyncio.to_thread(Authenticator, config)

        # No await from here on: every session sees the old or the new configuration.
        self._server.reconfigure(config, authenticator, masquerade)
        if config.log_level != current.log_level:
            logging.getLogger().setLevel(config.log_level.upper())
        names = ", ".join(user.name for user in config.users) or "none"
        log.info(
            "reload: configuration from %s applied: %d user(s) (%s), anonymous %s; "
            "%d session(s) keep running, new logins use the new accounts",
            self._source,
            len(config.users),
            names,
            "enabled" if config.anonymous_enabled() else "disabled",
            len(self._server.sessions),
        )
        changes = changed_settings(current, config)
        log.info("reload: changed: %s", "; ".join(changes) if changes else "nothing")
        for warning in _setup_warnings(config, self._server.address, masquerade):
            log.warning("reload: set-up: %s", warning)
        if self._run_as is not None:
            for problem in access_problems(config, self._run_as.name, self._source):
                log.warning("reload: %s", problem)
        return True

    def _refuse(self, problems: list[str]) -> bool:
        for problem in problems:
            log.error("reload: %s", problem)
        log.error(
            "reload: %s not applied (%d problem(s)); the previous configuration stays in force",
            self._source,
            len(problems),
        )
        return False


def _setup_warnings(
    config: ServerConfig, address: tuple[str, int], masquerade: MasqueradePolicy
) -> list[str]:
    """What start-up and `ketch config check` warn about, for the reloaded file: a change
    that contradicts itself must not pass silently because it came by SIGHUP."""
    from ketch.server.workers import split_ports  # workers imports this module

    host, port = address
    slices = split_ports(config.passive_ports, config.workers) if config.workers > 1 else []
    report = setup_report(
        config, host=host, port=port, slices=slices, resolved=masquerade.resolved_names()
    )
    return report.warnings
