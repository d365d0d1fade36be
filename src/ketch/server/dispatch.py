"""From a parsed command to its handler: the checks every command passes, in order.

An unknown verb gets 500; a command that needs a login, 530; one the TLS
policy refuses in the clear, its RFC 4217 reply; a missing or unwanted
argument, 501; a lacking permission, 550. Only then does the handler run,
from the command table. Its filesystem errors become 550 replies (those the
OS caused also a log line), and a bug of ours costs that command a 451, not
the session.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import TYPE_CHECKING

from ketch.protocol.commands import Command
from ketch.protocol.security import command_refusal
from ketch.server.auth import Permission
from ketch.server.client_text import log_field
from ketch.server.command_table import COMMANDS, NOT_IMPLEMENTED, Argument, CommandSpec
from ketch.server.jail import FilesystemError, PathEscapeError
from ketch.server.os_errors import CLIENT_ERRORS

if TYPE_CHECKING:
    from ketch.server.session import Session

__all__ = ["dispatch", "well_formed"]

log = logging.getLogger("ketch.server")


async def dispatch(session: Session, command: Command) -> None:
    """Run ``command`` in ``session`` if every check lets it, else send the refusal."""
    spec = COMMANDS.get(command.verb)
    if spec is None:
        session.state.before_command(command.verb)  # an unknown command cancels RNFR too
        if command.verb in NOT_IMPLEMENTED:
            await session.reply(502, NOT_IMPLEMENTED[command.verb])
            return
        await session.reply(500, _unknown(command))
        return
    if not session.state.may_run(spec.verb, needs_login=spec.needs_login):
        await session.reply(530, "Please log in with USER and PASS first.")
        return
    session.state.before_command(spec.verb)
    if "\r" in command.argument:
        # A bare CR (or Telnet's CR NUL) would end a line in logs and split replies such as
        # 257's: such names cannot be made here at all (RFC 959 has no use for them either).
        await _refuse(
            session,
            501,
            f"{spec.verb}: the argument holds a carriage return (CR), which no name here "
            "may contain; remove it.",
        )
        return
    policy = session.config.tls_required
    if policy != "off" and (
        tls_refusal := command_refusal(policy, session.tls, spec.verb, command.argument)
    ):
        # The admin's business too: a client sending its password in the clear, or asking
        # for (or left on) PROT C, is one to tell its user about.
        log.info(
            'refused %s user=%s client=%s: %s under tls_required = "%s"',
            spec.verb,
            session.log_user,
            session.peer_ip,
            "no TLS" if tls_refusal[0] == 530 else "clear data connection (PROT C)",
            policy,
        )
        await _refuse(session, *tls_refusal)
        return
    if refusal := _argument_refusal(spec, command.argument):
        await _refuse(session, *refusal)
        return
    if spec.permission is not Permission.NONE and not session.permits(spec.permission):
        log.info(
            "refused %s user=%s client=%s: no %s permission",
            spec.verb,
            session.log_user,
            session.peer_ip,
            spec.permission.name,
        )
        await _refuse(session, 550, session.permission_refusal(spec))
        return
    session.command_raw = command.raw
    try:
        await spec.handler(session, command.argument)
    except PathEscapeError as error:
        # The virtual path that escaped, not the raw argument: "../x" says little, and
        # MFMT's or SITE CHMOD's argument holds more than a path.
        log.warning(
            "refused %s user=%s client=%s path=%s: outside the home directory",
            spec.verb,
            session.log_user,
            session.peer_ip,
            log_field(error.virtual),
        )
        await session.reply(550, str(error))
    except FilesystemError as error:
        if error.errno is not None:
            _log_os_refusal(session, spec.verb, error, error.errno)
        await session.reply(550, str(error))
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        # A bug of ours must cost one reply, not the session.
        log.exception("internal error in %s (client=%s)", spec.verb, session.peer_ip)
        await session.reply(
            451, f"Internal error while running {spec.verb}; the server log has details."
        )
    finally:
        session.command_raw = b""  # not kept while the session idles


async def _refuse(session: Session, code: int, text: str) -> None:
    """Refuse the command; a refused RNTO also ends the rename its RNFR began (RFC 959:
    RNTO must follow RNFR at once, so a later RNTO cannot use a stale source)."""
    session.state.rename_from = None
    await session.reply(code, text)


def _log_os_refusal(session: Session, verb: str, error: FilesystemError, code: int) -> None:
    """One line for a 550 the OS caused: a warning when it is the admin's to fix (the
    client is told to ask them), DEBUG for a client's own (a name that is not there)."""
    level = logging.DEBUG if code in CLIENT_ERRORS else logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "refused %s user=%s client=%s path=%s: %s (%s)",
            verb,
            session.log_user,
            session.peer_ip,
            log_field(error.virtual),
            os.strerror(code),
            errno.errorcode.get(code, code),
        )


def well_formed(command: Command) -> bool:
    """Whether ``command`` is a known verb with the argument it takes, so it would run."""
    spec = COMMANDS.get(command.verb)
    return spec is not None and _argument_refusal(spec, command.argument) is None


_NEEDED = frozenset({Argument.REQUIRED, Argument.FILE})
_STORING = frozenset({"STOR", "APPE"})


def _argument_refusal(spec: CommandSpec, argument: str) -> tuple[int, str] | None:
    if not argument and spec.argument in _NEEDED:
        return 501, f"{spec.verb} needs an argument: {spec.help}"
    if spec.argument is Argument.FILE and argument.rstrip(" ").endswith("/"):
        # POSIX and vsftpd alike: "a.txt/" is no file (STOR would have made one named so).
        # Not a syntax error (501) but a name that is no plain file: 553 for a name to
        # store under (RFC 959), 550 for the rest (RFC 3659 §4.2 for SIZE), as vsftpd.
        code = 553 if spec.verb in _STORING else 550
        return code, f"{spec.verb} names a file, and {argument!r} ends in '/'; drop the '/'."
    if spec.argument is Argument.NONE and argument:
        return 501, f"{spec.verb} takes no argument: {spec.help}"
    return None


def _unknown(command: Command) -> str:
    """The 500 for a line that names no command, saying what is wrong with it."""
    if not command.verb and command.argument.strip():
        return "The command line starts with a space; send the command name first."
    name, tab, _ = command.verb.partition("\t")
    if tab and name in COMMANDS:
        return f"{name}: separate the argument from the command with a space, not a tab."
    verb = command.verb[:20] or "(empty line)"
    return f"Unknown command {verb!r}; HELP lists the commands."
