"""PWD, CWD, CDUP, MKD, RMD: the working directory and directories (RFC 959 §4.1.1, §4.1.3)."""

from __future__ import annotations

import logging

from ketch.server.auth import Permission
from ketch.server.client_text import log_field
from ketch.server.command_table import Argument, command
from ketch.server.session import Session

log = logging.getLogger("ketch.server")


def quote_path(path: str) -> str:
    """RFC 959 Appendix II: a quote inside a 257 pathname is doubled.

    Control characters come out as ``\\xNN`` inside the quotes, as in every reply
    (Session.reply): clients (ftplib's parse257, curl) take everything between the
    outer quotes as the name, and a name with a terminal escape in it cannot be given
    back usefully anyway. Other names (spaces, quotes, UTF-8, bytes that are not
    UTF-8) are unchanged, so they round-trip.
    """
    return '"' + path.replace('"', '""') + '"'


@command("PWD", "XPWD", argument=Argument.NONE, help="PWD: print the working directory")
async def print_directory(session: Session, _: str) -> None:
    await session.reply(257, f"{quote_path(session.cwd)} is the current directory.")


@command(
    "CWD",
    "XCWD",
    argument=Argument.REQUIRED,
    permission=Permission.LIST,
    help="CWD <path>: change the working directory",
)
async def change_directory(session: Session, argument: str) -> None:
    await _enter(session, session.resolve(argument))


@command(
    "CDUP",
    "XCUP",
    argument=Argument.NONE,
    permission=Permission.LIST,
    help="CDUP: change to the parent directory",
)
async def change_to_parent(session: Session, _: str) -> None:
    await _enter(session, session.resolve(".."))


async def _enter(session: Session, path: str) -> None:
    # A refusal says why (missing, not a directory, not searchable, outside the home):
    # FilesystemError, a 550 with the reason.
    session.filesystem.enter(path)
    session.cwd = path
    await session.reply(250, f"Working directory is now {path}.")


@command(
    "MKD",
    "XMKD",
    argument=Argument.REQUIRED,
    permission=Permission.MKDIR,
    help="MKD <path>: create a directory",
)
async def make_directory(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    session.filesystem.mkdir(path)
    _audit(session, "mkdir", path)
    await session.reply(257, f"{quote_path(path)} created.")


@command(
    "RMD",
    "XRMD",
    argument=Argument.REQUIRED,
    permission=Permission.RMDIR,
    help="RMD <path>: remove an empty directory",
)
async def remove_directory(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    if path == "/":
        await session.reply(550, "/: the home directory itself cannot be removed.")
        return
    session.filesystem.rmdir(path)
    _audit(session, "rmdir", path)
    await session.reply(250, f"{path}: directory removed.")


def _audit(session: Session, action: str, path: str) -> None:
    """One line per change to the tree, as DELE and renames have (who, from where, what)."""
    log.info(
        "%s user=%s client=%s path=%s", action, session.log_user, session.peer_ip, log_field(path)
    )
