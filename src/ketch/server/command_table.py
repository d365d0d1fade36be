"""The one table of FTP commands: dispatch, HELP, FEAT and permission checks read it.

Adding a command is one decorated function in a handler module::

    @command("MKD", "XMKD", argument=Argument.REQUIRED, permission=Permission.MKDIR,
             help="MKD <path>: create a directory")
    async def make_directory(session: Session, argument: str) -> None: ...

so HELP and FEAT cannot drift from what is implemented.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketch.server.auth import Permission

if TYPE_CHECKING:
    from ketch.server.session import Session

__all__ = [
    "COMMANDS",
    "NOT_IMPLEMENTED",
    "Argument",
    "CommandSpec",
    "FeatureLine",
    "command",
    "feature_lines",
]

Handler = Callable[["Session", str], Awaitable[None]]
#: A FEAT line that depends on the session or configuration (``AUTH TLS`` only
#: when a certificate is configured, ``MLST`` with the facts now selected);
#: None leaves the feature out of FEAT.
FeatureLine = Callable[["Session"], "str | None"]


class Argument(enum.Enum):
    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"
    #: Required, and naming a file: it may not end in "/" (which names a directory).
    FILE = "file"


@dataclass(frozen=True)
class CommandSpec:
    verb: str
    handler: Handler
    help: str
    needs_login: bool = True
    argument: Argument = Argument.OPTIONAL
    permission: Permission = Permission.NONE
    #: The line this command adds to FEAT (RFC 2389), if it is an extension.
    feature: str | FeatureLine | None = None


COMMANDS: dict[str, CommandSpec] = {}

#: Commands of the RFCs this server does not implement: 502, not "unknown" (500).
NOT_IMPLEMENTED = {
    "SMNT": "SMNT is not implemented: each account has one home; use CWD.",
    "LPRT": "LPRT is not implemented: use EPRT (RFC 2428), or PORT.",
    "LPSV": "LPSV is not implemented: use EPSV (RFC 2428), or PASV.",
}


def command(
    *verbs: str,
    help: str,
    needs_login: bool = True,
    argument: Argument = Argument.OPTIONAL,
    permission: Permission = Permission.NONE,
    feature: str | FeatureLine | None = None,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` under each verb (the first is canonical, the rest aliases)."""

    def register(handler: Handler) -> Handler:
        for index, verb in enumerate(verbs):
            if verb in COMMANDS:
                raise RuntimeError(f"command {verb} registered twice")
            COMMANDS[verb] = CommandSpec(
                verb=verb,
                handler=handler,
                help=help,
                needs_login=needs_login,
                argument=argument,
                permission=permission,
                feature=feature if index == 0 else None,
            )
        return handler

    return register


def feature_lines(session: Session) -> list[str]:
    """The FEAT body for ``session``: one line per extension it can use, sorted."""
    from ketch.server import commands  # noqa: F401  (fills the table)

    features: set[str] = set()
    for spec in COMMANDS.values():
        line = spec.feature(session) if callable(spec.feature) else spec.feature
        if line:
            features.add(line)
    # TVFS: paths are one slash-separated tree rooted at "/" (RFC 3659 §6).
    features.add("TVFS")
    return sorted(features)
