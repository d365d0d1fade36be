"""USER, PASS, ACCT, REIN, QUIT: getting in and out (RFC 959 §4.1.1)."""

from __future__ import annotations

import asyncio
import logging

from ketch.protocol.extension_state import ExtensionState
from ketch.server.auth import ANONYMOUS_NAMES, describe_access
from ketch.server.client_text import echoed, log_field
from ketch.server.command_table import Argument, command
from ketch.server.login_guard import ban_reply_text
from ketch.server.session import Session

log = logging.getLogger("ketch.server")


@command(
    "USER",
    argument=Argument.REQUIRED,
    needs_login=False,
    help="USER <name>: start logging in (anonymous or ftp for anonymous access)",
)
async def user(session: Session, name: str) -> None:
    session.log_out()
    session.state.begin_login(name)
    if name.lower() in ANONYMOUS_NAMES and session.config.anonymous_enabled():
        await session.reply(331, "Anonymous login: send your e-mail address as the password.")
    else:
        # The same reply for known and unknown names: no user enumeration.
        await session.reply(331, f"Password required for {echoed(name)}.")


@command("PASS", needs_login=False, help="PASS <password>: finish logging in")
async def password(session: Session, secret: str) -> None:
    state = session.state
    if state.logged_in:
        await session.reply(230, "Already logged in.")
        return
    if state.user_name is None:
        await session.reply(503, "Send USER first, then PASS.")
        return
    name = state.user_name
    guard = session.context.login_guard
    banned = guard.ban_remaining(session.peer_ip)
    if banned is not None:
        # A connection opened before the ban must not go on guessing.
        state.login_failed()
        await session.reply(421, ban_reply_text(session.peer_ip, banned))
        session.closing = True
        return
    account = await session.context.authenticator.authenticate(name, secret)
    if account is None:
        state.login_failed()
        session.context.counters["login_failed"] += 1
        # Whether the name exists goes to the admin's log only, never to the client.
        log.warning(
            "login failed user=%s known=%s client=%s",
            log_field(name),
            session.context.authenticator.knows(name),
            session.peer_ip,
        )
        # Keyed by address only: unknown names and wrong passwords wait alike.
        verdict = guard.record_failure(session.peer_ip)
        await asyncio.sleep(verdict.delay)
        if verdict.banned_for is not None:
            await session.reply(421, ban_reply_text(session.peer_ip, verdict.banned_for))
            session.closing = True
            return
        await session.reply(530, _refusal_text(session, name))
        return
    guard.record_success(session.peer_ip, anonymous=account.anonymous)
    sessions = session.context.user_sessions
    slot = sessions.acquire(account)
    if slot is None:
        # Checked only now, after the password: no hint about accounts to strangers.
        # The connection stays open at the login stage, so the client can retry later.
        state.login_failed()
        limit = sessions.limit(account)
        session.context.counters["login_too_many_sessions"] += 1
        log.warning(
            "login refused user=%s client=%s: already %d sessions (the limit)",
            log_field(name),
            session.peer_ip,
            limit,
        )
        await session.reply(
            530, f"Too many sessions for this user ({limit}); close one and log in again."
        )
        return
    try:
        session.log_in(account)
    except NotADirectoryError as error:
        sessions.release(slot)
        state.login_failed()
        log.error("login refused user=%s client=%s: %s", log_field(name), session.peer_ip, error)
        await session.reply(530, "Your home directory is unavailable; ask the admin to check it.")
        return
    session.user_slot = slot
    session.context.counters["login_ok"] += 1
    log.info(
        "login ok user=%s client=%s anonymous=%s",
        log_field(name),
        session.peer_ip,
        account.anonymous,
    )
    if account.anonymous:
        access = describe_access(account.permissions)
        await session.reply(230, f"Anonymous access granted ({access}).")
    else:
        await session.reply(230, f"Logged in as {account.name}.")


def _refusal_text(session: Session, name: str) -> str:
    if name.lower() in ANONYMOUS_NAMES and not session.config.anonymous_enabled():
        # Whether anonymous access is on is no secret: saying so spares the guessing.
        return "Anonymous login is turned off on this server: log in with your user name."
    return "Login incorrect: check the user name and password."


@command("ACCT", needs_login=False, help="ACCT <account>: not needed on this server")
async def account(session: Session, _: str) -> None:
    await session.reply(202, "ACCT is not needed on this server.")


@command(
    "REIN",
    argument=Argument.NONE,
    needs_login=False,
    help="REIN: log out and start a new login on this connection",
)
async def reinitialize(session: Session, _: str) -> None:
    session.log_out()
    session.replace_offer(None)  # RFC 959: REIN resets every parameter, PASV/PORT too
    session.state.reset()
    session.extensions = ExtensionState()  # OPTS MLST/HASH, RANG and HOST start over too
    if session.control_is_tls:
        session.tls.reinitialize()  # PBSZ and PROT again; TLS on the control connection stays
    await session.reply(220, "Session reset: log in again with USER and PASS.")


@command("QUIT", argument=Argument.NONE, needs_login=False, help="QUIT: close the connection")
async def quit_session(session: Session, _: str) -> None:
    await session.reply(221, "Goodbye.")
    session.closing = True
