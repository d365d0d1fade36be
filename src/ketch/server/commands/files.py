"""DELE, RNFR/RNTO, SIZE, MDTM, SITE: operations on single files."""

from __future__ import annotations

import logging
import re

from ketch.protocol.listing import format_mdtm
from ketch.server.auth import Permission
from ketch.server.client_text import log_field
from ketch.server.command_table import Argument, command
from ketch.server.commands.nat_info import site_natinfo
from ketch.server.jail import FilesystemError
from ketch.server.quota import Quota
from ketch.server.session import Session

log = logging.getLogger("ketch.server")


async def _quota(session: Session) -> Quota | None:
    """The session's quota, measured, when its account has one (DELE and RNTO give back)."""
    account = session.account
    return await session.context.quotas.quota_for(account) if account else None


@command(
    "DELE",
    argument=Argument.FILE,
    permission=Permission.DELETE,
    help="DELE <path>: delete a file",
)
async def delete(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    # No is_dir check here: it follows symlinks, and a link to a directory is removed like
    # a file (as vsftpd does); Filesystem.remove refuses a real directory.
    quota = await _quota(session)
    removed = session.filesystem.lstat(path) if quota else None
    session.filesystem.remove(path)
    if quota and removed and removed.kind == "file":
        quota.adjust(-removed.size, -1)
    log.info(
        "delete user=%s client=%s path=%s",
        session.log_user,
        session.peer_ip,
        log_field(path),
    )
    await session.reply(250, f"{path}: deleted.")


@command(
    "RNFR",
    argument=Argument.REQUIRED,
    permission=Permission.RENAME,
    help="RNFR <path>: name the file to rename (then RNTO)",
)
async def rename_from(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    session.filesystem.lstat(path)  # 550 now if it does not exist
    session.state.rename_from = path
    await session.reply(350, f"{path}: ready; send RNTO with the new name.")


@command(
    "RNTO",
    argument=Argument.REQUIRED,
    permission=Permission.RENAME,
    help="RNTO <path>: the new name for the file named by RNFR",
)
async def rename_to(session: Session, argument: str) -> None:
    source = session.state.rename_from
    session.state.rename_from = None
    if source is None:
        await session.reply(503, "Send RNFR first, immediately followed by RNTO.")
        return
    if argument.rstrip(" ").endswith("/") and session.filesystem.lstat(source).kind != "dir":
        # rename(2) refuses it too (ENOTDIR); resolving would drop the '/' and go ahead.
        await session.reply(
            553, f"RNTO {argument!r} ends in '/', but {source} is no directory; drop the '/'."
        )
        return
    target = session.resolve(argument)
    quota = await _quota(session)
    replaced = session.filesystem.rename(source, target)
    if quota and replaced is not None:
        quota.adjust(-replaced, -1)
    log.info(
        "rename user=%s client=%s from=%s to=%s",
        session.log_user,
        session.peer_ip,
        log_field(source),
        log_field(target),
    )
    await session.reply(250, f"Renamed {source} to {target}.")


@command(
    "SIZE",
    argument=Argument.FILE,
    permission=Permission.LIST,
    feature="SIZE",
    help="SIZE <path>: size of a file in bytes (in TYPE I)",
)
async def size(session: Session, argument: str) -> None:
    if session.state.transfer_type == "A":
        # An ASCII size needs a full read to count line endings; RFC 3659 §4.2 lets us refuse.
        await session.reply(550, "SIZE is only answered in binary mode: send TYPE I first.")
        return
    path = session.resolve(argument)
    facts = session.filesystem.stat(path)
    if facts.kind != "file":
        await session.reply(550, f"{path}: not a regular file.")
        return
    await session.reply(213, str(facts.size))


@command(
    "MDTM",
    argument=Argument.FILE,
    permission=Permission.LIST,
    feature="MDTM",
    help="MDTM <path>: modification time of a file (UTC, YYYYMMDDHHMMSS)",
)
async def modification_time(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    try:
        facts = session.filesystem.stat(path)
    except FilesystemError as error:
        if _MDTM_SETTER.match(argument):  # "MDTM <time> <path>", some clients' MFMT
            raise FilesystemError(
                f"{error}; to set a file's time, send MFMT YYYYMMDDHHMMSS <path>",
                error.errno,
                error.virtual,
            ) from error
        raise
    if facts.kind != "file":
        await session.reply(550, f"{path}: not a regular file.")
        return
    await session.reply(213, format_mdtm(facts.mtime))


#: The setter form of MDTM that some clients send (vsftpd's mdtm_write): not offered here,
#: as a name starting with 14 digits and a space would be ambiguous; MFMT says it plainly.
_MDTM_SETTER = re.compile(r"\d{14}(\.\d+)? \S")

_SITE_HELP = [
    "SITE commands:",
    " CHMOD <octal mode> <path>",
    " HELP",
    " NATINFO (data-connection facts: addresses, last PASV reply and PORT, passive range)",
    "End of SITE help.",
]


@command(
    "SITE", argument=Argument.REQUIRED, help="SITE <command>: server-specific commands (SITE HELP)"
)
async def site(session: Session, argument: str) -> None:
    verb, _, rest = argument.partition(" ")
    verb = verb.upper()
    if verb == "HELP":
        await session.reply(214, _SITE_HELP)
    elif verb == "CHMOD":
        await _site_chmod(session, rest)
    elif verb == "NATINFO":
        await site_natinfo(session)
    else:
        await session.reply(500, f"Unknown SITE command {verb!r}; SITE HELP lists them.")


# Octal digits only, as chmod(1) takes them (leading zeros too): int(text, 8) would also
# take "0o7", "+7", "7_7".
_OCTAL_MODE = re.compile(r"0*[0-7]{1,4}")


async def _site_chmod(session: Session, argument: str) -> None:
    mode_text, _, target = argument.strip().partition(" ")
    if not _OCTAL_MODE.fullmatch(mode_text) or not target:
        await session.reply(501, "Usage: SITE CHMOD <octal mode, e.g. 644> <path>.")
        return
    mode = int(mode_text, 8)
    if not session.permits(Permission.WRITE):
        await session.reply(550, "Permission denied: SITE CHMOD needs the 'write' permission.")
        return
    path = session.resolve(target)
    session.filesystem.chmod(path, mode)
    log.info(
        "chmod user=%s client=%s path=%s mode=%04o",
        session.log_user,
        session.peer_ip,
        log_field(path),
        mode,
    )
    await session.reply(200, f"{path}: mode set to {mode:04o}.")
