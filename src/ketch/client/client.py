"""``Client``: an asyncio FTP client session.

One control connection, logged in, with the data-connection mode as a
first-class setting (see data_modes.py). Commands map one-to-one onto
methods that return Python values and raise FtpError subclasses whose
messages say what to do; transfers live in transfers.py.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import posixpath
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, TYPE_CHECKING, Literal, get_args

from ketch.client import transfers
from ketch.client.control import INTERRUPTED_WAIT, ControlConnection, being_cancelled
from ketch.client.data_modes import (
    ActiveCommand,
    DataConnector,
    DataSettings,
    Mode,
    ModeMemory,
    PassiveCommand,
)
from ketch.client.errors import (
    NOT_IMPLEMENTED,
    ConnectFailed,
    FtpError,
    InvalidArgument,
    LoginFailed,
    PermanentReplyError,
    ProtocolError,
    TransientReplyError,
    UnreadableListing,
    reply_error,
)
from ketch.client.tls import TlsFailed, TlsMode, TlsSettings
from ketch.client.verify import RemoteHash, remote_hash, verify_file
from ketch.protocol import Reply, format_host_port
from ketch.protocol.remote_listing import (
    MlsdSyntaxError,
    RemoteEntry,
    RemoteListing,
    parse_list,
    parse_mlsd,
    parse_mlsd_line,
)
from ketch.protocol.reply_values import (
    mlst_facts_to_select,
    parse_feat,
    parse_hash_feature,
    parse_mdtm_value,
    parse_quoted_path,
)

if TYPE_CHECKING:
    from os import PathLike

__all__ = ["Client"]

log = logging.getLogger("ketch.client")

ANONYMOUS_PASSWORD = "anonymous@"


#: The MLSD facts Client.list reads (RemoteEntry's kind, size and mtime).
_LISTING_FACTS = ("type", "size", "modify")

#: What a refused login says when the server wants the session encrypted.
_ASKS_FOR_TLS = re.compile(r"\b(TLS|SSL|encrypt\w*|cleartext|AUTH)\b", re.IGNORECASE)


def _check_choice(name: str, value: object, choices: object) -> None:
    """InvalidArgument unless ``value`` is one of the Literal type ``choices``' values."""
    allowed = get_args(choices)
    if value not in allowed:
        raise InvalidArgument(
            f"{name}={value!r} is not a choice",
            f"give one of {', '.join(repr(choice) for choice in allowed)}",
        )


#: What a refused login says when the password is not the reason (a session limit).
_GIVES_ANOTHER_REASON = re.compile(
    r"\b(sessions?|too many|limit\w*|maximum|try (again|later)|later|busy)\b", re.IGNORECASE
)


class Client:
    """An FTP session: ``async with Client("host", user=..., password=...) as ftp:``.

    Data-connection settings:

    - ``mode``: ``"auto"`` (passive, falling back to active when the passive
      connection cannot be made, remembered for the rest of the session),
      ``"passive"`` or ``"active"``.
    - ``passive_command``: ``"auto"`` tries EPSV and falls back to PASV when
      the server refuses it or its connection cannot be made (then PASV for
      the rest of the session); ``"EPSV"`` or ``"PASV"`` pins one.
    - ``trust_pasv_address``: connect where a 227 reply says even when that is
      a private address unlike the server's (off: use the server's address).
    - ``active_ports`` / ``active_address``: the local ports to listen on and
      the address to advertise in active mode (a client behind NAT with
      forwarded ports).
    - ``mode_memory``: share one ModeMemory between clients of one run.

    Timeouts: ``connect_timeout`` for the control connection,
    ``data_connect_timeout`` for each data connection, ``timeout`` for every
    reply and for a stalled transfer.

    FTPS (tls.py): ``tls="explicit"`` secures a plain connection with AUTH TLS
    (port 21 by default), ``tls="implicit"`` speaks TLS from the start (port
    990 by default); then PBSZ 0 and PROT P encrypt the data connections too.
    The certificate is checked against the system's CAs, or ``cafile``'s;
    ``verify=False`` skips the check (and logs a warning); ``ssl_context``
    replaces all of that with a context of your own.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        mode: Mode = "auto",
        passive_command: PassiveCommand = "auto",
        active_command: ActiveCommand = "auto",
        trust_pasv_address: bool = False,
        active_ports: range | None = None,
        active_address: str | None = None,
        connect_timeout: float = 30.0,
        data_connect_timeout: float = 10.0,
        timeout: float = 60.0,
        mode_memory: ModeMemory | None = None,
        tls: TlsMode | None = None,
        cafile: str | None = None,
        verify: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        _check_choice("mode", mode, Mode)
        _check_choice("passive_command", passive_command, PassiveCommand)
        _check_choice("active_command", active_command, ActiveCommand)
        if tls is not None:
            _check_choice("tls", tls, TlsMode)
        self.host = host
        self.port = port if port is not None else (990 if tls == "implicit" else 21)
        self.tls = (
            TlsSettings(mode=tls, cafile=cafile, verify=verify, context=ssl_context)
            if tls is not None
            else None
        )
        self.user = user
        self.password = password
        self.data_settings = DataSettings(
            mode=mode,
            passive_command=passive_command,
            active_command=active_command,
            trust_pasv_address=trust_pasv_address,
            active_ports=active_ports,
            active_address=active_address,
            connect_timeout=data_connect_timeout,
        )
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.mode_memory = mode_memory or ModeMemory()
        self.features: dict[str, str] = {}
        self.hash_algorithm: str | None = None  # what HASH uses now (FEAT's "*", then OPTS HASH)
        self.greeting: Reply | None = None
        self._control: ControlConnection | None = None
        self._connector: DataConnector | None = None
        self._binary = False
        self._mlsd_refused = False  # FEAT offers MLST, but MLSD was answered 500/502/504
        self._mlst_refused = False  # FEAT offers MLST, but MLST was answered 500/502/504

    # -- session -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        try:
            await self.login()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.quit()

    async def connect(self) -> Reply:
        """Open the control connection and read the greeting (and secure it, with ``tls``)."""
        context = self._tls_context()
        implicit = self.tls is not None and self.tls.mode == "implicit"
        control = await ControlConnection.open(
            self.host,
            self.port,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            tls=context if implicit else None,
        )
        try:
            reply = await self._greeting(control, implicit)
            if reply.code != 220:
                text = " ".join(reply.lines).strip()
                raise ConnectFailed(
                    f"{self.host} refused the session: {reply.code} {text}",
                    "try again later" if reply.code == 421 else "check the server address",
                )
            if context is not None and not implicit:
                await self._auth_tls(control, context)
        except BaseException:
            await control.close()
            raise
        self._control = control
        self._connector = DataConnector(
            control, self.data_settings, self.mode_memory, (self.host, self.port), context
        )
        self.greeting = reply
        return reply

    async def _greeting(self, control: ControlConnection, implicit: bool) -> Reply:
        """The server's greeting; a server that closes or says nothing did not let us in."""
        try:
            reply = await control.read_reply()
            if reply.code == 120:  # "ready in nnn minutes": the real greeting follows
                reply = await control.read_reply()
        except ProtocolError as error:
            hint = "check the address and port: it may not be an FTP server"
            if not implicit:
                hint += ", or one that speaks TLS from the first byte (ftps://)"
            raise ConnectFailed(
                f"no FTP greeting from {self.host} port {self.port}: {error.what}", hint
            ) from None
        return reply

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        if not self.tls.verify and self.tls.context is None:
            log.warning(
                "warning: not checking the TLS certificate of %s (--insecure): anyone on the "
                "way could pose as the server and read the session",
                self.host,
            )
        return self.tls.make_context()

    async def _auth_tls(self, control: ControlConnection, context: ssl.SSLContext) -> None:
        """Explicit FTPS: AUTH TLS, then the handshake (RFC 4217 §4)."""
        reply = await control.command("AUTH TLS")
        if reply.code != 234:
            text = " ".join(reply.lines).strip()
            raise TlsFailed(
                f"{self.host} does not offer TLS: AUTH TLS answered {reply.code} {text}",
                "check the server's FTPS settings; ftps:// URLs use implicit TLS instead",
            )
        await control.start_tls(context)

    async def _protect_data(self) -> None:
        """PBSZ 0 and PROT P: data connections in TLS too (RFC 4217 §8-9), as curl and lftp
        do it, after the login."""
        await self._expect("PBSZ 0", 200)
        reply = await self._control_connection.command("PROT P")
        if reply.code != 200:
            raise reply_error(
                "PROT P",
                reply,
                "the server will not encrypt data connections; ketch does not send data in clear "
                "over an FTPS session",
            )

    async def login(self, user: str | None = None, password: str | None = None) -> None:
        """USER/PASS (anonymous when no user is given), then learn the server's features."""
        user = user or self.user or "anonymous"
        password = password if password is not None else self.password
        if password is None:
            password = ANONYMOUS_PASSWORD if user.lower() in ("anonymous", "ftp") else ""
        reply = await self._control_connection.command(f"USER {user}")
        if reply.code == 331:
            reply = await self._control_connection.command(f"PASS {password}")
        if reply.code == 332:
            raise LoginFailed(
                f"{self.host} wants an account (ACCT) for {user}", "ketch does not send ACCT"
            )
        if reply.code not in (230, 202):
            raise self._login_refused(user, reply)
        self.user = user
        if self.tls is not None:
            await self._protect_data()
        await self._learn_features()

    def _login_refused(self, user: str, reply: Reply) -> FtpError:
        """The error for a refused USER/PASS, with the advice the server's reason leaves."""
        text = " ".join(reply.lines).strip()
        what = f"login as {user!r} refused by {self.host}: {reply.code} {text}"
        if reply.code == 421:  # the server turns everyone away for now: temporary
            error = TransientReplyError("PASS", reply, "try again later")
            error.what = what  # exit 7, in a login's words
            return error
        hint = "check the user name and password (in the URL, -u or ~/.netrc)"
        if self.tls is None and (reply.code == 534 or _ASKS_FOR_TLS.search(text)):
            # vsftpd: "must use encryption"; ketch, proftpd: "TLS"; pure-ftpd: "cleartext"
            hint = "the server wants TLS: use --ftps (or an ftps:// URL)"
        elif _GIVES_ANOTHER_REASON.search(text):
            hint = "the server gave its reason: try again later, or close other sessions"
        return LoginFailed(what, hint)

    async def _learn_features(self) -> None:
        reply = await self._control_connection.command("FEAT")
        self.features = parse_feat(reply.lines) if reply.code == 211 else {}
        self._mlsd_refused = self._mlst_refused = False  # a new login may be served differently
        self.hash_algorithm = parse_hash_feature(self.features.get("HASH", ""))[1]
        if "UTF8" in self.features:
            # Some servers (IIS, FileZilla Server) only take UTF-8 paths after this.
            await self._control_connection.command("OPTS UTF8 ON")
        await self._select_mlst_facts()

    async def _select_mlst_facts(self) -> None:
        """Turn on the MLSD facts listings need where FEAT lists them off (no "*").

        RFC 3659 §7.9: until OPTS MLST selects them, MLSD sends only the facts FEAT
        marks with "*"; a server offering "type;size;modify;perm*;" lists bare names
        with perm, and a mirror could tell neither files nor sizes.
        """
        facts = mlst_facts_to_select(self.features.get("MLST", ""), _LISTING_FACTS)
        if facts is None:
            return
        reply = await self._control_connection.command(
            "OPTS MLST " + "".join(f"{f};" for f in facts)
        )
        if reply.code != 200:
            log.info("OPTS MLST refused (%s): listings may lack types, sizes or times", reply.code)

    async def quit(self, *, wait: float | None = None) -> None:
        """Say QUIT (politely, bounded) and close; never raises.

        ``wait``: how long the server's goodbye is waited for; by default the
        timeout, at most 5 s, and INTERRUPTED_WAIT when the task is being cancelled.
        """
        control = self._control
        if control is None:
            return
        self._control = None
        if wait is None:
            wait = INTERRUPTED_WAIT if being_cancelled() else min(self.timeout, 5.0)
        try:
            if not control.closed:
                await control.send("QUIT")
                await control.read_reply(timeout=wait)
        except Exception:  # the session is ending either way
            pass
        finally:  # also when cancelled meanwhile
            await control.close()

    close = quit

    @property
    def _control_connection(self) -> ControlConnection:
        if self._control is None or self._control.closed:
            raise ProtocolError(f"not connected to {self.host}", "call connect() first")
        return self._control

    @property
    def _data_connector(self) -> DataConnector:
        if self._connector is None:
            raise ProtocolError(f"not connected to {self.host}", "call connect() first")
        return self._connector

    # -- simple commands -----------------------------------------------------------

    async def command(self, line: str) -> Reply:
        """Send any command and return its reply, whatever the code."""
        return await self._control_connection.command(line)

    async def _expect(self, line: str, *codes: int) -> Reply:
        reply = await self._control_connection.command(line)
        if reply.code not in codes:
            raise reply_error(line.split(" ", 1)[0], reply)
        return reply

    async def pwd(self) -> str:
        reply = await self._expect("PWD", 257)
        path = parse_quoted_path(reply.text)
        if path is None:
            raise ProtocolError(f"unreadable PWD reply: {reply.text!r}", "")
        return path

    async def cwd(self, path: str) -> None:
        await self._expect(f"CWD {path}", 250, 200)

    async def mkdir(self, path: str) -> str:
        """Create a directory; returns the path the server reports (or ``path``)."""
        reply = await self._expect(f"MKD {path}", 257, 250)
        return parse_quoted_path(reply.text) or path

    async def rmdir(self, path: str) -> None:
        await self._expect(f"RMD {path}", 250, 200)

    async def delete(self, path: str) -> None:
        await self._expect(f"DELE {path}", 250, 200)

    async def rename(self, source: str, target: str) -> None:
        await self._expect(f"RNFR {source}", 350)
        await self._expect(f"RNTO {target}", 250, 200)

    async def size(self, path: str) -> int:
        """SIZE in binary mode (the only one in which it is exact)."""
        await self._ensure_binary()
        reply = await self._expect(f"SIZE {path}", 213)
        try:
            return int(reply.text.strip().split()[-1])
        except (ValueError, IndexError):
            raise ProtocolError(f"unreadable SIZE reply: {reply.text!r}", "") from None

    async def mdtm(self, path: str) -> datetime:
        reply = await self._expect(f"MDTM {path}", 213)
        moment = parse_mdtm_value(reply.text)
        if moment is None:
            raise ProtocolError(f"unreadable MDTM reply: {reply.text!r}", "")
        return moment

    async def hash(self, path: str, algorithm: str | None = None) -> RemoteHash:
        """The server's hash of ``path``: HASH when offered, else XSHA256/XSHA1/XMD5/XCRC.

        ``algorithm`` ("SHA-256", "SHA-1", "MD5", "CRC32", ...) or, when None,
        the best the server offers. Raises HashUnsupported when it offers none.
        """
        return await remote_hash(self, path, algorithm)

    async def verify(
        self, remote: str, local: str | PathLike[str], algorithm: str | None = None
    ) -> RemoteHash:
        """Check that ``remote`` and the local file hash the same; VerifyFailed if not."""
        return await verify_file(self, remote, local, algorithm)

    async def _ensure_binary(self) -> None:
        if not self._binary:
            await self._expect("TYPE I", 200)
            self._binary = True

    # -- listings --------------------------------------------------------------------

    async def list(self, path: str = "") -> RemoteListing:
        """Directory entries (without . and ..); MLSD when offered, else LIST parsed.

        LIST lines in a format the parser does not know are in the result's
        ``unreadable``, for the caller to report: their entries are missing.

        A server whose FEAT offers MLST but which answers MLSD 500, 502 or 504 (it has
        MLST alone) is listed with LIST from then on in this session.
        """
        if self.lists_with_mlsd:
            listing = await self.mlsd(path)
            if listing is not None:
                return listing
        return parse_list(await self._listing("LIST", path), datetime.now(UTC))

    @property
    def lists_with_mlsd(self) -> bool:
        """Whether ``list`` asks MLSD: FEAT offers MLST, and MLSD has not been refused."""
        return "MLST" in self.features and not self._mlsd_refused

    async def mlsd(self, path: str = "") -> RemoteListing | None:
        """MLSD's entries, or None when the server answers MLSD as an unknown command
        (then ``lists_with_mlsd`` is False for the rest of the session)."""
        text = await self._mlsd_listing(path)
        if text is None:
            return None
        with _mlsd_errors(path):
            return parse_mlsd(text)

    async def _mlsd_listing(self, path: str) -> str | None:
        """MLSD's text, or None when the server does not know the command after all."""
        try:
            return await self._listing("MLSD", path)
        except PermanentReplyError as error:
            if error.code not in NOT_IMPLEMENTED:
                raise  # 550 and the like are about the path: LIST would fail the same way
            log.info(
                "MLSD refused (%s) although FEAT offers MLST; using LIST for the rest of the "
                "session",
                error.code,
            )
            self._mlsd_refused = True
            return None

    async def nlst(self, path: str = "") -> builtins.list[str]:
        """Names from NLST as the server gives them, without "." and ".." (pure-ftpd sends them)."""
        text = await self._listing("NLST", path)
        return [
            line
            for line in text.splitlines()
            if line and posixpath.basename(line) not in (".", "..")
        ]

    async def stat(self, path: str) -> RemoteEntry:
        """Facts about one path: MLST when the server has it, else SIZE and MDTM, else
        the path's entry in its parent's listing.

        SIZE answers for a plain file only (vsftpd and pure-ftpd refuse it for a
        directory), so a file gets its exact size and, from MDTM, its time in UTC
        to the second, as MLST would give them; LIST gives times in the server's
        time zone and to the minute at best. What SIZE refuses (a directory, a
        link, a missing path, a server without SIZE) is looked up in the parent's
        listing. A server whose FEAT offers MLST but which answers it 500, 502 or
        504 is asked these ways from then on in this session.
        """
        if "MLST" in self.features and not self._mlst_refused:
            entry = await self._mlst(path)
            if entry is not None:
                return entry
        parent, name = posixpath.split(path.rstrip("/"))
        if not name:
            return RemoteEntry(
                name=path or "/", kind="dir", size=None, mtime=None, mtime_precision=None
            )
        return await self._file_facts(path) or await self._entry_in_parent(path, parent, name)

    async def _mlst(self, path: str) -> RemoteEntry | None:
        """MLST's facts, or None when the server does not know the command after all."""
        reply = await self._control_connection.command(f"MLST {path}" if path else "MLST")
        if reply.code in NOT_IMPLEMENTED:
            log.info(
                "MLST refused (%s) although FEAT offers it; using SIZE, MDTM and LIST "
                "for the rest of the session",
                reply.code,
            )
            self._mlst_refused = True
            return None
        if reply.code != 250:
            raise reply_error("MLST", reply)
        if len(reply.lines) < 3:
            raise ProtocolError(f"unreadable MLST reply: {reply.text!r}", "")
        with _mlsd_errors(path):
            return parse_mlsd_line(reply.lines[1].removeprefix(" "))

    async def _file_facts(self, path: str) -> RemoteEntry | None:
        """A plain file's size (SIZE) and time (MDTM), or None when SIZE is refused."""
        try:
            size = await self.size(path)
        except PermanentReplyError:
            return None  # a directory, no such path, or no SIZE here
        try:
            mtime: datetime | None = (await self.mdtm(path)).replace(microsecond=0)
        except PermanentReplyError:
            mtime = None
        return RemoteEntry(
            name=path,
            kind="file",
            size=size,
            mtime=mtime,
            mtime_precision=None if mtime is None else "second",
        )

    async def _entry_in_parent(self, path: str, parent: str, name: str) -> RemoteEntry:
        """``name``'s entry in the listing of ``parent``; 550 when it has none."""
        try:
            listing = await self.list(parent)
        except PermanentReplyError as error:
            if error.code not in NOT_IMPLEMENTED:
                raise  # about the parent: no such directory, no access
            raise PermanentReplyError(
                "LIST",
                error.reply,
                f"nothing tells what {path} is: this server has no MLST and SIZE did not "
                "answer for it either",
            ) from None
        for entry in listing:
            if entry.name == name:
                return entry
        raise reply_error("STAT", Reply(550, (f"{path}: no such file or directory",)))

    async def _listing(self, verb: str, path: str) -> str:
        if verb != "MLSD" and path.startswith("-"):
            path = "./" + path  # LIST/NLST servers read a leading "-" as ls options
        line = f"{verb} {path}" if path else verb
        data = bytearray()
        await transfers.receive(self, line, data.extend, progress=None)
        return data.decode("utf-8", "surrogateescape")

    # -- transfers ---------------------------------------------------------------------

    async def download(
        self,
        remote: str,
        destination: str | PathLike[str] | IO[bytes],
        *,
        resume: bool = False,
        offset: int = 0,
        progress: transfers.Progress | None = None,
        size: int | None = None,
    ) -> transfers.TransferResult:
        """Download ``remote`` to a local path or a writable binary file object.

        ``resume=True`` continues a partial local file (REST from its size);
        ``offset`` starts a file object download part-way. ``size``, when the
        caller knows it from a listing, saves the SIZE command.
        """
        return await transfers.download(
            self, remote, destination, resume=resume, offset=offset, progress=progress, size=size
        )

    def open_download(
        self, remote: str, *, offset: int = 0
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """``async with ftp.open_download(path) as chunks: async for chunk in chunks``.

        Leaving the block early aborts the transfer cleanly.
        """
        return transfers.open_download(self, remote, offset=offset)

    async def upload(
        self,
        source: str | PathLike[str] | IO[bytes] | AsyncIterable[bytes] | Iterable[bytes],
        remote: str,
        *,
        resume: bool = False,
        append: bool = False,
        progress: transfers.Progress | None = None,
    ) -> transfers.TransferResult:
        """Upload a local path, binary file object or (async) iterable of chunks.

        ``resume=True`` sends only what the remote file lacks (SIZE, then APPE);
        ``append=True`` appends the whole source.
        """
        return await transfers.upload(
            self, source, remote, resume=resume, append=append, progress=progress
        )

    # for transfers.py: the pieces of a session a transfer needs

    @property
    def control(self) -> ControlConnection:
        return self._control_connection

    @property
    def connector(self) -> DataConnector:
        return self._data_connector

    def pinned_connector(self, settings: DataSettings) -> DataConnector:
        """A connector with other data settings on this session (same TLS): ketch doctor's."""
        return DataConnector(
            self._control_connection,
            settings,
            ModeMemory(),
            (self.host, self.port),
            self._data_connector.tls,
        )

    async def prepare_binary(self) -> None:
        await self._ensure_binary()

    def __repr__(self) -> str:
        state: Literal["connected", "closed"] = "connected" if self._control else "closed"
        where = format_host_port(self.host, self.port)
        return f"<Client {self.user or 'anonymous'}@{where} {state}>"


@contextlib.contextmanager
def _mlsd_errors(path: str) -> Iterator[None]:
    """A line outside the MLSD format is the server's fault: a ProtocolError, not a crash.

    UnreadableListing: the answer came whole, so the session goes on (a mirror
    fails that directory and lists the next).
    """
    try:
        yield
    except MlsdSyntaxError as error:
        raise UnreadableListing(
            f"unreadable MLSD/MLST answer for {path or 'the current directory'}: {error}",
            "the server sent a line outside the MLSD format (a file name with a line "
            "break?); rename that file on the server or ask its admin",
        ) from None
