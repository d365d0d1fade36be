"""Per-session choices made with the FTP extensions: OPTS MLST, OPTS HASH, RANG, HOST, CLNT.

Kept apart from :class:`~ketch.protocol.session_state.SessionState` because
none of them decides whether a command may run; they only shape replies.
"""

from __future__ import annotations

from dataclasses import dataclass

from ketch.protocol.hashes import DEFAULT_ALGORITHM, ByteRange
from ketch.protocol.mlsx import FACT_NAMES

__all__ = ["ExtensionState"]


@dataclass(slots=True)  # one per session: no __dict__ each
class ExtensionState:
    #: MLST/MLSD facts selected with OPTS MLST (RFC 3659 §7.9); all by default.
    mlst_facts: tuple[str, ...] = FACT_NAMES
    #: The algorithm HASH uses, chosen with OPTS HASH.
    hash_algorithm: str = DEFAULT_ALGORITHM
    #: The byte range set by RANG; it stays until RANG 1 0 or REIN.
    hash_range: ByteRange | None = None
    #: The virtual host named by HOST (RFC 7151), before USER.
    host_name: str | None = None
    #: What the client called itself with CLNT, for the log.
    client_name: str | None = None
