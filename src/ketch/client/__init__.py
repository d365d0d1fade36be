"""ketch's FTP client: ``Client`` (asyncio) and ``SyncClient`` (blocking facade).

async with Client("ftp.example.com", user="alice", password="...") as ftp:
    for entry in await ftp.list():
        print(entry.name, entry.size)
    await ftp.download("report.pdf", "report.pdf", resume=True)
"""

from ketch.client.client import Client
from ketch.client.data_modes import DataSettings, ModeMemory
from ketch.client.errors import (
    ConnectFailed,
    DataConnectionFailed,
    FtpError,
    HashUnsupported,
    InvalidArgument,
    LocalFileError,
    LoginFailed,
    PermanentReplyError,
    ProtocolError,
    ReplyError,
    ReplyTimedOut,
    TransientReplyError,
    UnreadableListing,
    VerifyFailed,
)
from ketch.client.sync import SyncClient
from ketch.client.tls import TlsFailed
from ketch.client.transfers import Progress, TransferResult
from ketch.client.verify import RemoteHash
from ketch.protocol.remote_listing import RemoteEntry, RemoteListing

__all__ = [
    "Client",
    "ConnectFailed",
    "DataConnectionFailed",
    "DataSettings",
    "FtpError",
    "HashUnsupported",
    "InvalidArgument",
    "LocalFileError",
    "LoginFailed",
    "ModeMemory",
    "PermanentReplyError",
    "Progress",
    "ProtocolError",
    "RemoteEntry",
    "RemoteHash",
    "RemoteListing",
    "ReplyError",
    "ReplyTimedOut",
    "SyncClient",
    "TlsFailed",
    "TransferResult",
    "TransientReplyError",
    "UnreadableListing",
    "VerifyFailed",
]
