"""Test payloads shared by the interop tests: sizes, random files and their sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
BIG = 50 * MIB
SMALL_SIZES = (0, 1, 64 * KIB)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Payload:
    path: Path
    sha256: str


def make_payload(path: Path, size: int, big: Payload) -> str:
    """Put ``size`` random bytes at ``path`` (the shared 50 MiB file for BIG); return the sha256."""
    if size == BIG:
        shutil.copyfile(big.path, path)
        return big.sha256
    data = os.urandom(size)
    path.write_bytes(data)
    return sha256_bytes(data)
