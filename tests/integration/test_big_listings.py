"""Big LIST and MLSD through a real server: the listing workers' bytes are the in-process ones.

See tests/unit/test_listing_workers.py for the workers' failures; here ftplib
asks a running server, once with its workers and once after they stopped.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from ketch.server import listed_names
from ketch.server.listing_threads import BIG_DIRECTORY
from ketch.server.listing_workers import _worker_count

from conftest import RunningServer
from ftp_helpers import connect

TIMEOUT = 15


def _listings(server: RunningServer) -> list[bytes]:
    ftp = connect(server)
    try:
        found = []
        for command in ("LIST big", "MLSD big", "OPTS MLST size;modify;", "MLSD big"):
            if command.startswith("OPTS"):
                ftp.sendcmd(command)
                continue
            chunks: list[bytes] = []
            ftp.retrbinary(command, chunks.append)
            found.append(b"".join(chunks))
        return found
    finally:
        ftp.quit()


@pytest.mark.parametrize("names_kept", [False, True])
def test_big_listings_made_by_workers_are_those_made_in_process(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, names_kept: bool
) -> None:
    # Kept: the names the LIST read serve both MLSDs (ketch keeps them once the
    # directory has been unchanged for 2 s; here at once).
    monkeypatch.setattr(listed_names, "SETTLED_NS", 0 if names_kept else 10**30)
    big = server.home / "big"
    big.mkdir()
    (big / "inside").symlink_to(big)
    (big / "outside").symlink_to("/etc")
    (big / "up").symlink_to("../..")  # relative, and out of the home
    (big / "again").symlink_to("../big")
    (big / "new\nline").write_bytes(b"")
    index = 0
    while os.stat(big).st_size <= BIG_DIRECTORY:
        for _ in range(500):
            (big / f"entry-{index:06d}").write_bytes(b"z" * (index % 5))
            index += 1
    workers = server.server.context.listing_workers
    asyncio.run_coroutine_threadsafe(workers.start(), server.loop).result(TIMEOUT)
    assert workers.running == _worker_count()
    pids = [worker.process.pid for worker in workers._workers]

    by_workers = _listings(server)
    assert server.counters.get("listing_by_workers") == 3
    assert server.counters.get("listing_names_reused", 0) == (2 if names_kept else 0)
    asyncio.run_coroutine_threadsafe(workers.close(), server.loop).result(TIMEOUT)
    for pid in pids:  # stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    in_process = _listings(server)
    assert server.counters.get("listing_by_workers") == 3  # the same three: these in a thread

    assert by_workers == in_process
    listing, mlsd, mlsd_some_facts = by_workers
    assert listing.count(b"\r\n") == index + 5
    assert b" inside -> /big\r\n" in listing and b" outside\r\n" in listing
    assert b" up\r\n" in listing and b" again -> ../big\r\n" in listing
    assert b" new?line\r\n" in listing
    assert mlsd.count(b"\r\n") == index + 6  # and the cdir line
    assert b"size=1;modify=" in mlsd_some_facts
    assert b"perm=" not in mlsd_some_facts and b"type=" not in mlsd_some_facts
