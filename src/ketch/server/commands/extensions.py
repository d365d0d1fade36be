"""MLST, MLSD, MFMT, AVBL, HOST, CLNT: the extensions beyond RFC 959 that need no hashing.

HASH, RANG and the X hash commands are in :mod:`~ketch.server.commands.hashing`;
OPTS MLST and OPTS HASH are answered by OPTS in :mod:`~ketch.server.commands.info`.
"""

from __future__ import annotations

import ipaddress
import logging

from ketch.protocol.listing import format_mdtm
from ketch.protocol.mlsx import (
    Access,
    format_mlsd,
    mlst_feature,
    mlst_reply_lines,
    parse_time_val,
)
from ketch.protocol.session_state import LoginStage
from ketch.server.auth import Permission
from ketch.server.client_text import log_field
from ketch.server.command_table import Argument, command
from ketch.server.listing_workers import MLSD, ListingOptions
from ketch.server.session import Session
from ketch.server.transfer_task import refused_without_offer, start_transfer

log = logging.getLogger("ketch.server")

# A CLNT name is for the log; a longer one is cut rather than refused.
_CLIENT_NAME_LIMIT = 100


def access_of(session: Session) -> Access:
    """What the session's account may do, for the ``perm`` fact."""
    granted = session.account.permissions if session.account else Permission.NONE

    def has(flag: Permission) -> bool:
        return flag in granted

    return Access(
        list=has(Permission.LIST),
        read=has(Permission.READ),
        write=has(Permission.WRITE),
        append=has(Permission.APPEND),
        delete=has(Permission.DELETE),
        rename=has(Permission.RENAME),
        mkdir=has(Permission.MKDIR),
        rmdir=has(Permission.RMDIR),
    )


# -- MLST and MLSD (RFC 3659 §7) ------------------------------------------------


@command(
    "MLST",
    permission=Permission.LIST,
    feature=lambda session: mlst_feature(session.extensions.mlst_facts),
    help="MLST [path]: machine-readable facts about one file or directory (RFC 3659)",
)
async def machine_list_single(session: Session, argument: str) -> None:
    path = session.resolve(argument)
    entry = session.filesystem.mlsx_entry(path)
    facts = session.extensions.mlst_facts
    await session.reply(250, mlst_reply_lines(entry, path, facts, access_of(session)))


@command(
    "MLSD",
    permission=Permission.LIST,
    help="MLSD [directory]: machine-readable listing of a directory (RFC 3659)",
)
async def machine_list_directory(session: Session, argument: str) -> None:
    if await refused_without_offer(session, "MLSD"):
        return
    fs = session.filesystem
    path = session.resolve(argument)
    listed = fs.mlsx_entry(path, follow=True)  # 550 here when it does not exist
    if listed.kind != "dir":
        await session.reply(
            501, f"{path}: not a directory; MLSD lists directories, use MLST for one file."
        )
        return
    selected, access = session.extensions.mlst_facts, access_of(session)
    # Made in one pass (by the listing workers when the directory is big) and
    # sent with one sendall, as LIST is.
    data, _ = await session.context.listing_workers.make(
        fs,
        path,
        MLSD,
        lambda home: ListingOptions(home, selected, access, listed),
        lambda: format_mlsd(fs.list_mlsx(path), selected, access, listed=listed),
        listed.size,
    )
    await start_transfer(
        session,
        "MLSD",
        path,
        lambda channel: channel.send_all(data),
        opening=f"Here comes the MLSD listing of {path}.",
    )


# -- MFMT (draft-somers-ftp-mfxx) -------------------------------------------------


@command(
    "MFMT",
    argument=Argument.FILE,
    permission=Permission.WRITE,
    feature="MFMT",
    help="MFMT <YYYYMMDDHHMMSS> <path>: set a file's modification time (UTC)",
)
async def set_modification_time(session: Session, argument: str) -> None:
    # The MDTM setter form (MDTM <time> <path>) is not offered: a file whose name
    # starts with 14 digits and a space would be ambiguous, and MFMT says it plainly.
    time_text, _, target = argument.partition(" ")
    mtime = parse_time_val(time_text)
    if mtime is None or not target:
        await session.reply(
            501,
            "Usage: MFMT <YYYYMMDDHHMMSS> <path>, time in UTC, e.g. MFMT 20240131235959 a.txt.",
        )
        return
    path = session.resolve(target)
    session.filesystem.set_mtime(path, mtime)
    # The time read back, so the reply says what the file system really stored.
    stored = format_mdtm(session.filesystem.stat(path).mtime)
    log.info(
        "mtime user=%s client=%s path=%s time=%s",
        session.log_user,
        session.peer_ip,
        log_field(path),
        stored,
    )
    await session.reply(213, f"Modify={stored}; {target}")


# -- AVBL (draft-peterson-streamlined-ftp-command-extensions) ------------------------


@command(
    "AVBL",
    feature="AVBL",
    help="AVBL [directory]: bytes you may still upload there",
)
async def available_space(session: Session, argument: str) -> None:
    if not (session.permits(Permission.WRITE) or session.permits(Permission.APPEND)):
        await session.reply(
            550, "Your account may not upload, so no space is available to it (AVBL)."
        )
        return
    path = session.resolve(argument)
    available = session.filesystem.free_space(path)
    account = session.account
    quota = await session.context.quotas.quota_for(account) if account else None
    if quota is not None and quota.limits.bytes:
        available = min(available, max(quota.limits.bytes - quota.ledger.bytes, 0))
    await session.reply(213, str(available))


# -- HOST (RFC 7151) and CLNT --------------------------------------------------------


def normalize_host(text: str) -> str | None:
    """The name HOST asks for, lower-cased (``[2001:db8::1]`` as ``2001:db8::1``), or None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            return None
    name = text.lower().removesuffix(".")
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    labels = name.split(".")
    valid = all(
        0 < len(label) <= 63
        and label.isascii()
        and label.replace("-", "").isalnum()
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )
    return name if valid and len(name) <= 253 else None


@command(
    "HOST",
    argument=Argument.REQUIRED,
    needs_login=False,
    feature="HOST",
    help="HOST <name>: the virtual host you want, sent before USER (RFC 7151)",
)
async def host(session: Session, argument: str) -> None:
    if session.state.stage is not LoginStage.AWAITING_USER:
        await session.reply(
            503, "HOST must come before USER; send REIN (or reconnect), then HOST, then USER."
        )
        return
    name = normalize_host(argument)
    if name is None:
        await session.reply(
            501, "HOST needs a host name such as ftp.example.com, or an address such as [::1]."
        )
        return
    served = session.context.config.host_names
    if served and name not in served:
        log.info("host refused client=%s host=%s", session.peer_ip, log_field(name))
        # The list of served names is not told to a client that has not logged in.
        await session.reply(
            504, f"This server does not serve {name}; check the host name in your URL."
        )
        return
    session.extensions.host_name = name
    log.info("host client=%s host=%s", session.peer_ip, log_field(name))
    await session.reply(220, f"Host {name} is ready: log in with USER and PASS.")


@command(
    "CLNT",
    argument=Argument.REQUIRED,
    needs_login=False,
    feature="CLNT",
    help="CLNT <name>: tell the server which client program you use",
)
async def client_name(session: Session, argument: str) -> None:
    name = "".join(char for char in argument.strip() if char.isprintable())
    name = name[:_CLIENT_NAME_LIMIT]
    session.extensions.client_name = name
    log.info(
        "client name client=%s user=%s name=%s",
        session.peer_ip,
        session.log_user,
        log_field(name),
    )
    await session.reply(200, f"Noted: you are using {name}.")
