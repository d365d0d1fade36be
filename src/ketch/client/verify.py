"""Checking a transferred file: the server's hash of it against the local copy's.

The server hashes with HASH (draft-bryan-ftpext-hash: ``OPTS HASH SHA-256``
selects the algorithm, ``HASH path`` answers ``213 SHA-256 0-<size> <hex>
<path>``) or, on older servers, with one X command per algorithm (XSHA256,
XSHA1, XMD5, XCRC: ``250 <hex>``). Which one, and which algorithm, is chosen
from FEAT (ketch.protocol.reply_values), before any transfer, so a server
that cannot hash fails a ``--verify`` run before anything moves.

The local file is hashed in a worker thread, so a large file does not stop
the event loop (and the other sessions of a mirror).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ketch.client.errors import (
    NOT_IMPLEMENTED,
    FtpError,
    HashUnsupported,
    LocalFileError,
    ProtocolError,
    VerifyFailed,
    reply_error,
)
from ketch.protocol import Reply
from ketch.protocol.hashes import new_digest
from ketch.protocol.reply_values import (
    HashMethod,
    choose_hash_method,
    parse_hash_reply,
    parse_x_hash_reply,
)

if TYPE_CHECKING:
    from ketch.client.client import Client

__all__ = ["RemoteHash", "hash_local_file", "hash_method", "remote_hash", "verify_file"]

_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RemoteHash:
    """A file's hash as the server computed it."""

    path: str
    algorithm: str  # SHA-256, SHA-1, MD5 or CRC32
    digest: str  # lower-case hex (CRC32: 8 digits)


def hash_method(client: Client, algorithm: str | None = None) -> HashMethod:
    """How ``client``'s server hashes files, best algorithm first; HashUnsupported if it cannot."""
    method = choose_hash_method(client.features, algorithm)
    if method is not None:
        return method
    wanted = f" with {algorithm.upper()}" if algorithm else ""
    raise HashUnsupported(
        f"{client.host} offers no command to hash a file{wanted} (its FEAT lists none of "
        "HASH, XSHA256, XSHA1, XMD5, XCRC), which --verify needs",
        "transfer without --verify, or ask the server's admin to enable HASH",
    )


async def remote_hash(client: Client, path: str, algorithm: str | None = None) -> RemoteHash:
    """Ask the server for the hash of ``path``; ``algorithm`` None takes the best it offers."""
    method = hash_method(client, algorithm)
    if method.command == "HASH":
        if client.hash_algorithm != method.algorithm:
            reply = await client.command(f"OPTS HASH {method.algorithm}")
            if reply.code != 200:
                raise reply_error("OPTS HASH", reply)
            client.hash_algorithm = method.algorithm
        reply = await client.command(f"HASH {path}")
        if reply.code != 213:
            raise _refused(client, "HASH", reply)
        digest = parse_hash_reply(reply.text, method.algorithm)
    else:
        reply = await client.command(f"{method.command} {path}")
        if reply.code // 100 != 2:
            raise _refused(client, method.command, reply)
        digest = parse_x_hash_reply(reply.text, method.algorithm)
    if digest is None:
        raise ProtocolError(
            f"unreadable {method.command} reply: {reply.code} {reply.text.strip()!r}",
            "the server's hash cannot be checked; transfer without --verify",
        )
    return RemoteHash(path, method.algorithm, digest)


def _refused(client: Client, command: str, reply: Reply) -> FtpError:
    if reply.code in NOT_IMPLEMENTED:
        return HashUnsupported(
            f"{client.host} lists {command} in FEAT but refuses it: {reply.code} "
            f"{reply.text.strip()}",
            "transfer without --verify",
        )
    return reply_error(command, reply)


def _hash_file(path: str | os.PathLike[str], algorithm: str) -> str:
    try:
        with open(path, "rb") as file:
            digest = new_digest(algorithm)
            while chunk := file.read(_READ_CHUNK):
                digest.update(chunk)
            return digest.hexdigest()
    except OSError as error:
        raise LocalFileError(
            f"cannot read {path} to verify it: {error.strerror}", "check the local file"
        ) from None


async def hash_local_file(path: str | os.PathLike[str], algorithm: str) -> str:
    """The lower-case hex digest of a local file (CRC32: 8 digits), computed off the loop."""
    return await asyncio.to_thread(_hash_file, path, algorithm)


async def verify_file(
    client: Client, remote: str, local: str | os.PathLike[str], algorithm: str | None = None
) -> RemoteHash:
    """Check that the server's ``remote`` and the local file have the same hash.

    Returns the server's hash; raises VerifyFailed (naming both digests) when
    they differ, HashUnsupported when the server cannot hash.
    """
    expected = await remote_hash(client, remote, algorithm)
    actual = await hash_local_file(local, expected.algorithm)
    if actual != expected.digest:
        raise VerifyFailed(
            f"{remote} differs from {os.fspath(local)}: the server's {expected.algorithm} is "
            f"{expected.digest}, the local file's is {actual}",
            "the copy is damaged or one side changed since the transfer; transfer it again",
            remote_digest=expected.digest,
            local_digest=actual,
        )
    return expected
