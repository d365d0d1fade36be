"""The FTP session's state machine, with no I/O.

Rules of this module:

* Everything that decides whether a command is acceptable *in the current
  state* lives here; what a command then does lives in the server's handlers.
* It does not know whether it runs in a server or a test: it takes command
  verbs and outcomes and answers with decisions, never with sockets.

Theory of operation. A session moves through three login stages::

    AWAITING_USER --USER--> AWAITING_PASSWORD --PASS ok--> LOGGED_IN
          ^                        |  PASS bad                 |
          +------------------------+---------------------------+  REIN / USER

Beside the stage, a few *pending* facts modify what the next command means:
``rename_from`` (RNFR waits for RNTO, RFC 959 says "immediately"),
``restart_offset`` (REST waits for the next transfer command, which spends
it; commands like PASV or TYPE in between keep it, because clients such as
FileZilla send REST before PASV) and ``epsv_all``
(after ``EPSV ALL`` only EPSV may set up data connections, RFC 2428 §4).
Which data connection is prepared (PASV/EPSV/PORT/EPRT) and whether a
transfer runs are owned by the server, because they are sockets and tasks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "COMMANDS_BEFORE_LOGIN",
    "DATA_SETUP_COMMANDS",
    "TRANSFER_COMMANDS",
    "URGENT_BEFORE_FIRST_REPLY",
    "URGENT_COMMANDS",
    "LoginStage",
    "SessionState",
]


class LoginStage(enum.Enum):
    AWAITING_USER = "awaiting user"
    AWAITING_PASSWORD = "awaiting password"
    LOGGED_IN = "logged in"


#: Commands a client may send before logging in. FEAT, OPTS and HELP are
#: here because real clients (lftp, FileZilla) probe features before USER,
#: which RFC 2389 allows; everything else gets 530.
COMMANDS_BEFORE_LOGIN = frozenset(
    {"USER", "PASS", "ACCT", "QUIT", "REIN", "FEAT", "OPTS", "HELP", "NOOP", "SYST"}
)

#: Commands that prepare the next data connection.
DATA_SETUP_COMMANDS = frozenset({"PORT", "PASV", "EPRT", "EPSV"})

#: Commands that consume a prepared data connection.
TRANSFER_COMMANDS = frozenset({"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"})

#: Commands served while a transfer runs instead of waiting for its end
#: (RFC 959 §4.1.3: ABOR and STAT are meant to be sent during a transfer).
URGENT_COMMANDS = frozenset({"ABOR", "STAT", "NOOP"})

#: What is served at once before a running command's first reply: a transfer's until
#: its 150, a HASH's (its only reply) throughout. A NOOP answered earlier would come
#: first, and a client that pipelines would take its 200 for that reply.
URGENT_BEFORE_FIRST_REPLY = frozenset({"ABOR"})

#: Transfer commands that honour a pending REST offset.
RESTARTABLE_COMMANDS = frozenset({"RETR", "STOR"})


@dataclass(slots=True)  # one per session: no __dict__ each
class SessionState:
    """The protocol-level facts of one control connection."""

    stage: LoginStage = LoginStage.AWAITING_USER
    user_name: str | None = None
    rename_from: str | None = None
    restart_offset: int = 0
    #: The REST offset that applies to the transfer command being run now.
    transfer_offset: int = 0
    transfer_type: str = "A"  # RFC 959 §3.1.1.1: ASCII until the client says otherwise
    epsv_all: bool = False

    @property
    def logged_in(self) -> bool:
        return self.stage is LoginStage.LOGGED_IN

    def may_run(self, verb: str, *, needs_login: bool) -> bool:
        """Whether ``verb`` is acceptable before the handler runs (530 if not)."""
        return self.logged_in or not needs_login or verb in COMMANDS_BEFORE_LOGIN

    def before_command(self, verb: str) -> None:
        """Drop pending facts the RFC ties to *the next* command.

        RNFR must be followed immediately by RNTO; anything else cancels
        the rename, so a stray RNTO later cannot rename a stale source.
        """
        if verb != "RNTO":
            self.rename_from = None
        if verb in TRANSFER_COMMANDS:
            # Every transfer command spends a pending REST, even one refused or not
            # restartable, so a stale offset can never cut a later STOR or RETR.
            self.transfer_offset = self.restart_offset if verb in RESTARTABLE_COMMANDS else 0
            self.restart_offset = 0

    def begin_login(self, name: str) -> None:
        """USER: any earlier login is dropped (RFC 959 allows a new USER at any time).

        So is what named the old user's files: a pending RNFR or REST. Transfer
        parameters stay, as RFC 959 §4.1.1 says ("All transfer parameters are
        unchanged"): a client that sent TYPE I before logging in again still gets
        its binary bytes. EPSV ALL stays too: it told the NATs on the path that
        PORT and PASV will not come again on this connection (RFC 2428 §4),
        whoever logs in. REIN ends both.
        """
        self.stage = LoginStage.AWAITING_PASSWORD
        self.user_name = name
        self.rename_from = None
        self.restart_offset = 0
        self.transfer_offset = 0

    def login_succeeded(self) -> None:
        self.stage = LoginStage.LOGGED_IN

    def login_failed(self) -> None:
        self.stage = LoginStage.AWAITING_USER
        self.user_name = None

    def reset(self) -> None:
        """REIN: back to the state of a freshly accepted connection."""
        self.stage = LoginStage.AWAITING_USER
        self.user_name = None
        self.rename_from = None
        self.restart_offset = 0
        self.transfer_offset = 0
        self.transfer_type = "A"
        self.epsv_all = False

    def data_setup_allowed(self, verb: str) -> bool:
        """After ``EPSV ALL`` only EPSV may prepare data connections (RFC 2428 §4)."""
        return not self.epsv_all or verb == "EPSV"
