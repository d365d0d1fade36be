"""SITE NATINFO: the data-connection facts as the server sees them (shared contract C2).

Behind NAT the two ends of a connection disagree about addresses, and a
middlebox may rewrite PASV replies and PORT commands on the way. A client
(``ketch doctor``) compares what it sent and saw with these lines to tell
which. The keys and their layout are a contract: one ``key: value`` line
each, lower-case keys, ``none`` when there is nothing.
"""

from __future__ import annotations

from ketch.protocol.addresses import format_host_port
from ketch.server.commands.data_setup import effective_source_port
from ketch.server.session import Session

__all__ = ["nat_facts", "site_natinfo"]


async def nat_facts(session: Session) -> list[tuple[str, str]]:
    """(key, value) pairs in contract order."""
    context = session.context
    source = context.masquerade.source_for(session.peer_ip, tls=session.control_is_tls)
    return [
        ("client-address", session.peer_ip),
        ("server-address", format_host_port(session.local_ip, session.local_port)),
        ("last-passive-reply", session.last_passive_reply or "none"),
        ("last-active-command", session.last_active_command or "none"),
        ("masquerade-address", await source.current() if source is not None else "none"),
        ("passive-ports", str(context.passive_ports.configured)),  # all workers': what to open
        ("active-source-port", effective_source_port(session)),
        ("passive-expired", str(context.counters["passive_expired"])),
    ]


async def site_natinfo(session: Session) -> None:
    facts = await nat_facts(session)
    await session.reply(
        200,
        [
            "Data-connection facts as this server sees them:",
            *(f" {key}: {value}" for key, value in facts),
            "End.",
        ],
    )
