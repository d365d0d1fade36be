"""SYST, NOOP, HELP, FEAT, OPTS, STAT, TYPE, MODE, STRU: information and transfer parameters."""

from __future__ import annotations

import time

from ketch import __version__
from ketch.protocol.hashes import ALGORITHMS, lookup_algorithm
from ketch.protocol.listing import format_list_line
from ketch.protocol.mlsx import opts_mlst_reply, select_facts
from ketch.server.auth import Permission
from ketch.server.command_table import COMMANDS, Argument, command, feature_lines
from ketch.server.commands.transfer import listing_entries, mode_name
from ketch.server.session import Session


@command("SYST", argument=Argument.NONE, needs_login=False, help="SYST: the server's system type")
async def system(session: Session, _: str) -> None:
    await session.reply(215, "UNIX Type: L8")


@command(
    "NOOP",
    argument=Argument.NONE,
    needs_login=False,
    help="NOOP: do nothing (keeps the connection alive)",
)
async def noop(session: Session, _: str) -> None:
    await session.reply(200, "NOOP ok.")


@command("HELP", needs_login=False, help="HELP [command]: list commands, or explain one")
async def help_command(session: Session, argument: str) -> None:
    if argument:
        spec = COMMANDS.get(argument.strip().upper())
        if spec is None:
            await session.reply(
                501, f"Unknown command {argument.strip()!r}; HELP lists the commands."
            )
        else:
            await session.reply(214, f"Syntax: {spec.help}")
        return
    verbs = sorted(COMMANDS)
    rows = [
        " " + " ".join(f"{verb:<5}" for verb in verbs[i : i + 10]).rstrip()
        for i in range(0, len(verbs), 10)
    ]
    await session.reply(
        214,
        [
            "The following commands are recognized:",
            *rows,
            "HELP <command> explains one. Direct comments to the admin.",
        ],
    )


@command(
    "FEAT", argument=Argument.NONE, needs_login=False, help="FEAT: list the extensions (RFC 2389)"
)
async def features(session: Session, _: str) -> None:
    # RFC 2389 §3.2: each feature line starts with a single space.
    await session.reply(211, ["Features:", *(f" {line}" for line in feature_lines(session)), "End"])


@command(
    "OPTS",
    argument=Argument.REQUIRED,
    needs_login=False,
    feature="UTF8",
    help="OPTS <command> <options>: OPTS UTF8 ON, OPTS MLST <facts>, OPTS HASH [<name>]",
)
async def options(session: Session, argument: str) -> None:
    name, _, value = argument.strip().partition(" ")
    if name.upper() == "MLST":
        # RFC 3659 §7.9: unknown facts are ignored; the reply lists those now selected.
        session.extensions.mlst_facts = select_facts(value.strip())
        await session.reply(200, opts_mlst_reply(session.extensions.mlst_facts))
        return
    if name.upper() == "HASH":
        await _options_hash(session, value.strip())
        return
    if name.upper() == "UTF8":
        if value.strip().upper() in ("", "ON"):
            await session.reply(200, "UTF-8 is on.")
        else:
            await session.reply(
                504, "UTF-8 cannot be turned off: paths are always UTF-8 (RFC 2640)."
            )
        return
    await session.reply(501, f"OPTS for {name!r} is not supported; FEAT lists what is.")


async def _options_hash(session: Session, value: str) -> None:
    """OPTS HASH [algorithm]: show or choose HASH's algorithm (draft-bryan-ftpext-hash §3.2)."""
    if value:
        algorithm = lookup_algorithm(value)
        if algorithm is None:
            await session.reply(
                501,
                f"Unknown algorithm {value!r}, selection not changed; "
                f"choose one of {', '.join(ALGORITHMS)}.",
            )
            return
        session.extensions.hash_algorithm = algorithm
    await session.reply(200, session.extensions.hash_algorithm)


@command("TYPE", argument=Argument.REQUIRED, help="TYPE A|I|L 8: ASCII or binary (image) transfers")
async def transfer_type(session: Session, argument: str) -> None:
    words = argument.upper().split()
    if words in (["A"], ["A", "N"]):
        session.state.transfer_type = "A"
        await session.reply(200, "Type set to A (ASCII): line endings are converted.")
    elif words in (["I"], ["L", "8"], ["L8"]):
        session.state.transfer_type = "I"
        await session.reply(200, "Type set to I (binary): bytes are sent unchanged.")
    elif _well_formed_type(words):
        await session.reply(504, f"TYPE {argument} is not implemented; use TYPE A or TYPE I.")
    else:
        await session.reply(501, f"Bad TYPE argument {argument!r}; use TYPE A or TYPE I.")


def _well_formed_type(words: list[str]) -> bool:
    """Whether ``words`` follow RFC 959's TYPE syntax: A|E [N|T|C], I, or L <byte size>.

    Only these earn 504 (a valid choice not implemented here); "TYPE L" or "TYPE A X"
    are syntax errors (501), which a 504 would pass off as a real but missing choice.
    """
    if words[:1] in (["A"], ["E"]):
        return len(words) == 1 or (len(words) == 2 and words[1] in ("N", "T", "C"))
    size = words[1] if words[:1] == ["L"] and len(words) == 2 else ""
    return size.isascii() and size.isdigit() and 1 <= int(size) <= 255


@command("MODE", argument=Argument.REQUIRED, help="MODE S: stream mode (the only one implemented)")
async def transfer_mode(session: Session, argument: str) -> None:
    await _single_choice(session, "MODE", argument, "S", "BC", "stream")


@command(
    "STRU", argument=Argument.REQUIRED, help="STRU F: file structure (the only one implemented)"
)
async def file_structure(session: Session, argument: str) -> None:
    await _single_choice(session, "STRU", argument, "F", "RP", "file")


async def _single_choice(
    session: Session, verb: str, argument: str, supported: str, known: str, name: str
) -> None:
    value = argument.strip().upper()
    if value == supported:
        await session.reply(200, f"{verb} set to {supported} ({name}).")
    elif len(value) == 1 and value in known:
        await session.reply(504, f"{verb} {value} is not implemented; use {verb} {supported}.")
    else:
        await session.reply(501, f"Bad {verb} argument {argument!r}; use {verb} {supported}.")


@command("STAT", help="STAT [path]: server status, or a listing over the control connection")
async def status(session: Session, argument: str) -> None:
    if session.transfer is not None:
        progress = session.transfer_progress
        running = progress() if progress else session.transfer_status
        await session.reply(213, f"Transfer in progress: {running}.")
        return
    if argument:
        if not session.permits(Permission.LIST):
            await session.reply(550, "Permission denied: your account may not list directories.")
            return
        path, entries, of_directory = listing_entries(session, argument)
        now = time.time()
        lines = [f"Status of {path}:", *(" " + format_list_line(entry, now) for entry in entries)]
        # RFC 959: 212 "Directory status", 213 "File status".
        await session.reply(212 if of_directory else 213, [*lines, "End of status."])
        return
    offer = session.data_offer
    data = f"prepared ({offer.mode})" if offer else "none prepared"
    worker = session.context.worker
    await session.reply(
        211,
        [
            f"ketch {__version__} FTP server status:",
            f" Connected from {session.peer_ip}",
            f" Logged in as {session.state.user_name}",
            f" TYPE: {mode_name(session)}; STRUcture: File; MODE: Stream",
            f" Data connection: {data}",
            *([f" Served by {worker}"] if worker else []),
            "End of status.",
        ],
    )
